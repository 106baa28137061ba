//! Fragmentation.

use super::*;

/// Bytes per value: 10 values fit in one 1 MiB request, but 10 events with their prev_kv do
/// not fit in a 1.5 MiB (max-request-bytes + 512 KiB) reply.
pub(super) const BIG: usize = 95_000;

/// Reads the responses of one revision for watchers 0 (prev_kv + fragment), 1 (prev_kv) and
/// 2 (fragment, no prev_kv); returns (transcript lines per watcher, reassembled events per watcher).
pub(super) async fn read_revision(
    s: &mut WatchStream,
) -> (BTreeMap<i64, Vec<String>>, BTreeMap<i64, Vec<String>>) {
    let mut parts: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut events: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut done = 0;
    while done < 3 {
        let r = next(s).await;
        parts.entry(r.watch_id()).or_default().push(format!(
            "id={} rev={} fragment={} events={}",
            r.watch_id(),
            r.header().map_or(0, |h| h.revision()),
            is_fragment(&r),
            r.events().len()
        ));
        events
            .entry(r.watch_id())
            .or_default()
            .extend(r.events().iter().map(ev));
        if !is_fragment(&r) {
            done += 1;
        }
    }
    (parts, events)
}

pub(super) async fn fragment(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &["--max-request-bytes", "1048576"]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    for i in 0..20u8 {
        c.put(format!("big/{i:02}"), vec![b'a' + i; BIG], None)
            .await
            .unwrap(); // 2..=21
    }
    let mut s = c
        .watch(
            "big/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_fragment(),
            ),
        )
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "big/",
        Some(WatchOptions::new().with_prefix().with_prev_key()),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "big/",
        Some(WatchOptions::new().with_prefix().with_fragment()),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);

    // One txn rewrites 10 keys: ~1.9 MB of events with prev_kv, in one revision.
    let ops: Vec<TxnOp> = (0..10u8)
        .map(|i| TxnOp::put(format!("big/{i:02}"), vec![b'A' + i; BIG], None))
        .collect();
    c.txn(Txn::new().and_then(ops)).await.unwrap(); // 22
    let (parts, events) = read_revision(&mut s).await;
    t.extend(lines(&parts));
    let expect: Vec<String> = (0..10u8)
        .map(|i| {
            format!(
                "PUT big/{i:02}=<{BIG}x{}> c{} m22 v2 l0 prev=(big/{i:02}=<{BIG}x{}> c{} m{} v1 l0)",
                (b'A' + i) as char,
                i + 2,
                (b'a' + i) as char,
                i + 2,
                i + 2
            )
        })
        .collect();
    assert!(
        parts[&0].len() >= 2,
        "{kind:?}: the prev_kv+fragment watcher got no fragments: {parts:?}"
    );
    assert!(
        parts[&0][..parts[&0].len() - 1]
            .iter()
            .all(|l| l.contains("fragment=true")),
        "{kind:?}: {parts:?}"
    );
    assert_eq!(
        parts[&1],
        v(&["id=1 rev=22 fragment=false events=10"]),
        "{kind:?}"
    );
    assert_eq!(
        parts[&2],
        v(&["id=2 rev=22 fragment=false events=10"]),
        "{kind:?}"
    );
    assert_eq!(events[&0], expect, "{kind:?}: reassembled fragments");
    assert_eq!(events[&1], expect, "{kind:?}");

    // One delete of all 20 keys: 20 delete events whose prev_kvs make ~1.9 MB.
    c.delete("big/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap(); // 23
    let (parts, events) = read_revision(&mut s).await;
    t.extend(lines(&parts));
    assert!(parts[&0].len() >= 2, "{kind:?}: {parts:?}");
    assert_eq!(
        parts[&1],
        v(&["id=1 rev=23 fragment=false events=20"]),
        "{kind:?}"
    );
    assert_eq!(
        parts[&2],
        v(&["id=2 rev=23 fragment=false events=20"]),
        "{kind:?}"
    );
    assert_eq!(events[&0], events[&1], "{kind:?}: reassembled fragments");
    assert_eq!(events[&0].len(), 20, "{kind:?}");
    for (i, e) in events[&0].iter().enumerate() {
        let (old, modr) = if i < 10 {
            ((b'A' + i as u8) as char, 22)
        } else {
            ((b'a' + i as u8) as char, i + 2)
        };
        let version = if i < 10 { 2 } else { 1 };
        assert_eq!(
            *e,
            format!(
                "DELETE big/{i:02}= c0 m23 v0 l0 prev=(big/{i:02}=<{BIG}x{old}> c{} m{modr} v{version} l0)",
                i + 2
            ),
            "{kind:?}"
        );
    }
    t.extend(events[&0].iter().cloned());
    quiet(&mut s, Duration::from_millis(300)).await;
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_fragmented_replies_reassemble() {
    side_by_side(fragment).await;
}
