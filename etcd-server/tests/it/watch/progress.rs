//! Progress notifications.

use super::*;

pub(super) async fn progress(kind: Kind) -> Vec<String> {
    let p = start_async(
        kind,
        &["--experimental-watch-progress-notify-interval", "1s"],
    )
    .await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut ps = c
        .watch("k", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    t.push(next_show(&mut ps).await);
    // Periodic: a reply with no events at the current revision, for this watcher.
    let began = Instant::now();
    t.push(next_show(&mut ps).await);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{kind:?}: first progress notification took {:?}",
        began.elapsed()
    );
    c.put("k", "1", None).await.unwrap(); // 2
    t.push(next_show(&mut ps).await);
    t.push(next_show(&mut ps).await);
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "id=0 rev=1",
            "id=0 rev=2 | PUT k=1 c2 m2 v1 l0",
            "id=0 rev=2"
        ]),
        "{kind:?}"
    );

    // A watcher without progress_notify gets no periodic notifications; a WatchProgressRequest
    // gets one reply with watch id -1 at the current revision (all watchers are synced).
    let mut q = c.watch("q", None).await.unwrap();
    t.push(next_show(&mut q).await);
    quiet(&mut q, Duration::from_millis(2500)).await;
    q.request_progress().await.unwrap();
    t.push(next_show(&mut q).await);
    c.put("other", "x", None).await.unwrap(); // 3
    q.request_progress().await.unwrap();
    t.push(next_show(&mut q).await);
    quiet(&mut q, Duration::from_millis(300)).await;
    assert_eq!(
        t[4..],
        v(&["id=0 rev=2 created", "id=-1 rev=2", "id=-1 rev=3"])[..],
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_progress_notify_and_progress_request() {
    side_by_side(progress).await;
}
