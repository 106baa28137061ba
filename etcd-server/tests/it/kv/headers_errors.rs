//! Headers and errors.

use super::*;

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
