//! Ordering.

use super::*;

pub(super) async fn ordering(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut s = c.watch("o/", prefix()).await.unwrap();
    t.push(next_show(&mut s).await);
    c.put("o/a", "1", None).await.unwrap(); // 2
    c.put("o/b", "1", None).await.unwrap(); // 3
    c.txn(Txn::new().and_then([
        TxnOp::put("o/c", "1", None),
        TxnOp::put("o/a", "2", None),
        TxnOp::delete("o/b", None),
        TxnOp::put("o/0", "1", None),
    ]))
    .await
    .unwrap(); // 4
    c.delete("o/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap(); // 5
    for _ in 0..4 {
        t.push(next_show(&mut s).await);
    }
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "id=0 rev=2 | PUT o/a=1 c2 m2 v1 l0",
            "id=0 rev=3 | PUT o/b=1 c3 m3 v1 l0",
            "id=0 rev=4 | PUT o/c=1 c4 m4 v1 l0 | PUT o/a=2 c2 m4 v2 l0 | DELETE o/b= c0 m4 v0 l0 | PUT o/0=1 c4 m4 v1 l0",
            "id=0 rev=5 | DELETE o/0= c0 m5 v0 l0 | DELETE o/a= c0 m5 v0 l0 | DELETE o/c= c0 m5 v0 l0",
        ]),
        "{kind:?}"
    );
    // Many concurrent writers: events still arrive in revision order, one response per
    // revision, each revision exactly once.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    c.put(format!("o/{w}/{i}"), "x", None).await.unwrap();
                }
            })
        })
        .collect();
    let mut last = 5;
    for _ in 0..200 {
        let r = next(&mut s).await;
        let rev = r.header().unwrap().revision();
        assert_eq!(rev, last + 1, "{kind:?}: {}", show(&r));
        assert_eq!(r.events().len(), 1, "{kind:?}");
        assert_eq!(r.events()[0].kv().unwrap().mod_revision(), rev, "{kind:?}");
        last = rev;
    }
    for w in writers {
        w.await.unwrap();
    }
    quiet(&mut s, Duration::from_millis(300)).await;
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_events_in_revision_order_txn_together() {
    side_by_side(ordering).await;
}
