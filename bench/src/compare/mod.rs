//! `etcd-bench compare`: runs the same workloads against our `etcd-server` and the reference
//! etcd 3.4.23 with equivalent settings (same flags, data on the same filesystem, one cluster
//! at a time), alternating the servers run by run so that drift hits both, and summarises the
//! medians as ratios ours ÷ etcd against the targets of issue #7.
//!
//! Two phases, each alternating etcd-server, etcd, etcd-server, etcd, …:
//! 1. *suite*: for every cluster size and round, a fresh cluster runs every selected workload
//!    for `--duration`; server CPU is sampled around each workload and peak RSS after all.
//! 2. *resources* (single member): load `--keys` keys of 256 B, then peak RSS, CPU and disk
//!    size; compact to the current revision and defragment, disk size again; then restart and
//!    time it until a linearizable read is served.

mod cluster;
pub mod disk;
pub mod member_restart;
pub mod procfs;
mod summary;
pub mod table;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{CompactionOptions, GetOptions};
use serde::Serialize;

pub use cluster::{Cluster, ServerKind, Settings};
use disk::{FsyncProbe, dir_size, fsync_probe};
use procfs::{Machine, ProcSample};
use summary::{MIB, summarize};
use table::{Row, Target};

use crate::error::{Error, Result};
use crate::options::{
    ClientLib, Common, Consistency, LeaseOptions, PutOptions, RangeOptions, TxnPutOptions,
    WatchOptions, Workload, parse_duration,
};
use crate::pool::connect_one;
use crate::report::Report;

/// The servers in the order every round runs them.
const ORDER: [ServerKind; 2] = [ServerKind::Ours, ServerKind::Etcd];

/// The workloads of the comparison suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuiteWorkload {
    /// `--conns` connections, `--clients` clients, 256 B values, 100k sequential keys, leader.
    Put,
    /// 1 connection, 1 client, 256 B values, leader: the latency of an unloaded write.
    #[value(name = "put-1client")]
    #[serde(rename = "put-1client")]
    Put1Client,
    /// Linearizable single-key reads of a 256 B value from all members.
    #[value(name = "range-l")]
    #[serde(rename = "range-l")]
    RangeLinearizable,
    /// Serializable single-key reads of a 256 B value from all members.
    #[value(name = "range-s")]
    #[serde(rename = "range-s")]
    RangeSerializable,
    /// Transactions of 4 puts of 256 B, 10 connections, 100 clients, leader.
    TxnPut,
    /// 100 watchers on 10 streams over 10 connections, 100 puts/s.
    Watch,
    /// Keep-alives of 100 clients' leases over 10 connections, all members.
    LeaseKeepalive,
    /// Connection set-up: 50 clients each open a new connection per request (TCP, TLS with
    /// `--tls`, HTTP/2) and read one key over it, all members.
    Connect,
}

impl SuiteWorkload {
    /// Every suite workload, in run order.
    pub const ALL: [SuiteWorkload; 8] = [
        SuiteWorkload::Put,
        SuiteWorkload::Put1Client,
        SuiteWorkload::RangeLinearizable,
        SuiteWorkload::RangeSerializable,
        SuiteWorkload::TxnPut,
        SuiteWorkload::Watch,
        SuiteWorkload::LeaseKeepalive,
        SuiteWorkload::Connect,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            SuiteWorkload::Put => "put",
            SuiteWorkload::Put1Client => "put-1client",
            SuiteWorkload::RangeLinearizable => "range-l",
            SuiteWorkload::RangeSerializable => "range-s",
            SuiteWorkload::TxnPut => "txn-put",
            SuiteWorkload::Watch => "watch",
            SuiteWorkload::LeaseKeepalive => "lease-keepalive",
            SuiteWorkload::Connect => "connect",
        }
    }
}

