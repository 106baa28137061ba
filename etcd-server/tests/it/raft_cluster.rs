//! Multi-member Raft integration tests with real processes: leader failure and rejoin, a
//! 5-member cluster, restart of every member after SIGKILL, membership changes (learner added
//! and caught up by snapshot, promoted, another member removed), strict reconfiguration checks,
//! MoveLeader, the same membership operations through etcdctl 3.4.23, learner RPC gating, and
//! leases and watches across members.

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
    let rev = {
        let mut c = client(&eps[0]).await;
        c.get("converge-probe", None)
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

// ---------------------------------------------------------------------------------------------
// 1. Leader failure
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn leader_failure_elects_new_leader_keeps_acked_writes_and_old_leader_rejoins() {
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // A writer through every member, acknowledged writes recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            spawn_writer(
                c.members[i].endpoint(),
                format!("lf/m{i}/"),
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    wait_acked(&acked, 60, "before the kill").await;

    c.members[leader].kill();
    let killed_at = Instant::now();
    let new_leader = wait_agreed_leader(&c, &survivors, STEP).await;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // Randomized election timeout is in [1, 2) election timeouts, plus a pre-vote round.
    assert!(
        failover < ELECTION * 8,
        "failover took {failover:?}{}",
        logs(&c)
    );

    let n = acked.lock().unwrap().len();
    wait_acked(&acked, n + 60, "after failover").await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<(String, String)> = acked.lock().unwrap().clone();
    for &i in &survivors {
        assert_has_acked(
            &c.members[i].endpoint(),
            "lf/",
            &acked,
            "survivor after leader kill",
        )
        .await;
    }

    // The old leader rejoins and catches up.
    blocking(|| c.members[leader].spawn());
    let mut k = client(&c.members[leader].endpoint()).await;
    k.put("lf/after-rejoin", "x", None).await.unwrap();
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    assert_converged(&c.endpoints(), "after old leader rejoined").await;
    assert_has_acked(
        &c.members[leader].endpoint(),
        "lf/",
        &acked,
        "rejoined old leader",
    )
    .await;
    let on_old = dump(&c.members[leader].endpoint(), "lf/", true)
        .await
        .unwrap();
    let on_new = dump(&c.members[new_leader].endpoint(), "lf/", true)
        .await
        .unwrap();
    assert_eq!(on_old, on_new, "rejoined member's data differs");
}

// ---------------------------------------------------------------------------------------------
// 2. Five members
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn five_members_write_through_each_and_read_linearizably_from_each() {
    let mut c = start(5, &[]).await;
    wait_agreed_leader(&c, &[0, 1, 2, 3, 4], STEP).await;
    let eps = c.endpoints();
    // Writes through every member, one after the other; each is visible to a linearizable
    // read on every member right after it is acknowledged.
    for (i, ep) in eps.iter().enumerate() {
        let mut w = client(ep).await;
        let put = w
            .put(format!("five/{i}"), format!("v{i}"), None)
            .await
            .unwrap();
        let rev = put.header().unwrap().revision();
        for (j, ep2) in eps.iter().enumerate() {
            let r = client(ep2)
                .await
                .get(format!("five/{i}"), None)
                .await
                .unwrap();
            assert_eq!(r.kvs().len(), 1, "write {i} not visible on member {j}");
            assert_eq!(r.kvs()[0].value_str().unwrap(), format!("v{i}"));
            assert_eq!(r.kvs()[0].mod_revision(), rev, "member {j}");
            assert!(
                r.header().unwrap().revision() >= rev,
                "member {j} read is stale"
            );
        }
    }
    // Concurrent writes through all members.
    let mut tasks = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = client(&ep).await;
            for j in 0..20 {
                w.put(format!("five/c/{i}/{j}"), "x", None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for ep in &eps {
        let r = client(ep)
            .await
            .get(
                "five/c/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!(r.count(), 100, "linearizable count on {ep}");
    }
    let want = expected_members(&mut c).await;
    assert!(want.iter().all(|m| !m.3));
    for ep in &eps {
        wait_members(ep, &want, &c).await;
    }
    assert_converged(&eps, "five members").await;
}

// ---------------------------------------------------------------------------------------------
// 3. Restart every member after SIGKILL
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn all_members_sigkilled_and_restarted_lose_no_acknowledged_write() {
    let mut c = start(3, &[]).await;
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            spawn_writer(
                c.members[i].endpoint(),
                format!("ra/m{i}/"),
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    wait_acked(&acked, 150, "before the kill").await;
    // SIGKILL every member while writes are in flight.
    for m in c.members.iter_mut() {
        m.kill();
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<(String, String)> = acked.lock().unwrap().clone();
    blocking(|| {
        for m in c.members.iter_mut() {
            m.spawn_no_wait();
        }
        for m in c.members.iter_mut() {
            m.wait_ready(Duration::from_secs(30));
        }
    });
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    for m in &c.members {
        assert_has_acked(
            &m.endpoint(),
            "ra/",
            &acked,
            "after restarting every member",
        )
        .await;
    }
    client(&c.members[0].endpoint())
        .await
        .put("ra/after", "x", None)
        .await
        .unwrap();
    assert_converged(&c.endpoints(), "after restarting every member").await;
}

/// The in-memory Raft log keeps only the last ~10,000 applied entries (more are durable in
/// the backend), whatever `--snapshot-count` says: a follower that fell further behind catches
/// up by snapshot, and ends with the same data.
#[tokio::test(flavor = "multi_thread")]
async fn follower_behind_the_trimmed_in_memory_log_catches_up_by_snapshot() {
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let behind = (leader + 1) % 3;
    let ep = c.members[leader].endpoint();
    blocking(|| c.members[behind].stop());
    // 25,000 entries: past LOG_KEEP + LOG_TRIM_STEP (20,000), far below --snapshot-count.
    let writers: Vec<_> = (0..50)
        .map(|w| {
            let ep = ep.clone();
            tokio::spawn(async move {
                let mut cl = client(&ep).await;
                for i in 0..500 {
                    cl.put(format!("trim/{w:02}/{i:03}"), "v", None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    blocking(|| {
        c.members[behind].spawn_no_wait();
        c.members[behind].wait_ready(Duration::from_secs(30));
    });
    assert_converged(&c.endpoints(), "after the follower caught up").await;
    assert!(
        c.members[behind]
            .log()
            .contains("installed snapshot from leader"),
        "the follower caught up without a snapshot, so the leader kept the entries in memory{}",
        logs(&c)
    );
    let got = dump(&c.members[behind].endpoint(), "trim/", true)
        .await
        .unwrap();
    assert_eq!(got.len(), 25_000);
}

// ---------------------------------------------------------------------------------------------
// 4. Membership changes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn learner_joins_by_snapshot_is_promoted_and_another_member_is_removed() {
    let extra = ["--snapshot-count", "50"];
    let mut c = start(3, &extra).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let leader_ep = c.members[leader].endpoint();
    let mut lc = client(&leader_ep).await;

    // Enough writes that every member compacts its Raft log.
    for i in 0..300 {
        lc.put(format!("mc/{:03}", i % 200), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + STEP;
    while !c.members[leader].log().contains("compacted raft log") {
        assert!(
            Instant::now() < deadline,
            "leader never compacted its raft log{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = dump(&leader_ep, "mc/", false).await.unwrap();
    assert_eq!(before.len(), 200);

    // Errors first: promote a voter, remove an unknown member.
    let voter_id = member_id(&c.members[(leader + 1) % 3].endpoint()).await;
    expect_err(
        lc.member_promote(voter_id).await,
        NOT_A_LEARNER,
        "promote a voter",
    );
    expect_err(
        lc.member_remove(0x1234_5678).await,
        MEMBER_NOT_FOUND,
        "remove an unknown member",
    );

    // Add a learner. etcd 3.4.23 refuses any MemberAdd (learners included) with "unhealthy
    // cluster" until this member has been connected to every voter for HealthInterval
    // (observed), so retry that.
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], "add learner", || {
        let mut lc = lc.clone();
        let url = peer_url.clone();
        async move {
            lc.member_add(
                [url.as_str()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
        }
    })
    .await
    .unwrap_or_else(|e| panic!("add learner: {e}{}", logs(&c)));
    let new = added.member().unwrap();
    let new_id = new.id();
    assert!(new.is_learner());
    assert_eq!(new.peer_urls(), std::slice::from_ref(&peer_url));
    assert!(
        new.name().is_empty() && new.client_urls().is_empty(),
        "an unstarted member has no name or client URLs"
    );
    assert_eq!(added.member_list().len(), 4);
    // The cluster keeps working with an unstarted learner.
    lc.put("mc/after-add", "1", None).await.unwrap();

    let spec = join_spec(
        &c,
        "m3",
        &peer_url,
        initial_cluster_with(&c, "m3", &peer_url),
        &extra,
    );
    c.members.push(Proc::launch(Kind::Ours, spec));
    let learner_ep = c.members[3].endpoint();
    wait_serializable(&learner_ep, "mc/after-add", "1", &c).await;
    // The data is readable as soon as the backend is swapped in; the log line follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.members[3]
        .log()
        .contains("installed snapshot from leader")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        c.members[3]
            .log()
            .contains("installed snapshot from leader"),
        "learner did not catch up by snapshot{}",
        logs(&c)
    );
    let on_learner = dump(&learner_ep, "mc/", true).await.unwrap();
    let on_leader = dump(&leader_ep, "mc/", false).await.unwrap();
    assert_eq!(
        on_learner, on_leader,
        "learner's data differs from the leader's"
    );
    let (lid, _, is_learner) = status(&learner_ep).await.unwrap();
    assert_eq!(lid, new_id);
    assert!(is_learner, "Status on the learner must say is_learner");

    // A learner refuses writes and linearizable reads.
    let mut learner = client(&learner_ep).await;
    expect_err(
        learner.get("mc/000", None).await,
        NOT_LEARNER_RPC,
        "linearizable read on a learner",
    );
    expect_err(
        learner.put("mc/x", "x", None).await,
        NOT_LEARNER_RPC,
        "write on a learner",
    );

    // Promote it through the leader (retrying while it is still catching up). Our server also
    // refuses with "unhealthy cluster" while a voter connection is younger than HealthInterval,
    // which etcd does not do; `promote_right_after_a_voter_restart_succeeds` covers that.
    let promoted = retry(
        HEALTH_INTERVAL + STEP,
        &[LEARNER_NOT_READY, UNHEALTHY],
        "promote",
        || {
            let mut lc = lc.clone();
            async move { lc.member_promote(new_id).await }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("promote: {e}{}", logs(&c)));
    assert!(
        promoted.members().iter().all(|m| !m.is_learner()),
        "{:?}",
        promoted.members()
    );
    // Now a voter: serves linearizable reads and writes; publishes its name and client URL.
    let deadline = Instant::now() + STEP;
    loop {
        match learner.put("mc/via-new", "n", None).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "write on the promoted member: {e}{}",
                logs(&c)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        learner.get("mc/via-new", None).await.unwrap().kvs()[0].value(),
        b"n"
    );
    let want = expected_members(&mut c).await;
    assert_eq!(want.len(), 4);
    for ep in c.endpoints() {
        wait_members(&ep, &want, &c).await;
    }
    assert_converged(&c.endpoints(), "after promotion").await;

    // Remove another member (a follower from the original three).
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_id = member_id(&c.members[victim].endpoint()).await;
    // The promoted member's connection may be younger than HealthInterval.
    let removed = retry(
        HEALTH_INTERVAL + STEP,
        &[UNHEALTHY, NOT_ENOUGH_STARTED],
        "remove",
        || {
            let mut lc = lc.clone();
            async move { lc.member_remove(victim_id).await }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("remove m{victim}: {e}{}", logs(&c)));
    assert_eq!(removed.members().len(), 3);
    assert!(removed.members().iter().all(|m| m.id() != victim_id));
    assert!(
        wait_exit(&mut c.members[victim], Duration::from_secs(10)).await,
        "removed member m{victim} is still running{}",
        logs(&c)
    );
    let remaining: Vec<String> = (0..4)
        .filter(|i| *i != victim)
        .map(|i| c.members[i].endpoint())
        .collect();
    lc.put("mc/after-remove", "r", None).await.unwrap();
    for ep in &remaining {
        client(ep)
            .await
            .put(format!("mc/after-remove/{ep}"), "r", None)
            .await
            .unwrap_or_else(|e| panic!("write on {ep}: {e}"));
    }
    let want = expected_members(&mut c).await;
    assert_eq!(want.len(), 3);
    for ep in &remaining {
        wait_members(ep, &want, &c).await;
    }
    assert_converged(&remaining, "after removal").await;
}

/// A learner publishes its name and client URLs like any member, and serves only Status and
/// serializable reads: etcd 3.4.23's gRPC interceptor rejects every other RPC on a learner
/// (observed: HashKV, MemberList, Alarm, LeaseGrant, MemberPromote, linearizable Range and Put
/// all fail with "etcdserver: rpc not supported for learner"). MoveLeader to a learner is a bad
/// transferee (observed).
#[tokio::test(flavor = "multi_thread")]
async fn learner_publishes_its_attributes_and_serves_only_status_and_serializable_reads() {
    let mut c = start(1, &[]).await;
    let ep0 = c.members[0].endpoint();
    let mut lc = client(&ep0).await;
    lc.put("ln/k", "v", None).await.unwrap();
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let added = lc
        .member_add(
            [peer_url.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let new_id = added.member().unwrap().id();
    let spec = join_spec(
        &c,
        "ln1",
        &peer_url,
        initial_cluster_with(&c, "ln1", &peer_url),
        &[],
    );
    c.members.push(Proc::launch(Kind::Ours, spec));
    let learner_ep = c.members[1].endpoint();
    wait_serializable(&learner_ep, "ln/k", "v", &c).await;

    expect_err(
        lc.move_leader(new_id).await,
        BAD_TRANSFEREE,
        "MoveLeader to a learner",
    );

    // etcd 3.4.23 (observed): `member list` on the leader shows the running learner as
    // "started, ln1, <peer>, <client>, true".
    let want = vec![
        (
            member_id(&ep0).await,
            "m0".to_owned(),
            vec![c.members[0].client_url.clone()],
            false,
        ),
        (
            new_id,
            "ln1".to_owned(),
            vec![c.members[1].client_url.clone()],
            true,
        ),
    ];
    wait_members(&ep0, &want, &c).await;

    let mut l = client(&learner_ep).await;
    assert!(l.status().await.unwrap().is_learner());
    let r = l
        .get("ln/k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"v");
    let mut wrong = Vec::new();
    check_err(
        &mut wrong,
        l.get("ln/k", None).await,
        NOT_LEARNER_RPC,
        "linearizable Range on a learner",
    );
    check_err(
        &mut wrong,
        l.put("ln/k", "w", None).await,
        NOT_LEARNER_RPC,
        "Put on a learner",
    );
    check_err(
        &mut wrong,
        l.lease_grant(10, None).await,
        NOT_LEARNER_RPC,
        "LeaseGrant on a learner",
    );
    check_err(
        &mut wrong,
        l.member_promote(new_id).await,
        NOT_LEARNER_RPC,
        "MemberPromote sent to the learner",
    );
    check_err(
        &mut wrong,
        l.hash_kv(0).await,
        NOT_LEARNER_RPC,
        "HashKV on a learner",
    );
    check_err(
        &mut wrong,
        l.member_list().await,
        NOT_LEARNER_RPC,
        "MemberList on a learner",
    );
    check_err(
        &mut wrong,
        l.alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await,
        NOT_LEARNER_RPC,
        "Alarm on a learner",
    );
    assert!(
        wrong.is_empty(),
        "learner RPC gating differs from etcd 3.4.23:\n  {}",
        wrong.join("\n  ")
    );
}

/// etcd checks a promotion against *started* members (those that published their attributes),
/// not against connection age, so a learner can be promoted right after a voter restarts
/// (observed on etcd 3.4.23: `member promote` succeeds 1.5 s after SIGKILL + restart of a
/// follower). Its strict check fails with "not enough started members", never "unhealthy".
#[tokio::test(flavor = "multi_thread")]
async fn promote_right_after_a_voter_restart_succeeds() {
    let started = Instant::now();
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    lc.put("pr/k", "v", None).await.unwrap();
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], "add learner", || {
        let mut lc = lc.clone();
        let url = peer_url.clone();
        async move {
            lc.member_add(
                [url.as_str()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
        }
    })
    .await
    .unwrap();
    let new_id = added.member().unwrap().id();
    let spec = join_spec(
        &c,
        "m3",
        &peer_url,
        initial_cluster_with(&c, "m3", &peer_url),
        &[],
    );
    c.members.push(Proc::launch(Kind::Ours, spec));
    wait_serializable(&c.members[3].endpoint(), "pr/k", "v", &c).await;

    // Restart a follower voter once every connection is older than HealthInterval; it is back
    // (serving linearizable reads) before the promotion.
    let ready = started + HEALTH_INTERVAL + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;
    let follower = (leader + 1) % 3;
    c.members[follower].kill();
    blocking(|| c.members[follower].spawn());
    let r = retry(STEP, &[LEARNER_NOT_READY], "promote", || {
        let mut lc = lc.clone();
        async move { lc.member_promote(new_id).await }
    })
    .await;
    match r {
        Ok(r) => assert!(r.members().iter().all(|m| !m.is_learner())),
        Err(e) => panic!(
            "promote right after a voter restart: {e} (etcd 3.4.23 promotes here){}",
            logs(&c)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Strict reconfiguration
// ---------------------------------------------------------------------------------------------

/// etcd 3.4.23 (observed): with 2 of 3 members down, MemberAdd of a voter *and of a learner*
/// fails at once with "etcdserver: unhealthy cluster" (the member must have been connected to
/// every voter for HealthInterval).
#[tokio::test(flavor = "multi_thread")]
async fn strict_reconfig_refuses_adding_a_member_without_quorum() {
    let mut c = start(3, &[]).await;
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    c.members[1].kill();
    c.members[2].kill();
    // Let the survivor's transport notice both peers are gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut s = client(&c.members[0].endpoint()).await;
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    // The check runs before anything is proposed, so the answer is immediate.
    expect_err(
        s.member_add([url.as_str()], None).await,
        UNHEALTHY,
        "MemberAdd of a voter with 2 of 3 members down",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    let learner_url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let r = s
        .member_add(
            [learner_url.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await;
    let learner_add = match &r {
        Err(e) if msg(e) == UNHEALTHY => None,
        other => Some(format!(
            "MemberAdd of a learner with 2 of 3 members down: expected {UNHEALTHY:?} at once (etcd 3.4.23), got {:?} after {:?}",
            other.as_ref().map(|_| "success").map_err(msg),
            started.elapsed()
        )),
    };

    // Nothing changed: once the others are back there are still 3 members, and with every
    // member started for HealthInterval the same request is accepted.
    blocking(|| {
        c.members[1].spawn_no_wait();
        c.members[2].spawn_no_wait();
        c.members[1].wait_ready(Duration::from_secs(30));
        c.members[2].wait_ready(Duration::from_secs(30));
    });
    let want = expected_members(&mut c).await;
    if learner_add.is_none() {
        assert_eq!(want.len(), 3);
        wait_members(&c.members[0].endpoint(), &want, &c).await;
    }
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let lc = client(&c.members[leader].endpoint()).await;
    let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], "add voter", || {
        let mut lc = lc.clone();
        let url = url.clone();
        async move { lc.member_add([url.as_str()], None).await }
    })
    .await
    .unwrap_or_else(|e| panic!("MemberAdd on a healthy cluster: {e}{}", logs(&c)));
    assert!(!added.member().unwrap().is_learner());
    // 3 of 4 voters started: still a quorum.
    lc.clone().put("sr/after-add", "x", None).await.unwrap();
    if let Some(problem) = learner_add {
        panic!(
            "{problem}; members now: {:?}{}",
            members(&c.members[leader].endpoint()).await,
            logs(&c)
        );
    }
}

/// etcd 3.4.23 (observed): with 1 of 3 members down, removing a healthy member fails with
/// "etcdserver: unhealthy cluster" (mayRemoveMember: the remaining *connected* voters would not
/// be a quorum), adding a voter fails the same way, and removing the dead member is allowed.
/// "not enough started members" is reserved for members that never published (started).
#[tokio::test(flavor = "multi_thread")]
async fn strict_reconfig_refuses_removing_a_healthy_member_but_allows_removing_a_dead_one() {
    let started = Instant::now();
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (dead, healthy) = (followers[0], followers[1]);
    let dead_id = member_id(&c.members[dead].endpoint()).await;
    let healthy_id = member_id(&c.members[healthy].endpoint()).await;
    let leader_id = member_id(&c.members[leader].endpoint()).await;
    // Every peer connection must have been up for HealthInterval, so the refusal below is
    // about the dead member and not about a young connection.
    let ready = started + HEALTH_INTERVAL + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;

    c.members[dead].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    let mut hc = client(&c.members[healthy].endpoint()).await;
    let mut wrong = Vec::new();
    check_err(
        &mut wrong,
        lc.member_remove(healthy_id).await,
        UNHEALTHY,
        "removing a healthy member with 1 of 3 down (via the leader)",
    );
    check_err(
        &mut wrong,
        hc.member_remove(healthy_id).await,
        UNHEALTHY,
        "removing a healthy member with 1 of 3 down (via itself)",
    );
    check_err(
        &mut wrong,
        lc.member_remove(leader_id).await,
        UNHEALTHY,
        "removing the leader with 1 of 3 down",
    );
    let url = format!("http://127.0.0.1:{}", free_port());
    check_err(
        &mut wrong,
        lc.member_add([url.as_str()], None).await,
        UNHEALTHY,
        "adding a voter with 1 of 3 down",
    );
    assert_eq!(
        members(&c.members[leader].endpoint()).await.len(),
        3,
        "a refused change changed the membership"
    );

    let r = lc
        .member_remove(dead_id)
        .await
        .unwrap_or_else(|e| panic!("removing the dead member: {e}{}", logs(&c)));
    assert_eq!(r.members().len(), 2);
    assert!(r.members().iter().all(|m| m.id() != dead_id));
    lc.put("sr/after-remove", "x", None).await.unwrap();
    hc.put("sr/after-remove-2", "y", None).await.unwrap();
    let want = expected_members(&mut c).await;
    assert_eq!(want.len(), 2);
    for i in [leader, healthy] {
        wait_members(&c.members[i].endpoint(), &want, &c).await;
    }
    assert_converged(
        &[c.members[leader].endpoint(), c.members[healthy].endpoint()],
        "after removing the dead member",
    )
    .await;
    assert!(
        wrong.is_empty(),
        "strict reconfiguration differs from etcd 3.4.23:\n  {}",
        wrong.join("\n  ")
    );
}

/// A member whose data dir was wiped must not come back as if nothing happened: it would vote
/// with an empty log. Restarted with `new` or `existing`, it refuses with etcd's "has already
/// been bootstrapped"; once removed, it refuses with the removed message; removed, wiped and
/// added again as a learner under the same name and peer URL, it catches up and is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn member_with_lost_data_refuses_to_start_until_removed_and_added_again() {
    let started = Instant::now();
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let lost = (0..3).find(|i| *i != leader).unwrap();
    let lost_ep = c.members[lost].endpoint();
    let lost_id = member_id(&lost_ep).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    for i in 0..50 {
        lc.put(format!("lost/{i:02}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let ready = started + HEALTH_INTERVAL + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;

    c.members[lost].kill();
    std::fs::remove_dir_all(c.members[lost].data_dir()).unwrap();
    let bootstrapped = format!("member {lost_id:x} has already been bootstrapped");
    for state in ["new", "existing"] {
        c.members[lost].initial_cluster_state = state.into();
        c.members[lost].spawn_no_wait();
        assert!(
            wait_exit(&mut c.members[lost], STEP).await,
            "a member with lost data started with {state}{}",
            logs(&c)
        );
        assert!(
            c.members[lost].log().contains(&bootstrapped),
            "restarted with {state}: no refusal in its log:\n{}",
            c.members[lost].log()
        );
    }
    // The rest of the cluster never noticed.
    lc.put("lost/during", "x", None).await.unwrap();

    // Removed: it refuses with the removed message, whatever its flags say.
    let r = lc
        .member_remove(lost_id)
        .await
        .unwrap_or_else(|e| panic!("removing the lost member: {e}{}", logs(&c)));
    assert_eq!(r.members().len(), 2);
    std::fs::remove_dir_all(c.members[lost].data_dir()).unwrap();
    c.members[lost].initial_cluster_state = "new".into();
    c.members[lost].spawn_no_wait();
    assert!(
        wait_exit(&mut c.members[lost], STEP).await,
        "a removed member started{}",
        logs(&c)
    );
    assert!(
        c.members[lost]
            .log()
            .contains("the member has been permanently removed from the cluster"),
        "{}",
        c.members[lost].log()
    );

    // Wiped and added again as a learner under the same peer URL: it joins and is promoted.
    std::fs::remove_dir_all(c.members[lost].data_dir()).unwrap();
    let peer_url = c.members[lost].advertise_peer_url.clone();
    let added = retry(STEP, &[UNHEALTHY], "add the learner again", || {
        let mut lc = lc.clone();
        let url = peer_url.clone();
        async move {
            lc.member_add(
                [url.as_str()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
        }
    })
    .await
    .unwrap_or_else(|e| panic!("add learner: {e}{}", logs(&c)));
    let new_id = added.member().unwrap().id();
    assert_ne!(new_id, lost_id, "a re-added member gets a new ID");
    c.members[lost].initial_cluster_state = "existing".into();
    c.members[lost].spawn_no_wait();
    wait_serializable(&lost_ep, "lost/during", "x", &c).await;
    retry(STEP, &[LEARNER_NOT_READY, UNHEALTHY], "promote", || {
        let mut lc = lc.clone();
        async move { lc.member_promote(new_id).await }
    })
    .await
    .unwrap_or_else(|e| panic!("promote: {e}{}", logs(&c)));
    assert_eq!(member_id(&lost_ep).await, new_id);
    let n = assert_converged(&c.endpoints(), "after replacing the lost member").await;
    assert!(n > 0);
    assert_eq!(dump(&lost_ep, "lost/", false).await.unwrap().len(), 51);
}

// ---------------------------------------------------------------------------------------------
// 6. MoveLeader
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn move_leader_transfers_to_the_chosen_follower() {
    let c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let target = (leader + 2) % 3;
    let target_id = member_id(&c.members[target].endpoint()).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    lc.put("ml/before", "1", None).await.unwrap();

    lc.move_leader(target_id)
        .await
        .unwrap_or_else(|e| panic!("MoveLeader: {e}{}", logs(&c)));
    // The response comes once the transfer is done: the target leads, everyone agrees.
    let (_, lead, _) = status(&c.members[target].endpoint()).await.unwrap();
    assert_eq!(
        lead, target_id,
        "target does not lead right after MoveLeader returned"
    );
    assert_eq!(wait_agreed_leader(&c, &[0, 1, 2], STEP).await, target);

    // The old leader is now a follower.
    expect_err(
        lc.move_leader(target_id).await,
        NOT_LEADER,
        "MoveLeader sent to a follower",
    );
    let mut tc = client(&c.members[target].endpoint()).await;
    expect_err(
        tc.move_leader(0xdead_beef).await,
        BAD_TRANSFEREE,
        "MoveLeader to an unknown member",
    );
    // Transferring to itself is a no-op.
    tc.move_leader(target_id).await.unwrap();
    assert_eq!(wait_agreed_leader(&c, &[0, 1, 2], STEP).await, target);

    for ep in c.endpoints() {
        client(&ep)
            .await
            .put(format!("ml/after/{ep}"), "x", None)
            .await
            .unwrap();
    }
    assert_converged(&c.endpoints(), "after MoveLeader").await;
}

// ---------------------------------------------------------------------------------------------
// 7. etcdctl 3.4.23
// ---------------------------------------------------------------------------------------------

/// `endpoint status` simple output: `endpoint, id, version, db size, is leader, is learner,
/// raft term, raft index, raft applied index, errors`.
fn parse_status_line(out: &str) -> Vec<String> {
    let line = out
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    line.split(',').map(|f| f.trim().to_owned()).collect()
}

fn ctl(ep: &str, args: &[&str]) -> (bool, String, String) {
    etcdctl_run(ep, args, None)
}

fn ctl_ok(ep: &str, args: &[&str]) -> String {
    let (ok, out, err) = ctl(ep, args);
    assert!(ok, "etcdctl {args:?} on {ep} failed:\n{out}\n{err}");
    out
}

/// Runs etcdctl until it succeeds, retrying (bounded) while its error output contains one of
/// the `transient` messages. Returns stdout.
async fn ctl_retry(ep: &str, args: &[&str], transient: &[&str], c: &Cluster) -> String {
    let deadline = Instant::now() + HEALTH_INTERVAL + STEP;
    loop {
        let (ok, out, err) = blocking(|| ctl(ep, args));
        if ok {
            return out;
        }
        let retryable = transient.iter().any(|t| err.contains(t));
        assert!(
            retryable && Instant::now() < deadline,
            "etcdctl {args:?} on {ep}:\n{out}\n{err}{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `member list` simple output as `id (hex) → fields`.
fn ctl_members(ep: &str) -> BTreeMap<String, Vec<String>> {
    ctl_ok(ep, &["member", "list"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<String> = l.split(',').map(|f| f.trim().to_owned()).collect();
            (f[0].clone(), f)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_member_add_promote_remove_list_move_leader_and_endpoint_status() {
    if require(etcdctl(), "etcdctl 3.4").is_none() {
        return;
    }
    let extra = ["--snapshot-count", "50"];
    let mut c = start(3, &extra).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let lep = c.members[leader].endpoint();
    let mut lc = client(&lep).await;
    for i in 0..120 {
        lc.put(format!("ctl/{i:03}"), format!("v{i}"), None)
            .await
            .unwrap();
    }

    // member list: 3 started members with names and URLs.
    let list = blocking(|| ctl_members(&lep));
    assert_eq!(list.len(), 3, "{list:?}");
    for m in &c.members {
        let f = list
            .values()
            .find(|f| f[2] == m.name)
            .unwrap_or_else(|| panic!("{} missing: {list:?}", m.name));
        assert_eq!(f[1], "started");
        assert_eq!(f[3], m.advertise_peer_url);
        assert_eq!(f[4], m.client_url);
        assert_eq!(f[5], "false");
    }

    // member add --learner prints the environment for the new member.
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let peer_flag = format!("--peer-urls={peer_url}");
    let out = ctl_retry(
        &lep,
        &["member", "add", "m3", &peer_flag, "--learner"],
        &[UNHEALTHY],
        &c,
    )
    .await;
    let id_hex = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Member ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no member ID in {out:?}"))
        .to_owned();
    assert!(out.contains(" added to cluster "), "{out}");
    assert!(out.contains("ETCD_NAME=\"m3\""), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .map(|r| r.trim_end_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {out:?}"));
    let want_initial = initial_cluster_with(&c, "m3", &peer_url);
    let sorted = |s: &str| s.split(',').map(str::to_owned).collect::<BTreeSet<_>>();
    assert_eq!(
        sorted(&initial),
        sorted(&want_initial),
        "ETCD_INITIAL_CLUSTER"
    );
    let list = blocking(|| ctl_members(&lep));
    assert_eq!(list[&id_hex][1], "unstarted", "{list:?}");
    assert_eq!(list[&id_hex][5], "true", "{list:?}");

    // Start it with the printed initial cluster; it catches up and serves serializable reads.
    let spec = join_spec(&c, "m3", &peer_url, initial, &extra);
    c.members.push(Proc::launch(Kind::Ours, spec));
    let nep = c.members[3].endpoint();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) = blocking(|| {
            ctl(
                &nep,
                &["get", "ctl/119", "--consistency=s", "--print-value-only"],
            )
        });
        if ok && out.trim() == "v119" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learner never served ctl/119{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, _, err) = blocking(|| ctl(&nep, &["put", "ctl/x", "y"]));
    assert!(
        !ok && err.contains(NOT_LEARNER_RPC),
        "put on a learner: {err}"
    );

    // endpoint status, one endpoint at a time: exactly one leader, the new member a learner.
    let mut leaders = 0;
    for (i, m) in c.members.iter().enumerate() {
        let out = blocking(|| ctl_ok(&m.endpoint(), &["endpoint", "status"]));
        let f = parse_status_line(&out);
        assert_eq!(f.len(), 10, "{out}");
        assert_eq!(f[0], m.endpoint());
        assert_eq!(
            f[5],
            if i == 3 { "true" } else { "false" },
            "isLearner of {}: {out}",
            m.name
        );
        if f[4] == "true" {
            leaders += 1;
            assert_eq!(i, leader, "{out}");
        }
        if i == 3 {
            assert_eq!(f[1], id_hex);
        }
    }
    assert_eq!(leaders, 1);

    // member promote (to the leader), retried while the learner is catching up (and, on our
    // server, while a voter connection is younger than HealthInterval; see
    // `promote_right_after_a_voter_restart_succeeds`).
    let out = ctl_retry(
        &lep,
        &["member", "promote", &id_hex],
        &[LEARNER_NOT_READY, UNHEALTHY],
        &c,
    )
    .await;
    // etcdctl prints IDs with `%16x`: space-padded when the top nibble is zero.
    assert!(
        out.starts_with(&format!("Member {:>16} promoted in cluster ", id_hex)),
        "{out}"
    );
    // Once promoted it publishes its name and client URL.
    let deadline = Instant::now() + STEP;
    loop {
        let list = blocking(|| ctl_members(&lep));
        let f = &list[&id_hex];
        if f[1] == "started" && f[2] == "m3" && f[4] == c.members[3].client_url && f[5] == "false" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "promoted member not listed as started m3: {list:?}{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let f = parse_status_line(&blocking(|| ctl_ok(&nep, &["endpoint", "status"])));
    assert_eq!(f[5], "false", "promoted member still a learner: {f:?}");

    // endpoint health --cluster: all four healthy.
    let (ok, out, err) = blocking(|| ctl(&lep, &["endpoint", "health", "--cluster"]));
    assert!(ok, "endpoint health --cluster:\n{out}\n{err}");
    assert_eq!(
        format!("{out}{err}").matches("is healthy").count(),
        4,
        "{out}\n{err}"
    );

    // move-leader to the new member, given every endpoint so etcdctl finds the leader.
    let all = c.endpoints().join(",");
    let out = blocking(|| ctl_ok(&all, &["move-leader", &id_hex]));
    assert!(
        out.contains("Leadership transferred from ") && out.contains(&format!(" to {id_hex}")),
        "{out}"
    );
    let f = parse_status_line(&blocking(|| ctl_ok(&nep, &["endpoint", "status"])));
    assert_eq!(
        f[4], "true",
        "new member is not leader after move-leader: {f:?}"
    );
    // move-leader sent only to a follower: etcdctl finds no leader among its endpoints.
    let (ok, out, _) = blocking(|| ctl(&lep, &["move-leader", &id_hex]));
    assert!(!ok, "move-leader via a follower succeeded: {out}");

    // member remove one of the original followers (not the old leader).
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_hex = format!("{:x}", member_id(&c.members[victim].endpoint()).await);
    let out = ctl_retry(
        &nep,
        &["member", "remove", &victim_hex],
        &[UNHEALTHY, NOT_ENOUGH_STARTED],
        &c,
    )
    .await;
    assert!(
        // `%16x` again: an ID whose top nibble is zero prints space-padded.
        out.starts_with(&format!("Member {victim_hex:>16} removed from cluster ")),
        "{out}"
    );
    let list = blocking(|| ctl_members(&nep));
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(!list.contains_key(&victim_hex));
    assert!(
        list.values().all(|f| f[1] == "started" && f[5] == "false"),
        "{list:?}"
    );
    assert!(
        wait_exit(&mut c.members[victim], Duration::from_secs(10)).await,
        "removed member still running{}",
        logs(&c)
    );
    let (ok, out, err) = blocking(|| ctl(&nep, &["member", "remove", &victim_hex]));
    assert!(
        !ok && err.contains(MEMBER_NOT_FOUND),
        "removing it again: {out}\n{err}"
    );
    let remaining: Vec<String> = (0..4)
        .filter(|i| *i != victim)
        .map(|i| c.members[i].endpoint())
        .collect();
    for ep in &remaining {
        blocking(|| ctl_ok(ep, &["put", &format!("ctl/after/{ep}"), "z"]));
    }
    assert_converged(&remaining, "after etcdctl member remove").await;
}

// ---------------------------------------------------------------------------------------------
// 8. Leases and watches across members
// ---------------------------------------------------------------------------------------------

type Ev = (String, String, String, i64);

/// Collects the events of a watch until it sees a put of `end`.
async fn collect_until(stream: &mut etcd_client::WatchStream, end: &str) -> Vec<Ev> {
    let mut out = Vec::new();
    loop {
        let r = tokio::time::timeout(STEP, stream.message()).await;
        let resp = match r {
            Ok(Ok(Some(resp))) => resp,
            other => panic!("watch ended or stalled after {out:?}: {other:?}"),
        };
        assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        for e in resp.events() {
            let kv = e.kv().unwrap();
            let t = match e.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            out.push((
                t.to_owned(),
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
                kv.mod_revision(),
            ));
            if t == "PUT" && kv.key_str().unwrap() == end {
                return out;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_kept_alive_through_a_follower_expires_once_and_watches_agree() {
    let c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;
    let eps = c.endpoints();
    let start_rev = client(&eps[leader])
        .await
        .get("lw/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;

    // A watch on every member from the same revision.
    let mut watches = Vec::new();
    for ep in &eps {
        let mut w = client(ep).await;
        let stream = w
            .watch(
                "lw/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(start_rev),
                ),
            )
            .await
            .unwrap();
        watches.push((w, stream));
    }

    // Grant on a follower, attach keys through the other follower.
    let mut g = client(&eps[f1]).await;
    let grant = g.lease_grant(3, None).await.unwrap();
    assert_eq!(grant.ttl(), 3);
    let id = grant.id();
    let mut p = client(&eps[f2]).await;
    p.put("lw/a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    p.put("lw/b", "2", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    p.put("lw/plain", "3", None).await.unwrap();

    // Keep it alive through a follower for longer than its TTL.
    let mut k = client(&eps[f2]).await;
    let (mut keeper, mut ka) = k.lease_keep_alive(id).await.unwrap();
    let kept_from = Instant::now();
    while kept_from.elapsed() < Duration::from_secs(5) {
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(STEP, ka.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.id(), id);
        assert_eq!(
            r.ttl(),
            3,
            "keep-alive through a follower did not renew to the granted TTL"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    for ep in &eps {
        let r = client(ep).await.get("lw/a", None).await.unwrap();
        assert_eq!(
            r.kvs().len(),
            1,
            "lease expired on {ep} although it was kept alive{}",
            logs(&c)
        );
        let t = client(ep).await.lease_time_to_live(id, None).await.unwrap();
        assert!(
            t.ttl() > 0 && t.ttl() <= 3,
            "TimeToLive on {ep}: {}",
            t.ttl()
        );
        assert_eq!(t.granted_ttl(), 3);
    }
    drop(keeper);
    drop(ka);

    // Stop renewing: the leader revokes it; its keys vanish everywhere.
    let stopped = Instant::now();
    for ep in &eps {
        let deadline = Instant::now() + STEP;
        loop {
            let r = client(ep)
                .await
                .get("lw/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            let keys: Vec<&str> = r.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
            if keys == ["lw/plain"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lease keys still on {ep}: {keys:?}{}",
                logs(&c)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "lease expired too early ({:?} after the last renewal)",
        stopped.elapsed()
    );
    for ep in &eps {
        let t = client(ep).await.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(t.ttl(), -1, "TimeToLive of an expired lease on {ep}");
    }
    let revocations: usize = c
        .members
        .iter()
        .map(|m| m.log().matches("revoked expired lease").count())
        .sum();
    assert_eq!(
        revocations,
        1,
        "the lease must be revoked exactly once (by the leader){}",
        logs(&c)
    );
    assert!(
        c.members[leader].log().contains("revoked expired lease"),
        "the leader did not revoke it{}",
        logs(&c)
    );

    p.put("lw/end", "e", None).await.unwrap();
    let mut seqs = Vec::new();
    for (_, stream) in watches.iter_mut() {
        seqs.push(collect_until(stream, "lw/end").await);
    }
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(s, &seqs[0], "watch on member {i} saw a different sequence");
    }
    let shape: Vec<(&str, &str)> = seqs[0]
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("PUT", "lw/a"),
            ("PUT", "lw/b"),
            ("PUT", "lw/plain"),
            ("DELETE", "lw/a"),
            ("DELETE", "lw/b"),
            ("PUT", "lw/end")
        ]
    );
    assert_eq!(seqs[0][3].3, seqs[0][4].3, "one revocation, one revision");
    assert_converged(&eps, "after lease expiry").await;
}

/// Reads from a raw peer connection until it yields bytes, ends, or `timeout` passes:
/// `Some(bytes)` (empty once the server closed it), `None` on timeout.
async fn read_raw(tcp: &mut tokio::net::TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(timeout, tcp.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_streams_refuse_strangers_and_share_the_peer_port_with_grpc() {
    use etcd_server::raft::wire::{HELLO_LEN, Hello, IDLE_TIMEOUT, Verdict};
    use tokio::io::AsyncWriteExt;

    let mut c = start(3, &[]).await;
    c.wait_leader(STEP).await;
    let ep = c.members[0].endpoint();
    let mut cl = client(&ep).await;
    let header = cl.status().await.unwrap().header().cloned().unwrap();
    let (cluster_id, member_id) = (header.cluster_id(), header.member_id());
    let peer = c.members[0]
        .peer_url
        .trim_start_matches("http://")
        .to_string();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(&peer).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp
    };
    let stranger = 0x5eed;

    // (what, hello, verdict)
    let cases = [
        (
            "another cluster",
            Hello {
                cluster_id: cluster_id ^ 1,
                from: stranger,
                to: member_id,
            },
            Verdict::ClusterMismatch,
        ),
        (
            "meant for another member",
            Hello {
                cluster_id,
                from: stranger,
                to: member_id ^ 1,
            },
            Verdict::WrongMember,
        ),
        (
            "right cluster and member",
            Hello {
                cluster_id,
                from: stranger,
                to: member_id,
            },
            Verdict::Accepted,
        ),
    ];
    for (what, hello, verdict) in cases {
        let mut tcp = connect().await;
        tcp.write_all(&hello.encode()).await.unwrap();
        let got = read_raw(&mut tcp, STEP).await.expect("a verdict");
        assert_eq!(got.first(), Some(&(verdict as u8)), "{what}: {got:?}");
        if verdict != Verdict::Accepted {
            assert_eq!(
                read_raw(&mut tcp, STEP).await,
                Some(vec![]),
                "{what}: closed after"
            );
        }
    }

    // A hello whose magic arrives split across writes is still recognized.
    let mut tcp = connect().await;
    let bytes = Hello {
        cluster_id,
        from: stranger,
        to: member_id,
    }
    .encode();
    tcp.write_all(&bytes[..2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    tcp.write_all(&bytes[2..HELLO_LEN]).await.unwrap();
    assert_eq!(
        read_raw(&mut tcp, STEP).await,
        Some(vec![Verdict::Accepted as u8]),
        "split magic"
    );
    // An accepted stream that then sends nothing is closed as dead...
    let started = Instant::now();
    assert_eq!(
        read_raw(&mut tcp, IDLE_TIMEOUT * 4).await,
        Some(vec![]),
        "a silent stream is closed"
    );
    assert!(
        started.elapsed() >= IDLE_TIMEOUT / 2,
        "closed too early: {:?}",
        started.elapsed()
    );

    // ... as is one sending a frame over the limit or one that is not a Raft message.
    for (what, frame) in [
        ("oversized frame", u32::MAX.to_be_bytes().to_vec()),
        ("undecodable frame", vec![0, 0, 0, 3, 0xff, 0xff, 0xff]),
    ] {
        let mut tcp = connect().await;
        tcp.write_all(
            &Hello {
                cluster_id,
                from: stranger,
                to: member_id,
            }
            .encode(),
        )
        .await
        .unwrap();
        assert_eq!(
            read_raw(&mut tcp, STEP).await,
            Some(vec![Verdict::Accepted as u8]),
            "{what}"
        );
        tcp.write_all(&frame).await.unwrap();
        assert_eq!(
            read_raw(&mut tcp, STEP).await,
            Some(vec![]),
            "{what}: closed"
        );
    }

    // The same port still serves gRPC, and the cluster still replicates.
    let mut pc =
        etcd_server::proto::peerpb::peer_client::PeerClient::connect(c.members[0].peer_url.clone())
            .await
            .expect("gRPC on the peer port");
    let members = pc
        .members(etcd_server::proto::peerpb::MembersRequest {})
        .await
        .expect("Members over the peer port")
        .into_inner();
    assert_eq!((members.cluster_id, members.members.len()), (cluster_id, 3));
    cl.put("after", "strangers", None).await.unwrap();
    for m in &c.members {
        wait_serializable(&m.endpoint(), "after", "strangers", &c).await;
    }
}

/// The value of `etcd_network_active_peers` for `local` → `remote` on `client_url`'s
/// `/metrics`, if exported, and `etcd_network_disconnected_peers_total` for the same pair.
fn peer_metrics(client_url: &str, local: u64, remote: u64) -> (Option<f64>, f64) {
    let (_, _, body) = crate::ops::http_get(client_url, "/metrics");
    let labels = format!("{{Local=\"{local:x}\",Remote=\"{remote:x}\"}}");
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{labels} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    (
        value("etcd_network_active_peers"),
        value("etcd_network_disconnected_peers_total").unwrap_or(0.0),
    )
}

/// A follower that stops reading (SIGSTOP: its kernel still holds the connection open and
/// acknowledges window probes) stops counting as an active peer once the leader's writes to it
/// have made no progress for etcd's write timeout (the kernel's `TCP_USER_TIMEOUT` or the
/// writer's own stall check, whichever fires first; with neither, this test fails); it counts
/// again, and catches up, once it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_dropped_as_a_peer_and_returns() {
    use etcd_server::raft::wire::USER_TIMEOUT;

    let mut c = start(3, &[]).await;
    let leader = c.wait_leader(STEP).await;
    let follower = (leader + 1) % 3;
    let leader_url = c.members[leader].endpoint();
    let (leader_id, follower_id) = (
        member_id(&leader_url).await,
        member_id(&c.members[follower].endpoint()).await,
    );
    let active = |url: &str| peer_metrics(url, leader_id, follower_id);
    let deadline = Instant::now() + STEP;
    while blocking(|| active(&leader_url)).0 != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the follower never became an active peer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, disconnects_before) = blocking(|| active(&leader_url));
    let pid = c.members[follower].pid().expect("the follower runs");
    crate::ops::signal(pid, "STOP");

    // Large writes fill the socket buffers toward the stopped follower quickly; the other two
    // members keep committing them.
    let mut cl = client(&leader_url).await;
    let value = vec![b'x'; 512 * 1024];
    let stopped_at = Instant::now();
    let mut n = 0;
    let dropped = loop {
        cl.put(format!("big/{}", n % 8), value.clone(), None)
            .await
            .expect("the majority commits");
        n += 1;
        let (now, disconnects) = blocking(|| active(&leader_url));
        if now == Some(0.0) {
            assert!(disconnects > disconnects_before, "disconnects not counted");
            break stopped_at.elapsed();
        }
        if stopped_at.elapsed() > USER_TIMEOUT * 6 {
            crate::ops::signal(pid, "CONT");
            panic!(
                "the leader still counts the stopped follower as active after {n} puts{}",
                logs(&c)
            );
        }
    };
    assert!(
        dropped >= USER_TIMEOUT,
        "dropped before the write timeout: {dropped:?}"
    );
    cl.put("after-stop", "1", None).await.unwrap();

    crate::ops::signal(pid, "CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while blocking(|| active(&leader_url)).0 != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the resumed follower never became active again{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_serializable(&c.members[follower].endpoint(), "after-stop", "1", &c).await;
}
