//! The watch and lease driver.

use super::*;

// ---------------------------------------------------------------------------------------------

/// The whole-keyspace watcher with prev_kv that stream 0 opens first: the event log.
pub(super) const LOG_WATCHER: (i64, usize) = (0, 1);

pub(super) struct WDriver {
    pub(super) seed: u64,
    pub(super) verbose: bool,
    pub(super) theirs: Side,
    pub(super) ours: Side,
    pub(super) index: usize,
    pub(super) recent: VecDeque<(usize, String)>,
    pub(super) stats: HashMap<String, usize>,
    /// Create requests sent per stream.
    pub(super) creates: Vec<usize>,
    pub(super) model: Vec<MWatcher>,
    pub(super) view: WatchView,
    /// Per lease (on the reference): granted TTL and when it was granted or last kept alive.
    pub(super) granted: HashMap<i64, (i64, Instant)>,
    pub(super) syncs: usize,
    /// When the last watcher that started in the past was created: etcd moves such a watcher
    /// to its synced set in a background pass every 100 ms, even when it has no events to
    /// catch up on (and a compaction before that cancels it).
    pub(super) catching_up: Option<Instant>,
    /// When the last compaction succeeded: etcd 3.4 deletes the compacted revisions in the
    /// background, and its watchers see the deletion only after the next backend commit (every
    /// 100 ms), so until then a watcher starting at the compaction revision still gets a delete
    /// at exactly that revision, which compaction removes.
    pub(super) compacted_at: Option<Instant>,
}

impl WDriver {
    pub(super) fn fail(&self, what: &str) -> ! {
        let mut ctx = String::new();
        for (i, o) in &self.recent {
            ctx.push_str(&format!("  #{i} {o}\n"));
        }
        panic!(
            "DIFFERENTIAL MISMATCH (DIFF_SEED={seed}) at op #{idx}\n\
             preceding ops:\n{ctx}\
             {what}\n\
             reproduce: DIFF_SEED={seed} DIFF_OPS={ops} cargo test -p etcd-server --test it differential_watch",
            seed = self.seed,
            idx = self.index,
            ops = self.index + 1,
        );
    }

    pub(super) fn record(&mut self, op: &WOp, outcome: String) {
        if self.verbose {
            eprintln!("#{} {}\n  -> {outcome}", self.index, show(op));
        }
        *self.stats.entry(outcome).or_default() += 1;
        self.recent.push_back((self.index, show(op)));
        if self.recent.len() > 8 {
            self.recent.pop_front();
        }
        self.index += 1;
    }

    pub(super) async fn kv(&mut self, g: &mut Gen, op: Op) {
        if matches!(op, Op::Compact(_)) {
            // Every watcher must have caught up first: etcd cancels an unsynced watcher whose
            // next revision gets compacted, and reads prev_kv at send time.
            self.sync(g.cur_rev, "before compaction").await;
        }
        let (theirs, ours) =
            tokio::join!(exec(&mut self.theirs.kv, &op), exec(&mut self.ours.kv, &op));
        let (nt, no) = (normalize(&op, theirs.clone()), normalize(&op, ours));
        if nt != no {
            self.fail(&format!(
                "request:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&nt),
                show(&no)
            ));
        }
        g.observe(&op, &theirs);
        if let (Op::Compact(_), Resp::Compact(_)) = (&op, &theirs) {
            self.compacted_at = Some(Instant::now());
        }
        let outcome = match &theirs {
            Resp::Err(_, m) => format!("{} error: {m}", op.kind()),
            Resp::Txn(t) => format!("txn ok (succeeded={})", t.succeeded),
            _ => format!("{} ok", op.kind()),
        };
        self.record(&WOp::Kv(op), outcome);
    }

