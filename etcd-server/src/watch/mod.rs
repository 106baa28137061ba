//! The watch hub: delivers MVCC events to watchers, in revision order, without ever blocking
//! the apply loop.
//!
//! Watchers are *synced* (the apply loop hands them new events directly) or *unsynced* (behind:
//! they start in the past, or their stream's queue was full). A sync thread catches unsynced
//! watchers up from the MVCC store's revision-ordered history and then marks them synced, as
//! etcd's watchable store does. Every transition happens under the hub lock, and `notify` runs
//! under it too, so no revision is skipped or delivered twice.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::mvcc::KvStore;
use crate::proto::etcdserverpb::{
    ResponseHeader, WatchCreateRequest, WatchResponse, watch_create_request::FilterType,
};
use crate::proto::mvccpb::{Event, event::EventType};

/// Catch-up responses carry at most this many revisions (etcd's `watchBatchMaxRevs`).
const MAX_REVS_PER_RESPONSE: usize = 1000;
/// Queue length per watch stream; a watcher whose stream is full falls behind (unsynced).
pub const STREAM_QUEUE: usize = 256;

/// etcd's `ErrEmptyWatcherRange`.
pub const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's `ErrWatcherDuplicateID`.
pub const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// A response on its way to a watch stream, with what the stream must still do to it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The response; the stream fills in the header's member fields.
    pub resp: WatchResponse,
    /// Attach `prev_kv` to every event.
    pub prev_kv: bool,
    /// The client accepts fragmented responses.
    pub fragment: bool,
    /// Leave the header revision at 0 (etcd's compaction notice has none).
    pub no_revision: bool,
}

#[derive(Debug)]
struct Watcher {
    key: Vec<u8>,
    /// `None`: the single key; `Some(empty)`: every key from `key`; `Some(end)`: `[key, end)`.
    end: Option<Vec<u8>>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// The next revision this watcher needs.
    next_rev: i64,
    synced: bool,
    /// False until the "created" reply is queued, so no event can overtake it.
    ready: bool,
    /// Canceled by compaction: gets nothing more, but keeps its ID on the stream until the
    /// client cancels it, as in etcd.
    dead: bool,
    tx: mpsc::Sender<Outgoing>,
}

impl Watcher {
    fn matches(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.key.as_slice(),
            Some(end) if end.is_empty() => key >= self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && key < end.as_slice(),
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        let Some(kv) = &ev.kv else { return false };
        let put = ev.r#type == EventType::Put as i32;
        if (put && self.no_put) || (!put && self.no_delete) {
            return false;
        }
        self.matches(&kv.key)
    }

    fn out(&self, resp: WatchResponse) -> Outgoing {
        Outgoing {
            resp,
            prev_kv: self.prev_kv,
            fragment: self.fragment,
            no_revision: false,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    watchers: HashMap<(u64, i64), Watcher>,
    next_stream: u64,
}

/// The hub shared by all watch streams of a member.
#[derive(Debug)]
pub struct WatchHub {
    inner: Mutex<Inner>,
    store: Arc<KvStore>,
    kick: Mutex<Option<std_mpsc::Sender<()>>>,
    progress_interval: Duration,
}

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

impl WatchHub {
    /// A hub over `store`, sending periodic progress notifications every `progress_interval`.
    /// Starts its sync thread.
    pub fn start(store: Arc<KvStore>, progress_interval: Duration) -> Arc<Self> {
        let (tx, rx) = std_mpsc::channel();
        let hub = Arc::new(Self {
            inner: Mutex::default(),
            store,
            kick: Mutex::new(Some(tx)),
            progress_interval,
        });
        let weak = Arc::downgrade(&hub);
        let _ = std::thread::Builder::new()
            .name("watch-sync".into())
            .spawn(move || {
                let mut last_progress = Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(()) | Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    let Some(hub) = weak.upgrade() else { return };
                    hub.sync();
                    if last_progress.elapsed() >= hub.progress_interval {
                        last_progress = Instant::now();
                        hub.progress_all();
                    }
                }
            });
        hub
    }

    /// Stops the sync thread.
    pub fn stop(&self) {
        self.kick.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        if let Some(tx) = self.kick.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(());
        }
    }

    /// Opens a stream; its responses arrive on the returned receiver.
    pub fn open_stream(self: &Arc<Self>) -> (WatchStream, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut inner = self.lock();
        inner.next_stream += 1;
        let id = inner.next_stream;
        (
            WatchStream {
                hub: self.clone(),
                id,
                tx,
                next_watch_id: 0,
            },
            rx,
        )
    }

