//! Bad input.

use super::*;

pub(super) async fn bad_input(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    // An empty key watches the key "\0".
    let mut s = c.watch("", None).await.unwrap();
    t.push(next_show(&mut s).await);
    // range_end below or equal to the key.
    s.watch("b", Some(WatchOptions::new().with_range("a")))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch("b", Some(WatchOptions::new().with_range("b")))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    // A duplicate client-chosen id.
    s.watch("k", Some(WatchOptions::new().with_watch_id(5)))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch("j", Some(WatchOptions::new().with_watch_id(5)))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    let range_empty = format!("id=-1 rev=1 created canceled reason={EMPTY_RANGE:?}");
    let duplicate = format!("id=-1 rev=1 created canceled reason={DUPLICATE_ID:?}");
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            &range_empty,
            &range_empty,
            "id=5 rev=1 created",
            &duplicate
        ]),
        "{kind:?}"
    );
    // The stream still works, the duplicate did not replace watcher 5, and the empty-key
    // watcher sees "\0" only.
    c.put("a", "1", None).await.unwrap(); // 2
    c.put("j", "1", None).await.unwrap(); // 3
    c.put("\0", "z", None).await.unwrap(); // 4
    c.put("k", "1", None).await.unwrap(); // 5
    t.push(next_show(&mut s).await);
    t.push(next_show(&mut s).await);
    quiet(&mut s, Duration::from_millis(300)).await;
    assert_eq!(
        t[5..],
        v(&[
            "id=0 rev=4 | PUT \\x00=z c4 m4 v1 l0",
            "id=5 rev=5 | PUT k=1 c5 m5 v1 l0"
        ])[..],
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_bad_input() {
    side_by_side(bad_input).await;
}
