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

mod generation;
mod kv_driver;
mod printing;
mod watch_driver;
mod watch_lease_ops;
mod watch_lease_test;
mod watch_streams;

// Sections share their helpers.
#[allow(unused_imports)]
use generation::*;
#[allow(unused_imports)]
use kv_driver::*;
#[allow(unused_imports)]
use printing::*;
#[allow(unused_imports)]
use watch_driver::*;
#[allow(unused_imports)]
use watch_lease_ops::*;
#[allow(unused_imports)]
use watch_lease_test::*;
#[allow(unused_imports)]
use watch_streams::*;

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
