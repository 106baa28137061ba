//! etcd's command-line flags, each also read from its `ETCD_*` environment variable, and its
//! YAML config file (`--config-file`); the TLS flags become `TlsFiles` in `tls`.

mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1536 * 1024;
/// Extra room gRPC allows above `--max-request-bytes` (etcd's `grpcOverheadBytes`).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's default backend quota (2 GiB).
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// The etcd API version this server reports (kube-apiserver gates features on it).
pub const ETCD_VERSION: &str = "3.5.17";
/// The cluster version this server reports.
pub const CLUSTER_VERSION: &str = "3.5.0";

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster.
    New,
    /// Join an existing cluster.
    Existing,
}

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompactionMode {
    /// Keep history for a time window.
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
    /// etcd's panic level (logged as error here).
    Panic,
    /// etcd's fatal level (logged as error here).
    Fatal,
}

/// The flags etcd accepts, with etcd's names, defaults and environment variables.
#[derive(Debug, Clone, Parser)]
#[command(name = "etcd-server", version, about = "An etcd v3 compatible server")]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `${name}.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// Client URLs advertised to the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// This member's peer URLs, advertised to the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (`name=url,...`). Ignored when the data
    /// directory already holds a member.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, mixed into member and cluster IDs.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Restart this member alone: keep its data, and commit the removal of every other
    /// member (etcd's flag; for recovering a cluster that lost its quorum). Ignored on a data
    /// directory without a member.
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub force_new_cluster: bool,
    /// Backend size quota in bytes; 0 means the default (2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: i64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,
    /// Auto-compaction mode.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_MODE",
        value_enum,
        default_value = "periodic"
    )]
    pub auto_compaction_mode: CompactionMode,
    /// Auto-compaction retention: a duration (`1h`, `30m`, or bare hours) in periodic mode,
    /// a revision count in revision mode. 0 disables auto-compaction.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Number of committed entries that trigger a snapshot (log compaction).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Election timeout in milliseconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Log level.
    #[arg(long, env = "ETCD_LOG_LEVEL", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Interval of watch progress notifications (etcd's experimental flag of the same name).
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = etcd_api::duration::parse_interval)]
    pub experimental_watch_progress_notify_interval: Duration,
    /// How often the leader checkpoints remaining lease TTLs (etcd's experimental flag).
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = "5m", value_parser = etcd_api::duration::parse_interval)]
    pub experimental_lease_checkpoint_interval: Duration,
    /// Accepted for compatibility: lease checkpointing is always on here.
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", num_args = 0..=1, default_missing_value = "true")]
    pub experimental_enable_lease_checkpoint: Option<bool>,
    /// How often the auto-compactor checks, overriding etcd's fixed intervals. Not an etcd
    /// flag: for tests only.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_CHECK_INTERVAL_MS", hide = true)]
    pub auto_compaction_check_interval_ms: Option<u64>,
    /// Certificate for the client port (`https://` client URLs).
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Key of `--cert-file`.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// CAs that sign client certificates; when set, clients must present one.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates signed by `--trusted-ca-file`.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub client_cert_auth: bool,
    /// A self-signed certificate for the client port, made under the data dir.
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub auto_tls: bool,
    /// Revoked client certificates (PEM CRLs).
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Client certificates must name this host in a DNS SAN.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,
    /// TLS 1.2 cipher suites the client port accepts (Go names, comma-separated).
    #[arg(long, env = "ETCD_CIPHER_SUITES")]
    pub cipher_suites: Option<String>,
    /// Certificate for the peer port and for dialing other members (`https://` peer URLs).
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Key of `--peer-cert-file`.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// CAs that sign the members' peer certificates; when set, members must present one.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require peer certificates signed by `--peer-trusted-ca-file`.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub peer_client_cert_auth: bool,
    /// A self-signed certificate for the peer port, made under the data dir.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub peer_auto_tls: bool,
    /// Revoked peer certificates (PEM CRLs).
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Members' certificates must carry this Common Name.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Members' certificates must be valid for this host.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Do not check a member's address against the SANs of its certificate.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub experimental_peer_skip_client_san_verification: bool,
    /// Lowest TLS version accepted (`TLS1.2` or `TLS1.3`).
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,
    /// Highest TLS version accepted.
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "TLS1.3")]
    pub tls_max_version: String,
    /// Additional URLs to serve `/metrics` and `/health` on.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// A YAML file of etcd configuration keys (`name`, `data-dir`, `initial-cluster`, ...).
    /// As in etcd, when it is given every other flag and `ETCD_*` variable is ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
}

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL flag could not be parsed.
    #[error("failed to parse {flag} {value:?}: {reason}")]
    BadUrl {
        /// Flag name.
        flag: &'static str,
        /// The offending value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Any other invalid value.
    #[error("invalid {flag}: {reason}")]
    Invalid {
        /// Flag name.
        flag: &'static str,
        /// Why.
        reason: String,
    },
}

