//! Crash soak on a busy 3-member cluster with a small `--snapshot-count`: members are
//! SIGKILLed and restarted (the leader among them) and the leader is SIGSTOPped, while writers
//! put unique keys through every member and a client increments a counter with
//! compare-and-swap. Members that fall behind receive Raft snapshots and are killed again
//! around the install. Fails if a member cannot restart, if an acknowledged put is stored at
//! another revision than the one it was answered with (or lost), if the counter disagrees with
//! the acknowledged increments, or if the members' HashKV differ at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::Rng;

use crate::faults::connect;
use crate::harness::{Cluster, Proc};

const ROUNDS: usize = 24;
const WRITERS: usize = 4;
const SNAPSHOT_COUNT: &str = "1000";
const COUNTER: &str = "soak/counter";
/// How long a restarted member may take to serve again.
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// Client endpoints by member, shared with the load tasks (ports survive restarts).
type Endpoints = Arc<Vec<String>>;

/// Puts unique keys round-robin over every member; records `(key, revision)` of each put the
/// server acknowledged.
async fn writer(
    w: usize,
    eps: Endpoints,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, i64)>>>,
) {
    let mut clients: Vec<Option<etcd_client::Client>> = vec![None; eps.len()];
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let m = (n + w) % eps.len();
        n += 1;
        if clients[m].is_none() {
            clients[m] = connect(&eps[m], Duration::from_secs(2)).await.ok();
        }
        let Some(c) = clients[m].as_mut() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let key = format!("soak/w{w}/{n:08}");
        let put =
            tokio::time::timeout(Duration::from_secs(3), c.put(key.as_str(), "v", None)).await;
        match put {
            Ok(Ok(r)) => {
                let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                acked.lock().unwrap().push((key, rev));
            }
            // Not acknowledged: may or may not be stored, either is fine.
            _ => clients[m] = None,
        }
    }
}

/// Increments `COUNTER` by compare-and-swap on its mod revision; counts the increments the
/// server acknowledged and those whose outcome is unknown.
async fn cas_client(
    eps: Endpoints,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    unknown: Arc<AtomicU64>,
) {
    let mut n = 0usize;
    let mut client: Option<etcd_client::Client> = None;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if client.is_none() {
            client = connect(&eps[n % eps.len()], Duration::from_secs(2))
                .await
                .ok();
        }
        let Some(c) = client.as_mut() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(Ok(cur)) = tokio::time::timeout(Duration::from_secs(3), c.get(COUNTER, None)).await
        else {
            client = None;
            continue;
        };
        let (value, modrev) = cur
            .kvs()
            .first()
            .map(|kv| {
                (
                    kv.value_str().unwrap_or("0").parse::<u64>().unwrap_or(0),
                    kv.mod_revision(),
                )
            })
            .unwrap_or((0, 0));
        let txn = Txn::new()
            .when([Compare::mod_revision(COUNTER, CompareOp::Equal, modrev)])
            .and_then([TxnOp::put(COUNTER, (value + 1).to_string(), None)]);
        match tokio::time::timeout(Duration::from_secs(3), c.txn(txn)).await {
            Ok(Ok(r)) if r.succeeded() => {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(_)) => {}
            _ => {
                unknown.fetch_add(1, Ordering::SeqCst);
                client = None;
            }
        }
    }
}

