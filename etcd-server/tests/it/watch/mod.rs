//! Watch integration tests through `etcd-client`: many watchers on one stream, history replay
//! and compaction, prev_kv and filters, progress notifications, cancel, fragmentation, event
//! order, slow watchers and bad input. Every scenario but the slow-watcher one runs on our server
//! and on the reference etcd 3.4.23, and the two transcripts must be identical.

mod bad_input;
mod cancel;
mod fragmentation;
mod history;
mod many_watchers;
mod ordering;
mod prev_kv;
mod progress;
mod slow_watcher;

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
