//! KV integration tests: Range, Put, DeleteRange, Txn and Compact through `etcd-client`, with
//! exact revisions, versions, counts and error strings. Every scenario runs on our server and,
//! with the same expectations, on the reference etcd 3.4.23, so the expectations are etcd's.

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

// ---------------------------------------------------------------------------------------------
// Revisions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn revisions_bump_once_per_write() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;

        // Empty store: revision 1.
        let r = c.get("a", None).await.unwrap();
        assert_eq!(
            (hrev(r.header()), r.count(), r.kvs().len()),
            (1, 0, 0),
            "{k:?}: empty store"
        );

        // Create: create = mod = rev, version 1.
        assert_eq!(
            hrev(c.put("a", "1", None).await.unwrap().header()),
            2,
            "{k:?}: first put"
        );
        assert_eq!(
            kvs(&c.get("a", None).await.unwrap()),
            vec![kv("a", "1", 2, 2, 1)],
            "{k:?}"
        );
        assert_eq!(
            hrev(c.put("b", "1", None).await.unwrap().header()),
            3,
            "{k:?}"
        );
        // Update: version + 1, create kept. Same value still bumps.
        assert_eq!(
            hrev(c.put("a", "2", None).await.unwrap().header()),
            4,
            "{k:?}"
        );
        assert_eq!(
            kvs(&c.get("a", None).await.unwrap()),
            vec![kv("a", "2", 2, 4, 2)],
            "{k:?}"
        );
        assert_eq!(
            hrev(c.put("a", "2", None).await.unwrap().header()),
            5,
            "{k:?}: same value"
        );
        assert_eq!(
            kvs(&c.get("a", None).await.unwrap()),
            vec![kv("a", "2", 2, 5, 3)],
            "{k:?}"
        );

        // A txn writing three keys bumps once; all writes share the revision.
        let t = c
            .txn(Txn::new().and_then([
                TxnOp::put("t1", "x", None),
                TxnOp::put("t2", "y", None),
                TxnOp::put("a", "3", None),
            ]))
            .await
            .unwrap();
        assert!(t.succeeded(), "{k:?}");
        assert_eq!(hrev(t.header()), 6, "{k:?}: multi-put txn");
        let all = c
            .get("\0", Some(GetOptions::new().with_range("\0")))
            .await
            .unwrap();
        assert_eq!(
            kvs(&all),
            vec![
                kv("a", "3", 2, 6, 4),
                kv("b", "1", 3, 3, 1),
                kv("t1", "x", 6, 6, 1),
                kv("t2", "y", 6, 6, 1)
            ],
            "{k:?}: after multi-put txn"
        );
        assert_eq!(hrev(all.header()), 6, "{k:?}");

        // No bump: read-only txn, write txn taking a branch without writes, txn deleting nothing,
        // deletes matching nothing.
        let ro = c
            .txn(
                Txn::new()
                    .when([Compare::version("a", CompareOp::Equal, 4)])
                    .and_then([TxnOp::get("a", None)]),
            )
            .await
            .unwrap();
        assert_eq!(
            (ro.succeeded(), hrev(ro.header())),
            (true, 6),
            "{k:?}: read-only txn"
        );
        let no_write_branch = c
            .txn(
                Txn::new()
                    .when([Compare::version("a", CompareOp::Equal, 100)])
                    .and_then([TxnOp::put("a", "never", None)])
                    .or_else([TxnOp::get("a", None)]),
            )
            .await
            .unwrap();
        assert_eq!(
            (no_write_branch.succeeded(), hrev(no_write_branch.header())),
            (false, 6),
            "{k:?}"
        );
        let del_nothing_txn = c
            .txn(Txn::new().and_then([TxnOp::delete("nothing", None)]))
            .await
            .unwrap();
        assert_eq!(
            hrev(del_nothing_txn.header()),
            6,
            "{k:?}: txn deleting nothing"
        );
        let d = c.delete("nothing", None).await.unwrap();
        assert_eq!(
            (d.deleted(), hrev(d.header())),
            (0, 6),
            "{k:?}: delete of a missing key"
        );
        let d = c
            .delete("x", Some(DeleteOptions::new().with_range("z")))
            .await
            .unwrap();
        assert_eq!(
            (d.deleted(), hrev(d.header())),
            (0, 6),
            "{k:?}: delete of an empty range"
        );
        assert_eq!(
            cur_rev(&mut c).await,
            6,
            "{k:?}: nothing above bumped the revision"
        );

        // Delete leaves a tombstone: history still readable, recreation starts at version 1.
        let d = c.delete("a", None).await.unwrap();
        assert_eq!((d.deleted(), hrev(d.header())), (1, 7), "{k:?}: delete a");
        let r = c.get("a", None).await.unwrap();
        assert_eq!(
            (r.count(), r.kvs().len(), hrev(r.header())),
            (0, 0, 7),
            "{k:?}: a deleted"
        );
        let old = c
            .get("a", Some(GetOptions::new().with_revision(6)))
            .await
            .unwrap();
        assert_eq!(kvs(&old), vec![kv("a", "3", 2, 6, 4)], "{k:?}: a at rev 6");
        assert_eq!(
            hrev(old.header()),
            7,
            "{k:?}: historical read has the current header revision"
        );
        assert_eq!(
            hrev(c.put("a", "new", None).await.unwrap().header()),
            8,
            "{k:?}"
        );
        assert_eq!(
            kvs(&c.get("a", None).await.unwrap()),
            vec![kv("a", "new", 8, 8, 1)],
            "{k:?}: recreated"
        );
        let at7 = c
            .get("a", Some(GetOptions::new().with_revision(7)))
            .await
            .unwrap();
        assert_eq!(at7.count(), 0, "{k:?}: a at its tombstone revision");

        // A multi-key delete bumps once.
        let d = c
            .delete("t1", Some(DeleteOptions::new().with_range("t3")))
            .await
            .unwrap();
        assert_eq!(
            (d.deleted(), hrev(d.header())),
            (2, 9),
            "{k:?}: delete [t1, t3)"
        );
        let at8 = c
            .get("t", Some(GetOptions::new().with_prefix().with_revision(8)))
            .await
            .unwrap();
        assert_eq!(at8.count(), 2, "{k:?}");
        let at9 = c
            .get("t", Some(GetOptions::new().with_prefix().with_revision(9)))
            .await
            .unwrap();
        assert_eq!(at9.count(), 0, "{k:?}: both tombstones at revision 9");

        // A txn mixing put and delete bumps once.
        let t = c
            .txn(Txn::new().and_then([TxnOp::put("c", "1", None), TxnOp::delete("b", None)]))
            .await
            .unwrap();
        assert_eq!(hrev(t.header()), 10, "{k:?}: put+delete txn");
        assert_eq!(
            kvs(&c.get("c", None).await.unwrap()),
            vec![kv("c", "1", 10, 10, 1)],
            "{k:?}"
        );
        assert_eq!(c.get("b", None).await.unwrap().count(), 0, "{k:?}");
        assert_eq!(
            kvs(&c
                .get("b", Some(GetOptions::new().with_revision(9)))
                .await
                .unwrap()),
            vec![kv("b", "1", 3, 3, 1)],
            "{k:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Range
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn range_key_forms_limit_and_count() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        // Revisions 2..=7.
        for key in ["a", "b", "ba", "bb", "c", "d"] {
            c.put(key, format!("v-{key}"), None).await.unwrap();
        }
        let all = || GetOptions::new().with_range("\0");
        // (name, key, options, keys, count, more)
        let table: Vec<RangeCase> = vec![
            ("single key", "b", None, vec!["b"], 1, false),
            ("missing key", "bz", None, vec![], 0, false),
            (
                "range_end",
                "b",
                Some(GetOptions::new().with_range("c")),
                vec!["b", "ba", "bb"],
                3,
                false,
            ),
            (
                "range_end is exclusive",
                "a",
                Some(GetOptions::new().with_range("b")),
                vec!["a"],
                1,
                false,
            ),
            (
                "range_end below key",
                "c",
                Some(GetOptions::new().with_range("a")),
                vec![],
                0,
                false,
            ),
            (
                "prefix",
                "b",
                Some(GetOptions::new().with_prefix()),
                vec!["b", "ba", "bb"],
                3,
                false,
            ),
            (
                "prefix without match",
                "e",
                Some(GetOptions::new().with_prefix()),
                vec![],
                0,
                false,
            ),
            (
                "from key (range_end \\0)",
                "bb",
                Some(GetOptions::new().with_range("\0")),
                vec!["bb", "c", "d"],
                3,
                false,
            ),
            (
                "from key via etcd-client",
                "c",
                Some(GetOptions::new().with_from_key()),
                vec!["c", "d"],
                2,
                false,
            ),
            (
                "whole keyspace (\\0, \\0)",
                "\0",
                Some(all()),
                vec!["a", "b", "ba", "bb", "c", "d"],
                6,
                false,
            ),
            (
                "whole keyspace via etcd-client",
                "",
                Some(GetOptions::new().with_all_keys()),
                vec!["a", "b", "ba", "bb", "c", "d"],
                6,
                false,
            ),
            (
                "limit 2",
                "\0",
                Some(all().with_limit(2)),
                vec!["a", "b"],
                6,
                true,
            ),
            (
                "limit 5",
                "\0",
                Some(all().with_limit(5)),
                vec!["a", "b", "ba", "bb", "c"],
                6,
                true,
            ),
            (
                "limit == count",
                "\0",
                Some(all().with_limit(6)),
                vec!["a", "b", "ba", "bb", "c", "d"],
                6,
                false,
            ),
            (
                "limit > count",
                "\0",
                Some(all().with_limit(100)),
                vec!["a", "b", "ba", "bb", "c", "d"],
                6,
                false,
            ),
            (
                "limit on a prefix",
                "b",
                Some(GetOptions::new().with_prefix().with_limit(1)),
                vec!["b"],
                3,
                true,
            ),
            (
                "limit on a single key",
                "b",
                Some(GetOptions::new().with_limit(1)),
                vec!["b"],
                1,
                false,
            ),
            (
                "count_only",
                "\0",
                Some(all().with_count_only()),
                vec![],
                6,
                false,
            ),
            (
                "count_only with limit",
                "\0",
                Some(all().with_count_only().with_limit(2)),
                vec![],
                6,
                false,
            ),
            (
                "count_only on a prefix",
                "b",
                Some(GetOptions::new().with_prefix().with_count_only()),
                vec![],
                3,
                false,
            ),
            (
                "serializable",
                "\0",
                Some(all().with_serializable()),
                vec!["a", "b", "ba", "bb", "c", "d"],
                6,
                false,
            ),
            (
                "serializable with limit",
                "b",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_serializable()
                        .with_limit(2),
                ),
                vec!["b", "ba"],
                3,
                true,
            ),
        ];
        for (name, key, opts, want_keys, want_count, want_more) in table {
            let r = c.get(key, opts).await.unwrap();
            assert_eq!(
                (keys(r.kvs()), r.count(), r.more(), hrev(r.header())),
                (
                    want_keys.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    want_count,
                    want_more,
                    7
                ),
                "{k:?}: {name}"
            );
        }

        // Values and key fields are returned in full, except with keys_only.
        let r = c
            .get("b", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(
            kvs(&r),
            vec![
                kv("b", "v-b", 3, 3, 1),
                kv("ba", "v-ba", 4, 4, 1),
                kv("bb", "v-bb", 5, 5, 1)
            ],
            "{k:?}: prefix values"
        );
        let r = c
            .get("b", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        assert_eq!(
            (kvs(&r), r.count()),
            (
                vec![
                    kv("b", "", 3, 3, 1),
                    kv("ba", "", 4, 4, 1),
                    kv("bb", "", 5, 5, 1)
                ],
                3
            ),
            "{k:?}: keys_only keeps every field but the value"
        );

        // Historical reads. Revision 8 rewrites b, revision 9 deletes ba.
        c.put("b", "v-b2", None).await.unwrap();
        c.delete("ba", None).await.unwrap();
        // (revision, key, options, kvs, count)
        let history: Vec<HistoryCase> = vec![
            (1, "\0", Some(all()), vec![], 0),
            (2, "\0", Some(all()), vec![kv("a", "v-a", 2, 2, 1)], 1),
            (
                3,
                "b",
                Some(GetOptions::new().with_prefix()),
                vec![kv("b", "v-b", 3, 3, 1)],
                1,
            ),
            (7, "b", None, vec![kv("b", "v-b", 3, 3, 1)], 1),
            (8, "b", None, vec![kv("b", "v-b2", 3, 8, 2)], 1),
            (
                8,
                "b",
                Some(GetOptions::new().with_prefix()),
                vec![
                    kv("b", "v-b2", 3, 8, 2),
                    kv("ba", "v-ba", 4, 4, 1),
                    kv("bb", "v-bb", 5, 5, 1),
                ],
                3,
            ),
            (
                9,
                "b",
                Some(GetOptions::new().with_prefix()),
                vec![kv("b", "v-b2", 3, 8, 2), kv("bb", "v-bb", 5, 5, 1)],
                2,
            ),
            (
                0,
                "b",
                Some(GetOptions::new().with_prefix()),
                vec![kv("b", "v-b2", 3, 8, 2), kv("bb", "v-bb", 5, 5, 1)],
                2,
            ),
            (
                5,
                "\0",
                Some(all().with_limit(1)),
                vec![kv("a", "v-a", 2, 2, 1)],
                4,
            ),
            (5, "\0", Some(all().with_count_only()), vec![], 4),
            (
                6,
                "b",
                Some(GetOptions::new().with_prefix().with_keys_only()),
                vec![
                    kv("b", "", 3, 3, 1),
                    kv("ba", "", 4, 4, 1),
                    kv("bb", "", 5, 5, 1),
                ],
                3,
            ),
        ];
        for (rev, key, opts, want, want_count) in history {
            let opts = opts.unwrap_or_default().with_revision(rev);
            let r = c.get(key, Some(opts)).await.unwrap();
            assert_eq!(
                (kvs(&r), r.count(), hrev(r.header())),
                (want, want_count, 9),
                "{k:?}: read {key:?} at revision {rev}: header must carry the current revision"
            );
        }
        // Exactly the current revision works; one above is a future revision.
        assert_eq!(
            c.get("b", Some(GetOptions::new().with_revision(9)))
                .await
                .unwrap()
                .count(),
            1,
            "{k:?}"
        );
        assert_status(
            c.get("b", Some(GetOptions::new().with_revision(10))).await,
            Code::OutOfRange,
            FUTURE_REV,
            &format!("{k:?}: range at a future revision"),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn range_sort_and_revision_filters() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        // Writes at revisions 2..=11, chosen so that every sort target gives a different order:
        //   s/a: create 4, mod 11, version 4, value "v2"
        //   s/b: create 2, mod 2,  version 1, value "v4"
        //   s/c: create 5, mod 7,  version 3, value "v1"
        //   s/d: create 3, mod 9,  version 2, value "v3"
        let value = |key: &str| match key {
            "s/a" => "v2",
            "s/b" => "v4",
            "s/c" => "v1",
            _ => "v3",
        };
        for key in [
            "s/b", "s/d", "s/a", "s/c", "s/c", "s/c", "s/a", "s/d", "s/a", "s/a",
        ] {
            c.put(key, value(key), None).await.unwrap();
        }
        assert_eq!(cur_rev(&mut c).await, 11, "{k:?}");
        let r = c
            .get("s/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(
            kvs(&r),
            vec![
                kv("s/a", "v2", 4, 11, 4),
                kv("s/b", "v4", 2, 2, 1),
                kv("s/c", "v1", 5, 7, 3),
                kv("s/d", "v3", 3, 9, 2)
            ],
            "{k:?}: sort fixture"
        );

        use SortOrder::{Ascend, Descend, None as Unsorted};
        use SortTarget::{Create, Key, Mod, Value, Version};
        // (target, order, expected key order, with limit 2). With order NONE a non-key target
        // sorts ascending, but etcd then applies the limit BEFORE sorting (it fetches limit + 1
        // keys in key order, sorts those, and truncates): with limit 2 the NONE rows sort only
        // a, b, c.
        let table = [
            (Key, Unsorted, "abcd", "ab"),
            (Key, Ascend, "abcd", "ab"),
            (Key, Descend, "dcba", "dc"),
            (Create, Ascend, "bdac", "bd"),
            (Create, Descend, "cadb", "ca"),
            (Create, Unsorted, "bdac", "ba"),
            (Mod, Ascend, "bcda", "bc"),
            (Mod, Descend, "adcb", "ad"),
            (Mod, Unsorted, "bcda", "bc"),
            (Version, Ascend, "bdca", "bd"),
            (Version, Descend, "acdb", "ac"),
            (Version, Unsorted, "bdca", "bc"),
            (Value, Ascend, "cadb", "ca"),
            (Value, Descend, "bdac", "bd"),
            (Value, Unsorted, "cadb", "ca"),
        ];
        let order = |kvs: &[KeyValue]| {
            keys(kvs)
                .iter()
                .map(|k| k.trim_start_matches("s/"))
                .collect::<String>()
        };
        for (target, ord, want, limited) in table {
            let opts = GetOptions::new().with_prefix().with_sort(target, ord);
            let r = c.get("s/", Some(opts)).await.unwrap();
            assert_eq!(
                (order(r.kvs()), r.count(), r.more()),
                (want.to_owned(), 4, false),
                "{k:?}: sort {target:?} {ord:?}"
            );
            let opts = GetOptions::new()
                .with_prefix()
                .with_sort(target, ord)
                .with_limit(2);
            let r = c.get("s/", Some(opts)).await.unwrap();
            assert_eq!(
                (order(r.kvs()), r.count(), r.more()),
                (limited.to_owned(), 4, true),
                "{k:?}: sort {target:?} {ord:?} limit 2"
            );
        }

        // Revision filters. `count` is the count of the range before filtering.
        let pre = || GetOptions::new().with_prefix();
        let filters: Vec<(&str, GetOptions, &str, bool)> = vec![
            ("min_mod 7", pre().with_min_mod_revision(7), "acd", false),
            ("max_mod 7", pre().with_max_mod_revision(7), "bc", false),
            (
                "min_mod 3 max_mod 9",
                pre().with_min_mod_revision(3).with_max_mod_revision(9),
                "cd",
                false,
            ),
            ("min_mod 12", pre().with_min_mod_revision(12), "", false),
            ("max_mod 1", pre().with_max_mod_revision(1), "", false),
            (
                "min_create 4",
                pre().with_min_create_revision(4),
                "ac",
                false,
            ),
            (
                "max_create 3",
                pre().with_max_create_revision(3),
                "bd",
                false,
            ),
            (
                "min_create 3 max_create 4",
                pre()
                    .with_min_create_revision(3)
                    .with_max_create_revision(4),
                "ad",
                false,
            ),
            (
                "min_mod 7 max_create 4",
                pre().with_min_mod_revision(7).with_max_create_revision(4),
                "ad",
                false,
            ),
            (
                "min_mod 7 sorted by version desc",
                pre().with_min_mod_revision(7).with_sort(Version, Descend),
                "acd",
                false,
            ),
            (
                "min_mod 7 limit 1",
                pre().with_min_mod_revision(7).with_limit(1),
                "a",
                true,
            ),
            (
                "min_mod 7 limit 3",
                pre().with_min_mod_revision(7).with_limit(3),
                "acd",
                false,
            ),
        ];
        for (name, opts, want, more) in filters {
            let r = c.get("s/", Some(opts)).await.unwrap();
            assert_eq!(
                (order(r.kvs()), r.count(), r.more()),
                (want.to_owned(), 4, more),
                "{k:?}: {name}"
            );
        }
        // Filters on a historical read see that revision's key fields.
        let r = c
            .get("s/", Some(pre().with_revision(6).with_min_mod_revision(5)))
            .await
            .unwrap();
        assert_eq!(
            (kvs(&r), r.count()),
            (vec![kv("s/c", "v1", 5, 6, 2)], 4),
            "{k:?}: filter at revision 6"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Put
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn put_prev_kv_ignore_value_ignore_lease_and_lease_errors() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;

        let r = c
            .put("k", "v1", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(
            (hrev(r.header()), r.prev_key().map(to_kv)),
            (2, None),
            "{k:?}: prev_kv of a new key"
        );
        let r = c
            .put("k", "v2", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(
            (hrev(r.header()), r.prev_key().map(to_kv)),
            (3, Some(kv("k", "v1", 2, 2, 1))),
            "{k:?}: prev_kv"
        );
        assert_eq!(r.prev_key().unwrap().lease(), 0, "{k:?}");
        let r = c.put("k", "v3", None).await.unwrap();
        assert_eq!(
            (hrev(r.header()), r.prev_key().map(to_kv)),
            (4, None),
            "{k:?}: no prev_kv unless asked"
        );

        // ignore_value keeps the value and bumps version and mod_revision.
        let r = c
            .put(
                "k",
                "",
                Some(PutOptions::new().with_ignore_value().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(
            (hrev(r.header()), r.prev_key().map(to_kv)),
            (5, Some(kv("k", "v3", 2, 4, 3))),
            "{k:?}: ignore_value"
        );
        assert_eq!(
            kvs(&c.get("k", None).await.unwrap()),
            vec![kv("k", "v3", 2, 5, 4)],
            "{k:?}: ignore_value kept the value"
        );

        // ignore_lease keeps the (absent) lease and writes the new value.
        let r = c
            .put("k", "v4", Some(PutOptions::new().with_ignore_lease()))
            .await
            .unwrap();
        assert_eq!(hrev(r.header()), 6, "{k:?}: ignore_lease");
        let g = c.get("k", None).await.unwrap();
        assert_eq!(
            (kvs(&g), g.kvs()[0].lease()),
            (vec![kv("k", "v4", 2, 6, 5)], 0),
            "{k:?}: ignore_lease"
        );

        // Both at once: a pure "touch".
        let r = c
            .put(
                "k",
                "",
                Some(PutOptions::new().with_ignore_value().with_ignore_lease()),
            )
            .await
            .unwrap();
        assert_eq!(hrev(r.header()), 7, "{k:?}: touch");
        assert_eq!(
            kvs(&c.get("k", None).await.unwrap()),
            vec![kv("k", "v4", 2, 7, 6)],
            "{k:?}: touch"
        );

        // An empty value is a value.
        c.put("empty", "", None).await.unwrap();
        let g = c.get("empty", None).await.unwrap();
        assert_eq!(
            (kvs(&g), g.count()),
            (vec![kv("empty", "", 8, 8, 1)], 1),
            "{k:?}: empty value"
        );

        // Errors, none of which writes anything. (name, key, value, options, code, message)
        let errors: Vec<(&str, &str, &str, PutOptions, Code, &str)> = vec![
            (
                "ignore_value with a value",
                "k",
                "x",
                PutOptions::new().with_ignore_value(),
                Code::InvalidArgument,
                VALUE_PROVIDED,
            ),
            (
                "ignore_value on a missing key",
                "missing",
                "",
                PutOptions::new().with_ignore_value(),
                Code::InvalidArgument,
                KEY_NOT_FOUND,
            ),
            (
                "ignore_lease with a lease",
                "k",
                "x",
                PutOptions::new().with_ignore_lease().with_lease(7),
                Code::InvalidArgument,
                LEASE_PROVIDED,
            ),
            (
                "ignore_lease on a missing key",
                "missing",
                "x",
                PutOptions::new().with_ignore_lease(),
                Code::InvalidArgument,
                KEY_NOT_FOUND,
            ),
            (
                "ignore_value on a deleted key",
                "gone",
                "",
                PutOptions::new().with_ignore_value(),
                Code::InvalidArgument,
                KEY_NOT_FOUND,
            ),
            (
                "unknown lease",
                "k",
                "x",
                PutOptions::new().with_lease(0x1234),
                Code::NotFound,
                LEASE_NOT_FOUND,
            ),
            (
                "unknown lease on a new key",
                "new",
                "x",
                PutOptions::new().with_lease(1),
                Code::NotFound,
                LEASE_NOT_FOUND,
            ),
            (
                "empty key",
                "",
                "x",
                PutOptions::new(),
                Code::InvalidArgument,
                EMPTY_KEY,
            ),
        ];
        c.put("gone", "x", None).await.unwrap();
        c.delete("gone", None).await.unwrap();
        let before = cur_rev(&mut c).await;
        assert_eq!(before, 10, "{k:?}");
        for (name, key, value, opts, code, msg) in errors {
            assert_status(
                c.put(key, value, Some(opts.clone())).await,
                code,
                msg,
                &format!("{k:?}: put: {name}"),
            );
            // The same put inside a txn fails the whole txn with the same error.
            let t = Txn::new().and_then([
                TxnOp::put("other", "x", None),
                TxnOp::put(key, value, Some(opts)),
            ]);
            assert_status(
                c.txn(t).await,
                code,
                msg,
                &format!("{k:?}: put in txn: {name}"),
            );
        }
        assert_eq!(
            cur_rev(&mut c).await,
            before,
            "{k:?}: failed puts do not bump the revision"
        );
        assert_eq!(
            c.get("other", None).await.unwrap().count(),
            0,
            "{k:?}: failed txn wrote nothing"
        );
        assert_eq!(
            kvs(&c.get("k", None).await.unwrap()),
            vec![kv("k", "v4", 2, 7, 6)],
            "{k:?}: k unchanged"
        );
    }
}

/// Put with a granted lease: attach, keep with ignore_lease, detach with lease 0, LEASE
/// compares, and revocation deleting only the keys still attached.
#[tokio::test(flavor = "multi_thread")]
async fn put_with_a_granted_lease() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        let id = c.lease_grant(60, None).await.unwrap().id();
        assert_ne!(id, 0, "{k:?}");
        let lease_of = |r: &GetResponse| r.kvs().first().map(KeyValue::lease);

        c.put("l", "1", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap(); // 2
        let g = c.get("l", None).await.unwrap();
        assert_eq!(
            (kvs(&g), lease_of(&g)),
            (vec![kv("l", "1", 2, 2, 1)], Some(id)),
            "{k:?}: attached"
        );
        c.put("l", "2", Some(PutOptions::new().with_ignore_lease()))
            .await
            .unwrap(); // 3
        let g = c.get("l", None).await.unwrap();
        assert_eq!(
            (kvs(&g), lease_of(&g)),
            (vec![kv("l", "2", 2, 3, 2)], Some(id)),
            "{k:?}: ignore_lease keeps it"
        );
        let r = c
            .put(
                "l",
                "",
                Some(
                    PutOptions::new()
                        .with_ignore_value()
                        .with_ignore_lease()
                        .with_prev_key(),
                ),
            )
            .await
            .unwrap(); // 4
        assert_eq!(
            r.prev_key().map(KeyValue::lease),
            Some(id),
            "{k:?}: prev_kv carries the lease"
        );
        let g = c.get("l", None).await.unwrap();
        assert_eq!(
            (kvs(&g), lease_of(&g)),
            (vec![kv("l", "2", 2, 4, 3)], Some(id)),
            "{k:?}: touch"
        );

        use CompareOp::{Equal as Eq, Greater as Gt, Less as Lt, NotEqual as Ne};
        let cmps = [
            (Compare::lease("l", Eq, id), true),
            (Compare::lease("l", Ne, id), false),
            (Compare::lease("l", Gt, 0), true),
            (Compare::lease("l", Lt, id), false),
            (Compare::lease("l", Eq, 0), false),
        ];
        for (i, (cmp, want)) in cmps.into_iter().enumerate() {
            let r = c.txn(Txn::new().when([cmp])).await.unwrap();
            assert_eq!(r.succeeded(), want, "{k:?}: lease compare #{i}");
        }

        // A put without a lease detaches the key.
        c.put("l", "3", None).await.unwrap(); // 5
        let g = c.get("l", None).await.unwrap();
        assert_eq!(
            (kvs(&g), lease_of(&g)),
            (vec![kv("l", "3", 2, 5, 4)], Some(0)),
            "{k:?}: detached"
        );
        c.put("l2", "x", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap(); // 6

        // Revoking deletes the attached key (one revision); the detached one stays.
        c.lease_revoke(id).await.unwrap();
        let all = c
            .get("\0", Some(GetOptions::new().with_range("\0")))
            .await
            .unwrap();
        assert_eq!(
            (kvs(&all), hrev(all.header())),
            (vec![kv("l", "3", 2, 5, 4)], 7),
            "{k:?}: after revoke"
        );
        assert_status(
            c.put("l", "4", Some(PutOptions::new().with_lease(id)))
                .await,
            Code::NotFound,
            LEASE_NOT_FOUND,
            &format!("{k:?}: put with a revoked lease"),
        );
        assert_eq!(cur_rev(&mut c).await, 7, "{k:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// DeleteRange
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn delete_range_counts_and_prev_kvs() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        // Revisions 2..=7.
        for key in ["d/a", "d/b", "d/c", "d/d", "e", "f"] {
            c.put(key, format!("v-{key}"), None).await.unwrap();
        }
        // Steps in order: (name, key, options, deleted, prev_kvs, header revision).
        let steps: Vec<DeleteStep> = vec![
            (
                "single key with prev_kv",
                "d/a",
                Some(DeleteOptions::new().with_prev_key()),
                1,
                vec![kv("d/a", "v-d/a", 2, 2, 1)],
                8,
            ),
            (
                "range without prev_kv",
                "d/b",
                Some(DeleteOptions::new().with_range("d/d")),
                2,
                vec![],
                9,
            ),
            ("missing key", "d/zzz", None, 0, vec![], 9),
            (
                "missing key with prev_kv",
                "d/zzz",
                Some(DeleteOptions::new().with_prev_key()),
                0,
                vec![],
                9,
            ),
            ("already deleted key", "d/a", None, 0, vec![], 9),
            (
                "prefix with prev_kv",
                "d/",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
                1,
                vec![kv("d/d", "v-d/d", 5, 5, 1)],
                10,
            ),
            (
                "from key with prev_kv",
                "e",
                Some(DeleteOptions::new().with_range("\0").with_prev_key()),
                2,
                vec![kv("e", "v-e", 6, 6, 1), kv("f", "v-f", 7, 7, 1)],
                11,
            ),
            (
                "from key, nothing left",
                "e",
                Some(DeleteOptions::new().with_from_key()),
                0,
                vec![],
                11,
            ),
        ];
        for (name, key, opts, deleted, prev, rev) in steps {
            let d = c.delete(key, opts).await.unwrap();
            assert_eq!(
                (
                    d.deleted(),
                    d.prev_kvs().iter().map(to_kv).collect::<Vec<_>>(),
                    hrev(d.header())
                ),
                (deleted, prev, rev),
                "{k:?}: delete {name}"
            );
        }
        // Tombstones: history is readable; the two keys of the range delete died together.
        let all = |rev: i64| GetOptions::new().with_range("\0").with_revision(rev);
        let at = |r: &GetResponse| keys(r.kvs()).join(",");
        assert_eq!(
            at(&c.get("\0", Some(all(8))).await.unwrap()),
            "d/b,d/c,d/d,e,f",
            "{k:?}: at 8"
        );
        assert_eq!(
            at(&c.get("\0", Some(all(9))).await.unwrap()),
            "d/d,e,f",
            "{k:?}: at 9"
        );
        assert_eq!(
            at(&c.get("\0", Some(all(10))).await.unwrap()),
            "e,f",
            "{k:?}: at 10"
        );
        assert_eq!(
            at(&c.get("\0", Some(all(11))).await.unwrap()),
            "",
            "{k:?}: at 11"
        );

        // Delete everything ("\0", "\0").
        c.put("g", "1", None).await.unwrap();
        c.put("h", "1", None).await.unwrap();
        let d = c
            .delete(
                "\0",
                Some(DeleteOptions::new().with_range("\0").with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(
            (d.deleted(), keys(d.prev_kvs()), hrev(d.header())),
            (2, vec!["g".to_owned(), "h".to_owned()], 14),
            "{k:?}: delete all"
        );
        let r = c
            .get("\0", Some(GetOptions::new().with_range("\0")))
            .await
            .unwrap();
        assert_eq!(
            (r.count(), hrev(r.header())),
            (0, 14),
            "{k:?}: empty after delete all"
        );
        // A recreated key starts a new life.
        c.put("d/a", "again", None).await.unwrap();
        assert_eq!(
            kvs(&c.get("d/a", None).await.unwrap()),
            vec![kv("d/a", "again", 15, 15, 1)],
            "{k:?}"
        );
        // Empty key.
        assert_status(
            c.delete("", None).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &format!("{k:?}: delete empty key"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Txn
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn txn_compares_every_target_and_operator() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        // t: create 2, mod 3, version 2, value "m", lease 0. r/a: version 1; r/b: version 3.
        c.put("t", "m", None).await.unwrap();
        c.put("t", "m", None).await.unwrap();
        c.put("r/a", "1", None).await.unwrap();
        for _ in 0..3 {
            c.put("r/b", "1", None).await.unwrap();
        }
        assert_eq!(cur_rev(&mut c).await, 7, "{k:?}");

        use CompareOp::{Equal as Eq, Greater as Gt, Less as Lt, NotEqual as Ne};
        let table: Vec<(&str, Vec<Compare>, bool)> = vec![
            ("version == 2", vec![Compare::version("t", Eq, 2)], true),
            ("version == 1", vec![Compare::version("t", Eq, 1)], false),
            ("version != 1", vec![Compare::version("t", Ne, 1)], true),
            ("version != 2", vec![Compare::version("t", Ne, 2)], false),
            ("version > 1", vec![Compare::version("t", Gt, 1)], true),
            ("version > 2", vec![Compare::version("t", Gt, 2)], false),
            ("version < 3", vec![Compare::version("t", Lt, 3)], true),
            ("version < 2", vec![Compare::version("t", Lt, 2)], false),
            (
                "create == 2",
                vec![Compare::create_revision("t", Eq, 2)],
                true,
            ),
            (
                "create == 3",
                vec![Compare::create_revision("t", Eq, 3)],
                false,
            ),
            (
                "create != 3",
                vec![Compare::create_revision("t", Ne, 3)],
                true,
            ),
            (
                "create != 2",
                vec![Compare::create_revision("t", Ne, 2)],
                false,
            ),
            (
                "create > 1",
                vec![Compare::create_revision("t", Gt, 1)],
                true,
            ),
            (
                "create > 2",
                vec![Compare::create_revision("t", Gt, 2)],
                false,
            ),
            (
                "create < 3",
                vec![Compare::create_revision("t", Lt, 3)],
                true,
            ),
            (
                "create < 2",
                vec![Compare::create_revision("t", Lt, 2)],
                false,
            ),
            ("mod == 3", vec![Compare::mod_revision("t", Eq, 3)], true),
            ("mod == 2", vec![Compare::mod_revision("t", Eq, 2)], false),
            ("mod != 2", vec![Compare::mod_revision("t", Ne, 2)], true),
            ("mod != 3", vec![Compare::mod_revision("t", Ne, 3)], false),
            ("mod > 2", vec![Compare::mod_revision("t", Gt, 2)], true),
            ("mod > 3", vec![Compare::mod_revision("t", Gt, 3)], false),
            ("mod < 4", vec![Compare::mod_revision("t", Lt, 4)], true),
            ("mod < 3", vec![Compare::mod_revision("t", Lt, 3)], false),
            ("value == m", vec![Compare::value("t", Eq, "m")], true),
            ("value == n", vec![Compare::value("t", Eq, "n")], false),
            ("value != n", vec![Compare::value("t", Ne, "n")], true),
            ("value != m", vec![Compare::value("t", Ne, "m")], false),
            ("value > l", vec![Compare::value("t", Gt, "l")], true),
            ("value > m", vec![Compare::value("t", Gt, "m")], false),
            ("value > empty", vec![Compare::value("t", Gt, "")], true),
            ("value < n", vec![Compare::value("t", Lt, "n")], true),
            (
                "value < mm (prefix sorts first)",
                vec![Compare::value("t", Lt, "mm")],
                true,
            ),
            ("value < m", vec![Compare::value("t", Lt, "m")], false),
            ("lease == 0", vec![Compare::lease("t", Eq, 0)], true),
            ("lease == 1", vec![Compare::lease("t", Eq, 1)], false),
            ("lease != 1", vec![Compare::lease("t", Ne, 1)], true),
            ("lease != 0", vec![Compare::lease("t", Ne, 0)], false),
            ("lease > -1", vec![Compare::lease("t", Gt, -1)], true),
            ("lease > 0", vec![Compare::lease("t", Gt, 0)], false),
            ("lease < 1", vec![Compare::lease("t", Lt, 1)], true),
            ("lease < 0", vec![Compare::lease("t", Lt, 0)], false),
            // A missing key compares as zero, except VALUE, which is always false.
            (
                "missing: version == 0",
                vec![Compare::version("nope", Eq, 0)],
                true,
            ),
            (
                "missing: version > 0",
                vec![Compare::version("nope", Gt, 0)],
                false,
            ),
            (
                "missing: version < 1",
                vec![Compare::version("nope", Lt, 1)],
                true,
            ),
            (
                "missing: create == 0",
                vec![Compare::create_revision("nope", Eq, 0)],
                true,
            ),
            (
                "missing: create != 0",
                vec![Compare::create_revision("nope", Ne, 0)],
                false,
            ),
            (
                "missing: mod == 0",
                vec![Compare::mod_revision("nope", Eq, 0)],
                true,
            ),
            (
                "missing: mod < 1",
                vec![Compare::mod_revision("nope", Lt, 1)],
                true,
            ),
            (
                "missing: lease == 0",
                vec![Compare::lease("nope", Eq, 0)],
                true,
            ),
            (
                "missing: value == empty",
                vec![Compare::value("nope", Eq, "")],
                false,
            ),
            (
                "missing: value != x",
                vec![Compare::value("nope", Ne, "x")],
                false,
            ),
            (
                "missing: value > empty",
                vec![Compare::value("nope", Gt, "")],
                false,
            ),
            (
                "missing: value < z",
                vec![Compare::value("nope", Lt, "z")],
                false,
            ),
            // Range compares hold only if they hold for every key in the range.
            (
                "prefix: version > 0",
                vec![Compare::version("r/", Gt, 0).with_prefix()],
                true,
            ),
            (
                "prefix: version == 1",
                vec![Compare::version("r/", Eq, 1).with_prefix()],
                false,
            ),
            (
                "prefix: version < 4",
                vec![Compare::version("r/", Lt, 4).with_prefix()],
                true,
            ),
            (
                "prefix: version < 3",
                vec![Compare::version("r/", Lt, 3).with_prefix()],
                false,
            ),
            (
                "range [r/b, r/c): version == 3",
                vec![Compare::version("r/b", Eq, 3).with_range("r/c")],
                true,
            ),
            (
                "range [r/a, r/b): version == 1",
                vec![Compare::version("r/a", Eq, 1).with_range("r/b")],
                true,
            ),
            (
                "prefix: value == 1",
                vec![Compare::value("r/", Eq, "1").with_prefix()],
                true,
            ),
            (
                "prefix: mod > 3",
                vec![Compare::mod_revision("r/", Gt, 3).with_prefix()],
                true,
            ),
            (
                "prefix: mod > 4",
                vec![Compare::mod_revision("r/", Gt, 4).with_prefix()],
                false,
            ),
            (
                "prefix: create != 4",
                vec![Compare::create_revision("r/", Ne, 4).with_prefix()],
                false,
            ),
            (
                "from key \\0: version > 0",
                vec![Compare::version("\0", Gt, 0).with_range("\0")],
                true,
            ),
            (
                "empty range: version == 0",
                vec![Compare::version("x/", Eq, 0).with_prefix()],
                true,
            ),
            (
                "empty range: value == empty",
                vec![Compare::value("x/", Eq, "").with_prefix()],
                false,
            ),
            // Several compares: all must hold.
            ("no compares", vec![], true),
            (
                "two true",
                vec![Compare::version("t", Eq, 2), Compare::value("t", Eq, "m")],
                true,
            ),
            (
                "true and false",
                vec![Compare::version("t", Eq, 2), Compare::value("t", Eq, "z")],
                false,
            ),
            (
                "false and true",
                vec![Compare::version("t", Eq, 9), Compare::value("t", Eq, "m")],
                false,
            ),
        ];
        // Read-only txns (served without the log): the revision never moves.
        for (name, cmps, want) in &table {
            let t = Txn::new()
                .when(cmps.clone())
                .and_then([TxnOp::get("t", None)])
                .or_else([TxnOp::get("t", None), TxnOp::get("nope", None)]);
            let r = c.txn(t).await.unwrap();
            let branch_len = if *want { 1 } else { 2 };
            assert_eq!(
                (r.succeeded(), r.op_responses().len(), hrev(r.header())),
                (*want, branch_len, 7),
                "{k:?}: read-only txn: {name}"
            );
        }
        // The same compares in write txns (applied through the log): exactly one bump each.
        let mut rev = 7;
        for (name, cmps, want) in &table {
            let t = Txn::new()
                .when(cmps.clone())
                .and_then([TxnOp::put("w/then", *name, None)])
                .or_else([TxnOp::put("w/else", *name, None)]);
            let r = c.txn(t).await.unwrap();
            rev += 1;
            assert_eq!(
                (r.succeeded(), hrev(r.header())),
                (*want, rev),
                "{k:?}: write txn: {name}"
            );
            let written = if *want { "w/then" } else { "w/else" };
            let g = c.get(written, None).await.unwrap();
            assert_eq!(
                (g.kvs()[0].value(), g.kvs()[0].mod_revision()),
                (name.as_bytes(), rev),
                "{k:?}: write txn took the right branch: {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_sequencing_and_nesting() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        c.put("z", "old", None).await.unwrap(); // revision 2

        // Later ops see earlier writes; every write shares revision 3.
        let t = c
            .txn(Txn::new().and_then([
                TxnOp::get("x", None),
                TxnOp::put("x", "1", Some(PutOptions::new().with_prev_key())),
                TxnOp::get("x", None),
                TxnOp::put("y", "2", None),
                TxnOp::delete("z", Some(DeleteOptions::new().with_prev_key())),
                TxnOp::get("z", None),
                TxnOp::get("\0", Some(GetOptions::new().with_range("\0"))),
            ]))
            .await
            .unwrap();
        assert_eq!((t.succeeded(), hrev(t.header())), (true, 3), "{k:?}");
        let ops = t.op_responses();
        assert_eq!(get_resp(&ops[0]).count(), 0, "{k:?}: x before its put");
        match &ops[1] {
            TxnOpResponse::Put(p) => {
                assert_eq!(p.prev_key().map(to_kv), None, "{k:?}: prev_kv of new x")
            }
            other => panic!("{k:?}: expected put, got {other:?}"),
        }
        assert_eq!(
            kvs(get_resp(&ops[2])),
            vec![kv("x", "1", 3, 3, 1)],
            "{k:?}: x after its put"
        );
        match &ops[4] {
            TxnOpResponse::Delete(d) => assert_eq!(
                (
                    d.deleted(),
                    d.prev_kvs().iter().map(to_kv).collect::<Vec<_>>()
                ),
                (1, vec![kv("z", "old", 2, 2, 1)]),
                "{k:?}: delete z"
            ),
            other => panic!("{k:?}: expected delete, got {other:?}"),
        }
        assert_eq!(get_resp(&ops[5]).count(), 0, "{k:?}: z after its delete");
        assert_eq!(
            (kvs(get_resp(&ops[6])), get_resp(&ops[6]).count()),
            (vec![kv("x", "1", 3, 3, 1), kv("y", "2", 3, 3, 1)], 2),
            "{k:?}: whole keyspace inside the txn"
        );
        assert_eq!(
            kvs(&c
                .get("z", Some(GetOptions::new().with_revision(2)))
                .await
                .unwrap()),
            vec![kv("z", "old", 2, 2, 1)],
            "{k:?}"
        );

        // Per-op header revisions: reads before the first write see the old revision, writes
        // and later reads the new one (kube-apiserver reads the put's header revision).
        let inner: Vec<i64> = ops
            .iter()
            .map(|op| match op {
                TxnOpResponse::Get(g) => hrev(g.header()),
                TxnOpResponse::Put(p) => hrev(p.header()),
                TxnOpResponse::Delete(d) => hrev(d.header()),
                TxnOpResponse::Txn(t) => hrev(t.header()),
            })
            .collect();
        assert_eq!(
            inner,
            vec![2, 3, 3, 3, 3, 3, 3],
            "{k:?}: per-op header revisions"
        );

        // Nested txn in the success branch. Nested compares are evaluated against the state
        // before the outer txn's writes, so `value(n) == "1"` is false although n = "1" by then.
        let t = c
            .txn(
                Txn::new()
                    .when([Compare::version("n", CompareOp::Equal, 0)])
                    .and_then([
                        TxnOp::put("n", "1", None),
                        TxnOp::txn(
                            Txn::new()
                                .when([Compare::value("n", CompareOp::Equal, "1")])
                                .and_then([TxnOp::put("n/then", "x", None)])
                                .or_else([TxnOp::put("n/else", "x", None), TxnOp::get("n", None)]),
                        ),
                    ]),
            )
            .await
            .unwrap();
        assert_eq!(
            (t.succeeded(), shape(&t), hrev(t.header())),
            (
                true,
                vec!["put".to_owned(), "txn(false:[put,get])".to_owned()],
                4
            ),
            "{k:?}: nested in success"
        );
        let nested = txn_resp(&t.op_responses()[1]).clone();
        assert_eq!(
            kvs(get_resp(&nested.op_responses()[1])),
            vec![kv("n", "1", 4, 4, 1)],
            "{k:?}: nested get sees outer put"
        );
        let r = c
            .get("n", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(
            kvs(&r),
            vec![kv("n", "1", 4, 4, 1), kv("n/else", "x", 4, 4, 1)],
            "{k:?}: nested writes share the revision"
        );

        // Nested txns in the failure branch, two levels deep.
        let t = c
            .txn(
                Txn::new()
                    .when([Compare::version("n", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("q/wrong", "x", None)])
                    .or_else([
                        TxnOp::get("n", None),
                        TxnOp::txn(
                            Txn::new()
                                .when([Compare::version("n", CompareOp::Equal, 1)])
                                .and_then([
                                    TxnOp::put("q/inner", "y", None),
                                    TxnOp::txn(
                                        Txn::new()
                                            .when([Compare::mod_revision(
                                                "n",
                                                CompareOp::Greater,
                                                100,
                                            )])
                                            .and_then([TxnOp::put("q/wrong2", "x", None)])
                                            .or_else([TxnOp::delete("n/else", None)]),
                                    ),
                                ])
                                .or_else([TxnOp::put("q/wrong3", "x", None)]),
                        ),
                    ]),
            )
            .await
            .unwrap();
        assert_eq!(
            (t.succeeded(), shape(&t), hrev(t.header())),
            (
                false,
                vec![
                    "get".to_owned(),
                    "txn(true:[put,txn(false:[delete])])".to_owned()
                ],
                5
            ),
            "{k:?}: nested in failure"
        );
        let r = c
            .get("\0", Some(GetOptions::new().with_range("\0")))
            .await
            .unwrap();
        assert_eq!(
            kvs(&r),
            vec![
                kv("n", "1", 4, 4, 1),
                kv("q/inner", "y", 5, 5, 1),
                kv("x", "1", 3, 3, 1),
                kv("y", "2", 3, 3, 1)
            ],
            "{k:?}: after nested failure txn"
        );

        // A read-only nested txn does not bump.
        let t = c
            .txn(Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::get("n", None)]))]))
            .await
            .unwrap();
        assert_eq!(
            (shape(&t), hrev(t.header())),
            (vec!["txn(true:[get])".to_owned()], 5),
            "{k:?}: read-only nested"
        );
        assert_eq!(cur_rev(&mut c).await, 5, "{k:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_op_limit_and_duplicate_keys() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;

        // 128 ops is the limit, in any of compare, success or failure.
        let puts = |n: usize| {
            (0..n)
                .map(|i| TxnOp::put(format!("l/{i:03}"), "v", None))
                .collect::<Vec<_>>()
        };
        let gets = |n: usize| {
            (0..n)
                .map(|i| TxnOp::get(format!("l/{i:03}"), None))
                .collect::<Vec<_>>()
        };
        let cmps = |n: usize| {
            (0..n)
                .map(|i| Compare::version(format!("l/{i:03}"), CompareOp::Equal, 0))
                .collect::<Vec<_>>()
        };
        let r = c.txn(Txn::new().and_then(puts(128))).await.unwrap();
        assert_eq!(hrev(r.header()), 2, "{k:?}: 128 puts in one txn");
        let g = c
            .get("l/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(g.count(), 128, "{k:?}");
        assert!(
            g.kvs()
                .iter()
                .all(|kv| kv.mod_revision() == 2 && kv.version() == 1),
            "{k:?}: all at revision 2"
        );
        let ok: Vec<(&str, Txn)> = vec![
            ("128 gets", Txn::new().and_then(gets(128))),
            ("128 compares", Txn::new().when(cmps(128)).or_else(gets(1))),
            (
                "128 gets in failure",
                Txn::new().when(cmps(1)).or_else(gets(128)),
            ),
        ];
        for (name, t) in ok {
            c.txn(t)
                .await
                .unwrap_or_else(|e| panic!("{k:?}: {name}: {e}"));
        }
        let too_many: Vec<(&str, Txn)> = vec![
            ("129 puts", Txn::new().and_then(puts(129))),
            ("129 gets", Txn::new().and_then(gets(129))),
            ("129 compares", Txn::new().when(cmps(129))),
            (
                "129 ops in failure",
                Txn::new().when(cmps(1)).or_else(gets(129)),
            ),
        ];
        for (name, t) in too_many {
            assert_status(
                c.txn(t).await,
                Code::InvalidArgument,
                TOO_MANY_OPS,
                &format!("{k:?}: {name}"),
            );
        }
        assert_eq!(cur_rev(&mut c).await, 2, "{k:?}");

        // Duplicate keys: (name, txn, Some(revision bump) or None for ErrDuplicateKey). Failing
        // txns write nothing.
        let put = |key: &str| TxnOp::put(key, "v", None);
        let del = |key: &str| TxnOp::delete(key, None);
        let del_range =
            |key: &str, end: &str| TxnOp::delete(key, Some(DeleteOptions::new().with_range(end)));
        let nested =
            |then: Vec<TxnOp>, els: Vec<TxnOp>| TxnOp::txn(Txn::new().and_then(then).or_else(els));
        let table: Vec<(&str, Txn, Option<i64>)> = vec![
            ("put + put", Txn::new().and_then([put("a"), put("a")]), None),
            (
                "put + delete",
                Txn::new().and_then([put("a"), del("a")]),
                None,
            ),
            (
                "delete + put",
                Txn::new().and_then([del("a"), put("a")]),
                None,
            ),
            (
                "put inside a deleted range",
                Txn::new().and_then([put("b"), del_range("a", "c")]),
                None,
            ),
            (
                "put at a deleted range's end",
                Txn::new().and_then([put("c"), del_range("a", "c")]),
                Some(1),
            ),
            (
                "duplicate puts in failure",
                Txn::new()
                    .when([Compare::version("a", CompareOp::Equal, 99)])
                    .or_else([put("a"), put("a")]),
                None,
            ),
            (
                "overlapping deletes (of nothing)",
                Txn::new().and_then([del_range("a", "c"), del("b")]),
                Some(0),
            ),
            (
                "same key in then and else",
                Txn::new().and_then([put("a")]).or_else([put("a")]),
                Some(1),
            ),
            (
                "nested put vs outer put",
                Txn::new().and_then([put("a"), nested(vec![put("a")], vec![])]),
                None,
            ),
            (
                "nested else put vs outer delete",
                Txn::new().and_then([del_range("a", "c"), nested(vec![], vec![put("b")])]),
                None,
            ),
            (
                "nested then and else on the same key",
                Txn::new().and_then([nested(vec![put("a")], vec![put("a")])]),
                Some(1),
            ),
            (
                "two nested txns putting the same key",
                Txn::new().and_then([
                    nested(vec![put("a")], vec![]),
                    nested(vec![put("a")], vec![]),
                ]),
                None,
            ),
            (
                "put + delete to \\0",
                Txn::new().and_then([put("b"), del_range("a", "\0")]),
                Some(1),
            ),
            (
                "distinct keys",
                Txn::new().and_then([put("a"), put("b"), del("c")]),
                Some(1),
            ),
        ];
        let mut rev = 2;
        for (name, t, bump) in table {
            let r = c.txn(t).await;
            match bump {
                None => assert_status(
                    r,
                    Code::InvalidArgument,
                    DUPLICATE_KEY,
                    &format!("{k:?}: {name}"),
                ),
                Some(bump) => {
                    let r = r.unwrap_or_else(|e| panic!("{k:?}: {name}: {e}"));
                    rev += bump;
                    assert_eq!(hrev(r.header()), rev, "{k:?}: {name}");
                }
            }
            assert_eq!(cur_rev(&mut c).await, rev, "{k:?}: after {name}");
        }
        // "put + delete to \0" deleted every key from "a" on, including the put "b".
        let r = c
            .get("\0", Some(GetOptions::new().with_range("\0")))
            .await
            .unwrap();
        assert_eq!(
            keys(r.kvs()),
            vec!["a".to_owned(), "b".to_owned()],
            "{k:?}: keys at the end"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Compact
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn compaction_removes_history() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        c.put("k", "v1", None).await.unwrap(); // 2
        c.put("k", "v2", None).await.unwrap(); // 3
        c.put("k", "v3", None).await.unwrap(); // 4
        c.put("gone", "x", None).await.unwrap(); // 5
        c.delete("gone", None).await.unwrap(); // 6
        c.put("other", "o", None).await.unwrap(); // 7

        let r = c.compact(3, None).await.unwrap();
        assert_eq!(
            hrev(r.header()),
            7,
            "{k:?}: compaction does not bump the revision"
        );
        assert_eq!(cur_rev(&mut c).await, 7, "{k:?}");

        // Reads of k by revision: Ok(value) or Err(message).
        let reads: Vec<(i64, Result<Option<Kv>, &str>)> = vec![
            (1, Err(COMPACTED)),
            (2, Err(COMPACTED)),
            (3, Ok(Some(kv("k", "v2", 2, 3, 2)))),
            (4, Ok(Some(kv("k", "v3", 2, 4, 3)))),
            (7, Ok(Some(kv("k", "v3", 2, 4, 3)))),
            (0, Ok(Some(kv("k", "v3", 2, 4, 3)))),
            (8, Err(FUTURE_REV)),
        ];
        for (rev, want) in &reads {
            let got = c
                .get("k", Some(GetOptions::new().with_revision(*rev)))
                .await;
            match want {
                Ok(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{k:?}: read at {rev}: {e}"));
                    assert_eq!(
                        (kvs(&got).first().cloned(), hrev(got.header())),
                        (want.clone(), 7),
                        "{k:?}: read at {rev}"
                    );
                }
                Err(msg) => {
                    assert_status(got, Code::OutOfRange, msg, &format!("{k:?}: read at {rev}"))
                }
            }
            // The same read inside a txn.
            let got = c
                .txn(
                    Txn::new()
                        .and_then([TxnOp::get("k", Some(GetOptions::new().with_revision(*rev)))]),
                )
                .await;
            match want {
                Ok(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{k:?}: txn read at {rev}: {e}"));
                    assert_eq!(
                        kvs(get_resp(&got.op_responses()[0])).first().cloned(),
                        want.clone(),
                        "{k:?}: txn read at {rev}"
                    );
                }
                Err(msg) => assert_status(
                    got,
                    Code::OutOfRange,
                    msg,
                    &format!("{k:?}: txn read at {rev}"),
                ),
            }
        }

        // Compacting at or below the compaction revision, or above the current one.
        let bad: Vec<(i64, &str)> = vec![
            (0, COMPACTED),
            (1, COMPACTED),
            (2, COMPACTED),
            (3, COMPACTED),
            (8, FUTURE_REV),
            (100, FUTURE_REV),
        ];
        for (rev, msg) in bad {
            assert_status(
                c.compact(rev, None).await,
                Code::OutOfRange,
                msg,
                &format!("{k:?}: compact {rev}"),
            );
        }

        // Compact past the delete (physical): the tombstone's history goes too.
        c.compact(
            6,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        assert_status(
            c.get("gone", Some(GetOptions::new().with_revision(5)))
                .await,
            Code::OutOfRange,
            COMPACTED,
            &format!("{k:?}: gone at 5"),
        );
        let r = c
            .get(
                "\0",
                Some(GetOptions::new().with_range("\0").with_revision(6)),
            )
            .await
            .unwrap();
        assert_eq!(
            (kvs(&r), r.count()),
            (vec![kv("k", "v3", 2, 4, 3)], 1),
            "{k:?}: keyspace at 6"
        );

        // Compacting at the current revision is allowed, once.
        c.compact(7, None).await.unwrap();
        assert_status(
            c.compact(7, None).await,
            Code::OutOfRange,
            COMPACTED,
            &format!("{k:?}: compact 7 twice"),
        );
        let r = c
            .get(
                "\0",
                Some(GetOptions::new().with_range("\0").with_revision(7)),
            )
            .await
            .unwrap();
        assert_eq!(
            keys(r.kvs()),
            vec!["k".to_owned(), "other".to_owned()],
            "{k:?}: keyspace at 7"
        );
        assert_status(
            c.get("k", Some(GetOptions::new().with_revision(6))).await,
            Code::OutOfRange,
            COMPACTED,
            &format!("{k:?}: k at 6 after compact 7"),
        );

        // Writes continue: key fields survive compaction.
        let r = c.put("k", "v4", None).await.unwrap();
        assert_eq!(hrev(r.header()), 8, "{k:?}");
        assert_eq!(
            kvs(&c.get("k", None).await.unwrap()),
            vec![kv("k", "v4", 2, 8, 4)],
            "{k:?}: k after compaction"
        );
        c.compact(8, None).await.unwrap();
        assert_eq!(
            kvs(&c
                .get("k", Some(GetOptions::new().with_revision(8)))
                .await
                .unwrap()),
            vec![kv("k", "v4", 2, 8, 4)],
            "{k:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Headers and errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn response_headers_are_filled() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        let members = c.member_list().await.unwrap();
        let member_id = members.members()[0].id();
        let cluster_id = members.header().unwrap().cluster_id();
        assert_ne!(member_id, 0, "{k:?}");

        let mut headers: Vec<(&str, ResponseHeader, i64)> = Vec::new();
        headers.push((
            "range",
            c.get("h", None).await.unwrap().take_header().unwrap(),
            1,
        ));
        headers.push((
            "put",
            c.put("h", "1", None).await.unwrap().take_header().unwrap(),
            2,
        ));
        headers.push((
            "range after put",
            c.get("h", None).await.unwrap().take_header().unwrap(),
            2,
        ));
        headers.push((
            "serializable range",
            c.get("h", Some(GetOptions::new().with_serializable()))
                .await
                .unwrap()
                .take_header()
                .unwrap(),
            2,
        ));
        headers.push((
            "historical range",
            c.get("h", Some(GetOptions::new().with_revision(1)))
                .await
                .unwrap()
                .take_header()
                .unwrap(),
            2,
        ));
        headers.push((
            "read-only txn",
            c.txn(Txn::new().and_then([TxnOp::get("h", None)]))
                .await
                .unwrap()
                .take_header()
                .unwrap(),
            2,
        ));
        headers.push((
            "write txn",
            c.txn(Txn::new().and_then([TxnOp::put("h", "2", None)]))
                .await
                .unwrap()
                .take_header()
                .unwrap(),
            3,
        ));
        headers.push((
            "delete nothing",
            c.delete("nothing", None)
                .await
                .unwrap()
                .take_header()
                .unwrap(),
            3,
        ));
        headers.push((
            "delete",
            c.delete("h", None).await.unwrap().take_header().unwrap(),
            4,
        ));
        headers.push((
            "compact",
            c.compact(2, None).await.unwrap().take_header().unwrap(),
            4,
        ));
        for (name, h, rev) in headers {
            assert_eq!(h.revision(), rev, "{k:?}: {name}: revision");
            assert_eq!(h.member_id(), member_id, "{k:?}: {name}: member_id");
            assert_eq!(h.cluster_id(), cluster_id, "{k:?}: {name}: cluster_id");
            assert_ne!(h.cluster_id(), 0, "{k:?}: {name}: cluster_id");
            assert_ne!(h.raft_term(), 0, "{k:?}: {name}: raft_term");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_errors() {
    for p in servers(&[]).await {
        let k = p.kind;
        let mut c = p.client().await;
        c.put("k", "v", None).await.unwrap(); // 2

        // Empty keys, everywhere a key is taken.
        let ctx = |what: &str| format!("{k:?}: {what}");
        assert_status(
            c.get("", None).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("get"),
        );
        assert_status(
            c.get("", Some(GetOptions::new().with_range("z"))).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("get range"),
        );
        assert_status(
            c.put("", "v", None).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("put"),
        );
        assert_status(
            c.delete("", None).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("delete"),
        );
        assert_status(
            c.txn(Txn::new().and_then([TxnOp::get("", None)])).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("txn get"),
        );
        assert_status(
            c.txn(Txn::new().and_then([TxnOp::put("", "v", None)]))
                .await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("txn put"),
        );
        assert_status(
            c.txn(Txn::new().or_else([TxnOp::delete("", None)])).await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("txn delete in else"),
        );
        assert_status(
            c.txn(Txn::new().when([Compare::version("", CompareOp::Equal, 0)]))
                .await,
            Code::InvalidArgument,
            EMPTY_KEY,
            &ctx("txn compare"),
        );

        // Future revisions.
        assert_status(
            c.get("k", Some(GetOptions::new().with_revision(3))).await,
            Code::OutOfRange,
            FUTURE_REV,
            &ctx("get future"),
        );
        assert_status(
            c.txn(Txn::new().and_then([TxnOp::get("k", Some(GetOptions::new().with_revision(3)))]))
                .await,
            Code::OutOfRange,
            FUTURE_REV,
            &ctx("txn get future"),
        );
        assert_eq!(cur_rev(&mut c).await, 2, "{k:?}: errors do not bump");

        // Request size: 1.5 MiB (--max-request-bytes default) is the limit for a proposal.
        let ok_value = vec![b'x'; 1_500_000];
        let r = c.put("big", ok_value.clone(), None).await.unwrap();
        assert_eq!(hrev(r.header()), 3, "{k:?}: 1,500,000-byte value fits");
        let g = c.get("big", None).await.unwrap();
        assert_eq!(g.kvs()[0].value().len(), 1_500_000, "{k:?}");
        let too_big = vec![b'x'; 1_600_000];
        assert_status(
            c.put("big", too_big.clone(), None).await,
            Code::InvalidArgument,
            TOO_LARGE,
            &ctx("1,600,000-byte put"),
        );
        assert_status(
            c.txn(Txn::new().and_then([TxnOp::put("big2", too_big, None)]))
                .await,
            Code::InvalidArgument,
            TOO_LARGE,
            &ctx("1,600,000-byte txn"),
        );
        // Above the gRPC receive limit (max-request-bytes + 512 KiB), gRPC itself refuses.
        // grpc-go answers ResourceExhausted "grpc: received message larger than max (N vs. M)".
        let (huge_code, huge_msg) = status(
            c.put("huge", vec![b'x'; 3 << 20], None).await,
            &ctx("3 MiB put"),
        );
        // The server keeps serving, and none of the failures wrote anything.
        let r = c.put("after", "1", None).await.unwrap();
        assert_eq!(hrev(r.header()), 4, "{k:?}: put after rejected requests");
        assert_eq!(
            kvs(&c.get("after", None).await.unwrap()),
            vec![kv("after", "1", 4, 4, 1)],
            "{k:?}"
        );
        assert_eq!(
            c.get("big", None).await.unwrap().kvs()[0].mod_revision(),
            3,
            "{k:?}"
        );
        assert_eq!(c.get("huge", None).await.unwrap().count(), 0, "{k:?}");
        assert_eq!(
            huge_code,
            Code::ResourceExhausted,
            "{k:?}: 3 MiB put exceeds the gRPC receive limit; message {huge_msg:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Auto-compaction
// ---------------------------------------------------------------------------------------------

/// The flags are accepted; nothing is compacted before the first compaction interval.
#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_flags_are_accepted() {
    for p in servers(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "2",
    ])
    .await
    {
        let k = p.kind;
        let mut c = p.client().await;
        for i in 0..5 {
            c.put("k", format!("v{i}"), None).await.unwrap();
        }
        let r = c
            .get("k", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap();
        assert_eq!(
            kvs(&r),
            vec![kv("k", "v0", 2, 2, 1)],
            "{k:?}: revision 2 still readable"
        );
    }
}

/// etcd's revision compactor runs every 5 minutes and compacts at `current - retention`
/// (observed on etcd 3.4.23: revision 11, retention 3, "Starting auto-compaction at revision 8"
/// exactly 5 minutes after start). Runs both servers side by side.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow (~5 minutes: etcd's revision compactor checks every 5 minutes); the fast variant below covers our server"]
async fn auto_compaction_revision_mode_side_by_side_with_etcd() {
    async fn scenario(p: Proc) {
        let k = p.kind;
        let mut c = p.client().await;
        for i in 0..10 {
            c.put("k", format!("v{i}"), None).await.unwrap();
        }
        // Revision 11 now; the compactor should compact at 11 - 3 = 8.
        assert_eq!(cur_rev(&mut c).await, 11, "{k:?}");
        let deadline = Instant::now() + Duration::from_secs(330);
        loop {
            let r = c.get("k", Some(GetOptions::new().with_revision(7))).await;
            if r.is_err() {
                assert_status(
                    r,
                    Code::OutOfRange,
                    COMPACTED,
                    &format!("{k:?}: read below the auto-compaction revision"),
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{k:?}: no auto-compaction within 330 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Exactly current - retention is still readable, and compacting there again is refused.
        let r = c
            .get("k", Some(GetOptions::new().with_revision(8)))
            .await
            .unwrap();
        assert_eq!(kvs(&r), vec![kv("k", "v6", 2, 8, 7)], "{k:?}");
        assert_status(
            c.compact(8, None).await,
            Code::OutOfRange,
            COMPACTED,
            &format!("{k:?}: compact 8 again"),
        );
        // No further writes: the compactor does not compact again (rev - retention is unchanged).
        assert_eq!(cur_rev(&mut c).await, 11, "{k:?}");
    }
    let procs = servers(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "3",
    ])
    .await;
    futures::future::join_all(procs.into_iter().map(|p| tokio::spawn(scenario(p))))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
}

/// Polls until a read of "k" at `rev` is refused as compacted.
async fn wait_compacted_at(c: &mut Client, rev: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get("k", Some(GetOptions::new().with_revision(rev))).await;
        if r.is_err() {
            assert_status(r, Code::OutOfRange, COMPACTED, what);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: revision {rev} not auto-compacted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Our server only: the hidden `--auto-compaction-check-interval-ms` (not an etcd flag) replaces
/// etcd's 5-minute check, so the compactor can be watched following `current - retention`.
/// Retention 0 disables auto-compaction, as in etcd.
#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_revision_mode_follows_current_minus_retention() {
    const ON: &[&str] = &[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "3",
        "--auto-compaction-check-interval-ms",
        "50",
    ];
    const OFF: &[&str] = &[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "0",
        "--auto-compaction-check-interval-ms",
        "50",
    ];
    let on = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, ON));
    let off = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, OFF));
    let (on, off) = (on.await.unwrap(), off.await.unwrap());

    let mut c = on.client().await;
    for i in 0..10 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    // Revision 11: the compactor settles at 11 - 3 = 8, which stays readable.
    wait_compacted_at(&mut c, 7, "retention 3 at revision 11").await;
    let r = c
        .get("k", Some(GetOptions::new().with_revision(8)))
        .await
        .unwrap();
    assert_eq!(
        kvs(&r),
        vec![kv("k", "v6", 2, 8, 7)],
        "revision 8 is the compaction revision"
    );
    for rev in [7, 8] {
        assert_status(
            c.compact(rev, None).await,
            Code::OutOfRange,
            COMPACTED,
            &format!("compact {rev} after auto"),
        );
    }
    assert_eq!(
        cur_rev(&mut c).await,
        11,
        "auto-compaction does not bump the revision"
    );
    // It follows new writes: revision 14 compacts to 11.
    for i in 10..13 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    wait_compacted_at(&mut c, 10, "retention 3 at revision 14").await;
    let r = c
        .get("k", Some(GetOptions::new().with_revision(11)))
        .await
        .unwrap();
    assert_eq!(
        kvs(&r),
        vec![kv("k", "v9", 2, 11, 10)],
        "revision 11 is the compaction revision"
    );
    assert_eq!(cur_rev(&mut c).await, 14);

    // Retention 0: never compacts.
    let mut c = off.client().await;
    for i in 0..10 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c
        .get("k", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(
        kvs(&r),
        vec![kv("k", "v0", 2, 2, 1)],
        "retention 0 disables auto-compaction"
    );
    c.compact(2, None).await.unwrap();
}