/// Waits until the restarted member `m` serves a read; fails with its log if it exits or
/// does not come back in time.
async fn wait_serving(m: &mut Proc, what: &str) {
    let deadline = Instant::now() + RESTART_LIMIT;
    loop {
        assert!(
            m.is_running(),
            "{} did not survive its restart ({what}):\n{}",
            m.name,
            m.log()
        );
        if let Ok(mut c) = connect(&m.endpoint(), Duration::from_secs(1)).await
            && c.get("soak/probe", Some(GetOptions::new().with_serializable()))
                .await
                .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not serve {RESTART_LIMIT:?} after its restart ({what}):\n{}",
            m.name,
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(m: &Proc, sig: &str) {
    if let Some(pid) = m.pid() {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
    }
}

/// Waits (bounded) until the member at `ep` moved its Raft index a snapshot count (and a
/// margin) past where it is now: every member compacts its log once per snapshot count, so by
/// then each one compacted beyond a member that stopped before.
async fn wait_log_compacted_past(ep: &str) {
    let index = |s: etcd_client::StatusResponse| s.raft_index();
    let target = SNAPSHOT_COUNT.parse::<u64>().unwrap() * 6 / 5;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut start = None;
    loop {
        if let Ok(mut c) = connect(ep, Duration::from_secs(2)).await
            && let Ok(s) = c.status().await
        {
            let now = index(s);
            let from = *start.get_or_insert(now);
            if now >= from + target {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the load did not move {ep}'s raft index {target} entries in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Snapshot installs recorded in the member's current log (logs start over on each restart).
fn installs(m: &Proc) -> usize {
    m.log().matches("installed snapshot from leader").count()
}

/// Waits (bounded) until every member reports the same revision and the same HashKV at it.
async fn converged(eps: &[String]) -> Result<(i64, u32), String> {
    let mut revs = Vec::new();
    for ep in eps {
        let mut c = connect(ep, Duration::from_secs(2))
            .await
            .map_err(|e| format!("{ep}: {e}"))?;
        let r = c
            .get("soak/probe", None)
            .await
            .map_err(|e| format!("{ep}: {e}"))?;
        revs.push(r.header().map(|h| h.revision()).unwrap_or(0));
    }
    if revs.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("revisions differ: {revs:?}"));
    }
    let mut hashes = Vec::new();
    for ep in eps {
        let mut c = connect(ep, Duration::from_secs(2))
            .await
            .map_err(|e| format!("{ep}: {e}"))?;
        hashes.push(
            c.hash_kv(revs[0])
                .await
                .map_err(|e| format!("{ep}: {e}"))?
                .hash(),
        );
    }
    if hashes.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!(
            "HashKV at revision {} differs: {hashes:?}",
            revs[0]
        ));
    }
    Ok((revs[0], hashes[0]))
}

#[tokio::test(flavor = "multi_thread")]
async fn members_survive_crashes_around_snapshot_installs() {
    let mut cluster =
        tokio::task::spawn_blocking(|| Cluster::start(3, &["--snapshot-count", SNAPSHOT_COUNT]))
            .await
            .unwrap();
    let eps: Endpoints = Arc::new(cluster.endpoints());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (done, unknown) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for w in 0..WRITERS {
        load.push(tokio::spawn(writer(
            w,
            eps.clone(),
            stop.clone(),
            acked.clone(),
        )));
    }
    load.push(tokio::spawn(cas_client(
        eps.clone(),
        stop.clone(),
        done.clone(),
        unknown.clone(),
    )));

    let mut installed = 0;
    let mut rng = rand::rng();
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1200..2200))).await;
        let leader = cluster.leader().await;
        // Random rounds install snapshots only when the load outruns a restart, which a busy
        // machine does not promise; halfway through, one follower is kept down until the log
        // was compacted past it, so at least one install happens on every run.
        if round == ROUNDS / 2
            && installed == 0
            && let Some(l) = leader
        {
            let victim = (l + 1) % cluster.members.len();
            cluster.members[victim].kill();
            installed += installs(&cluster.members[victim]);
            wait_log_compacted_past(&eps[l]).await;
            let m = &mut cluster.members[victim];
            m.spawn_no_wait();
            wait_serving(m, &format!("round {round}, after the log moved past it")).await;
            continue;
        }
        if round % 10 == 9
            && let Some(l) = leader
        {
            signal(&cluster.members[l], "STOP");
            tokio::time::sleep(Duration::from_secs(3)).await;
            signal(&cluster.members[l], "CONT");
            continue;
        }
        let victim = match leader {
            Some(l) if rng.random_bool(0.5) => l,
            _ => rng.random_range(0..cluster.members.len()),
        };
        let m = &mut cluster.members[victim];
        m.kill();
        installed += installs(m);
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        m.spawn_no_wait();
        wait_serving(m, &format!("round {round}")).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        let _ = t.await;
    }
    installed += cluster.members.iter().map(installs).sum::<usize>();

    // Every member restarts once more from what it holds now.
    for m in &mut cluster.members {
        m.kill();
        m.spawn_no_wait();
        wait_serving(m, "final restart").await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (rev, _) = loop {
        match converged(&eps).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "members never converged: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let mut c = connect(&eps[0], Duration::from_secs(10)).await.unwrap();
    let stored = c
        .get("soak/w", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let by_key: std::collections::HashMap<&str, i64> = stored
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap_or(""), kv.mod_revision()))
        .collect();
    let wrong: Vec<String> = acked
        .iter()
        .filter(|(k, r)| by_key.get(k.as_str()) != Some(r))
        .map(|(k, r)| {
            format!(
                "{k}: acknowledged at {r}, stored at {:?}",
                by_key.get(k.as_str())
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged puts lost or at another revision, e.g. {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );
    let counter = c.get(COUNTER, None).await.unwrap();
    let value: u64 = counter
        .kvs()
        .first()
        .and_then(|kv| kv.value_str().ok()?.parse().ok())
        .unwrap_or(0);
    let (done, unknown) = (done.load(Ordering::SeqCst), unknown.load(Ordering::SeqCst));
    assert!(
        done <= value && value <= done + unknown,
        "counter {value}, but {done} increments acknowledged and {unknown} unknown"
    );
    assert!(
        acked.len() > 1000,
        "too little load to mean anything: {} puts",
        acked.len()
    );
    assert!(
        installed > 0,
        "no member installed a snapshot in {ROUNDS} rounds: the test did not exercise the path"
    );
    eprintln!(
        "crash soak: {} acknowledged puts, counter {value} ({done} acked, {unknown} unknown), \
         {installed} snapshot installs, final revision {rev}",
        acked.len()
    );
}

/// One `peerpb.Peer/Snapshot` call carrying `data` as a snapshot at Raft index `index`, with
/// `sha256` in its last chunk.
async fn send_snapshot(
    peer_url: &str,
    cluster_id: u64,
    to: u64,
    index: u64,
    data: Vec<u8>,
    sha256: Vec<u8>,
) -> Result<(), tonic::Status> {
    use etcd_server::proto::peerpb::{SnapshotChunk, peer_client::PeerClient};
    use protobuf::Message as _;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    m.to = to;
    m.from = 0x1234;
    m.term = 100;
    let mut snap = raft::eraftpb::Snapshot::default();
    snap.mut_metadata().index = index;
    snap.mut_metadata().term = 100;
    m.set_snapshot(snap);
    let mut client = PeerClient::connect(peer_url.to_owned()).await.unwrap();
    let chunk = SnapshotChunk {
        cluster_id,
        message: m.write_to_bytes().unwrap(),
        data,
        sha256,
    };
    client
        .snapshot(tokio_stream::iter(vec![chunk]))
        .await
        .map(|_| ())
}

/// A member refuses a snapshot whose file is empty, is not a backend, does not match its
/// SHA-256, or applied less than the snapshot's index, before Raft hears of it: installing
/// such a file replaced a member's whole state with an empty database.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_refuses_snapshot_files_that_cannot_be_what_they_claim() {
    use sha2::Digest;
    let server = tokio::task::spawn_blocking(|| Proc::start(crate::harness::Kind::Ours, &[]))
        .await
        .unwrap();
    let mut c = server.client().await;
    for i in 0..10 {
        c.put(format!("k{i}"), "v", None).await.unwrap();
    }
    let status = c.status().await.unwrap();
    let header = status.header().unwrap();
    let (cluster_id, member_id, rev) = (header.cluster_id(), header.member_id(), header.revision());
    // A real backend file of this member (Maintenance.Snapshot appends its SHA-256).
    let mut stream = c.snapshot().await.unwrap();
    let mut db = Vec::new();
    while let Some(part) = stream.message().await.unwrap() {
        db.extend_from_slice(part.blob());
    }
    db.truncate(db.len() - 32);
    let sha = |d: &[u8]| sha2::Sha256::digest(d).to_vec();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("empty file", Vec::new(), sha(&[])),
        ("not a backend", vec![7; 8192], sha(&[7; 8192])),
        ("wrong checksum", db.clone(), sha(b"something else")),
        ("no checksum", db.clone(), Vec::new()),
        (
            "applied less than the snapshot's index",
            db.clone(),
            sha(&db),
        ),
    ];
    for (what, data, digest) in cases {
        let r = send_snapshot(
            &server.peer_url,
            cluster_id,
            member_id,
            1_000_000,
            data,
            digest,
        )
        .await;
        let e = r.expect_err(what);
        assert_eq!(e.code(), tonic::Code::DataLoss, "{what}: {e:?}");
    }
    // Nothing changed.
    let all = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.kvs().len(), 10);
    assert_eq!(all.header().unwrap().revision(), rev);
    let left: Vec<String> = std::fs::read_dir(server.data_dir().join("member/snap"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "db")
        .collect();
    assert!(
        left.is_empty(),
        "refused snapshots left files behind: {left:?}"
    );
}

/// The WAL says the member exists: with its backend gone or emptied it must not bootstrap
/// again (applying the log's tail to an empty store diverges from the cluster), but say what
/// was lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_backend_is_lost_refuses_to_start() {
    for empty_file in [false, true] {
        let mut server =
            tokio::task::spawn_blocking(|| Proc::start(crate::harness::Kind::Ours, &[]))
                .await
                .unwrap();
        server.client().await.put("k", "v", None).await.unwrap();
        server.stop();
        let db = server.data_dir().join("member/snap/db");
        std::fs::remove_file(&db).unwrap();
        if empty_file {
            std::fs::File::create(&db).unwrap();
        }
        server.spawn_no_wait();
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.is_running() {
            assert!(
                Instant::now() < deadline,
                "started on a lost backend (empty file: {empty_file}):\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            server.log().contains("the backend is lost"),
            "empty file: {empty_file}:\n{}",
            server.log()
        );
    }
}
