//! Put.

use super::*;

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
