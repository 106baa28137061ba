//! Randomized differential tests: one random sequence of operations runs against the reference
//! etcd 3.4.23 and against our etcd-server, and every response (or error: gRPC code and message)
//! must match field for field.
//!
//! - `differential_kv_against_reference`: KV operations (Range, Put, DeleteRange, Txn, Compact).
//! - `differential_watch_lease_against_reference`: the same KV operations, with puts attached to
//!   leases, interleaved with lease operations (Grant with explicit IDs and TTLs of 300 s or
//!   more, Revoke, TimeToLive with and without keys, Leases, one-shot KeepAlive; on live,
//!   revoked and never-granted IDs) and watch operations on up to 10 streams per server
//!   (watchers on one key, prefixes, from-key, the whole keyspace and arbitrary or empty
//!   ranges; with and without prev_kv, NOPUT/NODELETE (also doubled, and an unknown filter);
//!   server-assigned and client-chosen (also duplicate) watch ids; start revisions now, past,
//!   exactly the compaction revision, compacted, future, 1 and negative; cancels of live,
//!   compacted and unknown watchers; progress requests), with compactions while watchers are
//!   open. See "Watches and leases" below for how the streams are compared.
//!
//! Environment:
//! - `DIFF_SEED`: the seed (default: random). It is printed at the start and in every failure.
//! - `DIFF_OPS`: number of random operations (default 3000).
//! - `DIFF_VERBOSE=1`: print every operation and the reference response.
//!
//! Normalizations (the only places where the responses are not compared byte for byte):
//! - The top-level response header's `cluster_id`, `member_id` and `raft_term` are zeroed in
//!   both responses (they are per-cluster random). Headers nested inside Txn responses are
//!   compared as they are.
//! - Sorting by a target other than KEY: etcd uses Go's `sort.Sort`, which is not stable in
//!   general, so the order of key-values with equal sort values ("tie groups") is unspecified.
//!   In both responses each run of consecutive key-values with an equal sort value is re-sorted
//!   by key (so a complete tie group is compared as a multiset). When `more` is set, the limit
//!   may have cut the last tie group, and which of its members survived is unspecified: the
//!   key-values of that last group are replaced by their sort values only (all other fields
//!   zeroed). With `keys_only` and the VALUE target the sort values are not visible (values are
//!   cleared), so the whole result is one tie group.
//!
//! Not generated (each for a stated reason, so nothing is skipped silently):
//! - Unknown `sort_order`/`sort_target` enum values: etcd 3.4.23 crashes on an unknown
//!   `sort_target` (nil sorter) and accepts an unknown `sort_order`, while etcd 3.5+ (and our
//!   server) reject both with `etcdserver: invalid sort option`.
//! - In a txn, an `ignore_value`/`ignore_lease` put of a key that an earlier delete with
//!   `range_end = "\0"` in the same txn removed: the duplicate-key check does not see such
//!   deletes and etcd 3.4.23 then panics ("unexpected error during txn"). Such puts are generated
//!   without the ignore flags.
//! - Leases, in the KV test: none are granted, so puts with a lease get `requested lease not
//!   found` and LEASE compares use 0 (the watch/lease test grants them).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_server::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
    compare::{CompareTarget, TargetUnion},
    kv_client::KvClient,
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
};
use etcd_server::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse, lease_client::LeaseClient,
    watch_client::WatchClient, watch_create_request::FilterType, watch_request,
};
use etcd_server::proto::mvccpb::{Event, KeyValue, event::EventType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use crate::harness::{Kind, Proc, reference_etcd, require};

/// Keys that puts write. Small, so keys collide; with prefixes of each other, a `\0` key, a
/// key ending in `\0` and keys of `\xff` bytes (whose prefix end is `"\0"`).
const KEYS: &[&[u8]] = &[
    b"\x00",
    b"a",
    b"a/1",
    b"a/2",
    b"a/2/x",
    b"ab",
    b"b",
    b"b/1",
    b"b/2",
    b"c",
    b"c\x00",
    b"d",
    b"foo",
    b"foo/bar",
    b"z",
    b"\xff",
    b"\xff\xff",
];
/// Keys that are never written: range bounds and compares on missing keys.
const MISSING: &[&[u8]] = &[b"0", b"a/", b"a/3", b"bb", b"m", b"zz", b"\xfe"];
const VALUES: &[&[u8]] = &[b"", b"v", b"v1", b"v2", b"x", b"zzz", b"\x00", b"\xff"];

/// One operation of the sequence.
#[derive(Debug, Clone)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Range(_) => "range",
            Op::Put(_) => "put",
            Op::Delete(_) => "delete",
            Op::Txn(_) => "txn",
            Op::Compact(_) => "compact",
        }
    }
}

/// A response or an error, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    Err(tonic::Code, String),
}

impl Resp {
    fn header(&self) -> Option<&ResponseHeader> {
        match self {
            Resp::Range(r) => r.header.as_ref(),
            Resp::Put(r) => r.header.as_ref(),
            Resp::Delete(r) => r.header.as_ref(),
            Resp::Txn(r) => r.header.as_ref(),
            Resp::Compact(r) => r.header.as_ref(),
            Resp::Err(..) => None,
        }
    }

    fn header_mut(&mut self) -> Option<&mut ResponseHeader> {
        match self {
            Resp::Range(r) => r.header.as_mut(),
            Resp::Put(r) => r.header.as_mut(),
            Resp::Delete(r) => r.header.as_mut(),
            Resp::Txn(r) => r.header.as_mut(),
            Resp::Compact(r) => r.header.as_mut(),
            Resp::Err(..) => None,
        }
    }
}

