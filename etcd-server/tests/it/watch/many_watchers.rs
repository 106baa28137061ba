//! Many watchers on one stream.

use super::*;

pub(super) async fn many_watchers(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    // Client-chosen id 7, then server-assigned ids (0, 1), client-chosen 2, and server-assigned
    // again, which skips the 2 in use.
    let mut s = c
        .watch("a", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch("p/", prefix()).await.unwrap();
    t.push(next_show(&mut s).await);
    s.watch("b", Some(WatchOptions::new().with_range("d")))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "x",
        Some(WatchOptions::new().with_from_key().with_watch_id(2)),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    s.watch("a", None).await.unwrap();
    t.push(next_show(&mut s).await);
    assert_eq!(
        t,
        v(&[
            "id=7 rev=1 created",
            "id=0 rev=1 created",
            "id=1 rev=1 created",
            "id=2 rev=1 created",
            "id=3 rev=1 created"
        ]),
        "{kind:?}"
    );

    c.put("a", "1", None).await.unwrap(); // 2
    c.put("p/1", "x", None).await.unwrap(); // 3
    c.put("c", "y", None).await.unwrap(); // 4
    c.put("b", "z", None).await.unwrap(); // 5
    c.put("d", "w", None).await.unwrap(); // 6: nobody
    c.put("x/y", "1", None).await.unwrap(); // 7
    c.put("z", "2", None).await.unwrap(); // 8
    c.delete("a", None).await.unwrap(); // 9
    c.txn(Txn::new().and_then([TxnOp::put("p/2", "t", None), TxnOp::put("b", "u", None)]))
        .await
        .unwrap(); // 10
    let m = by_id(&mut s, 11).await;
    quiet(&mut s, Duration::from_millis(300)).await;
    let expect: BTreeMap<i64, Vec<String>> = [
        (
            0,
            v(&[
                "id=0 rev=3 | PUT p/1=x c3 m3 v1 l0",
                "id=0 rev=10 | PUT p/2=t c10 m10 v1 l0",
            ]),
        ),
        (
            1,
            v(&[
                "id=1 rev=4 | PUT c=y c4 m4 v1 l0",
                "id=1 rev=5 | PUT b=z c5 m5 v1 l0",
                "id=1 rev=10 | PUT b=u c5 m10 v2 l0",
            ]),
        ),
        (
            2,
            v(&[
                "id=2 rev=7 | PUT x/y=1 c7 m7 v1 l0",
                "id=2 rev=8 | PUT z=2 c8 m8 v1 l0",
            ]),
        ),
        (
            3,
            v(&[
                "id=3 rev=2 | PUT a=1 c2 m2 v1 l0",
                "id=3 rev=9 | DELETE a= c0 m9 v0 l0",
            ]),
        ),
        (
            7,
            v(&[
                "id=7 rev=2 | PUT a=1 c2 m2 v1 l0",
                "id=7 rev=9 | DELETE a= c0 m9 v0 l0",
            ]),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(m, expect, "{kind:?}");
    t.extend(lines(&m));
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_many_watchers_on_one_stream() {
    side_by_side(many_watchers).await;
}
