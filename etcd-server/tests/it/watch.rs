//! Watch integration tests through `etcd-client`: many watchers on one stream, history replay
//! and compaction, prev_kv and filters, progress notifications, cancel, fragmentation, event
//! order, slow watchers and bad input. Every scenario but the slow-watcher one runs on our server
//! and on the reference etcd 3.4.23, and the two transcripts must be identical.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, DeleteOptions, EventType, KeyValue, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};

use crate::harness::{Kind, side_by_side, start_async};

/// How long any single expected watch response may take.
const STEP: Duration = Duration::from_secs(10);

const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// A value, abbreviated when long.
fn val(b: &[u8]) -> String {
    match b.first() {
        Some(&c) if b.len() > 40 => format!("<{}x{}>", b.len(), c as char),
        _ => esc(b),
    }
}

fn kv_str(kv: &KeyValue) -> String {
    format!(
        "{}={} c{} m{} v{} l{}",
        esc(kv.key()),
        val(kv.value()),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease()
    )
}

fn ev(e: &etcd_client::Event) -> String {
    let t = match e.event_type() {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
    };
    let mut s = format!("{t} {}", e.kv().map(kv_str).unwrap_or_default());
    if let Some(p) = e.prev_kv() {
        let _ = write!(s, " prev=({})", kv_str(p));
    }
    s
}

/// Whether the response has `fragment` set: etcd-client does not expose the field, but its
/// `Debug` output shows it before the (possibly huge) events, so only a prefix is formatted.
fn is_fragment(r: &WatchResponse) -> bool {
    struct Prefix(String);
    impl std::fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.push_str(s);
            if self.0.len() > 4096 {
                Err(std::fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut p = Prefix(String::new());
    let _ = write!(p, "{r:?}");
    let i =
        p.0.find("fragment: ")
            .expect("fragment field in Debug output");
    p.0[i..].starts_with("fragment: true")
}

/// One response on one line: watch id, header revision, flags, then the events.
fn show(r: &WatchResponse) -> String {
    let mut s = format!(
        "id={} rev={}",
        r.watch_id(),
        r.header().map_or(0, |h| h.revision())
    );
    if r.created() {
        s += " created";
    }
    if r.canceled() {
        s += " canceled";
    }
    if r.compact_revision() != 0 {
        let _ = write!(s, " compact={}", r.compact_revision());
    }
    if !r.cancel_reason().is_empty() {
        let _ = write!(s, " reason={:?}", r.cancel_reason());
    }
    if is_fragment(r) {
        s += " fragment";
    }
    for e in r.events() {
        s += " | ";
        s += &ev(e);
    }
    s
}

async fn next(s: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(STEP, s.message())
        .await
        .expect("no watch response in time")
        .expect("watch stream failed")
        .expect("watch stream ended")
}

async fn next_show(s: &mut WatchStream) -> String {
    show(&next(s).await)
}

/// Asserts that nothing arrives on `s` for `d`.
async fn quiet(s: &mut WatchStream, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, s.message()).await {
        panic!(
            "unexpected watch message: {:?}",
            r.map(|o| o.map(|r| show(&r)))
        );
    }
}

/// Reads `n` responses and groups them by watch id (arrival order kept per id): responses of
/// different watchers of one stream may interleave in any order.
async fn by_id(s: &mut WatchStream, n: usize) -> BTreeMap<i64, Vec<String>> {
    let mut m: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for _ in 0..n {
        let r = next(s).await;
        m.entry(r.watch_id()).or_default().push(show(&r));
    }
    m
}

fn lines(m: &BTreeMap<i64, Vec<String>>) -> Vec<String> {
    m.values().flatten().cloned().collect()
}

fn v(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| (*s).to_owned()).collect()
}

fn prefix() -> Option<WatchOptions> {
    Some(WatchOptions::new().with_prefix())
}

// ---------------------------------------------------------------------------------------------
// Many watchers on one stream
// ---------------------------------------------------------------------------------------------

