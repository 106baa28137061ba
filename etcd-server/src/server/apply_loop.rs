//! The apply loop: committed Raft entries applied to the MVCC store, the lessor, the watch hub
//! and the membership in log order, on the apply thread or (for small batches of puts) right
//! on the Raft thread; snapshots prepared for followers and installed from the leader.

use super::*;

/// The apply loop: applies committed entries to the MVCC store in log order.
pub(super) struct Applier {
    /// The election timeout, by which lease clocks are extended on promotion.
    pub(super) election: Duration,
    pub(super) store: Arc<KvStore>,
    pub(super) lessor: Arc<Lessor>,
    pub(super) alarms: Arc<Alarms>,
    pub(super) hub: Arc<WatchHub>,
    pub(super) cluster: Arc<RwLock<Cluster>>,
    pub(super) transport: Arc<Transport>,
    pub(super) storage: LogStorage,
    pub(super) snap_dir: PathBuf,
    pub(super) waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>>,
    pub(super) member_id: u64,
    pub(super) applied_tx: watch::Sender<u64>,
    pub(super) raft_tx: RaftSender,
    pub(super) snapshot_count: u64,
    pub(super) status: Arc<RaftStatus>,
}

/// Where the apply loop stands between batches.
struct ApplyState {
    durable_index: u64,
    last_sync: Instant,
    snap_index: u64,
    /// Entries up to here were dropped from the in-memory Raft log.
    trim_index: u64,
}

/// A decoded committed entry.
enum Decoded {
    Request(InternalRaftRequest),
    ConfChange(::raft::eraftpb::ConfChange, ConfChangeContext),
    Empty,
}

fn decode_entry(e: &::raft::eraftpb::Entry) -> Decoded {
    if e.data.is_empty() {
        return Decoded::Empty;
    }
    if e.get_entry_type() == ::raft::eraftpb::EntryType::EntryConfChange {
        return match crate::raft::decode::conf_change(&e.data) {
            Ok(cc) => {
                let ctx = ConfChangeContext::decode(cc.context.as_ref()).unwrap_or_default();
                Decoded::ConfChange(cc, ctx)
            }
            Err(err) => {
                tracing::error!(index = e.index, error = %err, "skipping undecodable conf change");
                Decoded::Empty
            }
        };
    }
    match InternalRaftRequest::decode(e.data.as_ref()) {
        Ok(r) => Decoded::Request(r),
        Err(err) => {
            tracing::error!(index = e.index, error = %err, "skipping undecodable raft entry");
            Decoded::Empty
        }
    }
}

/// Most entries a batch may have to be applied on the Raft thread.
const INLINE_APPLY_MAX: usize = 16;

/// The hand-off from the Raft thread to the apply thread. A small batch of puts, with nothing
/// queued before it, the apply thread idle and the store free, is applied right away on the
/// Raft thread, which has just made it durable: waking another thread costs tens of
/// microseconds on a virtual machine, more than applying a few puts. Everything else (larger
/// batches, requests that can touch many keys, membership changes, snapshot work, the
/// periodic backend fsync) goes to the apply thread, so that applying overlaps with the next
/// WAL write and never holds up the Raft thread. Whoever holds the `ApplyState` token applies;
/// messages are applied in the order they were sent either way.
pub(super) struct ApplyQueue {
    state: Mutex<QueueState>,
    ready: std::sync::Condvar,
    applier: Applier,
}

struct QueueState {
    msgs: std::collections::VecDeque<ApplyMsg>,
    /// `None` while a thread is applying.
    token: Option<ApplyState>,
    /// The driver stopped, or applying failed: the apply thread finishes and exits.
    closed: bool,
}

