//! Fuzzing the client API (property tests): KV, Txn, Lease and Compact requests with edge
//! values (empty and `\0`/`\xff` keys, range ends before their keys, negative and huge
//! revisions, limits and TTLs, unknown sort and compare enums, nested and oversized txns) sent
//! to a real server. Each must get a response or a gRPC status, and the server must stay up,
//! answer afterwards and log no panic. `PROPTEST_CASES` lengthens a run.

use etcd_server::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare::TargetUnion,
    kv_client::KvClient, lease_client::LeaseClient, request_op::Request,
};
use proptest::prelude::*;

use crate::harness::{Kind, Proc};

fn bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            b"".to_vec(),
            b"\x00".to_vec(),
            b"a".to_vec(),
            b"a/".to_vec(),
            b"b".to_vec(),
            b"\xff".to_vec(),
            b"\xff\xff".to_vec(),
        ]),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => Just(vec![b'k'; 2 << 20]),
    ]
    .boxed()
}

fn int() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => -3i64..20,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn range() -> impl Strategy<Value = RangeRequest> {
    (
        bytes(),
        bytes(),
        int(),
        int(),
        -1i32..8,
        -1i32..8,
        any::<[bool; 5]>(),
        int(),
        int(),
    )
        .prop_map(
            |(key, range_end, limit, revision, so, st, f, m, c)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: so,
                sort_target: st,
                serializable: f[0],
                keys_only: f[1],
                count_only: f[2],
                min_mod_revision: m,
                max_mod_revision: if f[3] { c } else { 0 },
                min_create_revision: if f[4] { c } else { 0 },
                max_create_revision: 0,
            },
        )
}

fn put() -> impl Strategy<Value = PutRequest> {
    (bytes(), bytes(), int(), any::<[bool; 3]>()).prop_map(|(key, value, lease, f)| PutRequest {
        key,
        value,
        lease,
        prev_kv: f[0],
        ignore_value: f[1],
        ignore_lease: f[2],
    })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (-1i32..6, -1i32..6, bytes(), bytes(), int(), 0..5u8).prop_map(
        |(result, target, key, range_end, n, which)| Compare {
            result,
            target,
            key,
            range_end,
            target_union: match which {
                0 => Some(TargetUnion::Version(n)),
                1 => Some(TargetUnion::CreateRevision(n)),
                2 => Some(TargetUnion::ModRevision(n)),
                3 => Some(TargetUnion::Lease(n)),
                _ => None,
            },
        },
    )
}

fn op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        range().prop_map(|r| Some(Request::RequestRange(r))),
        put().prop_map(|r| Some(Request::RequestPut(r))),
        delete().prop_map(|r| Some(Request::RequestDeleteRange(r))),
        Just(None),
    ];
    let strategy = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![3 => leaf, 1 => txn(depth - 1).prop_map(|t| Some(Request::RequestTxn(t)))]
            .boxed()
    };
    strategy.prop_map(|request| RequestOp { request }).boxed()
}

fn txn(depth: u32) -> BoxedStrategy<TxnRequest> {
    (
        prop::collection::vec(compare(), 0..4),
        prop::collection::vec(op(depth), 0..4),
        prop::collection::vec(op(depth), 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

#[derive(Debug, Clone)]
enum Call {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(i64, bool),
    Grant(i64, i64),
    Revoke(i64),
    TimeToLive(i64, bool),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        range().prop_map(Call::Range),
        put().prop_map(Call::Put),
        delete().prop_map(Call::Delete),
        txn(2).prop_map(Call::Txn),
        (int(), any::<bool>()).prop_map(|(r, p)| Call::Compact(r, p)),
        (int(), int()).prop_map(|(ttl, id)| Call::Grant(ttl, id)),
        int().prop_map(Call::Revoke),
        (int(), any::<bool>()).prop_map(|(id, keys)| Call::TimeToLive(id, keys)),
    ]
}

#[test]
fn fuzz_client_requests_get_answers_and_the_server_stays_up() {
    let mut server = Proc::start(Kind::Ours, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let channel = rt
        .block_on(
            tonic::transport::Endpoint::from_shared(server.client_url.clone())
                .expect("url")
                .connect(),
        )
        .expect("connect");
    let kv = KvClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let lease = LeaseClient::new(channel);
    let mut runner = proptest::test_runner::TestRunner::default();
    let answered: [std::cell::Cell<usize>; 2] = Default::default();
    runner
        .run(&call(), |c| {
            let (mut kv, mut lease) = (kv.clone(), lease.clone());
            // A response or a status: both are answers. A transport error is not.
            let status = rt.block_on(async move {
                let r = match c {
                    Call::Range(r) => kv.range(r).await.map(drop),
                    Call::Put(r) => kv.put(r).await.map(drop),
                    Call::Delete(r) => kv.delete_range(r).await.map(drop),
                    Call::Txn(r) => kv.txn(r).await.map(drop),
                    Call::Compact(revision, physical) => kv
                        .compact(CompactionRequest { revision, physical })
                        .await
                        .map(drop),
                    Call::Grant(ttl, id) => lease
                        .lease_grant(LeaseGrantRequest { ttl, id })
                        .await
                        .map(drop),
                    Call::Revoke(id) => lease
                        .lease_revoke(LeaseRevokeRequest { id })
                        .await
                        .map(drop),
                    Call::TimeToLive(id, keys) => lease
                        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                        .await
                        .map(drop),
                };
                r.err()
            });
            answered[usize::from(status.is_some())]
                .set(answered[usize::from(status.is_some())].get() + 1);
            if let Some(s) = status {
                // A status the server chose. A dropped connection or a crashed handler shows
                // as Unavailable, Cancelled or Unknown with the transport's words instead.
                prop_assert!(
                    !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled),
                    "{s:?}"
                );
                let m = s.message().to_lowercase();
                for words in ["transport", "h2 protocol", "connection", "broken pipe"] {
                    prop_assert!(!m.contains(words), "{s:?}");
                }
                prop_assert!(!s.message().is_empty(), "{s:?}");
            }
            Ok(())
        })
        .expect("every request is answered");
    // Both kinds of answer must occur, or the generator tests only one side.
    let answered = answered.map(|c| c.get());
    assert!(
        answered.iter().all(|n| *n > 0),
        "(ok, status): {answered:?}"
    );
    assert!(server.is_running(), "the server is still running");
    let mut kv = kv.clone();
    rt.block_on(kv.range(RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    }))
    .expect("it still answers");
    assert!(!server.log().contains("panicked"), "{}", server.log());
    server.stop();
}
