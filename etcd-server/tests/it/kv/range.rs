//! Range.

use super::*;

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
