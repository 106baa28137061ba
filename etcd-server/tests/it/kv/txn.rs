//! Txn.

use super::*;

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
