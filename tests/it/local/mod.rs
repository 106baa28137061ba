//! The local runtime with real `etcd-server` processes: scaling 1 → 3 → 1 under a steady write
//! load without losing an acknowledged write, HashKV equal across members at each size, state
//! adopted after a restart, a scale-in refused when it would break quorum, and Ctrl-C on the
//! `etcd-operator local` binary stopping every member.
//!
//! Each test has its own loopback range and free ports, so they run beside each other and
//! beside the formation tests.

mod backup;
mod backup_faults;
mod lifecycle;
mod operator_killed;
mod recovery;
mod scaling;
mod tls;

// Sections share their helpers.
#[allow(unused_imports)]
use lifecycle::*;
#[allow(unused_imports)]
use operator_killed::*;
#[allow(unused_imports)]
use scaling::*;
#[allow(unused_imports)]
use tls::*;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_operator::crd::EtcdClusterStatus;
use etcd_operator::local::{self, Options, Report};
use etcd_operator::names::LocalAddressing;
use etcd_operator::plan::Step;
use etcd_operator::runtime::Change;
use etcd_operator::status;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::formation::server_binary;

use etcd_test_kit::free_port_on as free_port;

// ---------------------------------------------------------------------------------------------
// The runtime under test and its load
// ---------------------------------------------------------------------------------------------

/// A local runtime running in the test's tokio runtime.
struct Runtime {
    /// The state directory, for members' logs on failure.
    state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), local::Error>>>,
    report: watch::Receiver<Option<Report>>,
}

impl Runtime {
    fn start(options: Options) -> Self {
        let state_dir = options.state_dir.clone();
        let (tx, report) = watch::channel(None);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(local::run(options, shutdown, tx));
        Self {
            state_dir,
            stop: Some(stop),
            task: Some(task),
            report,
        }
    }

    /// Waits (bounded) until a report satisfies `done`.
    async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Report) -> bool,
    ) -> Report {
        let result = tokio::time::timeout(timeout, async {
            loop {
                if let Some(r) = self.report.borrow_and_update().as_ref()
                    && done(r)
                {
                    return r.clone();
                }
                if self.report.changed().await.is_err() {
                    panic!("the local runtime ended while waiting for {what}");
                }
            }
        })
        .await;
        match result {
            Ok(r) => r,
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}; last report: {:#?}\n{}",
                self.report
                    .borrow()
                    .as_ref()
                    .map(|r| (&r.step, &r.status.members, &r.error)),
                self.logs()
            ),
        }
    }

    /// The last lines of each member's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let log = std::fs::read_to_string(entry.path().join("etcd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- {} ---\n{tail}\n", entry.path().display()));
        }
        out
    }

    /// Stops the runtime (which stops its members) and waits for it.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the runtime stops within 30 s")
                .expect("the runtime task")
                .expect("the runtime ends cleanly");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // A failed test: aborting drops the members' processes, which are killed on drop.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    spec: PathBuf,
    addressing: LocalAddressing,
}

impl Setup {
    fn new(base_ip: Ipv4Addr) -> Self {
        // KEEP_TEST_DIRS=1 keeps the members' data and logs for a look after a failure.
        let dir = tempfile::Builder::new()
            .disable_cleanup(std::env::var_os("KEEP_TEST_DIRS").is_some())
            .tempdir()
            .expect("tempdir");
        let client_port = free_port(base_ip);
        let mut peer_port = free_port(base_ip);
        while peer_port == client_port {
            peer_port = free_port(base_ip);
        }
        Self {
            spec: dir.path().join("cluster.yaml"),
            dir,
            addressing: LocalAddressing {
                base_ip,
                client_port,
                peer_port,
            },
        }
    }

    fn options(&self, restart_backoff: Duration) -> Options {
        let mut o = Options::new(self.spec.clone());
        o.state_dir = self.dir.path().join("state");
        o.addressing = self.addressing;
        o.server_bin = server_binary();
        o.poll_interval = Duration::from_millis(200);
        o.restart_backoff = restart_backoff;
        o
    }

    /// Writes the cluster file with `replicas` (atomically, as an editor saving it would).
    fn set_replicas(&self, replicas: i32) {
        self.write_spec(replicas, "");
    }