/// Options of `etcd-bench compare`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct CompareOptions {
    /// Our server binary.
    #[arg(long, default_value = "target/release/etcd-server")]
    pub server_bin: PathBuf,
    /// The reference etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// Cluster sizes to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub members: Vec<usize>,
    /// Suite rounds per cluster size (each round runs both servers once).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How long each suite workload runs.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Suite workloads, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Option<Vec<SuiteWorkload>>,
    /// Connections of the heavy workloads (put, range-l, range-s).
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Clients of the heavy workloads (put, range-l, range-s).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Keys loaded in the resources phase (RSS, disk, restart-to-ready).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Rounds of the resources phase; 0 skips it.
    #[arg(long, default_value_t = 1)]
    pub resource_rounds: usize,
    /// Where both servers keep their data (one filesystem for both) and their logs.
    #[arg(long, default_value = "target/etcd-bench")]
    pub data_root: PathBuf,
    /// `--quota-backend-bytes` for both servers.
    #[arg(long, default_value_t = 8 * 1024 * 1024 * 1024)]
    pub quota_backend_bytes: u64,
    /// `--snapshot-count` for both servers.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// `--log-level` for both servers.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
    /// fdatasync'd 4 KiB writes of the disk probe.
    #[arg(long, default_value_t = 1000)]
    pub fsync_writes: usize,
    /// The client library of the unary workloads (`put`, `range`, `txn-put`), the same for
    /// both servers: `h2` (the bench's own) or `etcd-client`.
    #[arg(long, value_enum, default_value_t = ClientLib::H2)]
    pub client: ClientLib,
    /// Serve clients and peers over TLS with mutual authentication (both servers, the same
    /// certificates, made under the data root); every figure is then a TLS figure.
    #[arg(long)]
    pub tls: bool,
    /// Also write the summary as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also write every measurement as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One workload of one suite run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRun {
    /// Which workload.
    pub workload: SuiteWorkload,
    /// The load generator's report.
    pub report: Report,
    /// CPU seconds all members used while it ran.
    pub server_cpu_secs: f64,
}

/// One suite run: one server, one cluster size, one round.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteRun {
    /// Which server.
    pub server: ServerKind,
    /// Cluster size.
    pub members: usize,
    /// Round number, from 1.
    pub round: usize,
    /// The workloads in run order.
    pub workloads: Vec<WorkloadRun>,
    /// Largest peak RSS (VmHWM) of any member at the end, bytes.
    pub peak_rss_bytes: u64,
}

/// One resources run (single member).
#[derive(Debug, Clone, Serialize)]
pub struct ResourceRun {
    /// Which server.
    pub server: ServerKind,
    /// Round number, from 1.
    pub round: usize,
    /// The load of `keys` distinct keys.
    pub load: Report,
    /// After the load.
    pub after_load: ProcSample,
    /// Bytes on disk after the load.
    pub disk_after_load: u64,
    /// Bytes on disk after compaction to the current revision and defragmentation.
    pub disk_after_defrag: u64,
    /// Size of the backend file (`member/snap/db`, both servers keep it there) after the load.
    pub backend_after_load: u64,
    /// Size of the backend file after compaction and defragmentation.
    pub backend_after_defrag: u64,
    /// From starting the process to the first linearizable read served, seconds.
    pub restart_ready_secs: f64,
    /// Once ready after the restart.
    pub after_restart: ProcSample,
}

/// Everything `compare` measured, and the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The machine.
    pub machine: Machine,
    /// Disk latency of the data root's filesystem.
    pub fsync: FsyncProbe,
    /// The options the comparison ran with.
    pub options: CompareOptions,
    /// The suite runs in the order they ran.
    pub suite: Vec<SuiteRun>,
    /// The resources runs in the order they ran.
    pub resources: Vec<ResourceRun>,
    /// Medians and ratios.
    pub rows: Vec<Row>,
}

