//! Revisions.

use super::*;

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
