//! Multi-member Raft integration tests with real processes: leader failure and rejoin, a
//! 5-member cluster, restart of every member after SIGKILL, membership changes (learner added
//! and caught up by snapshot, promoted, another member removed), strict reconfiguration checks,
//! MoveLeader, the same membership operations through etcdctl 3.4.23, learner RPC gating, and
//! leases and watches across members.

mod etcdctl;
mod five_members;
mod force_new_cluster;
mod leader_failure;
mod leases_watches;
mod membership_changes;
mod moveleader;
mod restart_all;
mod strict_reconfig;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, Error, EventType, GetOptions, MemberAddOptions, PutOptions,
    WatchOptions,
};

use crate::harness::{Cluster, Kind, Proc, Spec, etcdctl, etcdctl_run, free_port, require};

/// Faster Raft timing than the defaults, so failovers take well under a second.
const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];
/// The election timeout the tests run with.
const ELECTION: Duration = Duration::from_millis(500);
/// How long any single expected outcome may take.
const STEP: Duration = Duration::from_secs(15);
/// etcd's `HealthInterval`: a peer counts as started once connected this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

const NOT_LEARNER_RPC: &str = "etcdserver: rpc not supported for learner";
const NOT_A_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
const NOT_LEADER: &str = "etcdserver: not leader";
const BAD_TRANSFEREE: &str = "etcdserver: bad leader transferee";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Starts an `n`-member cluster with the fast timing flags plus `extra`.
async fn start(n: usize, extra: &[&str]) -> Cluster {
    let flags: Vec<String> = FAST.iter().chain(extra).map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        Cluster::start(n, &refs)
    })
    .await
    .unwrap()
}

/// A client for one endpoint. The request timeout is above the server's own (5 s + 2 election
/// timeouts), so the server's error is what the test sees.
async fn client(ep: &str) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(12));
    Client::connect([ep], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connect {ep}: {e}"))
}

/// The gRPC message of an error (or its Display for non-gRPC errors).
fn msg(e: &Error) -> String {
    match e {
        Error::GRpcStatus(s) => s.message().to_owned(),
        other => other.to_string(),
    }
}

/// Expects `r` to fail with exactly `want` as its gRPC message.
fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, want: &str, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected error {want:?}, got success {v:?}"),
        Err(e) => assert_eq!(msg(&e), want, "{what}: wrong error ({e:?})"),
    }
}

/// Like [`expect_err`], but records a mismatch in `wrong` instead of failing at once, so one
/// run reports every divergence.
fn check_err<T: std::fmt::Debug>(
    wrong: &mut Vec<String>,
    r: Result<T, Error>,
    want: &str,
    what: &str,
) {
    match r {
        Ok(v) => wrong.push(format!(
            "{what}: expected error {want:?}, got success {v:?}"
        )),
        Err(e) if msg(&e) == want => {}
        Err(e) => wrong.push(format!(
            "{what}: expected error {want:?}, got {:?}",
            msg(&e)
        )),
    }
}

/// Retries `f` (bounded by `timeout`) while it fails with one of the `transient` messages.
async fn retry<T, F, Fut>(
    timeout: Duration,
    transient: &[&str],
    what: &str,
    mut f: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Err(e) if transient.contains(&msg(&e).as_str()) && Instant::now() < deadline => {
                eprintln!("{what}: {} (retrying)", msg(&e));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => return r,
        }
    }
}

