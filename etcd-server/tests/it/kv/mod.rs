//! KV integration tests: Range, Put, DeleteRange, Txn and Compact through `etcd-client`, with
//! exact revisions, versions, counts and error strings. Every scenario runs on our server and,
//! with the same expectations, on the reference etcd 3.4.23, so the expectations are etcd's.

mod auto_compaction;
mod compact;
mod deleterange;
mod headers_errors;
mod put;
mod range;
mod revisions;
mod txn;

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, Error, GetOptions, GetResponse, KeyValue,
    PutOptions, ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tonic::Code;

use crate::harness::{Kind, Proc, reference_etcd, require};

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const EMPTY_KEY: &str = "etcdserver: key is not provided";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const VALUE_PROVIDED: &str = "etcdserver: value is provided";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const TOO_LARGE: &str = "etcdserver: request is too large";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Starts one fresh server of each kind (ours, and the reference when installed) with `flags`.
async fn servers(flags: &'static [&'static str]) -> Vec<Proc> {
    // `KV_TEST_ONLY=Ours` or `KV_TEST_ONLY=Reference` runs one side only (to check an
    // expectation against the reference when our server fails it first).
    let only = std::env::var("KV_TEST_ONLY").ok();
    let mut kinds = Vec::new();
    if only.as_deref() != Some("Reference") {
        kinds.push(Kind::Ours);
    }
    if only.as_deref() != Some("Ours") && require(reference_etcd(), "reference etcd").is_some() {
        kinds.push(Kind::Reference);
    }
    let starts: Vec<_> = kinds
        .into_iter()
        .map(|k| tokio::task::spawn_blocking(move || Proc::start(k, flags)))
        .collect();
    let mut out = Vec::new();
    for s in starts {
        out.push(s.await.unwrap());
    }
    out
}

/// A key-value as (key, value, create_revision, mod_revision, version).
type Kv = (String, String, i64, i64, i64);

/// (name, key, options, expected keys, count, more).
type RangeCase = (
    &'static str,
    &'static str,
    Option<GetOptions>,
    Vec<&'static str>,
    i64,
    bool,
);
/// (revision, key, options, expected key-values, count).
type HistoryCase = (i64, &'static str, Option<GetOptions>, Vec<Kv>, i64);
/// (name, key, options, deleted, prev_kvs, header revision).
type DeleteStep = (
    &'static str,
    &'static str,
    Option<DeleteOptions>,
    i64,
    Vec<Kv>,
    i64,
);

fn kv(k: &str, v: &str, create: i64, modr: i64, ver: i64) -> Kv {
    (k.to_owned(), v.to_owned(), create, modr, ver)
}

fn to_kv(kv: &KeyValue) -> Kv {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
    )
}

fn kvs(r: &GetResponse) -> Vec<Kv> {
    r.kvs().iter().map(to_kv).collect()
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn hrev(h: Option<&ResponseHeader>) -> i64 {
    h.expect("response header").revision()
}

/// The store's current revision, from the header of a read.
async fn cur_rev(c: &mut Client) -> i64 {
    hrev(c.get("rev-probe", None).await.unwrap().header())
}

/// The gRPC status of a call that must fail.
#[track_caller]
fn status<T: std::fmt::Debug>(r: Result<T, Error>, ctx: &str) -> (Code, String) {
    match r {
        Err(Error::GRpcStatus(s)) => (s.code(), s.message().to_owned()),
        other => panic!("{ctx}: expected a gRPC status error, got {other:?}"),
    }
}

/// Asserts that `r` failed with exactly `code` and `msg`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(r: Result<T, Error>, code: Code, msg: &str, ctx: &str) {
    let (c, m) = status(r, ctx);
    assert_eq!((c, m.as_str()), (code, msg), "{ctx}");
}

fn get_resp(op: &TxnOpResponse) -> &GetResponse {
    match op {
        TxnOpResponse::Get(g) => g,
        other => panic!("expected a range response, got {other:?}"),
    }
}

fn txn_resp(op: &TxnOpResponse) -> &TxnResponse {
    match op {
        TxnOpResponse::Txn(t) => t,
        other => panic!("expected a txn response, got {other:?}"),
    }
}

/// Names the response kinds of a txn, recursively, e.g. `["put", "txn(false:[put,get])"]`.
fn shape(t: &TxnResponse) -> Vec<String> {
    t.op_responses()
        .iter()
        .map(|op| match op {
            TxnOpResponse::Put(_) => "put".to_owned(),
            TxnOpResponse::Get(_) => "get".to_owned(),
            TxnOpResponse::Delete(_) => "delete".to_owned(),
            TxnOpResponse::Txn(t) => format!("txn({}:[{}])", t.succeeded(), shape(t).join(",")),
        })
        .collect()
}
