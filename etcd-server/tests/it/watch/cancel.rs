//! Cancel.

use super::*;

pub(super) async fn cancel(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut s = c.watch("a", None).await.unwrap();
    t.push(next_show(&mut s).await);
    s.watch("b", None).await.unwrap();
    t.push(next_show(&mut s).await);
    s.cancel(0).await.unwrap();
    t.push(next_show(&mut s).await);
    // Canceling an unknown id gets no reply at all.
    s.cancel(42).await.unwrap();
    c.put("a", "1", None).await.unwrap(); // 2: watcher 0 is gone
    c.put("b", "1", None).await.unwrap(); // 3
    t.push(next_show(&mut s).await);
    // A server-assigned id is never reused on the stream.
    s.watch("a", None).await.unwrap();
    t.push(next_show(&mut s).await);
    c.put("a", "2", None).await.unwrap(); // 4
    t.push(next_show(&mut s).await);
    quiet(&mut s, Duration::from_millis(300)).await;
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "id=1 rev=1 created",
            "id=0 rev=1 canceled",
            "id=1 rev=3 | PUT b=1 c3 m3 v1 l0",
            "id=2 rev=3 created",
            "id=2 rev=4 | PUT a=2 c2 m4 v2 l0",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_cancel() {
    side_by_side(cancel).await;
}