    /// Hands the events of revision `rev` to synced watchers. Called by the apply loop after
    /// the revision is committed; never blocks on a slow stream.
    pub fn notify(&self, rev: i64, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let mut fell_behind = false;
        for ((_, watch_id), w) in inner.watchers.iter_mut() {
            if !w.synced || !w.ready || w.dead || rev < w.next_rev {
                continue;
            }
            let evs: Vec<Event> = events.iter().filter(|e| w.wants(e)).cloned().collect();
            if evs.is_empty() {
                w.next_rev = rev + 1;
                continue;
            }
            let resp = WatchResponse {
                header: header(rev),
                watch_id: *watch_id,
                events: evs,
                ..Default::default()
            };
            match w.tx.try_send(w.out(resp)) {
                Ok(()) => w.next_rev = rev + 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.synced = false;
                    fell_behind = true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => w.synced = false,
            }
        }
        drop(inner);
        if fell_behind {
            self.wake();
        }
    }

    /// Marks every watcher unsynced (after the store was replaced by a snapshot): each catches
    /// up from the new store, or is canceled if its revision was compacted away.
    pub fn resync_all(&self) {
        for w in self.lock().watchers.values_mut().filter(|w| !w.dead) {
            w.synced = false;
        }
        self.wake();
    }

    /// Catches unsynced watchers up from the store.
    pub fn sync(&self) {
        let mut inner = self.lock();
        let behind: Vec<(u64, i64)> = inner
            .watchers
            .iter()
            .filter(|(_, w)| !w.synced && w.ready && !w.dead)
            .map(|(k, _)| *k)
            .collect();
        if behind.is_empty() {
            return;
        }
        let Ok(view) = self.store.read() else { return };
        let current = view.rev();
        let compact = view.first_rev();
        let min_rev = behind
            .iter()
            .filter_map(|k| inner.watchers.get(k))
            .map(|w| w.next_rev)
            .filter(|r| *r > 0)
            .min()
            .unwrap_or(current + 1);
        let from = min_rev.max(compact).max(1);
        let events = match view.events(from, current) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "watch sync failed to read history");
                return;
            }
        };
        drop(view);
        for key in behind {
            let Some(w) = inner.watchers.get_mut(&key) else {
                continue;
            };
            if w.next_rev < compact {
                // etcd's reply: header revision 0, and "canceled" only when the compaction
                // revision is non-zero (after `Compact(0)` it is a bare notice).
                let resp = WatchResponse {
                    header: header(0),
                    watch_id: key.1,
                    compact_revision: compact,
                    canceled: compact != 0,
                    ..Default::default()
                };
                let notice = Outgoing {
                    no_revision: true,
                    ..w.out(resp)
                };
                if w.tx.try_send(notice).is_ok() {
                    w.dead = true;
                    w.synced = true;
                }
                continue;
            }
            if w.next_rev <= 0 {
                // A negative start at or above the compaction point (-1 before any) reads no
                // history in etcd: the watcher starts from now.
                w.next_rev = current + 1;
                w.synced = true;
                continue;
            }
            let mut evs = Vec::new();
            let mut revs = 0usize;
            let mut last_rev = 0i64;
            let mut upto = current;
            for e in &events {
                let r = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                if r < w.next_rev || !w.wants(e) {
                    continue;
                }
                if r != last_rev {
                    if revs == MAX_REVS_PER_RESPONSE {
                        upto = last_rev;
                        break;
                    }
                    revs += 1;
                    last_rev = r;
                }
                evs.push(e.clone());
            }
            if !evs.is_empty() {
                let resp = WatchResponse {
                    header: header(current),
                    watch_id: key.1,
                    events: evs,
                    ..Default::default()
                };
                if w.tx.try_send(w.out(resp)).is_err() {
                    continue; // still behind; try again on the next pass
                }
            }
            w.next_rev = w.next_rev.max(upto + 1);
            if upto == current {
                w.synced = true;
            }
        }
    }

    /// Sends a progress notification to every synced watcher that asked for them.
    fn progress_all(&self) {
        let current = self.store.current_rev();
        let inner = self.lock();
        for ((_, id), w) in &inner.watchers {
            if w.synced && w.ready && !w.dead && w.progress_notify {
                let resp = WatchResponse {
                    header: header(current),
                    watch_id: *id,
                    ..Default::default()
                };
                let _ = w.tx.try_send(w.out(resp));
            }
        }
    }
}

