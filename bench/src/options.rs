//! Command-line options of the load generator, shared by the `etcd-bench` binary and by callers
//! of the library (the comparison and the integration test build them as plain structs).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::tls::ClientCerts;

/// Options every workload takes: where to send load, how many connections and clients, and
/// when to stop. They mirror the global flags of etcd's `tools/benchmark`.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Client endpoints, comma-separated (`host:port` or `http://host:port`).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Number of gRPC connections (one HTTP/2 connection each). Connection `i` goes to endpoint
    /// `i mod len(endpoints)`, or to the leader with `--target-leader`.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients, each running one request at a time. Client `i` uses
    /// connection `i mod conns`, so clients share connections as in etcd's benchmark.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Total number of requests (for `watch`: of puts). Defaults to 10000 unless `--duration`
    /// is given; with both, whichever comes first ends the run.
    #[arg(long)]
    pub total: Option<u64>,
    /// Run for this long (`500ms`, `10s`, `5m`, `1h`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Overall request rate limit in requests per second; 0 means as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Send every connection to the current Raft leader instead of spreading them.
    #[arg(long)]
    pub target_leader: bool,
    /// Per-request deadline; a request that exceeds it counts as an error.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
    /// The client library for `put`, `range` and `txn-put`: `h2`, the bench's own minimal gRPC
    /// client, or `etcd-client` (tonic). `watch` and `lease-keepalive` always use etcd-client.
    #[arg(long, value_enum, default_value_t = ClientLib::H2)]
    pub client: ClientLib,
    /// Print a progress line to stderr this often; `0s` turns progress off.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub progress: Duration,
    /// TLS files for `https://` endpoints.
    #[command(flatten)]
    pub tls: ClientCerts,
}

/// Which client library sends the unary workloads' requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ClientLib {
    /// The bench's own gRPC client straight over h2 (`grpc.rs`).
    H2,
    /// The `etcd-client` crate (tonic).
    EtcdClient,
}

impl Common {
    /// Options for `endpoints` with etcd's benchmark defaults (1 connection, 1 client, 10000
    /// requests), no progress output and a 30 s request deadline.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            conns: 1,
            clients: 1,
            total: None,
            duration: None,
            rate: 0.0,
            target_leader: false,
            request_timeout: Duration::from_secs(30),
            client: ClientLib::H2,
            progress: Duration::ZERO,
            tls: ClientCerts::default(),
        }
    }

    /// The request budget in force: `--total`, or 10000 when neither total nor duration is set.
    pub fn effective_total(&self) -> Option<u64> {
        match (self.total, self.duration) {
            (None, None) => Some(10_000),
            (t, _) => t,
        }
    }

    /// Checks the options that clap cannot check alone.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidOptions("--endpoints is empty".into()));
        }
        if self.conns == 0 || self.clients == 0 {
            return Err(Error::InvalidOptions(
                "--conns and --clients must be at least 1".into(),
            ));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(Error::InvalidOptions(
                "--rate must be a finite number ≥ 0".into(),
            ));
        }
        Ok(())
    }
}

/// `put`: write keys of a given size.
#[derive(Debug, Clone, clap::Args)]
pub struct PutOptions {
    /// Key size in bytes (keys are zero-padded decimal numbers, longer if the number needs it).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 100_000)]
    pub key_space_size: u64,
    /// Write keys 0, 1, 2, … (wrapping at the key space) instead of random keys.
    #[arg(long)]
    pub sequential_keys: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self {
            key_size: 8,
            val_size: 8,
            key_space_size: 100_000,
            sequential_keys: false,
        }
    }
}

/// Read consistency of `range`, as etcd's benchmark spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Consistency {
    /// Linearizable: goes through Raft ReadIndex.
    #[value(name = "l")]
    Linearizable,
    /// Serializable: served from the member's local store.
    #[value(name = "s")]
    Serializable,
}

/// `range`: read one key or a prefix.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeOptions {
    /// The key to read (or the prefix, with `--prefix`).
    #[arg(long, default_value = "foo")]
    pub key: String,
    /// Read every key with this prefix instead of one key.
    #[arg(long)]
    pub prefix: bool,
    /// `l` (linearizable) or `s` (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

impl Default for RangeOptions {
    fn default() -> Self {
        Self {
            key: "foo".into(),
            prefix: false,
            consistency: Consistency::Linearizable,
        }
    }
}

