//! History replay and compaction.

use super::*;

pub(super) async fn history_and_compaction(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    for i in 1..=5 {
        c.put("k", format!("v{i}"), None).await.unwrap(); // revisions 2..=6
    }
    // A past start revision replays history, in one response at the current revision.
    let mut a = c
        .watch("k", Some(WatchOptions::new().with_start_revision(3)))
        .await
        .unwrap();
    t.push(next_show(&mut a).await);
    t.push(next_show(&mut a).await);
    assert_eq!(
        t,
        v(&[
            "id=0 rev=6 created",
            "id=0 rev=6 | PUT k=v2 c2 m3 v2 l0 | PUT k=v3 c2 m4 v3 l0 | PUT k=v4 c2 m5 v4 l0 | PUT k=v5 c2 m6 v5 l0",
        ]),
        "{kind:?}"
    );
    c.compact(5, None).await.unwrap();

    // Below the compaction revision: created, then canceled with compact_revision set.
    let mut b = c
        .watch("k", Some(WatchOptions::new().with_start_revision(3)))
        .await
        .unwrap();
    let created = next(&mut b).await;
    let canceled = next(&mut b).await;
    t.push(show(&created));
    t.push(show(&canceled));
    assert!(
        created.created() && !created.canceled(),
        "{kind:?}: {}",
        show(&created)
    );
    assert!(
        canceled.canceled() && !canceled.created(),
        "{kind:?}: {}",
        show(&canceled)
    );
    assert_eq!(
        (canceled.watch_id(), canceled.compact_revision()),
        (0, 5),
        "{kind:?}"
    );
    assert!(canceled.events().is_empty(), "{kind:?}");
    // Watching from a canceled watcher's stream still works; the stream is not closed.
    b.watch("k", Some(WatchOptions::new().with_start_revision(1)))
        .await
        .unwrap();
    t.push(next_show(&mut b).await);
    t.push(next_show(&mut b).await);

    // Exactly at the compaction revision is still allowed.
    let mut d = c
        .watch("k", Some(WatchOptions::new().with_start_revision(5)))
        .await
        .unwrap();
    t.push(next_show(&mut d).await);
    t.push(next_show(&mut d).await);
    assert_eq!(
        t[t.len() - 2..],
        v(&[
            "id=0 rev=6 created",
            "id=0 rev=6 | PUT k=v4 c2 m5 v4 l0 | PUT k=v5 c2 m6 v5 l0"
        ])[..],
        "{kind:?}"
    );

    // A future start revision: nothing until that revision.
    let mut f = c
        .watch("k", Some(WatchOptions::new().with_start_revision(8)))
        .await
        .unwrap();
    t.push(next_show(&mut f).await);
    c.put("k", "v6", None).await.unwrap(); // 7
    c.put("k", "v7", None).await.unwrap(); // 8
    t.push(next_show(&mut f).await);
    assert_eq!(
        t[t.len() - 1],
        "id=0 rev=8 | PUT k=v7 c2 m8 v7 l0",
        "{kind:?}"
    );
    // The first watcher stays live.
    t.push(next_show(&mut a).await);
    t.push(next_show(&mut a).await);
    assert_eq!(
        t[t.len() - 2..],
        v(&[
            "id=0 rev=7 | PUT k=v6 c2 m7 v6 l0",
            "id=0 rev=8 | PUT k=v7 c2 m8 v7 l0"
        ])[..],
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_history_replay_and_compacted_start() {
    side_by_side(history_and_compaction).await;
}
