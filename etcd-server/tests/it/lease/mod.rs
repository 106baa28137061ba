//! Lease, Lock and Election integration tests through `etcd-client`: grant/revoke/keep-alive/
//! time-to-live/leases, key attachment, expiry in real time, leases across a restart, lock
//! contention and election campaigns. Every scenario runs on our server and on the reference
//! etcd 3.4.23, and the two transcripts must be identical.

mod attach;
mod election;
mod expiry;
mod grant_revoke;
mod keep_alive;
mod lease_zero;
mod lock;
mod restart;
mod startup;

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
