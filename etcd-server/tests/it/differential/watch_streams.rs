//! Watch streams.

use super::*;

// ---------------------------------------------------------------------------------------------

/// One item of a watch stream, as the client received it.
#[derive(Debug, Clone)]
pub(super) enum WItem {
    Resp(WatchResponse),
    /// The stream ended (code `Ok`) or failed.
    End(tonic::Code, String),
}

/// The replies of one watcher (one watch id, from one `created` reply to the next).
#[derive(Debug, Default, Clone)]
pub(super) struct WLog {
    /// Replies that are not plain event batches (created, canceled, compacted, progress), with
    /// the per-cluster header fields zeroed and events removed, in order.
    pub(super) ctrl: Vec<WatchResponse>,
    /// All events, flattened.
    pub(super) events: Vec<Event>,
    /// Per event reply: the header revision and the revisions of its events.
    pub(super) batches: Vec<(i64, Vec<i64>)>,
    /// Replies with the `fragment` flag (never requested).
    pub(super) fragments: usize,
    pub(super) canceled: bool,
    /// A reply ended the watcher: canceled, compacted, or (etcd 3.4 after a compaction at
    /// revision 0, for a negative start revision) a compaction reply with revision 0 that is
    /// not marked canceled.
    pub(super) ended: bool,
    /// Cancel acknowledgements (canceled, not created, no compact revision).
    pub(super) acks: usize,
}

/// A watch stream's replies, demultiplexed incrementally.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    pub(super) seen: usize,
    /// Per watch id: how many `created` replies carried it (the current incarnation).
    pub(super) inc: HashMap<i64, usize>,
    /// Per (watch id, incarnation); id -1 (failed creates, progress replies) has incarnation 0.
    pub(super) watchers: BTreeMap<(i64, usize), WLog>,
    /// All `created` replies in order (the n-th answers the n-th create request).
    pub(super) created: Vec<WatchResponse>,
    /// How the stream ended, if it did.
    pub(super) ended: Vec<(tonic::Code, String)>,
}

pub(super) fn ev_rev(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl StreamState {
    pub(super) fn key_of(&self, id: i64) -> (i64, usize) {
        (
            id,
            if id == -1 {
                0
            } else {
                self.inc.get(&id).copied().unwrap_or(0)
            },
        )
    }

    pub(super) fn apply(&mut self, item: &WItem) {
        let r = match item {
            WItem::End(code, msg) => {
                self.ended.push((*code, msg.clone()));
                return;
            }
            WItem::Resp(r) => r,
        };
        let mut r = r.clone();
        if let Some(h) = r.header.as_mut() {
            h.cluster_id = 0;
            h.member_id = 0;
            h.raft_term = 0;
        }
        let id = r.watch_id;
        if r.created && id != -1 {
            *self.inc.entry(id).or_default() += 1;
        }
        let key = self.key_of(id);
        let w = self.watchers.entry(key).or_default();
        if r.fragment {
            w.fragments += 1;
        }
        if !r.events.is_empty() {
            let header_rev = r.header.as_ref().map_or(0, |h| h.revision);
            w.batches
                .push((header_rev, r.events.iter().map(ev_rev).collect()));
            w.events.extend(r.events.iter().cloned());
        }
        if r.created || r.canceled || r.compact_revision != 0 || r.events.is_empty() {
            let mut c = r;
            c.events.clear();
            let header_rev = c.header.as_ref().map_or(0, |h| h.revision);
            if !c.created
                && c.watch_id != -1
                && (c.canceled || c.compact_revision != 0 || header_rev == 0)
            {
                w.ended = true;
            }
            if c.canceled {
                w.canceled = true;
                if !c.created && c.compact_revision == 0 {
                    w.acks += 1;
                }
            }
            if c.created {
                self.created.push(c.clone());
            }
            w.ctrl.push(c);
        }
    }

    pub(super) fn ctrl_len(&self, key: (i64, usize)) -> usize {
        self.watchers.get(&key).map_or(0, |w| w.ctrl.len())
    }
}

/// One watch stream on one server.
pub(super) struct WStream {
    pub(super) tx: mpsc::UnboundedSender<WatchRequest>,
    pub(super) log: Arc<Mutex<Vec<WItem>>>,
    pub(super) st: StreamState,
}

impl WStream {
    pub(super) fn open(client: &WatchClient<Channel>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<WatchRequest>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (mut c, l) = (client.clone(), log.clone());
        tokio::spawn(async move {
            let push = |i: WItem| l.lock().unwrap().push(i);
            match c.watch(UnboundedReceiverStream::new(rx)).await {
                Err(s) => push(WItem::End(s.code(), s.message().to_owned())),
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(m)) => push(WItem::Resp(m)),
                            Ok(None) => {
                                push(WItem::End(tonic::Code::Ok, "stream ended".into()));
                                break;
                            }
                            Err(e) => {
                                push(WItem::End(e.code(), e.message().to_owned()));
                                break;
                            }
                        }
                    }
                }
            }
        });
        Self {
            tx,
            log,
            st: StreamState::default(),
        }
    }

    pub(super) fn send(&self, r: watch_request::RequestUnion) {
        // A closed stream shows up as its end item.
        let _ = self.tx.send(WatchRequest {
            request_union: Some(r),
        });
    }

    pub(super) fn advance(&mut self) {
        let log = self.log.lock().unwrap();
        for item in &log[self.st.seen..] {
            self.st.apply(item);
        }
        self.st.seen = log.len();
    }
}

