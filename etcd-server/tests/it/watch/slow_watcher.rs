//! A slow watcher.

use super::*;

/// Puts `n` keys under `s/` from 8 concurrent writers; returns (elapsed, slowest put).
pub(super) async fn put_many(c: &Client, n: usize, value: &[u8]) -> (Duration, Duration) {
    let began = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let mut c = c.clone();
            let value = value.to_vec();
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for i in (w..n).step_by(8) {
                    let t0 = Instant::now();
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        c.put(format!("s/{:03}", i % 500), value.clone(), None),
                    )
                    .await
                    .expect("a put stalled")
                    .unwrap();
                    slowest = slowest.max(t0.elapsed());
                }
                slowest
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    (began.elapsed(), slowest)
}

/// Reads events from `s` until `n` have arrived; returns their (revision, key) and how many
/// responses carried them, checking that no response is empty or canceled.
pub(super) async fn collect(s: &mut WatchStream, n: usize) -> (Vec<(i64, String)>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut responses = 0;
    while out.len() < n {
        let r = next(s).await;
        responses += 1;
        assert!(
            !r.events().is_empty() && !r.canceled(),
            "unexpected {}",
            show(&r)
        );
        for e in r.events() {
            let kv = e.kv().unwrap();
            out.push((
                kv.mod_revision(),
                String::from_utf8_lossy(kv.key()).into_owned(),
            ));
        }
    }
    (out, responses)
}

pub(super) async fn slow_watcher(kind: Kind) {
    const N: usize = 4000;
    let p = start_async(kind, &[]).await;
    let c = p.client().await;
    let value = vec![b'v'; 2048];
    // Baseline write speed, with no watchers at all.
    let (base, _) = put_many(&c, 400, &value).await;
    let start_rev = c
        .clone()
        .get("s/000", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;

    // The slow watcher: created, then not read until the writes are done.
    // Catch-up responses batch up to 1000 revisions: allow more than the default 4 MB.
    let watch_client = || c.watch_client().max_decoding_message_size(256 << 20);
    let mut slow = watch_client().watch("s/", prefix()).await.unwrap();
    assert_eq!(
        next_show(&mut slow).await,
        format!("id=0 rev={} created", start_rev - 1)
    );
    // The fast watcher reads concurrently.
    let mut fast = watch_client().watch("s/", prefix()).await.unwrap();
    assert_eq!(
        next_show(&mut fast).await,
        format!("id=0 rev={} created", start_rev - 1)
    );
    let fast = tokio::spawn(async move {
        let (evs, _) = collect(&mut fast, N).await;
        let done = Instant::now();
        quiet(&mut fast, Duration::from_millis(200)).await;
        (evs, done)
    });

    let (elapsed, slowest) = put_many(&c, N, &value).await;
    let writes_done = Instant::now();
    let (fast_evs, fast_done) = fast.await.unwrap();
    let expect: Vec<(i64, String)> = (0..N)
        .map(|i| (start_rev + i as i64, String::new()))
        .collect();
    let revs = |e: &[(i64, String)]| {
        e.iter()
            .map(|(r, _)| (*r, String::new()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        revs(&fast_evs),
        expect,
        "{kind:?}: the fast watcher must see every revision once, in order"
    );
    let per_put_base = base / 400;
    let per_put = elapsed / N as u32;
    eprintln!(
        "{kind:?}: baseline {per_put_base:?}/put, with a stalled watcher {per_put:?}/put, slowest put {slowest:?}, fast watcher done {:?} after the writes",
        fast_done.saturating_duration_since(writes_done)
    );
    assert!(
        slowest < Duration::from_secs(3),
        "{kind:?}: a put took {slowest:?} while a watcher was stalled"
    );
    assert!(
        per_put < per_put_base * 5 + Duration::from_millis(5),
        "{kind:?}: writes slowed from {per_put_base:?} to {per_put:?} per put while a watcher was stalled"
    );
    assert!(
        fast_done.saturating_duration_since(writes_done) < Duration::from_secs(3),
        "{kind:?}: the fast watcher lagged behind the writes"
    );

    // Now the slow watcher catches up: every event exactly once, in order, with the right keys.
    let (slow_evs, responses) = collect(&mut slow, N).await;
    quiet(&mut slow, Duration::from_millis(300)).await;
    assert_eq!(
        slow_evs, fast_evs,
        "{kind:?}: the slow watcher must get exactly what the fast one got"
    );
    // Catch-up batches many revisions per response: proof that the watcher did fall behind.
    assert!(
        responses < N,
        "{kind:?}: the slow watcher never fell behind; the test exercised nothing"
    );
    eprintln!("{kind:?}: the slow watcher got {N} events in {responses} responses");
    // It is live again afterwards.
    c.clone().put("s/after", "1", None).await.unwrap();
    assert_eq!(
        next_show(&mut slow).await,
        format!(
            "id=0 rev={r} | PUT s/after=1 c{r} m{r} v1 l0",
            r = start_rev + N as i64
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_slow_watcher_blocks_nobody_and_catches_up() {
    let only = std::env::var("WL_TEST_ONLY").ok();
    if only.as_deref() == Some("Reference") {
        slow_watcher(Kind::Reference).await;
    } else {
        slow_watcher(Kind::Ours).await;
    }
}