/// Runs the comparison.
pub async fn compare(o: &CompareOptions) -> Result<Comparison> {
    for (bin, what) in [
        (&o.server_bin, "our server"),
        (&o.etcd_bin, "the reference etcd"),
    ] {
        if !bin.exists() {
            return Err(Error::InvalidOptions(format!(
                "{what} is not at {}",
                bin.display()
            )));
        }
    }
    if o.members.contains(&0) || o.rounds == 0 {
        return Err(Error::InvalidOptions(
            "--members and --rounds must be at least 1".into(),
        ));
    }
    let root = absolute(&o.data_root)?;
    let logs = root.join("logs");
    let machine = Machine::detect();
    let fsync = fsync_probe(&root, o.fsync_writes)?;
    eprintln!(
        "compare: {} cores, load average {}, fsync p50 {:.3} ms p99 {:.3} ms on {}",
        machine.cores,
        machine.load_average,
        fsync.latency_ms.p50,
        fsync.latency_ms.p99,
        root.display()
    );
    let tls = if o.tls {
        Some(crate::tls::make_cert_set(&root.join("certs"))?)
    } else {
        None
    };
    let settings = Settings {
        quota_backend_bytes: o.quota_backend_bytes,
        snapshot_count: o.snapshot_count,
        log_level: o.log_level.clone(),
        tls,
    };
    let workloads = o
        .workloads
        .clone()
        .unwrap_or_else(|| SuiteWorkload::ALL.to_vec());

    let mut suite = Vec::new();
    if !workloads.is_empty() {
        let runs = o.members.len() * o.rounds * ORDER.len();
        for &members in &o.members {
            for round in 1..=o.rounds {
                for kind in ORDER {
                    eprintln!(
                        "compare: [{}/{runs}] {kind}, {members} member(s), round {round}",
                        suite.len() + 1
                    );
                    let dir = root.join(format!("{kind}-{members}m-r{round}"));
                    let run =
                        suite_run(o, kind, members, round, &dir, &logs, &settings, &workloads)
                            .await;
                    clear(&dir);
                    suite.push(run?);
                }
            }
        }
    }

    let mut resources = Vec::new();
    for round in 1..=o.resource_rounds {
        for kind in ORDER {
            eprintln!("compare: resources, {kind}, {} keys, round {round}", o.keys);
            let dir = root.join(format!("{kind}-resources-r{round}"));
            let run = resource_run(o, kind, round, &dir, &logs, &settings).await;
            clear(&dir);
            resources.push(run?);
        }
    }

    let rows = summarize(&suite, &resources, o.keys, o.tls);
    let c = Comparison {
        machine,
        fsync,
        options: o.clone(),
        suite,
        resources,
        rows,
    };
    if let Some(p) = &o.markdown {
        write_file(p, &c.to_markdown())?;
    }
    if let Some(p) = &o.json_out {
        write_file(p, &serde_json::to_string_pretty(&c).map_err(Error::Json)?)?;
    }
    Ok(c)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).map_err(|source| Error::Io {
        action: "create the data root",
        path: p.to_owned(),
        source,
    })?;
    std::fs::canonicalize(p).map_err(|source| Error::Io {
        action: "resolve the data root",
        path: p.to_owned(),
        source,
    })
}

fn write_file(p: &Path, content: &str) -> Result<()> {
    std::fs::write(p, content).map_err(|source| Error::Io {
        action: "write the output file",
        path: p.to_owned(),
        source,
    })
}

/// Removes a run's data and flushes dirty pages, so that the next run does not pay for this
/// run's writeback.
fn clear(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::process::Command::new("sync").status();
}