    /// Writes the cluster file with `replicas` and `server` lines (indented under `server:`).
    fn write_spec(&self, replicas: i32, server: &str) {
        let yaml = format!(
            "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: local\n\
             spec:\n  replicas: {replicas}\n  server:\n    heartbeatIntervalMs: 50\n    electionTimeoutMs: 500\n{server}"
        );
        let tmp = self.spec.with_extension("tmp");
        std::fs::write(&tmp, yaml).expect("write spec");
        std::fs::rename(&tmp, &self.spec).expect("rename spec");
    }

    fn endpoint(&self, i: i32) -> String {
        format!(
            "http://{}:{}",
            self.addressing.ip(i),
            self.addressing.client_port
        )
    }

    fn member_dir(&self, i: i32) -> PathBuf {
        self.dir.path().join("state").join(format!("local-{i}"))
    }
}

/// Whether the report shows `n` healthy voters, one leader, and nothing left to do.
fn in_sync(n: usize) -> impl Fn(&Report) -> bool {
    move |r: &Report| {
        r.step == Step::InSync
            && r.replicas == n as i32
            && r.status.members.len() == n
            && r.status
                .members
                .iter()
                .all(|m| m.healthy && !m.is_learner && !m.name.is_empty())
            && r.status.members.iter().filter(|m| m.is_leader).count() == 1
    }
}

async fn client(endpoint: &str) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .expect("connect")
}

/// HashKV at one revision is equal on every member.
async fn assert_hashes_agree(setup: &Setup, n: i32) {
    let rev = client(&setup.endpoint(0))
        .await
        .get("probe", None)
        .await
        .expect("linearizable get")
        .header()
        .expect("header")
        .revision();
    let mut hashes = Vec::new();
    for i in 0..n {
        let mut c = client(&setup.endpoint(i)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let hash = loop {
            match c.hash_kv(rev).await {
                Ok(h) => break h.hash(),
                // A member that has not applied `rev` yet answers with a future-revision error.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("HashKV({rev}) on member {i}: {e}"),
            }
        };
        hashes.push(hash);
    }
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "HashKV at revision {rev} differs across members: {hashes:x?}"
    );
}

/// Writes `load/<seq>` through member 0 until stopped; returns the acknowledged sequence
/// numbers. `acked` counts them as they are acknowledged.
fn write_load(
    endpoint: String,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
) -> JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut c = client(&endpoint).await;
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            if c.put(format!("load/{seq:08}"), seq.to_string(), None)
                .await
                .is_ok()
            {
                acked.push(seq);
                acked_count.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    })
}

/// Reads the number of `load/` keys linearizably through member 0 until stopped. A read that
/// fails is retried (a client survives leader changes that way); each answer must count at
/// least the writes acknowledged before the read was sent. Returns the reads that succeeded
/// and the longest stretch without an answer.
fn read_load(
    endpoint: String,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
) -> JoinHandle<(u64, Duration)> {
    tokio::spawn(async move {
        let mut c = client(&endpoint).await;
        let mut reads = 0u64;
        let mut longest = Duration::ZERO;
        let mut last_ok = tokio::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let floor = acked_count.load(Ordering::SeqCst);
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only();
            if let Ok(r) = c.get("load/", Some(opts)).await {
                assert!(
                    r.count() as u64 >= floor,
                    "a linearizable read counted {} keys, but {floor} writes were acknowledged before it",
                    r.count()
                );
                reads += 1;
                longest = longest.max(last_ok.elapsed());
                last_ok = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (reads, longest.max(last_ok.elapsed()))
    })
}

fn condition<'a>(status: &'a EtcdClusterStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status::find(status, type_).expect("condition");
    (c.status.as_str(), c.reason.as_str())
}

/// Every acknowledged `load/` write is present on member 0.
async fn assert_no_acked_write_lost(setup: &Setup, acked: &[u64]) -> BTreeSet<u64> {
    let kvs = client(&setup.endpoint(0))
        .await
        .get("load/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get load");
    let present: BTreeSet<u64> = kvs
        .kvs()
        .iter()
        .map(|kv| kv.value_str().expect("utf-8").parse().expect("seq"))
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|s| !present.contains(s))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    present
}
