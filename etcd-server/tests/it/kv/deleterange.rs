//! DeleteRange.

use super::*;

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