/// One server: clients and watch streams.
pub(super) struct Side {
    pub(super) name: &'static str,
    pub(super) kv: KvClient<Channel>,
    pub(super) lease: LeaseClient<Channel>,
    pub(super) watch: WatchClient<Channel>,
    pub(super) streams: Vec<WStream>,
}

impl Side {
    pub(super) async fn connect(
        name: &'static str,
        p: &Proc,
    ) -> Result<Self, tonic::transport::Error> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", p.endpoint()))
            .expect("endpoint")
            .connect()
            .await?;
        Ok(Self {
            name,
            kv: KvClient::new(ch.clone()),
            lease: LeaseClient::new(ch.clone()),
            watch: WatchClient::new(ch),
            streams: Vec::new(),
        })
    }

    pub(super) fn advance(&mut self) {
        for s in &mut self.streams {
            s.advance();
        }
    }

    pub(super) fn wlog(&self, stream: usize, key: (i64, usize)) -> Option<&WLog> {
        self.streams
            .get(stream)
            .and_then(|s| s.st.watchers.get(&key))
    }
}

/// The expected behaviour of one watcher, derived from the reference's whole-keyspace watcher
/// (its event log): used to know when every watcher has caught up, and checked against the
/// reference at the end.
#[derive(Debug)]
pub(super) struct MWatcher {
    pub(super) stream: usize,
    pub(super) key: (i64, usize),
    pub(super) req: WatchCreateRequest,
    /// The effective start revision.
    pub(super) start: i64,
    /// The compaction revision when the watcher was created (-1: none).
    pub(super) compacted: i64,
    /// Started below the compaction revision: a compacted cancel reply and no events.
    pub(super) expect_cancel: bool,
    /// Canceled by the client at this revision (`i64::MAX`: not canceled).
    pub(super) until: i64,
    /// How much of the event log has been scanned, and how many of those events it must get.
    pub(super) scanned: usize,
    pub(super) expected: usize,
}

impl MWatcher {
    pub(super) fn wants(&self, e: &Event) -> bool {
        let Some(kv) = e.kv.as_ref() else {
            return false;
        };
        let key: &[u8] = if self.req.key.is_empty() {
            &[0]
        } else {
            &self.req.key
        };
        let end = &self.req.range_end;
        let in_range = if end.is_empty() {
            kv.key.as_slice() == key
        } else if end.as_slice() == [0] {
            kv.key.as_slice() >= key
        } else {
            kv.key.as_slice() >= key && kv.key.as_slice() < end.as_slice()
        };
        let is_put = e.r#type == EventType::Put as i32;
        let filtered = (is_put && self.req.filters.contains(&(FilterType::Noput as i32)))
            || (!is_put && self.req.filters.contains(&(FilterType::Nodelete as i32)));
        // A compaction at C keeps each key's last revision <= C, except tombstones: a delete at
        // exactly C is gone by the time an unsynced watcher starting at C reads the history.
        let compacted_tombstone = !is_put && kv.mod_revision <= self.compacted;
        in_range
            && !filtered
            && kv.mod_revision >= self.start
            && kv.mod_revision <= self.until
            && !compacted_tombstone
    }

    pub(super) fn scan(&mut self, log: &[Event]) {
        for e in &log[self.scanned..] {
            if self.wants(e) {
                self.expected += 1;
            }
        }
        self.scanned = log.len();
    }
}
