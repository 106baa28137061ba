//! Compact.

use super::*;

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
