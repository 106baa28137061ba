//! Lease, Lock and Election integration tests through `etcd-client`: grant/revoke/keep-alive/
//! time-to-live/leases, key attachment, expiry in real time, leases across a restart, lock
//! contention and election campaigns. Every scenario runs on our server and on the reference
//! etcd 3.4.23, and the two transcripts must be identical.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, DeleteOptions, Error, EventType, GetOptions, KeyValue, LeaderKey, LeaseGrantOptions,
    LeaseTimeToLiveOptions, LockOptions, ProclaimOptions, PutOptions, ResignOptions, WatchOptions,
    WatchResponse, WatchStream,
};

use crate::harness::{Kind, side_by_side, start_async};

const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
const NO_LEADER: &str = "election: no leader";
const NOT_LEADER: &str = "election: not leader";

/// How long any single expected response may take.
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn kv_str(kv: &KeyValue) -> String {
    format!(
        "{}={} c{} m{} v{} l{:x}",
        esc(kv.key()),
        esc(kv.value()),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease()
    )
}

/// A gRPC error as "Code: message".
fn err_str(e: &Error) -> String {
    match e {
        Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => format!("client error: {other}"),
    }
}

fn show(r: &WatchResponse) -> String {
    let mut s = format!(
        "id={} rev={}",
        r.watch_id(),
        r.header().map_or(0, |h| h.revision())
    );
    if r.created() {
        s += " created";
    }
    if r.canceled() {
        s += " canceled";
    }
    for e in r.events() {
        let t = if e.event_type() == EventType::Put {
            "PUT"
        } else {
            "DELETE"
        };
        let _ = write!(s, " | {t} {}", e.kv().map(kv_str).unwrap_or_default());
    }
    s
}

async fn next(s: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(STEP, s.message())
        .await
        .expect("no watch response in time")
        .expect("watch stream failed")
        .expect("watch stream ended")
}

async fn quiet(s: &mut WatchStream, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, s.message()).await {
        panic!(
            "unexpected watch message: {:?}",
            r.map(|o| o.map(|r| show(&r)))
        );
    }
}

async fn grant(c: &mut Client, id: i64, ttl: i64) -> i64 {
    let r = c
        .lease_grant(ttl, Some(LeaseGrantOptions::new().with_id(id)))
        .await
        .unwrap();
    assert_eq!(r.id(), id);
    r.ttl()
}

/// (granted TTL, remaining TTL, sorted keys) of lease `id`.
async fn ttl(c: &mut Client, id: i64) -> (i64, i64, Vec<String>) {
    let r = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(r.id(), id);
    let mut keys: Vec<String> = r.keys().iter().map(|k| esc(k)).collect();
    keys.sort();
    (r.granted_ttl(), r.ttl(), keys)
}

async fn lease_ids(c: &mut Client) -> Vec<i64> {
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort_unstable();
    ids
}

async fn get_str(c: &mut Client, key: &str) -> String {
    let r = c.get(key, None).await.unwrap();
    r.kvs()
        .first()
        .map_or_else(|| format!("{key}: none"), kv_str)
}