async fn many_watchers(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// History replay and compaction
// ---------------------------------------------------------------------------------------------

async fn history_and_compaction(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// prev_kv and filters
// ---------------------------------------------------------------------------------------------

async fn prev_kv_and_filters(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut s = c
        .watch("f", Some(WatchOptions::new().with_prev_key()))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "f",
        Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "f",
        Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "f",
        Some(
            WatchOptions::new()
                .with_prev_key()
                .with_filters([WatchFilterType::NoPut, WatchFilterType::NoDelete]),
        ),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    c.put("f", "1", None).await.unwrap(); // 2
    c.put("f", "2", None).await.unwrap(); // 3
    c.delete("f", None).await.unwrap(); // 4
    c.put("f", "3", None).await.unwrap(); // 5: a new life, no prev_kv
    let m = by_id(&mut s, 8).await;
    quiet(&mut s, Duration::from_millis(300)).await;
    let expect: BTreeMap<i64, Vec<String>> = [
        (
            0,
            v(&[
                "id=0 rev=2 | PUT f=1 c2 m2 v1 l0",
                "id=0 rev=3 | PUT f=2 c2 m3 v2 l0 prev=(f=1 c2 m2 v1 l0)",
                "id=0 rev=4 | DELETE f= c0 m4 v0 l0 prev=(f=2 c2 m3 v2 l0)",
                "id=0 rev=5 | PUT f=3 c5 m5 v1 l0",
            ]),
        ),
        (1, v(&["id=1 rev=4 | DELETE f= c0 m4 v0 l0"])),
        (
            2,
            v(&[
                "id=2 rev=2 | PUT f=1 c2 m2 v1 l0",
                "id=2 rev=3 | PUT f=2 c2 m3 v2 l0",
                "id=2 rev=5 | PUT f=3 c5 m5 v1 l0",
            ]),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(m, expect, "{kind:?}");
    t.extend(lines(&m));

    // prev_kv on replayed history, and on a multi-key delete.
    c.put("g/1", "a", None).await.unwrap(); // 6
    c.put("g/2", "b", None).await.unwrap(); // 7
    c.delete("g/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap(); // 8
    let mut h = c
        .watch(
            "f",
            Some(WatchOptions::new().with_prev_key().with_start_revision(3)),
        )
        .await
        .unwrap();
    t.push(next_show(&mut h).await);
    t.push(next_show(&mut h).await);
    assert_eq!(
        t[t.len() - 1],
        "id=0 rev=8 | PUT f=2 c2 m3 v2 l0 prev=(f=1 c2 m2 v1 l0) | DELETE f= c0 m4 v0 l0 prev=(f=2 c2 m3 v2 l0) | PUT f=3 c5 m5 v1 l0",
        "{kind:?}"
    );
    h.watch(
        "g/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_start_revision(8),
        ),
    )
    .await
    .unwrap();
    t.push(next_show(&mut h).await);
    t.push(next_show(&mut h).await);
    assert_eq!(
        t[t.len() - 1],
        "id=1 rev=8 | DELETE g/1= c0 m8 v0 l0 prev=(g/1=a c6 m6 v1 l0) | DELETE g/2= c0 m8 v0 l0 prev=(g/2=b c7 m7 v1 l0)",
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prev_kv_and_filters() {
    side_by_side(prev_kv_and_filters).await;
}

// ---------------------------------------------------------------------------------------------
// Progress notifications
// ---------------------------------------------------------------------------------------------

async fn progress(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------------

async fn cancel(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// Fragmentation
// ---------------------------------------------------------------------------------------------

/// Bytes per value: 10 values fit in one 1 MiB request, but 10 events with their prev_kv do
/// not fit in a 1.5 MiB (max-request-bytes + 512 KiB) reply.
const BIG: usize = 95_000;

/// Reads the responses of one revision for watchers 0 (prev_kv + fragment), 1 (prev_kv) and
/// 2 (fragment, no prev_kv); returns (transcript lines per watcher, reassembled events per watcher).
async fn read_revision(
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

async fn fragment(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------------

async fn ordering(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

async fn bad_input(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// A slow watcher
// ---------------------------------------------------------------------------------------------

/// Puts `n` keys under `s/` from 8 concurrent writers; returns (elapsed, slowest put).
async fn put_many(c: &Client, n: usize, value: &[u8]) -> (Duration, Duration) {
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
async fn collect(s: &mut WatchStream, n: usize) -> (Vec<(i64, String)>, usize) {
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

async fn slow_watcher(kind: Kind) {
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