impl ApplyQueue {
    pub(super) fn new(applier: Applier) -> Arc<Self> {
        let (durable_index, _) = applier.store.applied();
        Arc::new(Self {
            state: Mutex::new(QueueState {
                msgs: Default::default(),
                token: Some(ApplyState {
                    durable_index,
                    last_sync: Instant::now(),
                    snap_index: durable_index,
                    trim_index: durable_index,
                }),
                closed: false,
            }),
            ready: std::sync::Condvar::new(),
            applier,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the token back after applying; a failed apply closes the queue (the member
    /// stops). Wakes the apply thread if there is work for it.
    fn give_back(&self, st: ApplyState, ok: bool) {
        let mut g = self.lock();
        g.token = Some(st);
        if !ok {
            g.closed = true;
            g.msgs.clear();
        }
        if !g.msgs.is_empty() || g.closed {
            self.ready.notify_one();
        }
    }

    /// Whether `entries` may be applied on the calling thread with `st`: only puts (and empty
    /// entries), whose cost is bounded by the request size limit. A delete-range, a txn, a
    /// compaction or a lease revocation can touch any number of keys, and the Raft thread must
    /// not stall behind it (its heartbeats keep followers from starting elections).
    fn inline_ok(entries: &[::raft::eraftpb::Entry], st: &ApplyState) -> bool {
        entries.len() <= INLINE_APPLY_MAX
            && st.last_sync.elapsed() < BACKEND_SYNC_INTERVAL
            && entries
                .last()
                .is_none_or(|e| e.index < st.durable_index + BACKEND_SYNC_ENTRIES)
            && entries.iter().all(|e| {
                e.get_entry_type() == ::raft::eraftpb::EntryType::EntryNormal
                    && (e.data.is_empty()
                        || InternalRaftRequest::decode(e.data.as_ref())
                            .is_ok_and(|r| matches!(r.request, Some(Request::Put(_)))))
            })
    }

    /// The apply thread: applies what is queued, and fsyncs the backend every
    /// `BACKEND_SYNC_INTERVAL` while it has unsynced changes.
    pub(super) fn run(&self) {
        loop {
            let (msgs, mut st) = {
                let mut g = self.lock();
                loop {
                    if g.token.is_some() && (!g.msgs.is_empty() || g.closed) {
                        break;
                    }
                    let (next, timeout) = self
                        .ready
                        .wait_timeout(g, BACKEND_SYNC_INTERVAL)
                        .unwrap_or_else(|p| p.into_inner());
                    g = next;
                    if timeout.timed_out() && g.token.is_some() {
                        break;
                    }
                }
                if g.closed && g.msgs.is_empty() {
                    break;
                }
                let n = g.msgs.len().min(64);
                let msgs: Vec<ApplyMsg> = g.msgs.drain(..n).collect();
                (msgs, g.token.take().expect("checked above"))
            };
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.applier.apply_msgs(msgs, &mut st)
            }));
            let Ok(ok) = applied else {
                // A member that can no longer apply only pretends to serve: exit, as the Raft
                // thread does when it panics, and let the supervisor see it.
                tracing::error!("the apply loop panicked; exiting");
                std::process::exit(1);
            };
            self.give_back(st, ok);
        }
        // Make everything applied durable before exiting.
        let (index, term) = self.applier.store.applied();
        if let Err(e) = self
            .applier
            .store
            .write_batch(index, term, true, |_| Ok(()))
        {
            tracing::error!(error = %e, "failed to sync the backend on shutdown");
        }
    }
}

impl ApplySink for ApplyQueue {
    fn send(&self, msg: ApplyMsg) {
        let mut g = self.lock();
        if g.closed {
            return;
        }
        if let ApplyMsg::Entries(entries) = &msg {
            let inline = g.msgs.is_empty()
                && g.token
                    .as_ref()
                    .is_some_and(|st| Self::inline_ok(entries, st));
            // Only if the store is free right now: a long read or a defragmentation holding
            // it must not stall the Raft thread (and with it heartbeats and elections).
            let store = if inline {
                self.applier.store.try_lock()
            } else {
                None
            };
            if let Some(store) = store {
                let mut st = g.token.take().expect("checked above");
                drop(g);
                let ApplyMsg::Entries(entries) = msg else {
                    unreachable!("matched above")
                };
                let ok = self
                    .applier
                    .apply_entries_locked(Some(store), entries, &mut st)
                    .is_ok();
                self.give_back(st, ok);
                return;
            }
        }
        g.msgs.push_back(msg);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

impl Applier {
    /// Applies `msgs` in order, merging runs of entries into one batch. Returns false once
    /// applying failed (the member stops).
    fn apply_msgs(&self, msgs: Vec<ApplyMsg>, st: &mut ApplyState) -> bool {
        let mut entries = Vec::new();
        for msg in msgs {
            match msg {
                ApplyMsg::Entries(e) => entries.extend(e),
                other => {
                    // Keep log order: apply what came before, then handle this.
                    if self
                        .apply_entries(std::mem::take(&mut entries), st)
                        .is_err()
                    {
                        return false;
                    }
                    self.handle(other, st);
                }
            }
        }
        self.apply_entries(entries, st).is_ok()
    }

    fn handle(&self, msg: ApplyMsg, st: &mut ApplyState) {
        match msg {
            ApplyMsg::Entries(_) => {}
            ApplyMsg::MakeSnapshot => {
                if let Err(e) = self.make_snapshot() {
                    tracing::error!(error = %e, "failed to prepare a snapshot for a follower");
                }
            }
            ApplyMsg::Install { meta, path, done } => {
                let r = self.install(&path, meta.index).map_err(|e| e.to_string());
                if r.is_ok() {
                    st.durable_index = meta.index;
                    st.snap_index = meta.index;
                    st.trim_index = meta.index;
                    let _ = self.applied_tx.send(meta.index);
                }
                let _ = done.send(r);
            }
        }
    }

    /// Copies the backend for a follower that needs a snapshot, at the applied index.
    fn make_snapshot(&self) -> Result<(), MvccError> {
        let (index, term) = self.store.applied();
        let out = crate::raft::transport::outgoing_snapshot(&self.snap_dir, index);
        let storage_err = |e: std::io::Error| crate::backend::BackendError::Storage(e.to_string());
        // Several requests for a snapshot can arrive while nothing new was applied: the file
        // for this index is already complete (it is only ever renamed into place).
        if !out.exists() {
            // Copied under a temporary name and renamed into place: the transport may be
            // reading an earlier file of the same name for another follower, and must never
            // see one that is being rewritten (a truncated copy installed by a follower
            // replaced its whole state with an empty database).
            let tmp = out.with_extension("tmp");
            self.store.exclusive(|b| {
                std::fs::copy(b.path(), &tmp)
                    .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                    .map_err(storage_err)
            })?;
            std::fs::rename(&tmp, &out).map_err(|e| MvccError::from(storage_err(e)))?;
        }
        if let Ok(dir) = std::fs::read_dir(&self.snap_dir) {
            for ent in dir.flatten() {
                let p = ent.path();
                if p != out && p.to_string_lossy().ends_with(".out.db") {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let mut meta = ::raft::eraftpb::SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.storage.conf_state_at(index));
        self.storage.set_prepared(meta);
        tracing::info!(index, "prepared snapshot for followers");
        Ok(())
    }

    /// Swaps in a backend received from the leader and rebuilds everything derived from it.
    fn install(&self, path: &std::path::Path, index: u64) -> Result<(), MvccError> {
        self.store.install(path, index)?;
        remove_stale_incoming(&self.snap_dir, index);
        recover_aux(&self.store, &self.lessor, &self.alarms)?;
        if let Some(c) = Cluster::load(self.store.backend())
            .map_err(|e| MvccError::Backend(crate::backend::BackendError::Storage(e.to_string())))?
        {
            self.transport.set_peers(&peer_list(&c), &c.removed);
            *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = c;
        }
        self.hub.resync_all();
        Ok(())
    }

    /// Starts or stops the lease clocks as leadership moves. Done here, before applying, so
    /// any request that waited for the apply loop (every lease call reads through ReadIndex)
    /// finds the lessor already in charge.
    fn follow_leadership(&self) {
        let leader = self.status.leader.load(Ordering::SeqCst) == self.member_id;
        self.lessor.follow_leadership(leader, self.election);
    }

    /// Answers the key-value writes (put, delete, txn) of a batch once all of it is staged,
    /// before the backend commit, so that the commit (and, every `BACKEND_SYNC_INTERVAL`, its
    /// fsync) overlaps with sending the responses. Called inside `KvStore::write_batch`, which
    /// locks readers out until its commit is done: a read that follows an answer sees the
    /// batch. The entries' WAL records are already durable, so if the commit fails (the member
    /// stops) a restart replays them to the same results. Everything else, membership changes
    /// included, is still answered after the commit.
    fn answer_kv_writes(&self, outcomes: &mut Vec<(u64, ApplyResult)>) {
        let early = |o: &ApplyResult| {
            matches!(
                o,
                Ok(ApplyResponse::Put(_) | ApplyResponse::DeleteRange(_) | ApplyResponse::Txn(_))
            )
        };
        if !outcomes.iter().any(|(_, o)| early(o)) {
            return;
        }
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for (id, outcome) in outcomes.extract_if(.., |(_, o)| early(o)) {
            if let Some(tx) = w.remove(&id) {
                let _ = tx.send(outcome);
            }
        }
    }

    fn apply_entries(
        &self,
        entries: Vec<::raft::eraftpb::Entry>,
        st: &mut ApplyState,
    ) -> Result<(), ()> {
        self.apply_entries_locked(None, entries, st)
    }

    /// `apply_entries` under `held`, the store already locked by the caller (the inline path),
    /// or under the lock taken when the batch is written.
    fn apply_entries_locked(
        &self,
        held: Option<crate::mvcc::StoreLock<'_>>,
        mut entries: Vec<::raft::eraftpb::Entry>,
        st: &mut ApplyState,
    ) -> Result<(), ()> {
        self.follow_leadership();
        let store_applied = match &held {
            Some(l) => l.applied(),
            None => self.store.applied(),
        };
        let (applied, _) = store_applied;
        entries.retain(|e| e.index > applied);
        let dirty = applied > st.durable_index;
        if entries.is_empty() && !(dirty && st.last_sync.elapsed() >= BACKEND_SYNC_INTERVAL) {
            return Ok(());
        }
        let last = entries
            .last()
            .map(|e| (e.index, e.term))
            .unwrap_or(store_applied);
        let durable = st.last_sync.elapsed() >= BACKEND_SYNC_INTERVAL
            || last.0 - st.durable_index >= BACKEND_SYNC_ENTRIES;
        let mut published: Vec<(i64, Vec<Event>)> = Vec::new();
        let mut cluster = self
            .cluster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut cluster_changed = false;
        let result = self
            .store
            .write_batch_locked(held, last.0, last.1, durable, |b| {
                let mut outcomes = Vec::with_capacity(entries.len());
                for e in &entries {
                    match decode_entry(e) {
                        Decoded::Empty => {}
                        Decoded::ConfChange(cc, ctx) => {
                            cluster.apply_change(cc.get_change_type(), cc.node_id, ctx.member);
                            cluster.save_in(b.backend_tx())?;
                            cluster_changed = true;
                            if ctx.origin == self.member_id {
                                let members = cluster.members.values().cloned().collect();
                                outcomes.push((ctx.id, Ok(ApplyResponse::Members(members))));
                            }
                        }
                        Decoded::Request(req) => {
                            if let Some(Request::MemberAttributes(a)) = &req.request {
                                if let Some(m) = cluster.members.get_mut(&a.id) {
                                    m.name = a.name.clone();
                                    m.client_ur_ls = a.client_urls.clone();
                                    cluster.save_in(b.backend_tx())?;
                                    cluster_changed = true;
                                }
                                if req.origin == self.member_id {
                                    outcomes.push((
                                        req.id,
                                        Ok(ApplyResponse::Members(
                                            cluster.members.values().cloned().collect(),
                                        )),
                                    ));
                                }
                                continue;
                            }
                            if let Some(Request::MemberUpdate(u)) = &req.request {
                                let r = match cluster.members.get_mut(&u.id) {
                                    Some(m) => {
                                        m.peer_ur_ls = u.peer_ur_ls.clone();
                                        m.peer_ur_ls.sort();
                                        cluster.save_in(b.backend_tx())?;
                                        cluster_changed = true;
                                        Ok(ApplyResponse::Members(
                                            cluster.members.values().cloned().collect(),
                                        ))
                                    }
                                    None => Err(EtcdError::MemberNotFound),
                                };
                                if req.origin == self.member_id {
                                    outcomes.push((req.id, r));
                                }
                                continue;
                            }
                            let (outcome, events) =
                                apply_one(b, req.request, &self.lessor, &self.alarms)?;
                            if !events.is_empty() {
                                self.lessor.on_events(&events);
                                published.push((b.rev(), events));
                            }
                            if req.origin == self.member_id {
                                outcomes.push((req.id, outcome));
                            }
                        }
                    }
                }
                self.answer_kv_writes(&mut outcomes);
                Ok(outcomes)
            });
        let outcomes = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "failed to apply committed entries; stopping the member");
                self.status.stopped.store(true, Ordering::SeqCst);
                return Err(());
            }
        };
        if cluster_changed {
            self.transport
                .set_peers(&peer_list(&cluster), &cluster.removed);
            *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = cluster;
        }
        if durable {
            st.durable_index = last.0;
            st.last_sync = Instant::now();
        }
        for (rev, events) in &published {
            self.hub.notify(*rev, events);
        }
        let _ = self.applied_tx.send(last.0);
        {
            let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for (id, outcome) in outcomes {
                if let Some(tx) = w.remove(&id) {
                    let _ = tx.send(outcome);
                }
            }
        }
        let to_raft = |input: Input| {
            if let Some(tx) = self
                .raft_tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                let _ = tx.send(input);
            }
        };
        if durable && st.durable_index >= st.snap_index + self.snapshot_count {
            st.snap_index = st.durable_index;
            st.trim_index = st.durable_index;
            to_raft(Input::Compact(st.durable_index));
        } else if durable && st.durable_index >= st.trim_index + LOG_TRIM_STEP + LOG_KEEP {
            st.trim_index = st.durable_index - LOG_KEEP;
            to_raft(Input::TrimMemory(st.trim_index));
        }
        Ok(())
    }
}

/// Applies one request. Client-visible failures are returned as `Ok((Err(..), _))`; only
/// storage failures abort the batch. Also returns the watch events of the new revision.
pub(super) fn apply_one(
    b: &mut Batch<'_>,
    req: Option<Request>,
    lessor: &Lessor,
    alarms: &Alarms,
) -> Result<(ApplyResult, Vec<Event>), MvccError> {
    let storage = |e: crate::backend::BackendError| MvccError::Backend(e);
    // With NOSPACE raised, writes that could grow the store are refused (etcd's capped applier).
    let nospace = alarms.has(AlarmType::Nospace);
    let mut events = Vec::new();
    let out = match req {
        Some(Request::Put(_)) if nospace => Err(EtcdError::NoSpace),
        Some(Request::Txn(t)) if nospace && alarm::txn_cost(&t) > 0 => Err(EtcdError::NoSpace),
        Some(Request::LeaseGrant(_)) if nospace => Err(EtcdError::NoSpace),
        Some(Request::Put(p)) => {
            let mut t = b.txn();
            let r = apply::apply_put(&mut t, &p, lessor);
            events = t.end();
            r.map(ApplyResponse::Put)
        }
        Some(Request::DeleteRange(d)) => {
            let mut t = b.txn();
            let r = apply::delete_range(&mut t, &d);
            events = t.end();
            r.map(ApplyResponse::DeleteRange)
        }
        Some(Request::Txn(tr)) => {
            let mut t = b.txn();
            let r = apply::txn_write(&mut t, &tr, lessor);
            events = t.end();
            r.map(ApplyResponse::Txn)
        }
        Some(Request::Compaction(c)) => match b.compact(c.revision) {
            Ok(()) => Ok(ApplyResponse::Compaction(CompactionResponse {
                header: Some(ResponseHeader {
                    revision: b.rev(),
                    ..Default::default()
                }),
            })),
            Err(MvccError::Backend(e)) => return Err(MvccError::Backend(e)),
            Err(e) => Err(EtcdError::from(e)),
        },
        Some(Request::LeaseGrant(g)) => {
            let granted = lessor.grant(b.backend_tx(), g.id, g.ttl).map_err(storage)?;
            granted.map(|ttl| {
                ApplyResponse::LeaseGrant(LeaseGrantResponse {
                    header: Some(ResponseHeader {
                        revision: b.rev(),
                        ..Default::default()
                    }),
                    id: g.id,
                    ttl,
                    error: String::new(),
                })
            })
        }
        Some(Request::LeaseRevoke(r)) => match lessor.keys(r.id) {
            None => Err(EtcdError::LeaseNotFound),
            Some(keys) => {
                let mut t = b.txn();
                for k in &keys {
                    t.delete_range(k, b"")?;
                }
                events = t.end();
                lessor.remove(b.backend_tx(), r.id).map_err(storage)?;
                Ok(ApplyResponse::LeaseRevoke(LeaseRevokeResponse {
                    header: Some(ResponseHeader {
                        revision: b.rev(),
                        ..Default::default()
                    }),
                }))
            }
        },
        Some(Request::LeaseCheckpoint(c)) => {
            for cp in &c.checkpoints {
                lessor
                    .checkpoint(b.backend_tx(), cp.id, cp.remaining_ttl)
                    .map_err(storage)?;
            }
            Ok(ApplyResponse::Members(Vec::new()))
        }
        Some(Request::Alarm(a)) => {
            let resp = alarms.apply(b.backend_tx(), &a).map_err(storage)?;
            Ok(ApplyResponse::Alarm(resp))
        }
        Some(Request::Range(_))
        | Some(Request::MemberUpdate(_))
        | Some(Request::MemberAttributes(_))
        | None => Err(EtcdError::NotCapable),
    };
    match out {
        Err(EtcdError::Internal(e)) => {
            Err(MvccError::Backend(crate::backend::BackendError::Storage(e)))
        }
        other => Ok((other, events)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, LeaseRevokeRequest, PutRequest, TxnRequest,
    };

    fn entry(index: u64, req: Option<Request>) -> ::raft::eraftpb::Entry {
        let mut e = ::raft::eraftpb::Entry::default();
        e.index = index;
        if let Some(r) = req {
            let msg = InternalRaftRequest {
                id: index,
                origin: 1,
                request: Some(r),
            };
            e.data = msg.encode_to_vec().into();
        }
        e
    }

    fn put(index: u64) -> ::raft::eraftpb::Entry {
        entry(
            index,
            Some(Request::Put(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        )
    }

    /// Only puts (bounded work) are applied on the Raft thread; anything that can touch many
    /// keys, a membership change, a batch that is too large, or a batch due for the backend
    /// fsync goes to the apply thread.
    #[test]
    fn inline_apply_takes_only_small_batches_of_puts() {
        let fresh = ApplyState {
            durable_index: 0,
            last_sync: Instant::now(),
            snap_index: 0,
            trim_index: 0,
        };
        let mut conf = entry(3, None);
        conf.set_entry_type(::raft::eraftpb::EntryType::EntryConfChange);
        let many: Vec<_> = (1..=INLINE_APPLY_MAX as u64 + 1).map(put).collect();
        let cases: Vec<(&str, Vec<::raft::eraftpb::Entry>, bool)> = vec![
            ("one put", vec![put(1)], true),
            (
                "empty entry and puts",
                vec![entry(1, None), put(2), put(3)],
                true,
            ),
            (
                "INLINE_APPLY_MAX puts",
                many[..INLINE_APPLY_MAX].to_vec(),
                true,
            ),
            ("one put too many", many.clone(), false),
            (
                "delete-range",
                vec![entry(
                    1,
                    Some(Request::DeleteRange(DeleteRangeRequest::default())),
                )],
                false,
            ),
            (
                "txn",
                vec![put(1), entry(2, Some(Request::Txn(TxnRequest::default())))],
                false,
            ),
            (
                "compaction",
                vec![entry(
                    1,
                    Some(Request::Compaction(CompactionRequest::default())),
                )],
                false,
            ),
            (
                "lease revoke",
                vec![entry(
                    1,
                    Some(Request::LeaseRevoke(LeaseRevokeRequest::default())),
                )],
                false,
            ),
            ("conf change", vec![put(1), put(2), conf], false),
            (
                "due for the backend fsync",
                vec![put(BACKEND_SYNC_ENTRIES)],
                false,
            ),
        ];
        for (what, entries, want) in cases {
            assert_eq!(ApplyQueue::inline_ok(&entries, &fresh), want, "{what}");
        }
        let stale = ApplyState {
            last_sync: Instant::now() - BACKEND_SYNC_INTERVAL * 2,
            ..fresh
        };
        assert!(
            !ApplyQueue::inline_ok(&[put(1)], &stale),
            "backend fsync due by time"
        );
    }
}