/// `txn-put`: transactions of several puts.
#[derive(Debug, Clone, clap::Args)]
pub struct TxnPutOptions {
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written (at least `--txn-ops`).
    #[arg(long, default_value_t = 100_000)]
    pub key_space_size: u64,
    /// Puts per transaction (distinct keys, so no duplicate-key error).
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

impl Default for TxnPutOptions {
    fn default() -> Self {
        Self {
            key_size: 8,
            val_size: 8,
            key_space_size: 100_000,
            txn_ops: 1,
        }
    }
}

/// `watch`: put-to-delivery latency of watch events.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchOptions {
    /// Number of watchers, all on the same key.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Number of watch streams the watchers are spread over (streams are spread over the
    /// connections).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Puts per second to the watched key (the run's `--total` counts puts).
    #[arg(long, default_value_t = 100.0)]
    pub put_rate: f64,
    /// The watched key.
    #[arg(long, default_value = "watch-latency-key")]
    pub key: String,
    /// Value size in bytes (at least 8: the value carries the put's send time).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// After the last put, how long to wait for outstanding events before counting them missing.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            watchers: 100,
            streams: 10,
            put_rate: 100.0,
            key: "watch-latency-key".into(),
            val_size: 32,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// `lease-keepalive`: keep-alive round trips on per-client lease streams.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseOptions {
    /// TTL of each client's lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self { ttl: 60 }
    }
}

/// One workload with its options.
#[derive(Debug, Clone)]
pub enum Workload {
    /// See [`PutOptions`].
    Put(PutOptions),
    /// See [`RangeOptions`].
    Range(RangeOptions),
    /// See [`TxnPutOptions`].
    TxnPut(TxnPutOptions),
    /// See [`WatchOptions`].
    Watch(WatchOptions),
    /// See [`LeaseOptions`].
    LeaseKeepalive(LeaseOptions),
    /// `connect`: every request opens a new connection (TCP, TLS for `https://` endpoints,
    /// HTTP/2), reads `key` over it and closes it: connection set-up per second. Uses the
    /// bench's own client.
    Connect(RangeOptions),
}

impl Workload {
    /// The subcommand name.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) => "put",
            Workload::Range(_) => "range",
            Workload::TxnPut(_) => "txn-put",
            Workload::Watch(_) => "watch",
            Workload::LeaseKeepalive(_) => "lease-keepalive",
            Workload::Connect(_) => "connect",
        }
    }

    /// A one-line description of the workload's parameters, for reports.
    pub fn describe(&self, common: &Common) -> String {
        let load = format!(
            "{} conns, {} clients{}{}",
            common.conns,
            common.clients,
            if common.target_leader {
                ", leader only"
            } else {
                ""
            },
            if common.rate > 0.0 {
                format!(", {} req/s", common.rate)
            } else {
                String::new()
            },
        );
        match self {
            Workload::Put(o) => format!(
                "put {} B keys, {} B values, {} keys {}, {load}",
                o.key_size,
                o.val_size,
                o.key_space_size,
                if o.sequential_keys {
                    "sequential"
                } else {
                    "random"
                },
            ),
            Workload::Range(o) => format!(
                "range {} {:?}{}, {load}",
                match o.consistency {
                    Consistency::Linearizable => "linearizable",
                    Consistency::Serializable => "serializable",
                },
                o.key,
                if o.prefix { " (prefix)" } else { "" },
            ),
            Workload::TxnPut(o) => format!(
                "txn of {} puts, {} B keys, {} B values, {} keys, {load}",
                o.txn_ops, o.key_size, o.val_size, o.key_space_size
            ),
            Workload::Watch(o) => format!(
                "{} watchers on {} streams, {} puts/s of {} B, {} conns",
                o.watchers, o.streams, o.put_rate, o.val_size, common.conns
            ),
            Workload::LeaseKeepalive(o) => format!("keep-alive, lease TTL {} s, {load}", o.ttl),
            Workload::Connect(o) => format!(
                "a new connection per request, then one read of {:?}, {} clients{}",
                o.key,
                common.clients,
                if common.tls.is_set() { ", TLS" } else { "" }
            ),
        }
    }
}

/// Parses a Go duration (`250ms`, `10s`, `1.5s`, `5m`, `2h`, as etcd's flags take them) or a
/// bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"));
    }
    etcd_api::duration::parse(s)
        .ok_or_else(|| format!("not a duration: {s:?} (use e.g. 250ms, 10s, 5m or 2h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn total_defaults_only_without_duration() {
        let mut c = Common::new(vec!["a".into()]);
        assert_eq!(c.effective_total(), Some(10_000));
        c.duration = Some(Duration::from_secs(1));
        assert_eq!(c.effective_total(), None);
        c.total = Some(5);
        assert_eq!(c.effective_total(), Some(5));
    }
}
