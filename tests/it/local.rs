//! The local runtime with real `etcd-server` processes: scaling 1 → 3 → 1 under a steady write
//! load without losing an acknowledged write, HashKV equal across members at each size, state
//! adopted after a restart, a scale-in refused when it would break quorum, and Ctrl-C on the
//! `etcd-operator local` binary stopping every member.
//!
//! Each test has its own loopback range and free ports, so they run beside each other and
//! beside the formation tests.

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
        let dir = tempfile::tempdir().expect("tempdir");
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

/// Scales through `sizes` (starting at 1 and ending at 1) under a steady write load and
/// linearizable reads: HashKV agrees at every size, no acknowledged write is lost, reads are
/// answered throughout (retrying through leader changes), the removed members' directories
/// are gone, and a restarted runtime adopts the remaining member with all its data.
async fn scale_under_load(base_ip: Ipv4Addr, sizes: &[i32]) {
    let setup = Setup::new(base_ip);
    setup.set_replicas(1);
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let step = Duration::from_secs(30);
    let first = rt.wait("1 member in sync", step, in_sync(1)).await;
    let cluster_id = first.status.cluster_id.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let load = write_load(setup.endpoint(0), stop.clone(), acked_count.clone());
    let reader = read_load(setup.endpoint(0), stop.clone(), acked_count.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let peak = sizes.iter().copied().max().unwrap_or(1);
    for &n in sizes {
        setup.set_replicas(n);
        let r = rt
            .wait(&format!("{n} members in sync"), step, in_sync(n as usize))
            .await;
        assert_eq!(
            r.status.cluster_id, cluster_id,
            "the same cluster throughout"
        );
        assert_hashes_agree(&setup, n).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load task");
    let (reads, longest) = reader.await.expect("reader task");
    assert!(
        acked.len() > 20,
        "the load ran: {} writes acknowledged",
        acked.len()
    );
    assert!(reads > 20, "linearizable reads answered: {reads}");
    assert!(
        longest < Duration::from_secs(10),
        "linearizable reads went unanswered for {longest:?}"
    );
    for i in 1..peak {
        assert!(
            !setup.member_dir(i).exists(),
            "local-{i}'s directory is deleted after its removal"
        );
    }
    let present = assert_no_acked_write_lost(&setup, &acked).await;

    // Restart: the runtime adopts the member and its data, with the same configuration
    // (the same cluster token: nothing to roll out).
    let config = std::fs::read_to_string(setup.member_dir(0).join("etcd.yaml")).expect("config");
    rt.shutdown().await;
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let again = rt.wait("1 adopted member in sync", step, in_sync(1)).await;
    assert_eq!(
        std::fs::read_to_string(setup.member_dir(0).join("etcd.yaml")).expect("config"),
        config,
        "the adopted member keeps its configuration"
    );
    assert_eq!(
        again.status.cluster_id, cluster_id,
        "the same cluster after a restart"
    );
    let count = client(&setup.endpoint(0))
        .await
        .get(
            "load/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count")
        .count();
    assert_eq!(
        count as usize,
        present.len(),
        "every key survives the restart"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_one_two_one_under_load_and_adopts_its_state() {
    scale_under_load(Ipv4Addr::new(127, 0, 0, 40), &[2, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_one_three_five_three_one_under_load_with_linearizable_reads() {
    scale_under_load(Ipv4Addr::new(127, 0, 0, 60), &[3, 5, 3, 1]).await;
}

fn pid_of(setup: &Setup, i: i32) -> i32 {
    std::fs::read_to_string(setup.member_dir(i).join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

fn signal(pid: i32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

async fn member_id(endpoint: &str) -> u64 {
    client(endpoint)
        .await
        .status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .member_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_a_member_whose_data_was_lost() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 90));
    setup.set_replicas(3);
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let step = Duration::from_secs(30);
    rt.wait("3 members in sync", step, in_sync(3)).await;
    let mut c = client(&setup.endpoint(0)).await;
    for i in 0..100 {
        c.put(format!("keep/{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let old_id = member_id(&setup.endpoint(1)).await;

    // The disk of local-1 is gone: kill it and empty its data directory.
    signal(pid_of(&setup, 1), rustix::process::Signal::KILL);
    std::fs::remove_dir_all(setup.member_dir(1).join("data")).expect("wipe");
    let r = rt
        .wait("local-1 replaced", Duration::from_secs(60), |r| {
            in_sync(3)(r)
                && r.changes
                    .iter()
                    .any(|c| matches!(c, Change::Readded { name, .. } if name == "local-1"))
        })
        .await;
    let order: Vec<&str> = r
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::LostRemoved { name, .. } => Some(("removed", name)),
            Change::Readded { name, .. } => Some(("added", name)),
            Change::Promoted { name, .. } => Some(("promoted", name)),
            _ => None,
        })
        .filter(|(_, name)| name.as_str() == "local-1")
        .map(|(what, _)| what)
        .collect();
    assert_eq!(order, ["removed", "added", "promoted"], "{:?}", r.changes);
    let new_id = member_id(&setup.endpoint(1)).await;
    assert_ne!(new_id, old_id, "the replacement is a new member");
    assert_hashes_agree(&setup, 3).await;
    let got = client(&setup.endpoint(1))
        .await
        .get(
            "keep/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_serializable(),
            ),
        )
        .await
        .expect("serializable get on the replacement")
        .count();
    assert_eq!(got, 100, "the replacement has every key");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_restarts_followers_first_and_the_leader_last() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 110));
    setup.set_replicas(3);
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let step = Duration::from_secs(30);
    let before = rt.wait("3 members in sync", step, in_sync(3)).await;
    let leader = before
        .status
        .members
        .iter()
        .find(|m| m.is_leader)
        .expect("a leader")
        .name
        .clone();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let load = write_load(setup.endpoint(0), stop.clone(), acked_count.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before = acked_count.load(Ordering::SeqCst);

    // A server flag changes for every member.
    setup.write_spec(3, "    snapshotCount: 5000\n");
    let mut most_down = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let r = rt.report.borrow_and_update().clone().expect("report");
        let down = r.status.members.iter().filter(|m| !m.healthy).count()
            + (3 - r.status.members.len().min(3));
        most_down = most_down.max(down);
        let restarted = r
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Restarted { .. }))
            .count();
        if restarted == 3 && in_sync(3)(&r) {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rolling update did not finish: {:?}\n{}",
            r.changes,
            rt.logs()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rt.report.changed()).await;
    };
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load");

    let seq: Vec<String> = done
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Restarted { names } => Some(format!("restart {}", names.join(","))),
            Change::LeaderMoved { from, .. } => Some(format!("move-leader from {from}")),
            _ => None,
        })
        .collect();
    assert_eq!(seq.len(), 4, "{seq:?}");
    assert_eq!(seq[2], format!("move-leader from {leader}"), "{seq:?}");
    assert_eq!(seq[3], format!("restart {leader}"), "{seq:?}");
    assert!(
        !seq[..2].contains(&format!("restart {leader}")),
        "the leader was restarted before the followers: {seq:?}"
    );
    assert!(most_down <= 1, "{most_down} members were down at once");
    for i in 0..3 {
        let config =
            std::fs::read_to_string(setup.member_dir(i).join("etcd.yaml")).expect("config");
        assert!(config.contains("snapshot-count: 5000"), "{config}");
    }
    assert!(
        acked.len() as u64 > acked_before + 10,
        "the write load continued through the update: {} acknowledged, {acked_before} before",
        acked.len()
    );
    assert_no_acked_write_lost(&setup, &acked).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_scale_in_that_would_break_quorum() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 50));
    setup.set_replicas(3);
    // A long restart backoff keeps the killed member down for the whole test.
    let mut rt = Runtime::start(setup.options(Duration::from_secs(120)));
    rt.wait("3 members in sync", Duration::from_secs(20), in_sync(3))
        .await;

    let pid: i32 = std::fs::read_to_string(setup.member_dir(1).join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill local-1");
    rt.wait("local-1 unhealthy", Duration::from_secs(10), |r| {
        r.status
            .members
            .iter()
            .any(|m| m.name == "local-1" && !m.healthy)
    })
    .await;

    // Removing local-2 (healthy) would leave local-0 as the only healthy one of 2 voters.
    setup.set_replicas(2);
    let r = rt
        .wait(
            "the scale-in refused",
            Duration::from_secs(10),
            |r| matches!(&r.step, Step::ScaleInRefused { name, .. } if name == "local-2"),
        )
        .await;
    assert_eq!(
        condition(&r.status, status::DEGRADED),
        ("True", "QuorumAtRisk")
    );
    assert_eq!(
        condition(&r.status, status::PROGRESSING),
        ("False", "ScaleInRefused")
    );

    // And it stays refused: nothing is removed while local-1 is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = rt.report.borrow().clone().expect("report");
    assert!(
        matches!(r.step, Step::ScaleInRefused { .. }),
        "{:?}",
        r.step
    );
    assert_eq!(r.replicas, 3);
    let members = client(&setup.endpoint(0))
        .await
        .member_list()
        .await
        .expect("member list");
    assert_eq!(members.members().len(), 3, "no member was removed");
    assert!(
        setup.member_dir(2).join("data").exists(),
        "local-2 keeps its data"
    );

    // 2 of 3 down: nothing is removed, whatever the spec asks.
    signal(pid_of(&setup, 2), rustix::process::Signal::KILL);
    setup.set_replicas(1);
    rt.wait("local-2 down too", Duration::from_secs(10), |r| {
        r.status
            .members
            .iter()
            .any(|m| m.name == "local-2" && !m.healthy)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let r = rt.report.borrow_and_update().clone().expect("report");
        assert!(
            !matches!(
                r.step,
                Step::RemoveMember { .. } | Step::RemoveLostMember { .. } | Step::MoveLeader { .. }
            ),
            "a membership change with 2 of 3 down: {:?}",
            r.step
        );
        assert_eq!(r.replicas, 3, "nothing shrinks with 2 of 3 down");
        assert!(
            !r.changes
                .iter()
                .any(|c| matches!(c, Change::Removed { .. })),
            "{:?}",
            r.changes
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rt.report.changed()).await;
    }
    for i in 0..3 {
        assert!(
            setup.member_dir(i).join("data").exists(),
            "local-{i} keeps its data"
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_every_member() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 80));
    setup.set_replicas(1);
    let out = setup.dir.path().join("out.txt");
    let a = setup.addressing;
    let operator = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .arg("local")
        .arg("-f")
        .arg(&setup.spec)
        .arg("--state-dir")
        .arg(setup.dir.path().join("state"))
        .args(["--base-ip", &a.base_ip.to_string()])
        .args(["--client-port", &a.client_port.to_string()])
        .args(["--peer-port", &a.peer_port.to_string()])
        .arg("--etcd-server")
        .arg(server_binary())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd-operator local");
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = operator.id();
    let mut guard = Guard(operator);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        if let Ok(mut c) = etcd_client::Client::connect([setup.endpoint(0)], Some(options)).await
            && c.put("ctrl-c", "before", None).await.is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member never served; output:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let member: i32 = std::fs::read_to_string(setup.member_dir(0).join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::INT,
    )
    .expect("SIGINT");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd-operator local did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "exit {status}; output:\n{output}");
    assert!(output.contains("stopped local-0"), "{output}");
    assert!(
        rustix::process::test_kill_process(rustix::process::Pid::from_raw(member).expect("pid"))
            .is_err(),
        "the member process is gone"
    );
    assert!(
        !setup.member_dir(0).join("etcd.pid").exists(),
        "the pid file is removed"
    );
}

/// `etcd-operator local` as a process, and every member process it leaves behind, killed
/// when the test ends however it ends.
struct OperatorProcess {
    child: std::process::Child,
    out: PathBuf,
    state_dir: PathBuf,
}

impl OperatorProcess {
    fn start(setup: &Setup, env: &[(&str, &str)]) -> Self {
        let out = setup.dir.path().join(format!(
            "out-{}.txt",
            std::time::UNIX_EPOCH
                .elapsed()
                .unwrap_or_default()
                .as_nanos()
        ));
        let state_dir = setup.dir.path().join("state");
        let a = setup.addressing;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
            .arg("local")
            .arg("-f")
            .arg(&setup.spec)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--base-ip", &a.base_ip.to_string()])
            .args(["--client-port", &a.client_port.to_string()])
            .args(["--peer-port", &a.peer_port.to_string()])
            .arg("--etcd-server")
            .arg(server_binary())
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start etcd-operator local");
        Self {
            child,
            out,
            state_dir,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit on its own.
    async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd-operator local did not exit; output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for entry in std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("etcd.pid"))
                && let Ok(pid) = pid.trim().parse()
            {
                signal(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Waits (bounded) until member 0's list shows `voters` started voting members and no learner.
async fn wait_voters(setup: &Setup, voters: usize, what: &str, op: &OperatorProcess) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(2));
        if let Ok(mut c) = etcd_client::Client::connect([setup.endpoint(0)], Some(options)).await
            && let Ok(list) = c.member_list().await
            && list.members().len() == voters
            && list
                .members()
                .iter()
                .all(|m| !m.is_learner() && !m.name().is_empty())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not {voters} started voters; output:\n{}",
            op.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator dies right after `MemberAdd` (a failpoint), before the new member's process
/// exists. The member it left running keeps serving; a restarted operator adopts it, finds
/// the added learner without a process, starts it and promotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_after_member_add_completes_the_step_on_restart() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 130));
    setup.set_replicas(1);
    let mut op = OperatorProcess::start(&setup, &[("ETCD_OPERATOR_EXIT_AFTER", "MemberAdded")]);
    wait_voters(&setup, 1, "bootstrap", &op).await;
    let member0 = pid_of(&setup, 0);

    setup.set_replicas(2);
    let status = op.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(86), "output:\n{}", op.output());
    assert!(
        !setup.member_dir(1).join("etcd.pid").exists(),
        "the new member never started"
    );
    let list = client(&setup.endpoint(0))
        .await
        .member_list()
        .await
        .expect("member 0 still serves");
    assert_eq!(list.members().len(), 2, "the learner was added");
    assert!(
        list.members()
            .iter()
            .any(|m| m.is_learner() && m.name().is_empty()),
        "an unstarted learner: {:?}",
        list.members()
    );

    let op2 = OperatorProcess::start(&setup, &[]);
    wait_voters(&setup, 2, "after the restart", &op2).await;
    let output = op2.output();
    assert!(
        output.contains(&format!("adopted local-0 (pid {member0})")),
        "member 0 is adopted, not restarted:\n{output}"
    );
    assert!(output.contains("started local-1"), "{output}");
    let mut c = client(&setup.endpoint(1)).await;
    c.put("after-crash", "ok", None)
        .await
        .expect("put via the new member");
    drop(op);
    drop(op2);
}