async fn exec(c: &mut KvClient<Channel>, op: &Op) -> Resp {
    let r = match op {
        Op::Range(r) => c
            .range(r.clone())
            .await
            .map(|x| Resp::Range(x.into_inner())),
        Op::Put(r) => c.put(r.clone()).await.map(|x| Resp::Put(x.into_inner())),
        Op::Delete(r) => c
            .delete_range(r.clone())
            .await
            .map(|x| Resp::Delete(x.into_inner())),
        Op::Txn(r) => c.txn(r.clone()).await.map(|x| Resp::Txn(x.into_inner())),
        Op::Compact(r) => c.compact(*r).await.map(|x| Resp::Compact(x.into_inner())),
    };
    r.unwrap_or_else(|s| Resp::Err(s.code(), s.message().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Normalization (see the module comment).

fn sort_val(target: SortTarget, kv: &KeyValue) -> (i64, Vec<u8>) {
    match target {
        SortTarget::Key => (0, kv.key.clone()),
        SortTarget::Version => (kv.version, Vec::new()),
        SortTarget::Create => (kv.create_revision, Vec::new()),
        SortTarget::Mod => (kv.mod_revision, Vec::new()),
        SortTarget::Value => (0, kv.value.clone()),
    }
}

fn only_sort_val(target: SortTarget, kv: &KeyValue) -> KeyValue {
    let mut out = KeyValue::default();
    match target {
        SortTarget::Key => out.key = kv.key.clone(),
        SortTarget::Version => out.version = kv.version,
        SortTarget::Create => out.create_revision = kv.create_revision,
        SortTarget::Mod => out.mod_revision = kv.mod_revision,
        SortTarget::Value => out.value = kv.value.clone(),
    }
    out
}

fn norm_range(req: &RangeRequest, resp: &mut RangeResponse) {
    let (Ok(target), Ok(_)) = (
        SortTarget::try_from(req.sort_target),
        SortOrder::try_from(req.sort_order),
    ) else {
        return;
    };
    if target == SortTarget::Key {
        return; // keys are unique: no ties
    }
    let mut groups: Vec<Vec<KeyValue>> = Vec::new();
    for kv in std::mem::take(&mut resp.kvs) {
        match groups.last_mut() {
            Some(g) if sort_val(target, &g[0]) == sort_val(target, &kv) => g.push(kv),
            _ => groups.push(vec![kv]),
        }
    }
    for g in &mut groups {
        g.sort_by(|a, b| a.key.cmp(&b.key));
    }
    if resp.more
        && let Some(last) = groups.last_mut()
    {
        for kv in last.iter_mut() {
            *kv = only_sort_val(target, kv);
        }
    }
    resp.kvs = groups.concat();
}

fn norm_txn(req: &TxnRequest, resp: &mut TxnResponse) {
    let ops = if resp.succeeded {
        &req.success
    } else {
        &req.failure
    };
    for (op, r) in ops.iter().zip(resp.responses.iter_mut()) {
        match (&op.request, &mut r.response) {
            (Some(Request::RequestRange(q)), Some(Response::ResponseRange(a))) => norm_range(q, a),
            (Some(Request::RequestTxn(q)), Some(Response::ResponseTxn(a))) => norm_txn(q, a),
            _ => {}
        }
    }
}

fn normalize(op: &Op, mut resp: Resp) -> Resp {
    if let Some(h) = resp.header_mut() {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
    match (op, &mut resp) {
        (Op::Range(q), Resp::Range(a)) => norm_range(q, a),
        (Op::Txn(q), Resp::Txn(a)) => norm_txn(q, a),
        _ => {}
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Printing: `Debug` with byte vectors shown as byte strings.

fn esc(bytes: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// `{:?}` of `x`, with every non-empty list of small integers (a `Vec<u8>`) as a byte string.
fn show(x: &impl Debug) -> String {
    let d = format!("{x:?}");
    let mut out = String::with_capacity(d.len());
    let mut rest = d.as_str();
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let bytes = after.find(']').and_then(|j| {
            let inner = &after[..j];
            if inner.is_empty() {
                return None;
            }
            let v: Option<Vec<u8>> = inner.split(", ").map(|n| n.parse::<u8>().ok()).collect();
            v.map(|v| (v, j))
        });
        match bytes {
            Some((v, j)) => {
                out.push_str(&esc(&v));
                rest = &after[j + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Generation.

fn prefix_end(k: &[u8]) -> Vec<u8> {
    let mut e = k.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

/// Whether the delete interval `[b, e)` (etcd conventions) may cover key `k`. Conservative:
/// `"\0"` as `range_end` is taken to mean "every key ≥ b".
fn covers((b, e): &(Vec<u8>, Vec<u8>), k: &[u8]) -> bool {
    if e.is_empty() {
        b.as_slice() == k
    } else if e.as_slice() == [0] {
        k >= b.as_slice()
    } else {
        k >= b.as_slice() && k < e.as_slice()
    }
}

/// Keys written by one txn under generation, to avoid duplicate-key rejections when `avoid`.
#[derive(Default)]
struct DupCtx {
    avoid: bool,
    /// When not avoiding: the few keys this txn's writes use, so that they collide.
    pool: Vec<Vec<u8>>,
    puts: Vec<Vec<u8>>,
    dels: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DupCtx {
    fn put_ok(&self, k: &[u8]) -> bool {
        !self.avoid
            || (!self.puts.iter().any(|p| p == k) && !self.dels.iter().any(|d| covers(d, k)))
    }
    fn del_ok(&self, d: &(Vec<u8>, Vec<u8>)) -> bool {
        !self.avoid || !self.puts.iter().any(|p| covers(d, p))
    }
}

struct Gen {
    rng: StdRng,
    /// The reference's current revision (from the last successful response header).
    cur_rev: i64,
    /// The last successful compaction revision.
    compact_rev: Option<i64>,
    /// Key-values seen in reference responses (possibly stale): compare targets and filters.
    hints: HashMap<Vec<u8>, KeyValue>,
    /// Generating ops inside a txn (where one bad revision fails the whole txn).
    in_txn: bool,
    /// Lease IDs that puts attach to and LEASE compares use (the watch/lease test). Empty in
    /// the KV-only test, where puts with a lease use random unknown IDs and compares use 0.
    leases: Vec<i64>,
    /// The leases currently granted on the reference (a subset of `leases`).
    live_leases: Vec<i64>,
}

impl Gen {
    fn pct(&mut self) -> u32 {
        self.rng.random_range(0..100)
    }

    fn pick(&mut self, from: &[&[u8]]) -> Vec<u8> {
        from[self.rng.random_range(0..from.len())].to_vec()
    }

    fn pick_owned(&mut self, from: &[Vec<u8>]) -> Vec<u8> {
        from[self.rng.random_range(0..from.len())].clone()
    }

    fn write_key(&mut self) -> Vec<u8> {
        self.pick(KEYS)
    }

    fn any_key(&mut self) -> Vec<u8> {
        if self.pct() < 80 {
            self.pick(KEYS)
        } else {
            self.pick(MISSING)
        }
    }

    fn value(&mut self) -> Vec<u8> {
        if self.pct() < 85 {
            self.pick(VALUES)
        } else {
            let n = self.rng.random_range(0..24);
            (0..n).map(|_| self.rng.random_range(b'0'..=b'z')).collect()
        }
    }

    /// A `(key, range_end)` pair in every form etcd knows.
    fn key_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        let key = self.any_key();
        match self.pct() {
            0..40 => (key, Vec::new()),
            40..58 => {
                let e = prefix_end(&key);
                (key, e)
            }
            58..68 => (key, vec![0]),
            68..83 => {
                let e = self.any_key();
                (key, e)
            }
            83..90 => {
                let mut e = key.clone();
                e.push(0);
                (key, e)
            }
            90..95 => (vec![0], vec![0]),
            _ => {
                let k = self.write_key();
                let e = prefix_end(&k[..1]);
                (k[..1].to_vec(), e)
            }
        }
    }

    /// A revision to read at: current, old, exactly the compaction revision, compacted,
    /// future or negative.
    fn read_rev(&mut self) -> i64 {
        let cur = self.cur_rev;
        let low = self.compact_rev.unwrap_or(1).max(1);
        if self.in_txn && self.pct() < 80 {
            return if self.pct() < 60 {
                0
            } else {
                self.rng.random_range(low..=cur.max(low))
            };
        }
        match self.pct() {
            0..40 => 0,
            40..48 => cur,
            48..68 => self.rng.random_range(low..=cur.max(low)),
            68..75 => self.compact_rev.unwrap_or(1),
            75..83 => self.rng.random_range(1..=low),
            83..90 => cur + 1,
            90..96 => cur + self.rng.random_range(2..=5),
            _ => self.rng.random_range(-3..=-1),
        }
    }

    /// A revision for a filter or a compare: near known revisions.
    fn some_rev(&mut self) -> i64 {
        match self.pct() {
            0..10 => 0,
            10..20 => self.cur_rev,
            20..30 => self.cur_rev + 1,
            _ => self.rng.random_range(1..=self.cur_rev.max(1)),
        }
    }

    fn range(&mut self) -> RangeRequest {
        let (mut key, range_end) = self.key_range();
        if self.pct() < 1 {
            key.clear(); // etcdserver: key is not provided
        }
        let mut r = RangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        r.limit = match self.pct() {
            0..50 => 0,
            50..97 => self.rng.random_range(1..=6),
            _ => -1,
        };
        r.revision = self.read_rev();
        if self.pct() < 40 {
            r.sort_order = self.rng.random_range(0..=2);
        }
        if self.pct() < 50 {
            r.sort_target = self.rng.random_range(0..=4);
        }
        r.serializable = self.pct() < 30;
        r.keys_only = self.pct() < 20;
        r.count_only = self.pct() < 12;
        if self.pct() < 12 {
            r.min_mod_revision = self.some_rev();
        }
        if self.pct() < 12 {
            r.max_mod_revision = self.some_rev();
        }
        if self.pct() < 12 {
            r.min_create_revision = self.some_rev();
        }
        if self.pct() < 12 {
            r.max_create_revision = self.some_rev();
        }
        r
    }

    fn full_range(rev: i64) -> RangeRequest {
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        }
    }

    fn put_with_key(&mut self, key: Vec<u8>) -> PutRequest {
        let mut p = PutRequest {
            key,
            value: self.value(),
            prev_kv: self.pct() < 50,
            ..Default::default()
        };
        match self.pct() {
            0..3 => {
                // ignore_value: no value (error if the key is missing), rarely with a value.
                p.ignore_value = true;
                if self.pct() < 80 {
                    p.value.clear();
                }
            }
            3..6 => {
                p.ignore_lease = true;
                if self.pct() < 20 {
                    p.lease = self.rng.random_range(1..1000);
                }
            }
            // Lease not found (the KV test), or a live, revoked or unknown lease.
            6..8 if self.leases.is_empty() => p.lease = self.rng.random_range(1..1000),
            6..30 if !self.leases.is_empty() => p.lease = self.pick_lease(),
            _ => {}
        }
        p
    }

    /// A lease ID: mostly a live one, else any of the pool (revoked or never granted).
    fn pick_lease(&mut self) -> i64 {
        if !self.live_leases.is_empty() && self.pct() < 75 {
            self.live_leases[self.rng.random_range(0..self.live_leases.len())]
        } else {
            self.leases[self.rng.random_range(0..self.leases.len())]
        }
    }

    fn put(&mut self) -> PutRequest {
        let mut key = self.write_key();
        if self.pct() < 1 {
            key.clear();
        }
        self.put_with_key(key)
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let (mut key, range_end) = self.key_range();
        // Deleting everything is rare, or the store would stay nearly empty.
        let (key, range_end) = if key == [0] && range_end == [0] && self.pct() < 80 {
            (self.write_key(), Vec::new())
        } else {
            if self.pct() < 1 {
                key.clear();
            }
            (key, range_end)
        };
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.pct() < 50,
        }
    }

    fn compare(&mut self) -> Compare {
        let key = if self.pct() < 1 {
            Vec::new()
        } else {
            self.any_key()
        };
        let range_end = match self.pct() {
            0..75 => Vec::new(),
            75..87 => prefix_end(&key),
            87..94 => vec![0],
            _ => self.any_key(),
        };
        let target = self.rng.random_range(0..=4);
        let result = self.rng.random_range(0..=3);
        let hint = self.hints.get(&key).cloned().unwrap_or_default();
        let near = |g: &mut Self, v: i64| v + g.rng.random_range(-1..=1);
        let mut union = match CompareTarget::try_from(target).unwrap() {
            CompareTarget::Version => Some(TargetUnion::Version(match self.pct() {
                0..50 => near(self, hint.version),
                50..70 => 0,
                _ => self.rng.random_range(0..=5),
            })),
            CompareTarget::Create => Some(TargetUnion::CreateRevision(match self.pct() {
                0..55 => near(self, hint.create_revision),
                55..70 => 0,
                _ => self.some_rev(),
            })),
            CompareTarget::Mod => Some(TargetUnion::ModRevision(match self.pct() {
                0..55 => near(self, hint.mod_revision),
                55..70 => 0,
                _ => self.some_rev(),
            })),
            CompareTarget::Value => Some(TargetUnion::Value(if self.pct() < 50 {
                hint.value
            } else {
                self.value()
            })),
            CompareTarget::Lease if self.leases.is_empty() => Some(TargetUnion::Lease(0)),
            CompareTarget::Lease => Some(TargetUnion::Lease(match self.pct() {
                0..50 => hint.lease,
                50..70 => 0,
                _ => self.pick_lease(),
            })),
        };
        match self.pct() {
            // A target_union member that does not match the target, or none.
            0..2 => union = Some(TargetUnion::Version(self.rng.random_range(0..=3))),
            2..4 => union = Some(TargetUnion::Value(self.value())),
            4..6 => union = None,
            _ => {}
        }
        Compare {
            result,
            target,
            key,
            target_union: union,
            range_end,
        }
    }

    fn txn_op(&mut self, depth: u32, ctx: &mut DupCtx) -> RequestOp {
        let p = self.pct();
        let req = if p < 35 {
            let mut tries = 0;
            loop {
                let k = if ctx.pool.is_empty() {
                    self.write_key()
                } else {
                    self.pick_owned(&ctx.pool)
                };
                if ctx.put_ok(&k) {
                    ctx.puts.push(k.clone());
                    let mut p = self.put_with_key(k);
                    if ctx
                        .dels
                        .iter()
                        .any(|(b, e)| e.as_slice() == [0] && p.key >= *b)
                    {
                        // etcd 3.4.23 panics ("unexpected error during txn: etcdserver: key
                        // not found") on an ignore_value/ignore_lease put of a key that an
                        // earlier delete to "\0" in the same txn removed (the duplicate-key
                        // check does not see such deletes), so the reference cannot answer it.
                        p.ignore_value = false;
                        p.ignore_lease = false;
                    }
                    break Request::RequestPut(p);
                }
                tries += 1;
                if tries > 10 {
                    break Request::RequestRange(self.range());
                }
            }
        } else if p < 55 {
            let mut tries = 0;
            loop {
                let mut d = self.delete();
                if !ctx.pool.is_empty() && self.pct() < 50 {
                    d.key = self.pick_owned(&ctx.pool);
                    d.range_end = if self.pct() < 70 {
                        Vec::new()
                    } else {
                        prefix_end(&d.key)
                    };
                }
                let iv = (d.key.clone(), d.range_end.clone());
                if ctx.del_ok(&iv) {
                    ctx.dels.push(iv);
                    break Request::RequestDeleteRange(d);
                }
                tries += 1;
                if tries > 10 {
                    break Request::RequestRange(self.range());
                }
            }
        } else if p < 85 || depth >= 2 {
            Request::RequestRange(self.range())
        } else {
            Request::RequestTxn(self.txn(depth + 1, ctx))
        };
        RequestOp { request: Some(req) }
    }

    fn txn(&mut self, depth: u32, ctx: &mut DupCtx) -> TxnRequest {
        let nc = match self.pct() {
            0..20 => 0,
            20..70 => 1,
            _ => self.rng.random_range(2..=4),
        };
        let compare = (0..nc).map(|_| self.compare()).collect();
        let ns = self.rng.random_range(0..=5);
        let success = (0..ns).map(|_| self.txn_op(depth, ctx)).collect();
        let nf = self.rng.random_range(0..=5);
        let failure = (0..nf).map(|_| self.txn_op(depth, ctx)).collect();
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    fn read_op(&mut self) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(self.range())),
        }
    }

    /// Txns at the op-count limit (128), just above it, and nested ones whose budget is what
    /// the outer txn leaves.
    fn big_txn(&mut self) -> TxnRequest {
        let n = if self.pct() < 50 { 128 } else { 129 };
        let del = |g: &mut Self| {
            let k = g.write_key();
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                })),
            }
        };
        match self.rng.random_range(0..5) {
            0 => TxnRequest {
                success: (0..n).map(|_| self.read_op()).collect(),
                ..Default::default()
            },
            1 => TxnRequest {
                compare: (0..n).map(|_| self.compare()).collect(),
                failure: vec![self.read_op()],
                ..Default::default()
            },
            2 => TxnRequest {
                compare: vec![self.compare()],
                success: (0..n).map(|_| del(self)).collect(), // overlapping deletes are allowed
                failure: (0..n).map(|_| self.read_op()).collect(),
            },
            _ => {
                let outer = self.rng.random_range(90..=110);
                let budget = 128 - (outer + 1);
                let inner = (budget + self.rng.random_range(-1..=2)).max(0);
                let mut success: Vec<RequestOp> = (0..outer).map(|_| self.read_op()).collect();
                let nested = TxnRequest {
                    compare: vec![],
                    success: (0..inner).map(|_| self.read_op()).collect(),
                    failure: vec![],
                };
                let at = self.rng.random_range(0..=success.len());
                success.insert(
                    at,
                    RequestOp {
                        request: Some(Request::RequestTxn(nested)),
                    },
                );
                TxnRequest {
                    success,
                    ..Default::default()
                }
            }
        }
    }

    fn compact(&mut self) -> CompactionRequest {
        let cur = self.cur_rev;
        let c = self.compact_rev;
        let revision = match self.pct() {
            // Valid: lagging behind the head, so that old revisions stay readable.
            0..60 => {
                let lo = c.unwrap_or(0) + 1;
                self.rng.random_range(lo..=lo.max(lo + (cur - lo) / 2))
            }
            60..70 => c.unwrap_or(0),
            70..78 => self.rng.random_range(-2..=c.unwrap_or(1).max(-2)),
            78..88 => cur + 1,
            88..95 => cur + self.rng.random_range(2..=10),
            _ => 0,
        };
        CompactionRequest {
            revision,
            physical: self.pct() < 50,
        }
    }

    fn next_op(&mut self) -> Op {
        match self.rng.random_range(0..1000) {
            0..300 => Op::Put(self.put()),
            300..400 => Op::Delete(self.delete()),
            400..690 => Op::Range(self.range()),
            690..965 => {
                let mut ctx = DupCtx {
                    avoid: self.pct() < 85,
                    ..Default::default()
                };
                if !ctx.avoid {
                    let n = self.rng.random_range(2..=4);
                    ctx.pool = (0..n).map(|_| self.write_key()).collect();
                }
                self.in_txn = true;
                let t = self.txn(0, &mut ctx);
                self.in_txn = false;
                Op::Txn(t)
            }
            965..970 => {
                self.in_txn = true;
                let t = self.big_txn();
                self.in_txn = false;
                Op::Txn(t)
            }
            _ => Op::Compact(self.compact()),
        }
    }

    /// Learns revisions and key-values from the reference's answer to `op`.
    fn observe(&mut self, op: &Op, resp: &Resp) {
        if let Some(h) = resp.header() {
            self.cur_rev = h.revision;
        }
        let mut kvs: Vec<&KeyValue> = Vec::new();
        collect_kvs(resp, &mut kvs);
        for kv in kvs {
            self.hints.insert(kv.key.clone(), kv.clone());
        }
        match (op, resp) {
            (Op::Compact(c), Resp::Compact(_)) => self.compact_rev = Some(c.revision),
            (Op::Put(p), Resp::Put(r)) => {
                let rev = r.header.as_ref().map_or(0, |h| h.revision);
                let h = self.hints.entry(p.key.clone()).or_default();
                h.key = p.key.clone();
                h.mod_revision = rev;
                h.version += 1;
                if h.version == 1 {
                    h.create_revision = rev;
                }
                if !p.ignore_value {
                    h.value = p.value.clone();
                }
            }
            _ => {}
        }
    }
}

fn collect_kvs<'a>(resp: &'a Resp, out: &mut Vec<&'a KeyValue>) {
    fn txn<'a>(t: &'a TxnResponse, out: &mut Vec<&'a KeyValue>) {
        for r in &t.responses {
            match &r.response {
                Some(Response::ResponseRange(r)) => out.extend(&r.kvs),
                Some(Response::ResponsePut(p)) => out.extend(&p.prev_kv),
                Some(Response::ResponseDeleteRange(d)) => out.extend(&d.prev_kvs),
                Some(Response::ResponseTxn(t)) => txn(t, out),
                None => {}
            }
        }
    }
    match resp {
        Resp::Range(r) => out.extend(&r.kvs),
        Resp::Put(p) => out.extend(&p.prev_kv),
        Resp::Delete(d) => out.extend(&d.prev_kvs),
        Resp::Txn(t) => txn(t, out),
        Resp::Compact(_) | Resp::Err(..) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct Driver {
    seed: u64,
    verbose: bool,
    reference: KvClient<Channel>,
    ours: KvClient<Channel>,
    index: usize,
    recent: VecDeque<(usize, Op)>,
    stats: HashMap<String, usize>,
}

impl Driver {
    /// Runs `op` on both servers, fails with the seed, the op and both responses if they differ,
    /// and returns the reference's (raw) response.
    async fn step(&mut self, op: Op) -> Resp {
        let (theirs, ours) =
            tokio::join!(exec(&mut self.reference, &op), exec(&mut self.ours, &op));
        let (nt, no) = (normalize(&op, theirs.clone()), normalize(&op, ours));
        if self.verbose {
            eprintln!("#{} {}\n  -> {}", self.index, show(&op), show(&nt));
        }
        if nt != no {
            let mut ctx = String::new();
            for (i, o) in &self.recent {
                ctx.push_str(&format!("  #{i} {}\n", show(o)));
            }
            panic!(
                "DIFFERENTIAL MISMATCH (DIFF_SEED={seed}) at op #{idx} ({kind})\n\
                 preceding ops:\n{ctx}\
                 request:   {req}\n\
                 reference: {theirs}\n\
                 ours:      {ours}\n\
                 reproduce: DIFF_SEED={seed} DIFF_OPS={ops} cargo test -p etcd-server --test it differential_kv",
                seed = self.seed,
                idx = self.index,
                kind = op.kind(),
                req = show(&op),
                theirs = show(&nt),
                ours = show(&no),
                ops = self.index + 1,
            );
        }
        let outcome = match &theirs {
            Resp::Err(_, m) => format!("{} error: {m}", op.kind()),
            Resp::Txn(t) => format!("txn ok (succeeded={})", t.succeeded),
            _ => format!("{} ok", op.kind()),
        };
        *self.stats.entry(outcome).or_default() += 1;
        self.recent.push_back((self.index, op));
        if self.recent.len() > 8 {
            self.recent.pop_front();
        }
        self.index += 1;
        theirs
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn differential_kv_against_reference() {
    if require(reference_etcd(), "reference etcd").is_none() {
        return;
    }
    let seed: u64 = match std::env::var("DIFF_SEED") {
        Ok(s) => s.parse().expect("DIFF_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    let n_ops: usize = std::env::var("DIFF_OPS")
        .ok()
        .map_or(3000, |s| s.parse().expect("DIFF_OPS must be a number"));
    let verbose = std::env::var("DIFF_VERBOSE").as_deref() == Ok("1");
    eprintln!("differential: DIFF_SEED={seed} DIFF_OPS={n_ops}");
    let started = Instant::now();

    let (theirs, ours) = tokio::join!(
        tokio::task::spawn_blocking(|| Proc::start(Kind::Reference, &[])),
        tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[])),
    );
    let (theirs, ours) = (
        theirs.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start reference: {e}")),
        ours.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start ours: {e}")),
    );
    let connect = |p: &Proc| KvClient::connect(format!("http://{}", p.endpoint()));
    let mut d = Driver {
        seed,
        verbose,
        reference: connect(&theirs)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect reference: {e}")),
        ours: connect(&ours)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect ours: {e}")),
        index: 0,
        recent: VecDeque::new(),
        stats: HashMap::new(),
    };
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        cur_rev: 1,
        compact_rev: None,
        hints: HashMap::new(),
        in_txn: false,
        leases: Vec::new(),
        live_leases: Vec::new(),
    };

    // The harness's readiness probe reads only, so both stores start at revision 1.
    let first = d.step(Op::Range(Gen::full_range(0))).await;
    g.observe(&Op::Range(Gen::full_range(0)), &first);
    assert_eq!(
        g.cur_rev, 1,
        "DIFF_SEED={seed}: the reference store does not start empty"
    );

    for i in 0..n_ops {
        // Every 25 ops, the whole keyspace (state check independent of the random reads).
        let op = if i % 25 == 24 {
            Op::Range(Gen::full_range(0))
        } else {
            g.next_op()
        };
        let resp = d.step(op.clone()).await;
        g.observe(&op, &resp);
    }

    // The whole history: every revision from just below the compaction point to one past the
    // current revision.
    let from = g.compact_rev.unwrap_or(1).max(1) - 1;
    let (to, n_history) = (g.cur_rev + 1, g.cur_rev + 2 - from);
    for rev in from..=to {
        d.step(Op::Range(Gen::full_range(rev))).await;
    }

    let mut stats: Vec<_> = d.stats.into_iter().collect();
    stats.sort();
    eprintln!(
        "differential: DIFF_SEED={seed}: {} ops ({n_ops} random, {n_history} history reads) matched in {:?}; \
         final revision {}, compaction revision {:?}",
        d.index,
        started.elapsed(),
        g.cur_rev,
        g.compact_rev
    );
    for (k, v) in stats {
        eprintln!("  {v:6}  {k}");
    }
}

// =============================================================================================
// Watches and leases: `differential_watch_lease_against_reference`.
//
// The KV sequence above (puts now attached to leases), interleaved with lease and watch
// operations. Unary responses are compared as above; lease responses after zeroing the header's
// cluster_id/member_id/raft_term and sorting TimeToLive keys and Leases by ID. The remaining TTL
// is timing dependent: both servers' values must lie between the granted TTL and what is left
// of it after the time since the grant (or last keep-alive) minus 2 s, and within 2 s of each
// other. After a revoke that deleted keys the whole keyspace is read at once.
//
// Watch streams: every reply is demultiplexed by watch id (a `created` reply starts a new
// incarnation of an id; id -1 collects failed creates and progress replies). Per watcher:
// - the replies without events (created, canceled, compacted, progress) must be equal, in
//   order, after zeroing the header's per-cluster fields; `created` replies are compared as
//   soon as they arrive, so watch ids (server-assigned or chosen) must match;
// - the events, flattened (etcd batches them as it likes), must be equal (type, kv, prev_kv);
// - on each server, events come in revision order, one revision's events are never split
//   across replies, no reply has the fragment flag (never requested), and a reply's header
//   revision is at least its last event's.
// The streams are compared at every synchronization point and at the end, after every stream
// has answered a progress request and a short quiet period.
//
// Synchronization: the reference's first watcher (stream 0: whole keyspace, prev_kv, from the
// start) is the event log, from which the events every watcher must get are derived. Before a
// compaction, a cancel and a progress request, the driver waits until every watcher on both
// servers has got all its events up to the current revision (or its compacted reply): etcd
// cancels a watcher that is still catching up when a compaction passes its next revision, and
// reads prev_kv only when it sends an event, so without this the reference itself would be
// timing dependent. At the end the reference's events are also checked against that
// derivation (a "MODEL MISMATCH" is a test bug, not a server one). etcd 3.4's other timing
// effects the driver waits out are explained where it does (`catching_up`, `compacted_at`,
// negative start revisions in `WDriver::watch`).

/// Lease IDs that the watch/lease test grants (explicit, so both servers use the same IDs).
const LEASE_POOL: &[i64] = &[1, 2, 3, 4, 5, 6, 0x1234_5678_9abc, i64::MAX];
/// Lease IDs that are never granted: revoke, TimeToLive, KeepAlive and puts must treat them
/// as unknown alike.
const LEASE_UNKNOWN: &[i64] = &[7, 424_242, -1];
/// At most this many watch streams per server.
const MAX_STREAMS: usize = 10;
/// How long to wait for a watch reply that must come.
const WATCH_WAIT: Duration = Duration::from_secs(5);

/// A lease operation.
#[derive(Debug, Clone)]
enum LOp {
    Grant(LeaseGrantRequest),
    Revoke(LeaseRevokeRequest),
    TimeToLive(LeaseTimeToLiveRequest),
    Leases,
    /// One request and one reply on a fresh LeaseKeepAlive stream.
    KeepAlive(LeaseKeepAliveRequest),
}

/// A lease response or error.
#[derive(Debug, Clone, PartialEq)]
enum LResp {
    Grant(LeaseGrantResponse),
    Revoke(LeaseRevokeResponse),
    TimeToLive(LeaseTimeToLiveResponse),
    Leases(LeaseLeasesResponse),
    KeepAlive(LeaseKeepAliveResponse),
    Err(tonic::Code, String),
}

impl LResp {
    fn header_mut(&mut self) -> Option<&mut ResponseHeader> {
        match self {
            LResp::Grant(r) => r.header.as_mut(),
            LResp::Revoke(r) => r.header.as_mut(),
            LResp::TimeToLive(r) => r.header.as_mut(),
            LResp::Leases(r) => r.header.as_mut(),
            LResp::KeepAlive(r) => r.header.as_mut(),
            LResp::Err(..) => None,
        }
    }
}

async fn exec_lease(c: &mut LeaseClient<Channel>, op: &LOp) -> LResp {
    let r = match op {
        LOp::Grant(r) => c
            .lease_grant(*r)
            .await
            .map(|x| LResp::Grant(x.into_inner())),
        LOp::Revoke(r) => c
            .lease_revoke(*r)
            .await
            .map(|x| LResp::Revoke(x.into_inner())),
        LOp::TimeToLive(r) => c
            .lease_time_to_live(*r)
            .await
            .map(|x| LResp::TimeToLive(x.into_inner())),
        LOp::Leases => c
            .lease_leases(LeaseLeasesRequest {})
            .await
            .map(|x| LResp::Leases(x.into_inner())),
        LOp::KeepAlive(r) => {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(*r).unwrap();
            match c.lease_keep_alive(UnboundedReceiverStream::new(rx)).await {
                Err(s) => Err(s),
                Ok(resp) => match resp.into_inner().message().await {
                    Ok(Some(m)) => Ok(LResp::KeepAlive(m)),
                    Ok(None) => Err(tonic::Status::unknown(
                        "keep-alive stream ended without a reply",
                    )),
                    Err(s) => Err(s),
                },
            }
        }
    };
    r.unwrap_or_else(|s| LResp::Err(s.code(), s.message().to_owned()))
}

/// Zeroes the per-cluster header fields and sorts what etcd returns in map order.
fn norm_lease(mut r: LResp) -> LResp {
    if let Some(h) = r.header_mut() {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
    match &mut r {
        LResp::TimeToLive(t) => t.keys.sort(),
        LResp::Leases(l) => l.leases.sort_by_key(|s| s.id),
        _ => {}
    }
    r
}

/// One operation of the watch/lease sequence.
#[derive(Debug, Clone)]
enum WOp {
    Kv(Op),
    Lease(LOp),
    /// Create a watcher on stream `stream` (a new stream when `stream` is the stream count).
    Watch {
        stream: usize,
        req: WatchCreateRequest,
    },
    Cancel {
        stream: usize,
        watch_id: i64,
    },
    Progress {
        stream: usize,
    },
}

impl WOp {
    fn kind(&self) -> &'static str {
        match self {
            WOp::Kv(op) => op.kind(),
            WOp::Lease(LOp::Grant(_)) => "lease-grant",
            WOp::Lease(LOp::Revoke(_)) => "lease-revoke",
            WOp::Lease(LOp::TimeToLive(_)) => "lease-ttl",
            WOp::Lease(LOp::Leases) => "lease-leases",
            WOp::Lease(LOp::KeepAlive(_)) => "lease-keepalive",
            WOp::Watch { .. } => "watch-create",
            WOp::Cancel { .. } => "watch-cancel",
            WOp::Progress { .. } => "watch-progress",
        }
    }
}

/// What the generator knows about the reference's watch streams.
struct WatchView {
    streams: usize,
    /// Per stream: watch ids that exist on the reference (created, not cancel-acknowledged;
    /// a compacted watcher still exists until canceled).
    exists: Vec<BTreeSet<i64>>,
    /// Per stream: every watch id the reference ever assigned.
    seen: Vec<BTreeSet<i64>>,
}

impl Gen {
    /// A watch start revision: now (0), a past one, exactly the compaction revision, a
    /// compacted one, a future one, 1, or negative.
    fn watch_start(&mut self) -> i64 {
        let cur = self.cur_rev;
        let c = self.compact_rev.unwrap_or(0);
        let low = c.max(1);
        match self.pct() {
            0..45 => 0,
            45..65 => self.rng.random_range(low..=cur.max(low)),
            65..73 if c >= 1 => c,
            65..73 => 0,
            73..83 if c >= 2 => self.rng.random_range(1..c),
            73..83 => 1,
            83..90 => cur + self.rng.random_range(1..=3),
            90..95 => 1,
            // Negative: etcd 3.4 compares them with its compaction revision, which starts at
            // -1 (see `WDriver::watch`).
            _ => self.rng.random_range(-3..=-1),
        }
    }

    fn watch_create(&mut self, stream: usize, view: &WatchView) -> WatchCreateRequest {
        let (key, range_end) = match self.pct() {
            0..25 => (self.any_key(), Vec::new()),
            25..45 => {
                let k = self.any_key();
                let k = if self.pct() < 40 { k[..1].to_vec() } else { k };
                let e = prefix_end(&k);
                (k, e)
            }
            45..58 => (self.any_key(), vec![0]),
            58..70 => (vec![0], vec![0]),
            70..73 => (Vec::new(), vec![0]),
            73..75 => (Vec::new(), Vec::new()),
            _ => (self.any_key(), self.any_key()), // arbitrary, possibly empty or inverted
        };
        let (noput, nodelete) = (FilterType::Noput as i32, FilterType::Nodelete as i32);
        let filters = match self.pct() {
            0..55 => vec![],
            55..70 => vec![noput],
            70..85 => vec![nodelete],
            85..90 => vec![noput, nodelete],
            90..94 => vec![noput, noput],
            94..97 => vec![nodelete, nodelete],
            _ => vec![7], // unknown filter: ignored
        };
        let watch_id = if self.pct() < 70 {
            0 // the server assigns
        } else if stream < view.streams && !view.exists[stream].is_empty() && self.pct() < 40 {
            let ids: Vec<i64> = view.exists[stream].iter().copied().collect();
            ids[self.rng.random_range(0..ids.len())] // duplicate
        } else if self.pct() < 90 {
            self.rng.random_range(1..=8)
        } else {
            1000
        };
        WatchCreateRequest {
            key,
            range_end,
            start_revision: self.watch_start(),
            progress_notify: self.pct() < 20,
            filters,
            prev_kv: self.pct() < 50,
            watch_id,
            fragment: false,
        }
    }

    fn lease_op(&mut self) -> LOp {
        let any_id = |g: &mut Gen| {
            if g.pct() < 85 {
                g.pick_lease()
            } else {
                LEASE_UNKNOWN[g.rng.random_range(0..LEASE_UNKNOWN.len())]
            }
        };
        match self.pct() {
            0..35 => {
                let free: Vec<i64> = LEASE_POOL
                    .iter()
                    .copied()
                    .filter(|id| !self.live_leases.contains(id))
                    .collect();
                let id = if !free.is_empty() && self.pct() < 75 {
                    free[self.rng.random_range(0..free.len())]
                } else {
                    LEASE_POOL[self.rng.random_range(0..LEASE_POOL.len())] // maybe live: exists
                };
                let ttl = if self.pct() < 3 {
                    9_000_000_001 // too large
                } else {
                    self.rng.random_range(300..=900)
                };
                LOp::Grant(LeaseGrantRequest { ttl, id })
            }
            35..55 => LOp::Revoke(LeaseRevokeRequest { id: any_id(self) }),
            55..80 => LOp::TimeToLive(LeaseTimeToLiveRequest {
                id: any_id(self),
                keys: self.pct() < 70,
            }),
            80..88 => LOp::Leases,
            _ => LOp::KeepAlive(LeaseKeepAliveRequest { id: any_id(self) }),
        }
    }

    fn next_wop(&mut self, view: &WatchView) -> WOp {
        match self.rng.random_range(0..1000) {
            0..20 => {
                let stream = if view.streams < MAX_STREAMS && self.pct() < 25 {
                    view.streams
                } else {
                    self.rng.random_range(0..view.streams)
                };
                let req = self.watch_create(stream, view);
                WOp::Watch { stream, req }
            }
            20..26 => {
                let stream = self.rng.random_range(0..view.streams);
                let pick = |g: &mut Gen, s: &BTreeSet<i64>| {
                    let ids: Vec<i64> = s.iter().copied().collect();
                    (!ids.is_empty()).then(|| ids[g.rng.random_range(0..ids.len())])
                };
                let watch_id = match self.pct() {
                    0..65 => pick(self, &view.exists[stream]),
                    65..85 => pick(self, &view.seen[stream]),
                    _ => None,
                }
                .unwrap_or_else(|| self.rng.random_range(0..=10));
                if stream == 0 && watch_id == 0 {
                    // The whole-keyspace watcher of stream 0 is the test's event log.
                    return WOp::Progress { stream };
                }
                WOp::Cancel { stream, watch_id }
            }
            26..30 => WOp::Progress {
                stream: self.rng.random_range(0..view.streams),
            },
            30..120 => WOp::Lease(self.lease_op()),
            _ => WOp::Kv(self.next_op()),
        }
    }
}

/// One item of a watch stream, as the client received it.
#[derive(Debug, Clone)]
enum WItem {
    Resp(WatchResponse),
    /// The stream ended (code `Ok`) or failed.
    End(tonic::Code, String),
}

/// The replies of one watcher (one watch id, from one `created` reply to the next).
#[derive(Debug, Default, Clone)]
struct WLog {
    /// Replies that are not plain event batches (created, canceled, compacted, progress), with
    /// the per-cluster header fields zeroed and events removed, in order.
    ctrl: Vec<WatchResponse>,
    /// All events, flattened.
    events: Vec<Event>,
    /// Per event reply: the header revision and the revisions of its events.
    batches: Vec<(i64, Vec<i64>)>,
    /// Replies with the `fragment` flag (never requested).
    fragments: usize,
    canceled: bool,
    /// A reply ended the watcher: canceled, compacted, or (etcd 3.4 after a compaction at
    /// revision 0, for a negative start revision) a compaction reply with revision 0 that is
    /// not marked canceled.
    ended: bool,
    /// Cancel acknowledgements (canceled, not created, no compact revision).
    acks: usize,
}

/// A watch stream's replies, demultiplexed incrementally.
#[derive(Debug, Default)]
struct StreamState {
    seen: usize,
    /// Per watch id: how many `created` replies carried it (the current incarnation).
    inc: HashMap<i64, usize>,
    /// Per (watch id, incarnation); id -1 (failed creates, progress replies) has incarnation 0.
    watchers: BTreeMap<(i64, usize), WLog>,
    /// All `created` replies in order (the n-th answers the n-th create request).
    created: Vec<WatchResponse>,
    /// How the stream ended, if it did.
    ended: Vec<(tonic::Code, String)>,
}

fn ev_rev(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl StreamState {
    fn key_of(&self, id: i64) -> (i64, usize) {
        (
            id,
            if id == -1 {
                0
            } else {
                self.inc.get(&id).copied().unwrap_or(0)
            },
        )
    }

    fn apply(&mut self, item: &WItem) {
        let r = match item {
            WItem::End(code, msg) => {
                self.ended.push((*code, msg.clone()));
                return;
            }
            WItem::Resp(r) => r,
        };
        let mut r = r.clone();
        if let Some(h) = r.header.as_mut() {
            h.cluster_id = 0;
            h.member_id = 0;
            h.raft_term = 0;
        }
        let id = r.watch_id;
        if r.created && id != -1 {
            *self.inc.entry(id).or_default() += 1;
        }
        let key = self.key_of(id);
        let w = self.watchers.entry(key).or_default();
        if r.fragment {
            w.fragments += 1;
        }
        if !r.events.is_empty() {
            let header_rev = r.header.as_ref().map_or(0, |h| h.revision);
            w.batches
                .push((header_rev, r.events.iter().map(ev_rev).collect()));
            w.events.extend(r.events.iter().cloned());
        }
        if r.created || r.canceled || r.compact_revision != 0 || r.events.is_empty() {
            let mut c = r;
            c.events.clear();
            let header_rev = c.header.as_ref().map_or(0, |h| h.revision);
            if !c.created
                && c.watch_id != -1
                && (c.canceled || c.compact_revision != 0 || header_rev == 0)
            {
                w.ended = true;
            }
            if c.canceled {
                w.canceled = true;
                if !c.created && c.compact_revision == 0 {
                    w.acks += 1;
                }
            }
            if c.created {
                self.created.push(c.clone());
            }
            w.ctrl.push(c);
        }
    }

    fn ctrl_len(&self, key: (i64, usize)) -> usize {
        self.watchers.get(&key).map_or(0, |w| w.ctrl.len())
    }
}

/// One watch stream on one server.
struct WStream {
    tx: mpsc::UnboundedSender<WatchRequest>,
    log: Arc<Mutex<Vec<WItem>>>,
    st: StreamState,
}

impl WStream {
    fn open(client: &WatchClient<Channel>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<WatchRequest>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (mut c, l) = (client.clone(), log.clone());
        tokio::spawn(async move {
            let push = |i: WItem| l.lock().unwrap().push(i);
            match c.watch(UnboundedReceiverStream::new(rx)).await {
                Err(s) => push(WItem::End(s.code(), s.message().to_owned())),
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(m)) => push(WItem::Resp(m)),
                            Ok(None) => {
                                push(WItem::End(tonic::Code::Ok, "stream ended".into()));
                                break;
                            }
                            Err(e) => {
                                push(WItem::End(e.code(), e.message().to_owned()));
                                break;
                            }
                        }
                    }
                }
            }
        });
        Self {
            tx,
            log,
            st: StreamState::default(),
        }
    }

    fn send(&self, r: watch_request::RequestUnion) {
        // A closed stream shows up as its end item.
        let _ = self.tx.send(WatchRequest {
            request_union: Some(r),
        });
    }

    fn advance(&mut self) {
        let log = self.log.lock().unwrap();
        for item in &log[self.st.seen..] {
            self.st.apply(item);
        }
        self.st.seen = log.len();
    }
}

/// One server: clients and watch streams.
struct Side {
    name: &'static str,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    streams: Vec<WStream>,
}

impl Side {
    async fn connect(name: &'static str, p: &Proc) -> Result<Self, tonic::transport::Error> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", p.endpoint()))
            .expect("endpoint")
            .connect()
            .await?;
        Ok(Self {
            name,
            kv: KvClient::new(ch.clone()),
            lease: LeaseClient::new(ch.clone()),
            watch: WatchClient::new(ch),
            streams: Vec::new(),
        })
    }

    fn advance(&mut self) {
        for s in &mut self.streams {
            s.advance();
        }
    }

    fn wlog(&self, stream: usize, key: (i64, usize)) -> Option<&WLog> {
        self.streams
            .get(stream)
            .and_then(|s| s.st.watchers.get(&key))
    }
}

/// The expected behaviour of one watcher, derived from the reference's whole-keyspace watcher
/// (its event log): used to know when every watcher has caught up, and checked against the
/// reference at the end.
#[derive(Debug)]
struct MWatcher {
    stream: usize,
    key: (i64, usize),
    req: WatchCreateRequest,
    /// The effective start revision.
    start: i64,
    /// The compaction revision when the watcher was created (-1: none).
    compacted: i64,
    /// Started below the compaction revision: a compacted cancel reply and no events.
    expect_cancel: bool,
    /// Canceled by the client at this revision (`i64::MAX`: not canceled).
    until: i64,
    /// How much of the event log has been scanned, and how many of those events it must get.
    scanned: usize,
    expected: usize,
}

impl MWatcher {
    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = e.kv.as_ref() else {
            return false;
        };
        let key: &[u8] = if self.req.key.is_empty() {
            &[0]
        } else {
            &self.req.key
        };
        let end = &self.req.range_end;
        let in_range = if end.is_empty() {
            kv.key.as_slice() == key
        } else if end.as_slice() == [0] {
            kv.key.as_slice() >= key
        } else {
            kv.key.as_slice() >= key && kv.key.as_slice() < end.as_slice()
        };
        let is_put = e.r#type == EventType::Put as i32;
        let filtered = (is_put && self.req.filters.contains(&(FilterType::Noput as i32)))
            || (!is_put && self.req.filters.contains(&(FilterType::Nodelete as i32)));
        // A compaction at C keeps each key's last revision <= C, except tombstones: a delete at
        // exactly C is gone by the time an unsynced watcher starting at C reads the history.
        let compacted_tombstone = !is_put && kv.mod_revision <= self.compacted;
        in_range
            && !filtered
            && kv.mod_revision >= self.start
            && kv.mod_revision <= self.until
            && !compacted_tombstone
    }

    fn scan(&mut self, log: &[Event]) {
        for e in &log[self.scanned..] {
            if self.wants(e) {
                self.expected += 1;
            }
        }
        self.scanned = log.len();
    }
}

/// The whole-keyspace watcher with prev_kv that stream 0 opens first: the event log.
const LOG_WATCHER: (i64, usize) = (0, 1);

struct WDriver {
    seed: u64,
    verbose: bool,
    theirs: Side,
    ours: Side,
    index: usize,
    recent: VecDeque<(usize, String)>,
    stats: HashMap<String, usize>,
    /// Create requests sent per stream.
    creates: Vec<usize>,
    model: Vec<MWatcher>,
    view: WatchView,
    /// Per lease (on the reference): granted TTL and when it was granted or last kept alive.
    granted: HashMap<i64, (i64, Instant)>,
    syncs: usize,
    /// When the last watcher that started in the past was created: etcd moves such a watcher
    /// to its synced set in a background pass every 100 ms, even when it has no events to
    /// catch up on (and a compaction before that cancels it).
    catching_up: Option<Instant>,
    /// When the last compaction succeeded: etcd 3.4 deletes the compacted revisions in the
    /// background, and its watchers see the deletion only after the next backend commit (every
    /// 100 ms), so until then a watcher starting at the compaction revision still gets a delete
    /// at exactly that revision, which compaction removes.
    compacted_at: Option<Instant>,
}

impl WDriver {
    fn fail(&self, what: &str) -> ! {
        let mut ctx = String::new();
        for (i, o) in &self.recent {
            ctx.push_str(&format!("  #{i} {o}\n"));
        }
        panic!(
            "DIFFERENTIAL MISMATCH (DIFF_SEED={seed}) at op #{idx}\n\
             preceding ops:\n{ctx}\
             {what}\n\
             reproduce: DIFF_SEED={seed} DIFF_OPS={ops} cargo test -p etcd-server --test it differential_watch",
            seed = self.seed,
            idx = self.index,
            ops = self.index + 1,
        );
    }

    fn record(&mut self, op: &WOp, outcome: String) {
        if self.verbose {
            eprintln!("#{} {}\n  -> {outcome}", self.index, show(op));
        }
        *self.stats.entry(outcome).or_default() += 1;
        self.recent.push_back((self.index, show(op)));
        if self.recent.len() > 8 {
            self.recent.pop_front();
        }
        self.index += 1;
    }

    async fn kv(&mut self, g: &mut Gen, op: Op) {
        if matches!(op, Op::Compact(_)) {
            // Every watcher must have caught up first: etcd cancels an unsynced watcher whose
            // next revision gets compacted, and reads prev_kv at send time.
            self.sync(g.cur_rev, "before compaction").await;
        }
        let (theirs, ours) =
            tokio::join!(exec(&mut self.theirs.kv, &op), exec(&mut self.ours.kv, &op));
        let (nt, no) = (normalize(&op, theirs.clone()), normalize(&op, ours));
        if nt != no {
            self.fail(&format!(
                "request:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&nt),
                show(&no)
            ));
        }
        g.observe(&op, &theirs);
        if let (Op::Compact(_), Resp::Compact(_)) = (&op, &theirs) {
            self.compacted_at = Some(Instant::now());
        }
        let outcome = match &theirs {
            Resp::Err(_, m) => format!("{} error: {m}", op.kind()),
            Resp::Txn(t) => format!("txn ok (succeeded={})", t.succeeded),
            _ => format!("{} ok", op.kind()),
        };
        self.record(&WOp::Kv(op), outcome);
    }

    async fn lease(&mut self, g: &mut Gen, op: LOp) {
        let prev_rev = g.cur_rev;
        let (theirs, ours) = tokio::join!(
            exec_lease(&mut self.theirs.lease, &op),
            exec_lease(&mut self.ours.lease, &op)
        );
        let (nt, mut no) = (norm_lease(theirs), norm_lease(ours));
        // The remaining TTL depends on timing: both must lie between the granted TTL and what
        // is left of it after the time since the grant (or the last keep-alive), and within
        // 2 s of each other; then the reference's value is compared as ours.
        if let (LResp::TimeToLive(t), LResp::TimeToLive(o)) = (&nt, &mut no)
            && t.granted_ttl > 0
        {
            let left = self.granted.get(&t.id).map_or(i64::MIN, |(ttl, at)| {
                ttl - i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX) - 2
            });
            let ok = |x: i64| x <= t.granted_ttl && x >= left;
            if !ok(t.ttl) || !ok(o.ttl) || (t.ttl - o.ttl).abs() > 2 {
                self.fail(&format!(
                    "remaining TTL out of bounds [{left}, {}]:\nrequest:   {}\nreference: {}\nours:      {}",
                    t.granted_ttl,
                    show(&op),
                    show(&nt),
                    show(&no)
                ));
            }
            o.ttl = t.ttl;
        }
        if nt != no {
            self.fail(&format!(
                "request:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&nt),
                show(&no)
            ));
        }
        let rev = match &nt {
            LResp::Grant(r) => r.header.as_ref(),
            LResp::Revoke(r) => r.header.as_ref(),
            LResp::TimeToLive(r) => r.header.as_ref(),
            LResp::Leases(r) => r.header.as_ref(),
            LResp::KeepAlive(r) => r.header.as_ref(),
            LResp::Err(..) => None,
        }
        .map(|h| h.revision);
        if let Some(rev) = rev.filter(|r| *r > 0) {
            g.cur_rev = rev;
        }
        match (&op, &nt) {
            (LOp::Grant(q), LResp::Grant(r)) => {
                g.live_leases.push(q.id);
                self.granted.insert(q.id, (r.ttl, Instant::now()));
            }
            (LOp::Revoke(q), LResp::Revoke(_)) => {
                g.live_leases.retain(|id| *id != q.id);
                self.granted.remove(&q.id);
            }
            (LOp::KeepAlive(q), LResp::KeepAlive(r)) if r.ttl > 0 => {
                self.granted.insert(q.id, (r.ttl, Instant::now()));
            }
            _ => {}
        }
        let kind = WOp::Lease(op.clone()).kind();
        let outcome = match &nt {
            LResp::Err(_, m) => format!("{kind} error: {m}"),
            LResp::TimeToLive(t) if t.ttl == -1 => format!("{kind} ok (unknown lease)"),
            LResp::TimeToLive(t) if !t.keys.is_empty() => format!("{kind} ok (with keys)"),
            LResp::KeepAlive(t) if t.ttl == 0 => format!("{kind} ok (unknown lease)"),
            LResp::Revoke(_) if g.cur_rev > prev_rev => format!("{kind} ok (keys deleted)"),
            _ => format!("{kind} ok"),
        };
        let revoked_keys = matches!(op, LOp::Revoke(_)) && g.cur_rev > prev_rev;
        self.record(&WOp::Lease(op), outcome);
        if revoked_keys {
            // The revoke's deletes, right away in the whole keyspace (and later in the watch
            // streams, all in one revision).
            self.kv(g, Op::Range(Gen::full_range(0))).await;
        }
    }

    fn both(&mut self) -> [&mut Side; 2] {
        [&mut self.theirs, &mut self.ours]
    }

    /// Waits until `cond` holds for both sides (after advancing their streams); fails with
    /// `what` after `timeout`, after comparing the watch streams (a difference there is the
    /// better report).
    async fn wait_for(&mut self, timeout: Duration, what: &str, cond: impl Fn(&Side) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            for s in self.both() {
                s.advance();
            }
            if cond(&self.theirs) && cond(&self.ours) {
                return;
            }
            if Instant::now() > deadline {
                self.compare_watches(false);
                self.fail(&format!(
                    "timed out waiting for {what} (reference: {}, ours: {})",
                    cond(&self.theirs),
                    cond(&self.ours)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until every watcher on both servers has every event up to `rev` (or was
    /// canceled; a watcher that started below the compaction revision must get its compacted
    /// reply).
    async fn sync(&mut self, rev: i64, why: &str) {
        self.syncs += 1;
        let deadline = Instant::now() + WATCH_WAIT;
        loop {
            self.theirs.advance();
            self.ours.advance();
            let pending = self.unsynced(rev);
            if pending.is_empty() {
                if let Some(at) = self.catching_up.take() {
                    let wait = Duration::from_millis(250).saturating_sub(at.elapsed());
                    tokio::time::sleep(wait).await;
                }
                // Everything up to `rev` has arrived: compare now, to fail near the cause.
                self.compare_watches(false);
                return;
            }
            if Instant::now() > deadline {
                self.compare_watches(false);
                self.fail(&format!(
                    "watch streams did not catch up with revision {rev} ({why}):\n  {}",
                    pending.join("\n  ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn unsynced(&mut self, rev: i64) -> Vec<String> {
        let Some(log) = self.theirs.wlog(0, LOG_WATCHER) else {
            return vec!["the reference's log watcher has no replies".into()];
        };
        let last = log.events.last().map_or(1, ev_rev);
        if last < rev {
            return vec![format!("the reference's log watcher is at revision {last}")];
        }
        let mut out = Vec::new();
        for m in &mut self.model {
            m.scan(&log.events);
            for side in [&self.theirs, &self.ours] {
                let (n, ended) = side
                    .wlog(m.stream, m.key)
                    .map_or((0, false), |w| (w.events.len(), w.ended));
                if !(ended || (!m.expect_cancel && n >= m.expected)) {
                    out.push(format!(
                        "{}: stream {} watcher {:?} has {n} of {} events{} (created by {})",
                        side.name,
                        m.stream,
                        m.key,
                        m.expected,
                        if m.expect_cancel {
                            " and expects a compacted reply"
                        } else {
                            ""
                        },
                        show(&m.req)
                    ));
                }
            }
        }
        out
    }

    fn open_stream(&mut self) {
        let (t, o) = (
            WStream::open(&self.theirs.watch),
            WStream::open(&self.ours.watch),
        );
        self.theirs.streams.push(t);
        self.ours.streams.push(o);
        self.creates.push(0);
        self.view.streams += 1;
        self.view.exists.push(BTreeSet::new());
        self.view.seen.push(BTreeSet::new());
    }

    async fn watch(&mut self, g: &Gen, stream: usize, req: WatchCreateRequest) {
        let op = WOp::Watch {
            stream,
            req: req.clone(),
        };
        if stream == self.view.streams {
            self.open_stream();
        }
        if req.start_revision < 0 && req.start_revision >= g.compact_rev.unwrap_or(-1) {
            // etcd 3.4 catches up all its unsynced watchers in one pass from their lowest start
            // revision: a negative one makes that pass read nothing, so every other watcher
            // that is still catching up would lose its history. Let them catch up first.
            self.sync(g.cur_rev, "before a watcher with a negative start revision")
                .await;
        }
        if Some(req.start_revision) == g.compact_rev
            && let Some(at) = self.compacted_at
        {
            tokio::time::sleep(Duration::from_millis(300).saturating_sub(at.elapsed())).await;
        }
        for s in self.both() {
            s.streams[stream].send(watch_request::RequestUnion::CreateRequest(req.clone()));
        }
        self.creates[stream] += 1;
        let n = self.creates[stream];
        self.wait_for(WATCH_WAIT, "the created reply", |s| {
            s.streams[stream].st.created.len() >= n
        })
        .await;
        let t = self.theirs.streams[stream].st.created[n - 1].clone();
        let o = self.ours.streams[stream].st.created[n - 1].clone();
        if t != o {
            self.fail(&format!(
                "created reply on stream {stream}:\nrequest:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&t),
                show(&o)
            ));
        }
        let outcome = if t.canceled {
            format!("watch-create canceled: {}", t.cancel_reason)
        } else {
            // etcd 3.4 compares the start revision with its compaction revision (-1 before the
            // first compaction): below it, a compaction reply (`canceled` only when that
            // revision is not 0). A negative start revision that is not below it reads no
            // history, and the watcher joins the synced ones at the revision current when
            // etcd's background sync (every 100 ms) first runs: wait for that before writing.
            let compacted = g.compact_rev.unwrap_or(-1);
            let now = t.header.as_ref().map_or(0, |h| h.revision) + 1;
            let start = match req.start_revision {
                0 => now,
                s if s < 0 && s >= compacted => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    now
                }
                s => s,
            };
            if start <= g.cur_rev {
                self.catching_up = Some(Instant::now());
            }
            let key = self.theirs.streams[stream].st.key_of(t.watch_id);
            self.view.exists[stream].insert(t.watch_id);
            self.view.seen[stream].insert(t.watch_id);
            self.model.push(MWatcher {
                stream,
                key,
                req: req.clone(),
                start,
                compacted,
                expect_cancel: start < compacted,
                until: i64::MAX,
                scanned: 0,
                expected: 0,
            });
            let when = match req.start_revision {
                0 => "now",
                s if s < 0 && s < compacted => "negative, compacted",
                s if s < 0 => "negative, not compacted",
                s if s < compacted => "compacted",
                s if s == compacted => "at the compaction revision",
                s if s <= g.cur_rev => "past",
                _ => "future",
            };
            format!("watch-create ok (start {when})")
        };
        self.record(&op, outcome);
    }

    async fn cancel(&mut self, g: &Gen, stream: usize, watch_id: i64) {
        let op = WOp::Cancel { stream, watch_id };
        self.sync(g.cur_rev, "before cancel").await;
        let key = self.theirs.streams[stream].st.key_of(watch_id);
        let expect_ack = self.view.exists[stream].contains(&watch_id);
        let acks = |s: &Side| s.wlog(stream, key).map_or(0, |w| w.acks);
        let before = (acks(&self.theirs), acks(&self.ours));
        for s in self.both() {
            s.streams[stream].send(watch_request::RequestUnion::CancelRequest(
                WatchCancelRequest { watch_id },
            ));
        }
        let outcome = if expect_ack {
            let ours_key = self.ours.streams[stream].st.key_of(watch_id);
            if ours_key != key {
                self.compare_watches(false);
            }
            self.wait_for(WATCH_WAIT, "the cancel acknowledgement", |s| {
                let b = if s.name == "reference" {
                    before.0
                } else {
                    before.1
                };
                acks(s) > b
            })
            .await;
            self.view.exists[stream].remove(&watch_id);
            for m in &mut self.model {
                if m.stream == stream && m.key == key {
                    m.until = g.cur_rev;
                }
            }
            "watch-cancel ok"
        } else {
            "watch-cancel of a missing watcher"
        };
        let (t, o) = (
            self.theirs.wlog(stream, key).map(|w| w.ctrl.clone()),
            self.ours.wlog(stream, key).map(|w| w.ctrl.clone()),
        );
        if expect_ack && t != o {
            self.fail(&format!(
                "replies to a cancel on stream {stream}:\nrequest:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&t),
                show(&o)
            ));
        }
        self.record(&op, outcome.to_owned());
    }

    /// A progress request on `stream` once every watcher has caught up (etcd answers only
    /// when all of the stream's watchers are synced; 3.4.23 answers at once, even before
    /// delivering earlier events).
    async fn progress(&mut self, g: &Gen, stream: usize, record: bool) {
        let op = WOp::Progress { stream };
        self.sync(g.cur_rev, "before a progress request").await;
        let k = (-1, 0);
        let before = (
            self.theirs.streams[stream].st.ctrl_len(k),
            self.ours.streams[stream].st.ctrl_len(k),
        );
        for s in self.both() {
            s.streams[stream].send(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            ));
        }
        self.wait_for(WATCH_WAIT, "the progress reply", |s| {
            let b = if s.name == "reference" {
                before.0
            } else {
                before.1
            };
            s.streams[stream].st.ctrl_len(k) > b
        })
        .await;
        let t = self.theirs.streams[stream].st.watchers[&k].ctrl[before.0].clone();
        let o = self.ours.streams[stream].st.watchers[&k].ctrl[before.1].clone();
        if t != o {
            self.fail(&format!(
                "progress reply on stream {stream}:\nreference: {}\nours:      {}",
                show(&t),
                show(&o)
            ));
        }
        if record {
            self.record(&op, "watch-progress ok".into());
        }
    }

    /// Compares every watcher's replies on both servers: the non-event replies exactly and in
    /// order, the events flattened (etcd batches them as it likes), and on each server that a
    /// revision's events come in one reply, in revision order, under a header revision at
    /// least theirs. With `model`, also checks the reference against the expectation derived
    /// from its event log (a failure there is a test bug or a reference timing effect).
    fn compare_watches(&mut self, model: bool) {
        self.theirs.advance();
        self.ours.advance();
        let empty = WLog::default();
        for stream in 0..self.view.streams {
            let (ts, os) = (
                &self.theirs.streams[stream].st,
                &self.ours.streams[stream].st,
            );
            if ts.ended != os.ended {
                self.fail(&format!(
                    "stream {stream} ended differently:\nreference: {:?}\nours:      {:?}",
                    ts.ended, os.ended
                ));
            }
            let keys: BTreeSet<(i64, usize)> = ts
                .watchers
                .keys()
                .chain(os.watchers.keys())
                .copied()
                .collect();
            for key in keys {
                let t = ts.watchers.get(&key).unwrap_or(&empty);
                let o = os.watchers.get(&key).unwrap_or(&empty);
                let created_by = self
                    .model
                    .iter()
                    .find(|m| m.stream == stream && m.key == key)
                    .map_or_else(|| "-".to_owned(), |m| show(&m.req));
                let whom = format!(
                    "stream {stream}, watch id {}, incarnation {} (created by {created_by})",
                    key.0, key.1
                );
                for (name, w) in [("reference", t), ("ours", o)] {
                    if let Some(e) = check_batches(w) {
                        self.fail(&format!("{name}: {whom}: {e}"));
                    }
                }
                if t.ctrl != o.ctrl {
                    self.fail(&format!(
                        "non-event replies of {whom}:\nreference: {}\nours:      {}",
                        show(&t.ctrl),
                        show(&o.ctrl)
                    ));
                }
                if t.events != o.events {
                    self.fail(&format!(
                        "events of {whom}:\n{}",
                        diff_events(&t.events, &o.events)
                    ));
                }
            }
        }
        if !model {
            return;
        }
        let log = self
            .theirs
            .wlog(0, LOG_WATCHER)
            .unwrap_or(&empty)
            .events
            .clone();
        for m in &self.model {
            let got: Vec<(i32, Vec<u8>, i64)> = self
                .theirs
                .wlog(m.stream, m.key)
                .unwrap_or(&empty)
                .events
                .iter()
                .map(|e| (e.r#type, e.kv.clone().unwrap_or_default().key, ev_rev(e)))
                .collect();
            let want: Vec<(i32, Vec<u8>, i64)> = if m.expect_cancel {
                Vec::new()
            } else {
                log.iter()
                    .filter(|e| m.wants(e))
                    .map(|e| (e.r#type, e.kv.clone().unwrap_or_default().key, ev_rev(e)))
                    .collect()
            };
            if got != want {
                self.fail(&format!(
                    "MODEL MISMATCH (the reference differs from the test's expectation) for stream {} watcher {:?} (created by {}, start {}, compaction {}):\nexpected: {}\nreference: {}",
                    m.stream,
                    m.key,
                    show(&m.req),
                    m.start,
                    m.compacted,
                    show(&want),
                    show(&got)
                ));
            }
        }
    }
}

/// The grouping check of one watcher's event replies: revisions ascend, and one revision's
/// events are never split across replies.
fn check_batches(w: &WLog) -> Option<String> {
    if w.fragments > 0 {
        return Some(format!("{} replies have the fragment flag", w.fragments));
    }
    let mut prev = i64::MIN;
    for (i, (header_rev, revs)) in w.batches.iter().enumerate() {
        if revs.windows(2).any(|p| p[0] > p[1]) {
            return Some(format!(
                "event reply {i} has revisions {revs:?}: out of order"
            ));
        }
        if revs[0] <= prev {
            return Some(format!(
                "event reply {i} has revisions {revs:?} after one that ended at revision {prev}: \
                 a revision split across replies, or out of order"
            ));
        }
        prev = *revs.last().unwrap_or(&prev);
        if revs.last().is_some_and(|l| header_rev < l) {
            return Some(format!(
                "event reply {i} with revisions {revs:?} has header revision {header_rev}"
            ));
        }
    }
    None
}

fn diff_events(t: &[Event], o: &[Event]) -> String {
    let i = t.iter().zip(o).take_while(|(a, b)| a == b).count();
    let mut s = format!(
        "{} events on the reference, {} on ours; first difference at event {i}\n",
        t.len(),
        o.len()
    );
    let lo = i.saturating_sub(2);
    for (name, evs) in [("reference", t), ("ours", o)] {
        s.push_str(&format!("{name}:\n"));
        for (j, e) in evs.iter().enumerate().skip(lo).take(6) {
            s.push_str(&format!("  [{j}] {}\n", show(e)));
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn differential_watch_lease_against_reference() {
    if require(reference_etcd(), "reference etcd").is_none() {
        return;
    }
    let seed: u64 = match std::env::var("DIFF_SEED") {
        Ok(s) => s.parse().expect("DIFF_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    let n_ops: usize = std::env::var("DIFF_OPS")
        .ok()
        .map_or(3000, |s| s.parse().expect("DIFF_OPS must be a number"));
    let verbose = std::env::var("DIFF_VERBOSE").as_deref() == Ok("1");
    eprintln!("differential watch/lease: DIFF_SEED={seed} DIFF_OPS={n_ops}");
    let started = Instant::now();

    let (theirs, ours) = tokio::join!(
        tokio::task::spawn_blocking(|| Proc::start(Kind::Reference, &[])),
        tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[])),
    );
    let (theirs, ours) = (
        theirs.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start reference: {e}")),
        ours.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start ours: {e}")),
    );
    let mut d = WDriver {
        seed,
        verbose,
        theirs: Side::connect("reference", &theirs)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect reference: {e}")),
        ours: Side::connect("ours", &ours)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect ours: {e}")),
        index: 0,
        recent: VecDeque::new(),
        stats: HashMap::new(),
        creates: Vec::new(),
        model: Vec::new(),
        view: WatchView {
            streams: 0,
            exists: Vec::new(),
            seen: Vec::new(),
        },
        granted: HashMap::new(),
        syncs: 0,
        catching_up: None,
        compacted_at: None,
    };
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        cur_rev: 1,
        compact_rev: None,
        hints: HashMap::new(),
        in_txn: false,
        leases: LEASE_POOL.iter().chain(LEASE_UNKNOWN).copied().collect(),
        live_leases: Vec::new(),
    };

    d.kv(&mut g, Op::Range(Gen::full_range(0))).await;
    assert_eq!(
        g.cur_rev, 1,
        "DIFF_SEED={seed}: the reference store does not start empty"
    );

    // Stream 0 starts with the event log: everything, with prev_kv, from now on.
    let log_watcher = WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        prev_kv: true,
        ..Default::default()
    };
    d.watch(&g, 0, log_watcher).await;
    assert_eq!(
        d.model.first().map(|m| m.key),
        Some(LOG_WATCHER),
        "DIFF_SEED={seed}: the log watcher did not get watch id 0"
    );
    for _ in 0..g.rng.random_range(3..=6) {
        let stream = g.rng.random_range(0..=d.view.streams.min(3));
        let req = g.watch_create(stream, &d.view);
        d.watch(&g, stream, req).await;
    }

    for i in 0..n_ops {
        if i == 12 {
            // A second wave of watchers once there is some history, usually before the first
            // compaction: then also one with a negative start revision.
            if g.compact_rev.is_none() {
                let stream = g.rng.random_range(0..d.view.streams);
                let mut req = g.watch_create(stream, &d.view);
                req.start_revision = -1;
                d.watch(&g, stream, req).await;
            }
            for _ in 0..g.rng.random_range(1..=3) {
                let stream = g.rng.random_range(0..d.view.streams);
                let req = g.watch_create(stream, &d.view);
                d.watch(&g, stream, req).await;
            }
        }
        let op = if i % 25 == 24 {
            WOp::Kv(Op::Range(Gen::full_range(0)))
        } else {
            g.next_wop(&d.view)
        };
        match op {
            WOp::Kv(op) => d.kv(&mut g, op).await,
            WOp::Lease(op) => d.lease(&mut g, op).await,
            WOp::Watch { stream, req } => d.watch(&g, stream, req).await,
            WOp::Cancel { stream, watch_id } => d.cancel(&g, stream, watch_id).await,
            WOp::Progress { stream } => d.progress(&g, stream, true).await,
        }
    }

    // Quiesce: every watcher catches up, every stream answers a progress request, and a
    // moment more for anything unexpected; then the whole streams are compared.
    d.sync(g.cur_rev, "at the end").await;
    for stream in 0..d.view.streams {
        d.progress(&g, stream, false).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.compare_watches(true);

    // Final lease state: every lease with its keys, and the list.
    for &id in LEASE_POOL.iter().chain(LEASE_UNKNOWN) {
        d.lease(
            &mut g,
            LOp::TimeToLive(LeaseTimeToLiveRequest { id, keys: true }),
        )
        .await;
    }
    d.lease(&mut g, LOp::Leases).await;
    d.kv(&mut g, Op::Range(Gen::full_range(0))).await;

    let events: usize = d
        .theirs
        .streams
        .iter()
        .flat_map(|s| s.st.watchers.values())
        .map(|w| w.events.len())
        .sum();
    let mut stats: Vec<_> = d.stats.into_iter().collect();
    stats.sort();
    eprintln!(
        "differential watch/lease: DIFF_SEED={seed}: {} ops matched in {:?}; final revision {}, \
         compaction revision {:?}; {} streams, {} watchers, {events} events compared, {} syncs",
        d.index,
        started.elapsed(),
        g.cur_rev,
        g.compact_rev,
        d.view.streams,
        d.model.len(),
        d.syncs,
    );
    for (k, v) in stats {
        eprintln!("  {v:6}  {k}");
    }
}