/// The load options and workload of one suite workload against `endpoints`.
fn suite_item(
    o: &CompareOptions,
    settings: &Settings,
    w: SuiteWorkload,
    endpoints: &[String],
) -> (Common, Workload) {
    let mut c = Common::new(endpoints.to_vec());
    c.tls = settings.tls.clone().unwrap_or_default();
    c.client = o.client;
    c.duration = Some(o.duration);
    c.request_timeout = Duration::from_secs(30);
    c.progress = if o.duration >= Duration::from_secs(30) {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    let put = PutOptions {
        key_size: 8,
        val_size: 256,
        key_space_size: 100_000,
        sequential_keys: true,
    };
    let workload = match w {
        SuiteWorkload::Put => {
            (c.conns, c.clients, c.target_leader) = (o.conns, o.clients, true);
            Workload::Put(put)
        }
        SuiteWorkload::Put1Client => {
            c.target_leader = true;
            Workload::Put(put)
        }
        SuiteWorkload::RangeLinearizable | SuiteWorkload::RangeSerializable => {
            (c.conns, c.clients) = (o.conns, o.clients);
            Workload::Range(RangeOptions {
                key: RANGE_KEY.into(),
                prefix: false,
                consistency: if w == SuiteWorkload::RangeLinearizable {
                    Consistency::Linearizable
                } else {
                    Consistency::Serializable
                },
            })
        }
        SuiteWorkload::TxnPut => {
            (c.conns, c.clients, c.target_leader) = (10, 100, true);
            Workload::TxnPut(TxnPutOptions {
                key_size: 8,
                val_size: 256,
                key_space_size: 100_000,
                txn_ops: 4,
            })
        }
        SuiteWorkload::Watch => {
            c.conns = 10;
            Workload::Watch(WatchOptions {
                watchers: 100,
                streams: 10,
                put_rate: 100.0,
                ..Default::default()
            })
        }
        SuiteWorkload::LeaseKeepalive => {
            (c.conns, c.clients) = (10, 100);
            Workload::LeaseKeepalive(LeaseOptions::default())
        }
        SuiteWorkload::Connect => {
            c.clients = 50;
            Workload::Connect(RangeOptions {
                key: RANGE_KEY.into(),
                prefix: false,
                consistency: Consistency::Serializable,
            })
        }
    };
    (c, workload)
}

/// The key the range workloads read (written with a 256 B value before the suite).
const RANGE_KEY: &str = "etcd-bench-range-key";

fn cpu_secs(samples: &[ProcSample]) -> f64 {
    samples.iter().map(|s| s.cpu_secs).sum()
}

#[allow(clippy::too_many_arguments)]
async fn suite_run(
    o: &CompareOptions,
    kind: ServerKind,
    members: usize,
    round: usize,
    dir: &Path,
    logs: &Path,
    settings: &Settings,
    workloads: &[SuiteWorkload],
) -> Result<SuiteRun> {
    let bin = if kind == ServerKind::Ours {
        &o.server_bin
    } else {
        &o.etcd_bin
    };
    let mut cluster = Cluster::start(kind, bin, members, dir, logs, settings).await?;
    let endpoints = cluster.endpoints();
    let tls = settings.tls.clone().unwrap_or_default();
    let mut c = connect_one(&endpoints[0], Duration::from_secs(30), &tls).await?;
    c.put(RANGE_KEY, vec![b'r'; 256], None)
        .await
        .map_err(|source| Error::Request {
            action: "write the range key".into(),
            source,
        })?;
    let mut runs = Vec::with_capacity(workloads.len());
    for &w in workloads {
        cluster.check_alive()?;
        let (common, workload) = suite_item(o, settings, w, &endpoints);
        let before = cpu_secs(&cluster.samples()?);
        let report = crate::run(&common, &workload).await?;
        let server_cpu_secs = cpu_secs(&cluster.samples()?) - before;
        eprintln!(
            "compare:   {:<16} {:>10.1} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms  errors {}",
            w.name(),
            report.throughput,
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.errors_total
        );
        runs.push(WorkloadRun {
            workload: w,
            report,
            server_cpu_secs,
        });
    }
    cluster.check_alive()?;
    let peak = cluster
        .samples()?
        .iter()
        .map(|s| s.rss_peak_bytes)
        .max()
        .unwrap_or(0);
    cluster.stop();
    Ok(SuiteRun {
        server: kind,
        members,
        round,
        workloads: runs,
        peak_rss_bytes: peak,
    })
}

async fn resource_run(
    o: &CompareOptions,
    kind: ServerKind,
    round: usize,
    dir: &Path,
    logs: &Path,
    settings: &Settings,
) -> Result<ResourceRun> {
    let bin = if kind == ServerKind::Ours {
        &o.server_bin
    } else {
        &o.etcd_bin
    };
    let mut cluster = Cluster::start(kind, bin, 1, dir, logs, settings).await?;
    let endpoints = cluster.endpoints();
    let mut common = Common::new(endpoints.clone());
    common.client = o.client;
    (common.conns, common.clients, common.total) = (o.conns, o.clients, Some(o.keys));
    common.request_timeout = Duration::from_secs(60);
    common.progress = Duration::from_secs(10);
    let load = crate::run(
        &common,
        &Workload::Put(PutOptions {
            key_size: 8,
            val_size: 256,
            key_space_size: o.keys.max(1),
            sequential_keys: true,
        }),
    )
    .await?;
    eprintln!(
        "compare:   loaded {} keys at {:.1} ops/s, {} errors",
        load.ops, load.throughput, load.errors_total
    );
    cluster.check_alive()?;
    let after_load = cluster.samples()?.first().copied().unwrap_or_default();
    let disk_after_load = dir_size(dir)?;
    let backend = dir.join("m0.etcd/member/snap/db");
    let backend_size = || std::fs::metadata(&backend).map(|m| m.len()).unwrap_or(0);
    let backend_after_load = backend_size();

    let tls = settings.tls.clone().unwrap_or_default();
    let mut c = connect_one(&endpoints[0], Duration::from_secs(600), &tls).await?;
    let req = |action: &str| {
        let action = action.to_owned();
        move |source| Error::Request { action, source }
    };
    let rev = c
        .get(
            "etcd-bench-ready-probe",
            Some(GetOptions::new().with_count_only()),
        )
        .await
        .map_err(req("read the current revision"))?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .map_err(req("compact"))?;
    c.defragment().await.map_err(req("defragment"))?;
    drop(c);
    let disk_after_defrag = dir_size(dir)?;
    let backend_after_defrag = backend_size();

    let ready = cluster.restart(Duration::from_secs(600)).await?;
    let after_restart = cluster.samples()?.first().copied().unwrap_or_default();
    cluster.stop();
    eprintln!(
        "compare:   restart to ready in {:.3} s",
        ready.as_secs_f64()
    );
    Ok(ResourceRun {
        server: kind,
        round,
        load,
        after_load,
        disk_after_load,
        disk_after_defrag,
        backend_after_load,
        backend_after_defrag,
        restart_ready_secs: ready.as_secs_f64(),
        after_restart,
    })
}

impl Comparison {
    fn header(&self) -> String {
        let m = &self.machine;
        let o = &self.options;
        let f = &self.fsync.latency_ms;
        format!(
            "Machine: {} cores ({}), {:.1} GiB memory, Linux {}, load average at start {}\n\
             Disk: {} × {} B write + fdatasync in {}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
             Settings (both servers): --quota-backend-bytes {} --snapshot-count {} --log-level {}\n\
             Suite: cluster sizes {:?}, {} round(s), {} s per workload, heavy load {} conns / {} clients, client library {:?}; \
             resources: {} key(s), {} round(s)\n\
             Values are medians over rounds; runs alternated etcd-server, etcd, etcd-server, etcd, …\n",
            m.cores,
            m.cpu_model,
            m.memory_bytes as f64 / (1024.0 * MIB),
            m.kernel,
            m.load_average,
            self.fsync.writes,
            self.fsync.write_bytes,
            o.data_root.display(),
            f.p50,
            f.p99,
            f.max,
            o.quota_backend_bytes,
            o.snapshot_count,
            o.log_level,
            o.members,
            o.rounds,
            o.duration.as_secs_f64(),
            o.conns,
            o.clients,
            o.client,
            o.keys,
            o.resource_rounds,
        )
    }

    /// Runs that had failed requests, one line each.
    fn errors(&self) -> String {
        let mut s = String::new();
        for r in &self.suite {
            for w in &r.workloads {
                for (kind, n) in &w.report.errors {
                    let _ = writeln!(
                        s,
                        "- {}, {} member(s), round {}, {}: {n} × {kind}",
                        r.server,
                        r.members,
                        r.round,
                        w.workload.name()
                    );
                }
            }
        }
        for r in &self.resources {
            for (kind, n) in &r.load.errors {
                let _ = writeln!(s, "- {}, load, round {}: {n} × {kind}", r.server, r.round);
            }
        }
        s
    }

    /// The summary as plain text.
    pub fn to_text(&self) -> String {
        let mut s = self.header();
        s.push('\n');
        s.push_str(&table::text(&self.rows));
        let e = self.errors();
        s.push_str(if e.is_empty() {
            "\nNo failed requests.\n"
        } else {
            "\nFailed requests:\n"
        });
        s.push_str(&e);
        s
    }

    /// The summary as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        for line in self.header().lines() {
            let _ = writeln!(s, "{line}  ");
        }
        s.push('\n');
        s.push_str(&table::markdown(&self.rows));
        let e = self.errors();
        s.push_str(if e.is_empty() {
            "\nNo failed requests.\n"
        } else {
            "\nFailed requests:\n\n"
        });
        s.push_str(&e);
        s
    }
}

#[cfg(test)]
mod tests;