/// Auto-compaction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Disabled.
    Off,
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// Validated configuration of one member.
#[derive(Debug, Clone)]
pub struct Config {
    /// Member name.
    pub name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Client listen addresses (`https://` ones serve TLS).
    pub listen_client: Vec<ListenUrl>,
    /// TLS material for `https://` client URLs.
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// Advertised client URLs.
    pub advertise_client_urls: Vec<String>,
    /// Peer listen addresses (`https://` ones serve TLS).
    pub listen_peer: Vec<ListenUrl>,
    /// Peer TLS material: for `https://` peer listeners and for dialing `https://` members.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// Advertised peer URLs.
    pub advertise_peer_urls: Vec<String>,
    /// `--initial-cluster`, defaulted as etcd does.
    pub initial_cluster: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--force-new-cluster`: restart alone, removing every other member.
    pub force_new_cluster: bool,
    /// Backend quota in bytes.
    pub quota_backend_bytes: i64,
    /// Maximum request size.
    pub max_request_bytes: u32,
    /// Maximum ops per txn.
    pub max_txn_ops: usize,
    /// Auto-compaction policy.
    pub auto_compaction: AutoCompaction,
    /// Interval of periodic watch progress notifications.
    pub watch_progress_notify_interval: Duration,
    /// Interval of lease checkpoints.
    pub lease_checkpoint_interval: Duration,
    /// Override of the auto-compactor's check interval (tests only).
    pub auto_compaction_check: Option<Duration>,
    /// Entries between log compactions.
    pub snapshot_count: u64,
    /// Raft tick interval.
    pub heartbeat: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Metrics listen addresses (`https://` ones serve TLS with the client port's material).
    pub listen_metrics: Vec<ListenUrl>,
}

/// One address to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenUrl {
    /// The address.
    pub addr: SocketAddr,
    /// Whether the URL was `https://`.
    pub tls: bool,
}

/// Parses a comma-separated URL list into socket addresses (`localhost` is 127.0.0.1).
pub fn parse_listen_urls(flag: &'static str, value: &str) -> Result<Vec<ListenUrl>, ConfigError> {
    let bad = |reason: String| ConfigError::BadUrl {
        flag,
        value: value.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for raw in split_urls(value) {
        let u = url::Url::parse(&raw).map_err(|e| bad(e.to_string()))?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            s => {
                return Err(bad(format!(
                    "unsupported scheme {s:?}, expected http or https"
                )));
            }
        };
        let port = u
            .port()
            .ok_or_else(|| bad("URL must include a port".into()))?;
        let host = match u.host() {
            Some(url::Host::Domain("localhost")) => "127.0.0.1".to_owned(),
            Some(url::Host::Domain(d)) => {
                return Err(bad(format!(
                    "expected an IP address or localhost, got {d:?}"
                )));
            }
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(bad("missing host".into())),
        };
        let addr = format!("{host}:{port}")
            .parse()
            .map_err(|e: std::net::AddrParseError| bad(e.to_string()))?;
        out.push(ListenUrl { addr, tls });
    }
    if out.is_empty() {
        return Err(bad("no URLs given".into()));
    }
    Ok(out)
}