/// Runs a blocking harness call (process spawn / readiness wait) from async test code.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// All member logs, labelled, for assertion messages.
fn logs(c: &Cluster) -> String {
    c.members
        .iter()
        .map(|m| format!("\n===== {} log =====\n{}", m.name, tail(&m.log(), 60)))
        .collect()
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Member ID of the member serving `ep`, from Status.
async fn member_id(ep: &str) -> u64 {
    let s = client(ep)
        .await
        .status()
        .await
        .unwrap_or_else(|e| panic!("status {ep}: {e}"));
    s.header().unwrap().member_id()
}

/// (member ID, leader ID, is_learner) of the member serving `ep`.
async fn status(ep: &str) -> Result<(u64, u64, bool), Error> {
    let mut c = client(ep).await;
    let s = c.status().await?;
    Ok((
        s.header().map(|h| h.member_id()).unwrap_or(0),
        s.leader(),
        s.is_learner(),
    ))
}

/// Waits until one of the members at `idx` reports itself leader and all the others agree.
/// Returns the leader's index.
async fn wait_agreed_leader(c: &Cluster, idx: &[usize], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::new();
        for &i in idx {
            views.push(status(&c.members[i].endpoint()).await.ok());
        }
        if let Some(Some((_, lead, _))) = views.first()
            && *lead != 0
            && views.iter().all(|v| v.is_some_and(|v| v.1 == *lead))
            && let Some(pos) = views.iter().position(|v| v.is_some_and(|v| v.0 == *lead))
        {
            return idx[pos];
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader among {idx:?} within {timeout:?}: {views:?}{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks every endpoint in `eps` holds the same data: takes the current revision from a
/// linearizable read on `eps[0]`, waits until every member has applied it, then compares
/// HashKV at that revision. Returns the revision.
async fn assert_converged(eps: &[String], what: &str) -> i64 {
    // A member promoted a moment ago may not have applied its promotion yet, and refuses
    // linearizable reads as a learner until it has (as etcd does).
    let rev = {
        let c = client(&eps[0]).await;
        retry(STEP, &[NOT_LEARNER_RPC], what, || {
            let mut c = c.clone();
            async move { c.get("converge-probe", None).await }
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: read on {}: {e}", eps[0]))
        .header()
        .unwrap()
        .revision()
    };
    let mut hashes = Vec::new();
    for ep in eps {
        let mut c = client(ep).await;
        let deadline = Instant::now() + STEP;
        loop {
            let r = c
                .get(
                    "converge-probe",
                    Some(GetOptions::new().with_serializable()),
                )
                .await;
            if r.as_ref()
                .is_ok_and(|r| r.header().unwrap().revision() >= rev)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {ep} did not reach revision {rev}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let h = c
            .hash_kv(rev)
            .await
            .unwrap_or_else(|e| panic!("{what}: hash_kv({rev}) on {ep}: {e}"));
        hashes.push((ep.clone(), h.hash(), h.hash_revision()));
    }
    assert!(
        hashes
            .windows(2)
            .all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2),
        "{what}: HashKV at revision {rev} differs: {hashes:?}"
    );
    rev
}

/// Key → value under `prefix` on `ep` (linearizable unless `serializable`).
async fn dump(
    ep: &str,
    prefix: &str,
    serializable: bool,
) -> Result<BTreeMap<String, String>, Error> {
    let mut c = client(ep).await;
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let r = c.get(prefix, Some(opts)).await?;
    Ok(r.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect())
}

/// Asserts every acknowledged `(key, value)` is on `ep` (linearizable read).
async fn assert_has_acked(ep: &str, prefix: &str, acked: &[(String, String)], what: &str) {
    let got = dump(ep, prefix, false)
        .await
        .unwrap_or_else(|e| panic!("{what}: read on {ep}: {e}"));
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: {} of {} acknowledged writes missing on {ep}: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Writes `prefix{i}` keys through `ep` until `stop`; records the acknowledged ones.
fn spawn_writer(
    ep: String,
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut c = client(&ep).await;
        let mut i = 0u32;
        while !stop.load(Ordering::SeqCst) {
            let (k, v) = (format!("{prefix}{i:05}"), format!("value-{i}"));
            i += 1;
            match tokio::time::timeout(Duration::from_secs(3), c.put(k.clone(), v.clone(), None))
                .await
            {
                Ok(Ok(_)) => acked.lock().unwrap().push((k, v)),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

/// Waits until `acked` holds at least `n` entries.
async fn wait_acked(acked: &Mutex<Vec<(String, String)>>, n: usize, what: &str) {
    let deadline = Instant::now() + STEP;
    while acked.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} writes acknowledged",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A spec for a new member `name` joining `c` (which lists `initial_cluster`).
fn join_spec(
    c: &Cluster,
    name: &str,
    peer_url: &str,
    initial_cluster: String,
    extra: &[&str],
) -> Spec {
    Spec {
        name: name.into(),
        client_url: format!("http://127.0.0.1:{}", free_port()),
        peer_url: peer_url.into(),
        advertise_peer_url: peer_url.into(),
        initial_cluster,
        initial_cluster_state: "existing".into(),
        data_dir: c.dir.path().join(name),
        extra: FAST.iter().chain(extra).map(|s| s.to_string()).collect(),
    }
}

/// `--initial-cluster` for the running members of `c` plus `name=peer_url`.
fn initial_cluster_with(c: &Cluster, name: &str, peer_url: &str) -> String {
    let mut parts: Vec<String> = c
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.advertise_peer_url))
        .collect();
    parts.push(format!("{name}={peer_url}"));
    parts.join(",")
}

/// Waits until `ep` answers a serializable read of `key` with `value`.
async fn wait_serializable(ep: &str, key: &str, value: &str, c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(2));
        if let Ok(mut cl) = Client::connect([ep], Some(opts)).await
            && let Ok(r) = cl
                .get(key, Some(GetOptions::new().with_serializable()))
                .await
            && r.kvs()
                .first()
                .is_some_and(|kv| kv.value() == value.as_bytes())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ep} never served {key}={value} (serializable){}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the process exits on its own.
async fn wait_exit(p: &mut Proc, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while p.is_running() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// The member list as `(id, name, client URLs, is_learner)` sorted by ID.
async fn members(ep: &str) -> Vec<(u64, String, Vec<String>, bool)> {
    let r = client(ep)
        .await
        .member_list()
        .await
        .unwrap_or_else(|e| panic!("member list on {ep}: {e}"));
    let mut v: Vec<_> = r
        .members()
        .iter()
        .map(|m| {
            (
                m.id(),
                m.name().to_owned(),
                m.client_urls().to_vec(),
                m.is_learner(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits until the member list on `ep` equals `want` (published names and client URLs).
async fn wait_members(ep: &str, want: &[(u64, String, Vec<String>, bool)], c: &Cluster) {
    let mut want = want.to_vec();
    want.sort();
    let deadline = Instant::now() + STEP;
    loop {
        let got = members(ep).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member list on {ep}:\n got  {got:?}\n want {want:?}{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the member list should say about the running members of `c`.
async fn expected_members(c: &mut Cluster) -> Vec<(u64, String, Vec<String>, bool)> {
    let mut v = Vec::new();
    for m in c.members.iter_mut() {
        if m.is_running() {
            let (id, _, learner) = status(&m.endpoint()).await.unwrap();
            v.push((id, m.name.clone(), vec![m.client_url.clone()], learner));
        }
    }
    v
}