    pub(super) async fn lease(&mut self, g: &mut Gen, op: LOp) {
        let prev_rev = g.cur_rev;
        let (theirs, ours) = tokio::join!(
            exec_lease(&mut self.theirs.lease, &op),
            exec_lease(&mut self.ours.lease, &op)
        );
        let (nt, mut no) = (norm_lease(theirs), norm_lease(ours));
        // The remaining TTL depends on timing: both must lie between the granted TTL and what
        // is left of it after the time since the grant (or the last keep-alive), and within
        // 2 s of each other; then the reference's value is compared as ours.
        if let (LResp::TimeToLive(t), LResp::TimeToLive(o)) = (&nt, &mut no)
            && t.granted_ttl > 0
        {
            let left = self.granted.get(&t.id).map_or(i64::MIN, |(ttl, at)| {
                ttl - i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX) - 2
            });
            let ok = |x: i64| x <= t.granted_ttl && x >= left;
            if !ok(t.ttl) || !ok(o.ttl) || (t.ttl - o.ttl).abs() > 2 {
                self.fail(&format!(
                    "remaining TTL out of bounds [{left}, {}]:\nrequest:   {}\nreference: {}\nours:      {}",
                    t.granted_ttl,
                    show(&op),
                    show(&nt),
                    show(&no)
                ));
            }
            o.ttl = t.ttl;
        }
        if nt != no {
            self.fail(&format!(
                "request:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&nt),
                show(&no)
            ));
        }
        let rev = match &nt {
            LResp::Grant(r) => r.header.as_ref(),
            LResp::Revoke(r) => r.header.as_ref(),
            LResp::TimeToLive(r) => r.header.as_ref(),
            LResp::Leases(r) => r.header.as_ref(),
            LResp::KeepAlive(r) => r.header.as_ref(),
            LResp::Err(..) => None,
        }
        .map(|h| h.revision);
        if let Some(rev) = rev.filter(|r| *r > 0) {
            g.cur_rev = rev;
        }
        match (&op, &nt) {
            (LOp::Grant(q), LResp::Grant(r)) => {
                g.live_leases.push(q.id);
                self.granted.insert(q.id, (r.ttl, Instant::now()));
            }
            (LOp::Revoke(q), LResp::Revoke(_)) => {
                g.live_leases.retain(|id| *id != q.id);
                self.granted.remove(&q.id);
            }
            (LOp::KeepAlive(q), LResp::KeepAlive(r)) if r.ttl > 0 => {
                self.granted.insert(q.id, (r.ttl, Instant::now()));
            }
            _ => {}
        }
        let kind = WOp::Lease(op.clone()).kind();
        let outcome = match &nt {
            LResp::Err(_, m) => format!("{kind} error: {m}"),
            LResp::TimeToLive(t) if t.ttl == -1 => format!("{kind} ok (unknown lease)"),
            LResp::TimeToLive(t) if !t.keys.is_empty() => format!("{kind} ok (with keys)"),
            LResp::KeepAlive(t) if t.ttl == 0 => format!("{kind} ok (unknown lease)"),
            LResp::Revoke(_) if g.cur_rev > prev_rev => format!("{kind} ok (keys deleted)"),
            _ => format!("{kind} ok"),
        };
        let revoked_keys = matches!(op, LOp::Revoke(_)) && g.cur_rev > prev_rev;
        self.record(&WOp::Lease(op), outcome);
        if revoked_keys {
            // The revoke's deletes, right away in the whole keyspace (and later in the watch
            // streams, all in one revision).
            self.kv(g, Op::Range(Gen::full_range(0))).await;
        }
    }

    pub(super) fn both(&mut self) -> [&mut Side; 2] {
        [&mut self.theirs, &mut self.ours]
    }

    /// Waits until `cond` holds for both sides (after advancing their streams); fails with
    /// `what` after `timeout`, after comparing the watch streams (a difference there is the
    /// better report).
    pub(super) async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Side) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            for s in self.both() {
                s.advance();
            }
            if cond(&self.theirs) && cond(&self.ours) {
                return;
            }
            if Instant::now() > deadline {
                self.compare_watches(false);
                self.fail(&format!(
                    "timed out waiting for {what} (reference: {}, ours: {})",
                    cond(&self.theirs),
                    cond(&self.ours)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until every watcher on both servers has every event up to `rev` (or was
    /// canceled; a watcher that started below the compaction revision must get its compacted
    /// reply).
    pub(super) async fn sync(&mut self, rev: i64, why: &str) {
        self.syncs += 1;
        let deadline = Instant::now() + WATCH_WAIT;
        loop {
            self.theirs.advance();
            self.ours.advance();
            let pending = self.unsynced(rev);
            if pending.is_empty() {
                if let Some(at) = self.catching_up.take() {
                    let wait = Duration::from_millis(250).saturating_sub(at.elapsed());
                    tokio::time::sleep(wait).await;
                }
                // Everything up to `rev` has arrived: compare now, to fail near the cause.
                self.compare_watches(false);
                return;
            }
            if Instant::now() > deadline {
                self.compare_watches(false);
                self.fail(&format!(
                    "watch streams did not catch up with revision {rev} ({why}):\n  {}",
                    pending.join("\n  ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(super) fn unsynced(&mut self, rev: i64) -> Vec<String> {
        let Some(log) = self.theirs.wlog(0, LOG_WATCHER) else {
            return vec!["the reference's log watcher has no replies".into()];
        };
        let last = log.events.last().map_or(1, ev_rev);
        if last < rev {
            return vec![format!("the reference's log watcher is at revision {last}")];
        }
        let mut out = Vec::new();
        for m in &mut self.model {
            m.scan(&log.events);
            for side in [&self.theirs, &self.ours] {
                let (n, ended) = side
                    .wlog(m.stream, m.key)
                    .map_or((0, false), |w| (w.events.len(), w.ended));
                if !(ended || (!m.expect_cancel && n >= m.expected)) {
                    out.push(format!(
                        "{}: stream {} watcher {:?} has {n} of {} events{} (created by {})",
                        side.name,
                        m.stream,
                        m.key,
                        m.expected,
                        if m.expect_cancel {
                            " and expects a compacted reply"
                        } else {
                            ""
                        },
                        show(&m.req)
                    ));
                }
            }
        }
        out
    }

    pub(super) fn open_stream(&mut self) {
        let (t, o) = (
            WStream::open(&self.theirs.watch),
            WStream::open(&self.ours.watch),
        );
        self.theirs.streams.push(t);
        self.ours.streams.push(o);
        self.creates.push(0);
        self.view.streams += 1;
        self.view.exists.push(BTreeSet::new());
        self.view.seen.push(BTreeSet::new());
    }

    pub(super) async fn watch(&mut self, g: &Gen, stream: usize, req: WatchCreateRequest) {
        let op = WOp::Watch {
            stream,
            req: req.clone(),
        };
        if stream == self.view.streams {
            self.open_stream();
        }
        if req.start_revision < 0 && req.start_revision >= g.compact_rev.unwrap_or(-1) {
            // etcd 3.4 catches up all its unsynced watchers in one pass from their lowest start
            // revision: a negative one makes that pass read nothing, so every other watcher
            // that is still catching up would lose its history. Let them catch up first.
            self.sync(g.cur_rev, "before a watcher with a negative start revision")
                .await;
        }
        if Some(req.start_revision) == g.compact_rev
            && let Some(at) = self.compacted_at
        {
            tokio::time::sleep(Duration::from_millis(300).saturating_sub(at.elapsed())).await;
        }
        for s in self.both() {
            s.streams[stream].send(watch_request::RequestUnion::CreateRequest(req.clone()));
        }
        self.creates[stream] += 1;
        let n = self.creates[stream];
        self.wait_for(WATCH_WAIT, "the created reply", |s| {
            s.streams[stream].st.created.len() >= n
        })
        .await;
        let t = self.theirs.streams[stream].st.created[n - 1].clone();
        let o = self.ours.streams[stream].st.created[n - 1].clone();
        if t != o {
            self.fail(&format!(
                "created reply on stream {stream}:\nrequest:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&t),
                show(&o)
            ));
        }
        let outcome = if t.canceled {
            format!("watch-create canceled: {}", t.cancel_reason)
        } else {
            // etcd 3.4 compares the start revision with its compaction revision (-1 before the
            // first compaction): below it, a compaction reply (`canceled` only when that
            // revision is not 0). A negative start revision that is not below it reads no
            // history, and the watcher joins the synced ones at the revision current when
            // etcd's background sync (every 100 ms) first runs: wait for that before writing.
            let compacted = g.compact_rev.unwrap_or(-1);
            let now = t.header.as_ref().map_or(0, |h| h.revision) + 1;
            let start = match req.start_revision {
                0 => now,
                s if s < 0 && s >= compacted => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    now
                }
                s => s,
            };
            if start <= g.cur_rev {
                self.catching_up = Some(Instant::now());
            }
            let key = self.theirs.streams[stream].st.key_of(t.watch_id);
            self.view.exists[stream].insert(t.watch_id);
            self.view.seen[stream].insert(t.watch_id);
            self.model.push(MWatcher {
                stream,
                key,
                req: req.clone(),
                start,
                compacted,
                expect_cancel: start < compacted,
                until: i64::MAX,
                scanned: 0,
                expected: 0,
            });
            let when = match req.start_revision {
                0 => "now",
                s if s < 0 && s < compacted => "negative, compacted",
                s if s < 0 => "negative, not compacted",
                s if s < compacted => "compacted",
                s if s == compacted => "at the compaction revision",
                s if s <= g.cur_rev => "past",
                _ => "future",
            };
            format!("watch-create ok (start {when})")
        };
        self.record(&op, outcome);
    }

    pub(super) async fn cancel(&mut self, g: &Gen, stream: usize, watch_id: i64) {
        let op = WOp::Cancel { stream, watch_id };
        self.sync(g.cur_rev, "before cancel").await;
        let key = self.theirs.streams[stream].st.key_of(watch_id);
        let expect_ack = self.view.exists[stream].contains(&watch_id);
        let acks = |s: &Side| s.wlog(stream, key).map_or(0, |w| w.acks);
        let before = (acks(&self.theirs), acks(&self.ours));
        for s in self.both() {
            s.streams[stream].send(watch_request::RequestUnion::CancelRequest(
                WatchCancelRequest { watch_id },
            ));
        }
        let outcome = if expect_ack {
            let ours_key = self.ours.streams[stream].st.key_of(watch_id);
            if ours_key != key {
                self.compare_watches(false);
            }
            self.wait_for(WATCH_WAIT, "the cancel acknowledgement", |s| {
                let b = if s.name == "reference" {
                    before.0
                } else {
                    before.1
                };
                acks(s) > b
            })
            .await;
            self.view.exists[stream].remove(&watch_id);
            for m in &mut self.model {
                if m.stream == stream && m.key == key {
                    m.until = g.cur_rev;
                }
            }
            "watch-cancel ok"
        } else {
            "watch-cancel of a missing watcher"
        };
        let (t, o) = (
            self.theirs.wlog(stream, key).map(|w| w.ctrl.clone()),
            self.ours.wlog(stream, key).map(|w| w.ctrl.clone()),
        );
        if expect_ack && t != o {
            self.fail(&format!(
                "replies to a cancel on stream {stream}:\nrequest:   {}\nreference: {}\nours:      {}",
                show(&op),
                show(&t),
                show(&o)
            ));
        }
        self.record(&op, outcome.to_owned());
    }

    /// A progress request on `stream` once every watcher has caught up (etcd answers only
    /// when all of the stream's watchers are synced; 3.4.23 answers at once, even before
    /// delivering earlier events).
    pub(super) async fn progress(&mut self, g: &Gen, stream: usize, record: bool) {
        let op = WOp::Progress { stream };
        self.sync(g.cur_rev, "before a progress request").await;
        let k = (-1, 0);
        let before = (
            self.theirs.streams[stream].st.ctrl_len(k),
            self.ours.streams[stream].st.ctrl_len(k),
        );
        for s in self.both() {
            s.streams[stream].send(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            ));
        }
        self.wait_for(WATCH_WAIT, "the progress reply", |s| {
            let b = if s.name == "reference" {
                before.0
            } else {
                before.1
            };
            s.streams[stream].st.ctrl_len(k) > b
        })
        .await;
        let t = self.theirs.streams[stream].st.watchers[&k].ctrl[before.0].clone();
        let o = self.ours.streams[stream].st.watchers[&k].ctrl[before.1].clone();
        if t != o {
            self.fail(&format!(
                "progress reply on stream {stream}:\nreference: {}\nours:      {}",
                show(&t),
                show(&o)
            ));
        }
        if record {
            self.record(&op, "watch-progress ok".into());
        }
    }

    /// Compares every watcher's replies on both servers: the non-event replies exactly and in
    /// order, the events flattened (etcd batches them as it likes), and on each server that a
    /// revision's events come in one reply, in revision order, under a header revision at
    /// least theirs. With `model`, also checks the reference against the expectation derived
    /// from its event log (a failure there is a test bug or a reference timing effect).
    pub(super) fn compare_watches(&mut self, model: bool) {
        self.theirs.advance();
        self.ours.advance();
        let empty = WLog::default();
        for stream in 0..self.view.streams {
            let (ts, os) = (
                &self.theirs.streams[stream].st,
                &self.ours.streams[stream].st,
            );
            if ts.ended != os.ended {
                self.fail(&format!(
                    "stream {stream} ended differently:\nreference: {:?}\nours:      {:?}",
                    ts.ended, os.ended
                ));
            }
            let keys: BTreeSet<(i64, usize)> = ts
                .watchers
                .keys()
                .chain(os.watchers.keys())
                .copied()
                .collect();
            for key in keys {
                let t = ts.watchers.get(&key).unwrap_or(&empty);
                let o = os.watchers.get(&key).unwrap_or(&empty);
                let created_by = self
                    .model
                    .iter()
                    .find(|m| m.stream == stream && m.key == key)
                    .map_or_else(|| "-".to_owned(), |m| show(&m.req));
                let whom = format!(
                    "stream {stream}, watch id {}, incarnation {} (created by {created_by})",
                    key.0, key.1
                );
                for (name, w) in [("reference", t), ("ours", o)] {
                    if let Some(e) = check_batches(w) {
                        self.fail(&format!("{name}: {whom}: {e}"));
                    }
                }
                if t.ctrl != o.ctrl {
                    self.fail(&format!(
                        "non-event replies of {whom}:\nreference: {}\nours:      {}",
                        show(&t.ctrl),
                        show(&o.ctrl)
                    ));
                }
                if t.events != o.events {
                    self.fail(&format!(
                        "events of {whom}:\n{}",
                        diff_events(&t.events, &o.events)
                    ));
                }
            }
        }
        if !model {
            return;
        }
        let log = self
            .theirs
            .wlog(0, LOG_WATCHER)
            .unwrap_or(&empty)
            .events
            .clone();
        for m in &self.model {
            let got: Vec<(i32, Vec<u8>, i64)> = self
                .theirs
                .wlog(m.stream, m.key)
                .unwrap_or(&empty)
                .events
                .iter()
                .map(|e| (e.r#type, e.kv.clone().unwrap_or_default().key, ev_rev(e)))
                .collect();
            let want: Vec<(i32, Vec<u8>, i64)> = if m.expect_cancel {
                Vec::new()
            } else {
                log.iter()
                    .filter(|e| m.wants(e))
                    .map(|e| (e.r#type, e.kv.clone().unwrap_or_default().key, ev_rev(e)))
                    .collect()
            };
            if got != want {
                self.fail(&format!(
                    "MODEL MISMATCH (the reference differs from the test's expectation) for stream {} watcher {:?} (created by {}, start {}, compaction {}):\nexpected: {}\nreference: {}",
                    m.stream,
                    m.key,
                    show(&m.req),
                    m.start,
                    m.compacted,
                    show(&want),
                    show(&got)
                ));
            }
        }
    }
}

/// The grouping check of one watcher's event replies: revisions ascend, and one revision's
/// events are never split across replies.
pub(super) fn check_batches(w: &WLog) -> Option<String> {
    if w.fragments > 0 {
        return Some(format!("{} replies have the fragment flag", w.fragments));
    }
    let mut prev = i64::MIN;
    for (i, (header_rev, revs)) in w.batches.iter().enumerate() {
        if revs.windows(2).any(|p| p[0] > p[1]) {
            return Some(format!(
                "event reply {i} has revisions {revs:?}: out of order"
            ));
        }
        if revs[0] <= prev {
            return Some(format!(
                "event reply {i} has revisions {revs:?} after one that ended at revision {prev}: \
                 a revision split across replies, or out of order"
            ));
        }
        prev = *revs.last().unwrap_or(&prev);
        if revs.last().is_some_and(|l| header_rev < l) {
            return Some(format!(
                "event reply {i} with revisions {revs:?} has header revision {header_rev}"
            ));
        }
    }
    None
}

pub(super) fn diff_events(t: &[Event], o: &[Event]) -> String {
    let i = t.iter().zip(o).take_while(|(a, b)| a == b).count();
    let mut s = format!(
        "{} events on the reference, {} on ours; first difference at event {i}\n",
        t.len(),
        o.len()
    );
    let lo = i.saturating_sub(2);
    for (name, evs) in [("reference", t), ("ours", o)] {
        s.push_str(&format!("{name}:\n"));
        for (j, e) in evs.iter().enumerate().skip(lo).take(6) {
            s.push_str(&format!("  [{j}] {}\n", show(e)));
        }
    }
    s
}