fn split_urls(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_urls(flag: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    let urls = split_urls(value);
    for raw in &urls {
        let u = url::Url::parse(raw).map_err(|e| ConfigError::BadUrl {
            flag,
            value: value.to_owned(),
            reason: e.to_string(),
        })?;
        if u.port_or_known_default().is_none() || u.host().is_none() {
            return Err(ConfigError::BadUrl {
                flag,
                value: value.to_owned(),
                reason: "URL needs host and port".into(),
            });
        }
    }
    if urls.is_empty() {
        return Err(ConfigError::Invalid {
            flag,
            reason: "no URLs given".into(),
        });
    }
    Ok(urls)
}

/// Parses `--auto-compaction-retention` for `mode`.
pub fn parse_retention(mode: CompactionMode, value: &str) -> Result<AutoCompaction, ConfigError> {
    let bad = |reason: &str| ConfigError::Invalid {
        flag: "--auto-compaction-retention",
        reason: format!("{value:?}: {reason}"),
    };
    let v = value.trim();
    if v.is_empty() || v == "0" {
        return Ok(AutoCompaction::Off);
    }
    match mode {
        CompactionMode::Revision => {
            let n: i64 = v.parse().map_err(|_| bad("expected a revision count"))?;
            if n < 0 {
                return Err(bad("must not be negative"));
            }
            Ok(if n == 0 {
                AutoCompaction::Off
            } else {
                AutoCompaction::Revision(n)
            })
        }
        CompactionMode::Periodic => {
            // A bare integer means hours, as in etcd.
            if let Ok(h) = v.parse::<u64>() {
                return Ok(AutoCompaction::Periodic(Duration::from_secs(h * 3600)));
            }
            let d = etcd_api::duration::parse(v)
                .ok_or_else(|| bad("expected a duration such as 1h or 30m"))?;
            Ok(if d.is_zero() {
                AutoCompaction::Off
            } else {
                AutoCompaction::Periodic(d)
            })
        }
    }
}

impl Flags {
    /// Parses the command line; with `--config-file`, the file replaces the command line and
    /// the environment entirely, as in etcd.
    pub fn load() -> Result<Self, ConfigError> {
        let flags = <Self as clap::Parser>::parse();
        match flags.config_file.clone() {
            Some(path) => Self::from_config_file(&path),
            None => Ok(flags),
        }
    }

    /// Reads etcd's YAML config-file format: the flags' names without the leading dashes.
    pub fn from_config_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            flag: "--config-file",
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("failed to read {}: {e}", path.display())))?;
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| bad(format!("failed to parse {}: {e}", path.display())))?;
        let mut args = vec!["etcd-server".to_owned()];
        if let Some(map) = doc.as_mapping() {
            for (k, v) in map {
                let Some(key) = k.as_str() else { continue };
                let value = match v {
                    serde_yaml_ng::Value::Null => continue,
                    serde_yaml_ng::Value::Mapping(_) if key.ends_with("-transport-security") => {
                        String::new()
                    }
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    serde_yaml_ng::Value::Number(n) => n.to_string(),
                    serde_yaml_ng::Value::Bool(b) => b.to_string(),
                    serde_yaml_ng::Value::Sequence(items) => items
                        .iter()
                        .filter_map(|i| {
                            i.as_str()
                                .map(str::to_owned)
                                .or_else(|| i.as_i64().map(|n| n.to_string()))
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => return Err(bad(format!("unsupported value for {key:?}"))),
                };
                if key == "config-file" {
                    continue;
                }
                if key == "client-transport-security" || key == "peer-transport-security" {
                    tls::security_block(key, v, &mut args).map_err(bad)?;
                    continue;
                }
                args.push(format!("--{key}={value}"));
            }
        } else if !doc.is_null() {
            return Err(bad("expected a mapping of configuration keys".into()));
        }
        use clap::{CommandFactory, FromArgMatches};
        // The file is the whole configuration: no environment variables.
        let cmd = Self::command().mut_args(|a| a.env(None));
        let matches = cmd
            .try_get_matches_from(args)
            .map_err(|e| bad(e.to_string()))?;
        Self::from_arg_matches(&matches).map_err(|e| bad(e.to_string()))
    }

    /// Validates the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let listen_client = parse_listen_urls("--listen-client-urls", &self.listen_client_urls)?;
        let listen_peer = parse_listen_urls("--listen-peer-urls", &self.listen_peer_urls)?;
        let listen_metrics = match &self.listen_metrics_urls {
            Some(v) if !v.trim().is_empty() => parse_listen_urls("--listen-metrics-urls", v)?,
            _ => Vec::new(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let all_listeners: Vec<ListenUrl> = listen_client
            .iter()
            .chain(&listen_metrics)
            .copied()
            .collect();
        let client_tls = self.client_tls(&data_dir, &all_listeners)?;
        let https_peers = self.initial_advertise_peer_urls.contains("https://")
            || self
                .initial_cluster
                .as_deref()
                .is_some_and(|c| c.contains("https://"));
        let peer_tls = self.peer_tls(&data_dir, &listen_peer, https_peers)?;
        let advertise_client_urls =
            check_urls("--advertise-client-urls", &self.advertise_client_urls)?;
        let advertise_peer_urls = check_urls(
            "--initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::Invalid {
                flag: "--heartbeat-interval",
                reason: "must be > 0".into(),
            });
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Invalid {
                flag: "--election-timeout",
                reason: format!(
                    "{}ms should be at least 5 times --heartbeat-interval ({}ms)",
                    self.election_timeout, self.heartbeat_interval
                ),
            });
        }
        if self.election_timeout > 50_000 {
            return Err(ConfigError::Invalid {
                flag: "--election-timeout",
                reason: "must be at most 50000ms".into(),
            });
        }
        if self.quota_backend_bytes < 0 {
            return Err(ConfigError::Invalid {
                flag: "--quota-backend-bytes",
                reason: "must not be negative".into(),
            });
        }
        if self.max_txn_ops == 0 {
            return Err(ConfigError::Invalid {
                flag: "--max-txn-ops",
                reason: "must be > 0".into(),
            });
        }
        let initial_cluster = match self.initial_cluster {
            Some(c) if !c.trim().is_empty() => c,
            _ => advertise_peer_urls
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        let auto_compaction =
            parse_retention(self.auto_compaction_mode, &self.auto_compaction_retention)?;
        Ok(Config {
            data_dir,
            name: self.name,
            listen_client,
            client_tls,
            advertise_client_urls,
            listen_peer,
            peer_tls,
            advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token,
            force_new_cluster: self.force_new_cluster,
            quota_backend_bytes: if self.quota_backend_bytes == 0 {
                DEFAULT_QUOTA_BYTES
            } else {
                self.quota_backend_bytes
            },
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops as usize,
            auto_compaction,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            lease_checkpoint_interval: self.experimental_lease_checkpoint_interval,
            auto_compaction_check: self
                .auto_compaction_check_interval_ms
                .map(Duration::from_millis),
            snapshot_count: self.snapshot_count.max(1),
            heartbeat: Duration::from_millis(self.heartbeat_interval),
            election_ticks: (self.election_timeout / self.heartbeat_interval) as usize,
            listen_metrics,
        })
    }
}

#[cfg(test)]
mod tests;