/// One client watch stream: its watchers live until it is dropped.
#[derive(Debug)]
pub struct WatchStream {
    hub: Arc<WatchHub>,
    id: u64,
    tx: mpsc::Sender<Outgoing>,
    next_watch_id: i64,
}

impl WatchStream {
    /// Handles a create request: registers the watcher and queues etcd's "created" (or
    /// "canceled", for a bad request) reply ahead of any of its events.
    pub async fn create(&mut self, req: WatchCreateRequest) {
        let (reply, id) = self.register(req);
        if self
            .tx
            .send(Outgoing {
                resp: reply,
                prev_kv: false,
                fragment: false,
                no_revision: false,
            })
            .await
            .is_err()
        {
            return;
        }
        if let Some(id) = id {
            if let Some(w) = self.hub.lock().watchers.get_mut(&(self.id, id)) {
                w.ready = true;
            }
            self.hub.wake();
        }
    }

    /// Registers the watcher (not yet ready); returns the reply and the new watch ID.
    fn register(&mut self, req: WatchCreateRequest) -> (WatchResponse, Option<i64>) {
        let key = if req.key.is_empty() { vec![0] } else { req.key };
        let end = match req.range_end.as_slice() {
            [] => None,
            [0] => Some(Vec::new()),
            e => Some(e.to_vec()),
        };
        let mut inner = self.hub.lock();
        let current = self.hub.store.current_rev();
        let reply = |id: i64, err: Option<&str>| WatchResponse {
            header: header(current),
            watch_id: id,
            created: true,
            canceled: err.is_some(),
            cancel_reason: err.unwrap_or_default().to_owned(),
            ..Default::default()
        };
        if matches!(&end, Some(e) if !e.is_empty() && key.as_slice() >= e.as_slice()) {
            return (reply(-1, Some(ERR_EMPTY_RANGE)), None);
        }
        let id = if req.watch_id == 0 {
            while inner.watchers.contains_key(&(self.id, self.next_watch_id)) {
                self.next_watch_id += 1;
            }
            let id = self.next_watch_id;
            self.next_watch_id += 1;
            id
        } else if inner.watchers.contains_key(&(self.id, req.watch_id)) {
            return (reply(-1, Some(ERR_DUPLICATE_ID)), None);
        } else {
            req.watch_id
        };
        let start = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        inner.watchers.insert(
            (self.id, id),
            Watcher {
                key,
                end,
                no_put: req.filters.contains(&(FilterType::Noput as i32)),
                no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
                prev_kv: req.prev_kv,
                fragment: req.fragment,
                progress_notify: req.progress_notify,
                next_rev: start,
                synced: false,
                ready: false,
                dead: false,
                tx: self.tx.clone(),
            },
        );
        (reply(id, None), Some(id))
    }

    /// Cancels watcher `id`; replies only if it existed, as etcd does.
    pub async fn cancel(&mut self, id: i64) {
        let existed = self.hub.lock().watchers.remove(&(self.id, id)).is_some();
        if existed {
            let resp = WatchResponse {
                header: header(self.hub.store.current_rev()),
                watch_id: id,
                canceled: true,
                ..Default::default()
            };
            let _ = self
                .tx
                .send(Outgoing {
                    resp,
                    prev_kv: false,
                    fragment: false,
                    no_revision: false,
                })
                .await;
        }
    }

    /// Handles `WatchProgressRequest`: one reply with `watch_id` -1, only if every watcher on
    /// this stream has caught up.
    pub async fn request_progress(&mut self) {
        let all_synced = {
            let inner = self.hub.lock();
            inner
                .watchers
                .iter()
                .filter(|((s, _), _)| *s == self.id)
                .all(|(_, w)| w.synced && w.ready)
        };
        if all_synced {
            let resp = WatchResponse {
                header: header(self.hub.store.current_rev()),
                watch_id: -1,
                ..Default::default()
            };
            let _ = self
                .tx
                .send(Outgoing {
                    resp,
                    prev_kv: false,
                    fragment: false,
                    no_revision: false,
                })
                .await;
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let id = self.id;
        self.hub.lock().watchers.retain(|(s, _), _| *s != id);
    }
}