fn v(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Grant, revoke and their errors
// ---------------------------------------------------------------------------------------------

async fn grant_and_errors(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();

    let r = c
        .lease_grant(10, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap();
    t.push(format!(
        "given id: id={:x} ttl={} error={:?}",
        r.id(),
        r.ttl(),
        r.error()
    ));
    let r = c.lease_grant(10, None).await.unwrap();
    let generated = r.id();
    t.push(format!(
        "generated id: positive={} ttl={}",
        generated > 0,
        r.ttl()
    ));
    // Below the minimum (ceil(1.5 × 1 s election timeout) = 2 s) is raised to it.
    t.push(format!("ttl 1 -> {}", grant(&mut c, 0x1, 1).await));
    t.push(format!("ttl 0 -> {}", grant(&mut c, 0x2, 0).await));
    t.push(format!("ttl -5 -> {}", grant(&mut c, 0x3, -5).await));
    t.push(format!(
        "ttl max -> {}",
        grant(&mut c, 0x4, 9_000_000_000).await
    ));
    let e = c
        .lease_grant(9_000_000_001, Some(LeaseGrantOptions::new().with_id(0x5)))
        .await
        .unwrap_err();
    t.push(format!("ttl max+1: {}", err_str(&e)));
    let e = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap_err();
    t.push(format!("existing id: {}", err_str(&e)));
    let e = c.lease_revoke(0x999).await.unwrap_err();
    t.push(format!("revoke unknown: {}", err_str(&e)));
    let e = c
        .put("x", "1", Some(PutOptions::new().with_lease(0x999)))
        .await
        .unwrap_err();
    t.push(format!("put with unknown lease: {}", err_str(&e)));
    let r = c
        .lease_time_to_live(0x999, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    t.push(format!(
        "ttl unknown: id={:x} ttl={} granted={} keys={:?}",
        r.id(),
        r.ttl(),
        r.granted_ttl(),
        r.keys()
    ));
    // etcd-client turns the keep-alive reply with TTL 0 into an error.
    let e = c.lease_keep_alive(0x999).await.map(|_| ()).unwrap_err();
    t.push(format!("keep-alive unknown: {e}"));
    let ids: Vec<String> = lease_ids(&mut c)
        .await
        .into_iter()
        .map(|id| {
            if id == generated {
                "generated".to_owned()
            } else {
                format!("{id:x}")
            }
        })
        .collect();
    t.push(format!("leases: {ids:?}"));
    // Revoke, then the lease is gone everywhere.
    let rev = c
        .lease_revoke(0x1234)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    t.push(format!("revoke: rev={rev}"));
    let e = c.lease_revoke(0x1234).await.unwrap_err();
    t.push(format!("revoke again: {}", err_str(&e)));
    t.push(format!("ttl after revoke: {:?}", ttl(&mut c, 0x1234).await));
    assert_eq!(
        t,
        v(&[
            "given id: id=1234 ttl=10 error=\"\"",
            "generated id: positive=true ttl=10",
            "ttl 1 -> 2",
            "ttl 0 -> 2",
            "ttl -5 -> 2",
            "ttl max -> 9000000000",
            &format!("ttl max+1: OutOfRange: {TTL_TOO_LARGE}"),
            &format!("existing id: FailedPrecondition: {LEASE_EXISTS}"),
            &format!("revoke unknown: NotFound: {LEASE_NOT_FOUND}"),
            &format!("put with unknown lease: NotFound: {LEASE_NOT_FOUND}"),
            "ttl unknown: id=999 ttl=-1 granted=0 keys=[]",
            "keep-alive unknown: lease keep alive error: lease not found",
            "leases: [\"1\", \"2\", \"3\", \"4\", \"1234\", \"generated\"]",
            "revoke: rev=1",
            &format!("revoke again: NotFound: {LEASE_NOT_FOUND}"),
            "ttl after revoke: (0, -1, [])",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_grant_revoke_and_errors() {
    side_by_side(grant_and_errors).await;
}

// ---------------------------------------------------------------------------------------------
// Attaching keys; revoke deletes them in one revision
// ---------------------------------------------------------------------------------------------

async fn attach_and_revoke(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0xa, 30).await;
    grant(&mut c, 0xb, 30).await;
    let mut w = c
        .watch("l/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    t.push(show(&next(&mut w).await));
    let la = Some(PutOptions::new().with_lease(0xa));
    let lb = Some(PutOptions::new().with_lease(0xb));
    c.put("l/3", "x", la.clone()).await.unwrap(); // 2
    c.put("l/1", "x", la.clone()).await.unwrap(); // 3
    c.put("l/2", "x", la.clone()).await.unwrap(); // 4
    c.put("l/4", "x", lb.clone()).await.unwrap(); // 5
    c.put("l/4", "y", None).await.unwrap(); // 6: lease 0 detaches
    c.put("l/5", "x", lb.clone()).await.unwrap(); // 7
    c.put("l/6", "x", la.clone()).await.unwrap(); // 8
    c.put("l/6", "y", lb.clone()).await.unwrap(); // 9: moves to lease b
    for _ in 0..8 {
        next(&mut w).await;
    }
    let (ga, _, ka) = ttl(&mut c, 0xa).await;
    let (gb, _, kb) = ttl(&mut c, 0xb).await;
    t.push(format!("a: granted={ga} keys={ka:?}"));
    t.push(format!("b: granted={gb} keys={kb:?}"));
    let no_keys = c.lease_time_to_live(0xa, None).await.unwrap();
    t.push(format!("a without keys option: keys={:?}", no_keys.keys()));
    t.push(get_str(&mut c, "l/1").await);
    t.push(get_str(&mut c, "l/4").await);

    let r = c.lease_revoke(0xa).await.unwrap();
    t.push(format!("revoke a: rev={}", r.header().unwrap().revision()));
    t.push(show(&next(&mut w).await));
    let r = c.lease_revoke(0xb).await.unwrap();
    t.push(format!("revoke b: rev={}", r.header().unwrap().revision()));
    t.push(show(&next(&mut w).await));
    quiet(&mut w, Duration::from_millis(300)).await;
    let left: Vec<String> = c
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(kv_str)
        .collect();
    t.push(format!("left: {left:?}"));
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "a: granted=30 keys=[\"l/1\", \"l/2\", \"l/3\"]",
            "b: granted=30 keys=[\"l/5\", \"l/6\"]",
            "a without keys option: keys=[]",
            "l/1=x c3 m3 v1 la",
            "l/4=y c5 m6 v2 l0",
            "revoke a: rev=10",
            "id=0 rev=10 | DELETE l/1= c0 m10 v0 l0 | DELETE l/2= c0 m10 v0 l0 | DELETE l/3= c0 m10 v0 l0",
            "revoke b: rev=11",
            "id=0 rev=11 | DELETE l/5= c0 m11 v0 l0 | DELETE l/6= c0 m11 v0 l0",
            "left: [\"l/4=y c5 m6 v2 l0\"]",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_attach_detach_and_revoke_in_one_revision() {
    side_by_side(attach_and_revoke).await;
}

// ---------------------------------------------------------------------------------------------
// Keep-alive and remaining TTL
// ---------------------------------------------------------------------------------------------

async fn keep_alive(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0xc, 3).await;
    c.put("ka", "1", Some(PutOptions::new().with_lease(0xc)))
        .await
        .unwrap();
    // etcd reports the remaining TTL in whole seconds, rounded down.
    t.push(format!("just granted: {:?}", ttl(&mut c, 0xc).await));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    t.push(format!("after 1.3 s: {:?}", ttl(&mut c, 0xc).await));

    let (mut keeper, mut stream) = c.lease_keep_alive(0xc).await.unwrap();
    assert_eq!(keeper.id(), 0xc);
    // Renew every second for 4 s, longer than the TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(STEP, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        t.push(format!("keep-alive: id={:x} ttl={}", r.id(), r.ttl()));
    }
    t.push(format!("just renewed: {:?}", ttl(&mut c, 0xc).await));
    t.push(get_str(&mut c, "ka").await);
    // Keep-alive of a revoked lease: TTL 0 on the same stream.
    c.lease_revoke(0xc).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = tokio::time::timeout(STEP, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    t.push(format!(
        "keep-alive after revoke: id={:x} ttl={}",
        r.id(),
        r.ttl()
    ));
    assert_eq!(
        t,
        v(&[
            "just granted: (3, 2, [\"ka\"])",
            "after 1.3 s: (3, 1, [\"ka\"])",
            "keep-alive: id=c ttl=3",
            "keep-alive: id=c ttl=3",
            "keep-alive: id=c ttl=3",
            "keep-alive: id=c ttl=3",
            "just renewed: (3, 2, [\"ka\"])",
            "ka=1 c2 m2 v1 lc",
            "keep-alive after revoke: id=c ttl=0",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_keep_alive_renews_and_ttl() {
    side_by_side(keep_alive).await;
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

async fn expiry(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut w = c
        .watch("e/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    t.push(show(&next(&mut w).await));
    let granted = Instant::now();
    grant(&mut c, 0xe, 2).await;
    grant(&mut c, 0xf, 2).await;
    let le = Some(PutOptions::new().with_lease(0xe));
    let lf = Some(PutOptions::new().with_lease(0xf));
    c.put("e/2", "x", le.clone()).await.unwrap(); // 2
    c.put("e/1", "x", le).await.unwrap(); // 3
    c.put("e/3", "x", lf.clone()).await.unwrap(); // 4
    c.put("e/4", "x", lf).await.unwrap(); // 5
    c.put("e/5", "x", None).await.unwrap(); // 6
    for _ in 0..5 {
        next(&mut w).await;
    }
    // Each lease's keys go in one revision of their own (7 and 8, in either order).
    let mut expired = vec![next(&mut w).await, next(&mut w).await];
    let took = granted.elapsed();
    expired.sort_by_key(|r| r.events()[0].kv().unwrap().key().to_vec());
    let revs: Vec<i64> = expired
        .iter()
        .map(|r| r.header().unwrap().revision())
        .collect();
    assert!(
        revs == [7, 8] || revs == [8, 7],
        "{kind:?}: revisions {revs:?}"
    );
    for r in &expired {
        let rev = r.header().unwrap().revision();
        let s = show(r)
            .replace(&format!("rev={rev}"), "rev=R")
            .replace(&format!("m{rev}"), "mR");
        t.push(s);
    }
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{kind:?}: leases expired after {took:?}"
    );
    quiet(&mut w, Duration::from_millis(300)).await;
    t.push(format!("e after expiry: {:?}", ttl(&mut c, 0xe).await));
    t.push(format!("leases: {:?}", lease_ids(&mut c).await));
    t.push(get_str(&mut c, "e/5").await);
    let e = c
        .put("e/6", "x", Some(PutOptions::new().with_lease(0xe)))
        .await
        .unwrap_err();
    t.push(format!("put with expired lease: {}", err_str(&e)));
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "id=0 rev=R | DELETE e/1= c0 mR v0 l0 | DELETE e/2= c0 mR v0 l0",
            "id=0 rev=R | DELETE e/3= c0 mR v0 l0 | DELETE e/4= c0 mR v0 l0",
            "e after expiry: (0, -1, [])",
            "leases: []",
            "e/5=x c6 m6 v1 l0",
            &format!("put with expired lease: NotFound: {LEASE_NOT_FOUND}"),
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_expiry_deletes_keys_one_revision_per_lease() {
    side_by_side(expiry).await;
}

// ---------------------------------------------------------------------------------------------
// Right after startup
// ---------------------------------------------------------------------------------------------

async fn right_after_startup(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    // As soon as the server serves, every lease call works...
    let r = c.lease_time_to_live(0x999, None).await;
    t.push(format!(
        "ttl unknown: {}",
        r.map_or_else(|e| err_str(&e), |r| format!("ttl={}", r.ttl()))
    ));
    let granted = Instant::now();
    t.push(format!("grant: ttl={}", grant(&mut c, 0x1, 5).await));
    grant(&mut c, 0x2, 30).await;
    let r = c.lease_keep_alive(0x2).await;
    t.push(format!(
        "keep-alive: {}",
        r.map_or_else(|e| e.to_string(), |(k, _)| format!("id={:x}", k.id()))
    ));
    let r = c.lease_time_to_live(0x2, None).await;
    t.push(format!(
        "ttl: {}",
        r.map_or_else(|e| err_str(&e), |r| format!("granted={}", r.granted_ttl()))
    ));
    // ...and a lease's clock starts at its grant: 5 s later it is gone (etcd checks for expired
    // leases every 500 ms).
    loop {
        let (_, left, _) = ttl(&mut c, 0x1).await;
        if left == -1 {
            break;
        }
        let since = granted.elapsed();
        assert!(
            since < Duration::from_millis(5800),
            "{kind:?}: a 5 s lease granted right after startup still has {left} s left after {since:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = granted.elapsed();
    assert!(
        since > Duration::from_millis(4900),
        "{kind:?}: a 5 s lease expired after {since:?}"
    );
    t.push("expired on time".to_owned());
    assert_eq!(
        t,
        v(&[
            "ttl unknown: ttl=-1",
            "grant: ttl=5",
            "keep-alive: id=2",
            "ttl: granted=30",
            "expired on time"
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_clock_right_after_startup() {
    side_by_side(right_after_startup).await;
}

// ---------------------------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------------------------

async fn restart(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    // Stay clear of the first moments after startup (see lease_clock_right_after_startup).
    tokio::time::sleep(Duration::from_secs(1)).await;
    grant(&mut c, 0x10, 10).await;
    grant(&mut c, 0x11, 2).await;
    c.put("r/1", "x", Some(PutOptions::new().with_lease(0x10)))
        .await
        .unwrap(); // 2
    c.put("r/2", "x", Some(PutOptions::new().with_lease(0x11)))
        .await
        .unwrap(); // 3
    // Run lease 0x10 down to about 7 s left (0x11 expires meanwhile), then restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, before, _) = ttl(&mut c, 0x10).await;
    assert!(
        (6..=7).contains(&before),
        "{kind:?}: remaining before restart {before}"
    );
    t.push(format!(
        "before restart: leases {:?}, {}",
        lease_ids(&mut c).await,
        get_str(&mut c, "r/2").await
    ));
    drop(c);
    let p = tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.stop();
        p.spawn();
        p
    })
    .await
    .unwrap();
    let mut c = p.client().await;
    // The remaining TTL is refreshed: a full TTL again (etcd also adds the election timeout).
    let (granted, left, keys) = ttl(&mut c, 0x10).await;
    eprintln!("{kind:?}: remaining TTL {before} s before the restart, {left} s after");
    assert!(
        (9..=11).contains(&left),
        "{kind:?}: remaining after restart {left}, expected about 10"
    );
    t.push(format!("after restart: granted={granted} keys={keys:?}"));
    t.push(format!("leases {:?}", lease_ids(&mut c).await));
    t.push(get_str(&mut c, "r/1").await);
    // It still works as a lease: keep-alive, then revoke deletes its key.
    let (keeper, _stream) = c.lease_keep_alive(0x10).await.unwrap();
    assert_eq!(keeper.id(), 0x10);
    let rev = c
        .lease_revoke(0x10)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    t.push(format!(
        "revoke: rev={rev} {}",
        get_str(&mut c, "r/1").await
    ));
    assert_eq!(
        t,
        v(&[
            "before restart: leases [16], r/2: none",
            "after restart: granted=10 keys=[\"r/1\"]",
            "leases [16]",
            "r/1=x c2 m2 v1 l10",
            "revoke: rev=5 r/1: none",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_survives_restart_with_refreshed_ttl() {
    side_by_side(restart).await;
}

// ---------------------------------------------------------------------------------------------
// Lock
// ---------------------------------------------------------------------------------------------

async fn lock(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0x100, 30).await;
    grant(&mut c, 0x200, 30).await;
    grant(&mut c, 0x400, 30).await;
    let lock = |c: &Client, lease: i64| {
        let mut c = c.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let r = c
                .lock("L", Some(LockOptions::new().with_lease(lease)))
                .await
                .unwrap();
            (
                esc(r.key()),
                r.header().unwrap().revision(),
                began.elapsed(),
            )
        })
    };

    let (key, rev, _) = lock(&c, 0x100).await.unwrap();
    t.push(format!("a locked: key={key} rev={rev}"));
    t.push(get_str(&mut c, "L/100").await);
    // Locking again with the same lease is a no-op.
    let (key, rev, _) = lock(&c, 0x100).await.unwrap();
    t.push(format!("a again: key={key} rev={rev}"));
    // b waits until a unlocks.
    let b = lock(&c, 0x200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("b waiting: {}", !b.is_finished()));
    let r = c.unlock("L/100").await.unwrap();
    t.push(format!(
        "a unlocked: rev={}",
        r.header().unwrap().revision()
    ));
    let (key, rev, _) = tokio::time::timeout(STEP, b).await.unwrap().unwrap();
    t.push(format!("b locked: key={key} rev={rev}"));
    t.push(get_str(&mut c, "L/100").await);
    c.unlock("L/200").await.unwrap();

    // c holds the lock on a 2 s lease that nobody keeps alive; d gets it when that expires.
    grant(&mut c, 0x300, 2).await;
    let (key, _, _) = lock(&c, 0x300).await.unwrap();
    t.push(format!("c locked: key={key}"));
    let d = lock(&c, 0x400);
    let (key, _, waited) = tokio::time::timeout(STEP, d).await.unwrap().unwrap();
    t.push(format!("d locked: key={key}"));
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{kind:?}: d waited {waited:?}"
    );
    t.push(get_str(&mut c, "L/300").await);
    let held: Vec<String> = c
        .get("L/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(kv_str)
        .collect();
    t.push(format!("held: {held:?}"));
    assert_eq!(
        t,
        v(&[
            "a locked: key=L/100 rev=2",
            "L/100= c2 m2 v1 l100",
            "a again: key=L/100 rev=2",
            "b waiting: true",
            "a unlocked: rev=4",
            "b locked: key=L/200 rev=4",
            "L/100: none",
            "c locked: key=L/300",
            "d locked: key=L/400",
            "L/300: none",
            "held: [\"L/400= c7 m7 v1 l400\"]",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_contention_unlock_and_lease_expiry() {
    side_by_side(lock).await;
}

// ---------------------------------------------------------------------------------------------
// Election
// ---------------------------------------------------------------------------------------------

fn leader_str(l: &LeaderKey) -> String {
    format!(
        "name={} key={} rev={} lease={:x}",
        esc(l.name()),
        esc(l.key()),
        l.rev(),
        l.lease()
    )
}

async fn election(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0x100, 30).await;
    grant(&mut c, 0x200, 30).await;
    grant(&mut c, 0x400, 30).await;
    let campaign = |c: &Client, value: &'static str, lease: i64| {
        let mut c = c.clone();
        tokio::spawn(async move {
            let r = c.campaign("E", value, lease).await.unwrap();
            r.leader().unwrap().clone()
        })
    };
    let leader = |c: &Client| {
        let mut c = c.clone();
        async move {
            match c.leader("E").await {
                Ok(r) => format!("leader: {}", r.kv().map(kv_str).unwrap_or_default()),
                Err(e) => format!("leader: {}", err_str(&e)),
            }
        }
    };
    t.push(leader(&c).await);
    // Observe before there is any leader. (etcd sends the stream's response headers only with
    // the first leader, so the call itself waits: run it in a task.)
    let ob = {
        let mut c = c.clone();
        tokio::spawn(async move { c.observe("E").await.unwrap() })
    };
    async fn observed(ob: &mut etcd_client::ObserveStream) -> String {
        let r = tokio::time::timeout(STEP, ob.message())
            .await
            .expect("no observe message")
            .unwrap()
            .unwrap();
        format!("observe: {}", r.kv().map(kv_str).unwrap_or_default())
    }

    let a = campaign(&c, "a1", 0x100).await.unwrap();
    t.push(format!("a leads: {}", leader_str(&a)));
    let mut ob = tokio::time::timeout(STEP, ob).await.unwrap().unwrap();
    t.push(observed(&mut ob).await);
    t.push(leader(&c).await);
    let b = campaign(&c, "b1", 0x200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("b waiting: {}", !b.is_finished()));
    c.proclaim("a2", Some(ProclaimOptions::new().with_leader(a.clone())))
        .await
        .unwrap();
    t.push(observed(&mut ob).await);
    t.push(leader(&c).await);
    c.resign(Some(ResignOptions::new().with_leader(a.clone())))
        .await
        .unwrap();
    let b = tokio::time::timeout(STEP, b).await.unwrap().unwrap();
    t.push(format!("b leads: {}", leader_str(&b)));
    t.push(observed(&mut ob).await);
    // The old leader can no longer proclaim.
    let e = c
        .proclaim("a3", Some(ProclaimOptions::new().with_leader(a.clone())))
        .await
        .unwrap_err();
    t.push(format!("stale proclaim: {}", err_str(&e)));
    c.resign(Some(ResignOptions::new().with_leader(b)))
        .await
        .unwrap();
    t.push(leader(&c).await);

    // c leads on a 2 s lease that nobody keeps alive; its leadership ends when it expires, and
    // the waiting d takes over.
    grant(&mut c, 0x300, 2).await;
    let cl = campaign(&c, "c1", 0x300).await.unwrap();
    t.push(format!("c leads: {}", leader_str(&cl)));
    t.push(observed(&mut ob).await);
    let began = Instant::now();
    let d = campaign(&c, "d1", 0x400);
    let d = tokio::time::timeout(STEP, d).await.unwrap().unwrap();
    let waited = began.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{kind:?}: d waited {waited:?}"
    );
    t.push(format!("d leads: {}", leader_str(&d)));
    t.push(observed(&mut ob).await);
    t.push(leader(&c).await);
    t.push(get_str(&mut c, "E/300").await);
    c.resign(Some(ResignOptions::new().with_leader(d)))
        .await
        .unwrap();
    t.push(leader(&c).await);
    let e = c
        .delete("E/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    t.push(format!("left under E/: {}", e.deleted()));
    let no_leader = format!("leader: Unknown: {NO_LEADER}");
    assert_eq!(
        t,
        v(&[
            &no_leader,
            "a leads: name=E key=E/100 rev=2 lease=100",
            "observe: E/100=a1 c2 m2 v1 l100",
            "leader: E/100=a1 c2 m2 v1 l100",
            "b waiting: true",
            "observe: E/100=a2 c2 m4 v2 l100",
            "leader: E/100=a2 c2 m4 v2 l100",
            "b leads: name=E key=E/200 rev=3 lease=200",
            "observe: E/200=b1 c3 m3 v1 l200",
            &format!("stale proclaim: Unknown: {NOT_LEADER}"),
            &no_leader,
            "c leads: name=E key=E/300 rev=7 lease=300",
            "observe: E/300=c1 c7 m7 v1 l300",
            "d leads: name=E key=E/400 rev=8 lease=400",
            "observe: E/400=d1 c8 m8 v1 l400",
            "leader: E/400=d1 c8 m8 v1 l400",
            "E/300: none",
            &no_leader,
            "left under E/: 0",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn election_campaign_proclaim_observe_resign_and_expiry() {
    side_by_side(election).await;
}

// ---------------------------------------------------------------------------------------------
// Lock and Campaign without a lease
// ---------------------------------------------------------------------------------------------

/// The lease behind a lock or leader key, as a transcript line: its granted TTL (lease IDs
/// are generated and differ between servers).
async fn lease_line(c: &mut Client, what: &str, lease: i64) -> String {
    let r = c.lease_time_to_live(lease, None).await.unwrap();
    format!(
        "{what}: lease {} granted ttl {}",
        if lease == 0 { "none" } else { "own" },
        r.granted_ttl()
    )
}

/// `lease: 0` is "no lease given": each caller gets its own session lease (60 s, as
/// clientv3's `concurrency.NewSession`) and its own key, so a second caller waits for the
/// first instead of both holding the lock or the leadership at once.
async fn lease_zero(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let lock = |c: &Client| {
        let mut c = c.clone();
        tokio::spawn(async move { c.lock("Z", None).await.unwrap().key().to_vec() })
    };
    let a = tokio::time::timeout(STEP, lock(&c)).await.unwrap().unwrap();
    let a_lease = c.get(a.clone(), None).await.unwrap().kvs()[0].lease();
    t.push(lease_line(&mut c, "a locked", a_lease).await);
    let b = lock(&c);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("b waiting: {}", !b.is_finished()));
    c.unlock(a.clone()).await.unwrap();
    let b = tokio::time::timeout(STEP, b).await.unwrap().unwrap();
    t.push(format!("b locked: own key {}", a != b));
    let b_lease = c.get(b.clone(), None).await.unwrap().kvs()[0].lease();
    t.push(lease_line(&mut c, "b locked", b_lease).await);
    t.push(format!("a and b leases differ: {}", a_lease != b_lease));
    c.unlock(b).await.unwrap();

    let campaign = |c: &Client, value: &'static str| {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.campaign("Y", value, 0)
                .await
                .unwrap()
                .leader()
                .unwrap()
                .clone()
        })
    };
    let x = tokio::time::timeout(STEP, campaign(&c, "x"))
        .await
        .unwrap()
        .unwrap();
    t.push(lease_line(&mut c, "x leads", x.lease()).await);
    let y = campaign(&c, "y");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("y waiting: {}", !y.is_finished()));
    c.resign(Some(ResignOptions::new().with_leader(x.clone())))
        .await
        .unwrap();
    let y = tokio::time::timeout(STEP, y).await.unwrap().unwrap();
    t.push(format!(
        "y leads: own key {}, own lease {}",
        y.key() != x.key(),
        y.lease() != x.lease()
    ));
    assert_eq!(
        t,
        v(&[
            "a locked: lease own granted ttl 60",
            "b waiting: true",
            "b locked: own key true",
            "b locked: lease own granted ttl 60",
            "a and b leases differ: true",
            "x leads: lease own granted ttl 60",
            "y waiting: true",
            "y leads: own key true, own lease true",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_campaign_without_a_lease_get_a_session_each() {
    side_by_side(lease_zero).await;
}
