//! Consensus: raft-rs's state machine (the core, no I/O) driven by one thread that owns the
//! write-ahead log (the I/O driver).
//!
//! The driver's loop handles each raft-rs `Ready` in the order raft-rs requires:
//! 1. send messages that may go out before persisting;
//! 2. hand committed entries to the apply loop;
//! 3. resolve ReadIndex requests;
//! 4. append entries and the hard state to the WAL with a single fsync (group commit: every
//!    proposal that arrived since the last batch shares it);
//! 5. send messages that had to wait for persistence;
//! 6. advance, then hand over entries that became committed by that persistence.

pub(crate) mod decode;
pub(crate) mod dial;
pub(crate) mod force_new;
#[cfg(test)]
mod fuzz;
pub(crate) mod input;
pub(crate) mod peer_io;
pub(crate) mod storage;
pub(crate) mod stream;
pub(crate) mod transport;
pub(crate) mod wal;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use crate::error::EtcdError;
use input::RaftRx;
use peer_io::PeerIo;
use storage::LogStorage;
use transport::Transport;
use wal::{Wal, WalError};

/// The longest time between two rounds of peer stream upkeep.
const MAX_UPKEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Inputs to the Raft driver.
pub enum Input {
    /// Propose an encoded request. `failed` is told if Raft refused it outright.
    Propose {
        /// Encoded `InternalRaftRequest`.
        data: Vec<u8>,
        /// Receives the error if the proposal was dropped.
        failed: oneshot::Sender<EtcdError>,
    },
    /// Ask for a linearizable read index.
    ReadIndex(oneshot::Sender<Result<u64, EtcdError>>),
    /// A message from a peer.
    Step(Box<Message>),
    /// The backend durably holds everything up to this index: compact the log.
    Compact(u64),
    /// The backend durably holds everything up to this index: drop those entries from memory
    /// (the WAL keeps them until the next `Compact`). Followers further behind get a snapshot.
    TrimMemory(u64),
    /// Propose a membership change. `failed` is told if Raft refused it outright.
    ProposeConfChange {
        /// The change (its context carries the member and the waiter).
        cc: ConfChange,
        /// Receives the error if the proposal was dropped.
        failed: oneshot::Sender<EtcdError>,
    },
    /// A peer could not be reached.
    Unreachable(u64),
    /// Sending a snapshot to `to` finished.
    SnapshotStatus {
        /// The peer.
        to: u64,
        /// Whether it was delivered.
        ok: bool,
    },
    /// Transfer leadership to this member.
    TransferLeader(u64),
    /// Report replication progress (leader only has followers' progress).
    Progress(oneshot::Sender<Progress>),
    /// A peer says this member was removed from the cluster.
    Removed,
    /// A peer's Raft stream to this member, its hello accepted.
    Accepted {
        /// The peer.
        from: u64,
        /// The socket (in non-blocking mode) and its TLS state.
        stream: stream::RaftStream,
    },
    /// This member's Raft stream to a peer is open.
    Connected {
        /// The peer.
        to: u64,
        /// The generation of the peer's URLs it was dialed with.
        generation: u64,
        /// The socket (in non-blocking mode) and its TLS state.
        stream: stream::RaftStream,
    },
    /// Opening the Raft stream to a peer failed.
    DialFailed {
        /// The peer.
        to: u64,
    },
    /// A peer's URLs changed or it left the cluster: drop its stream.
    PeerReset(u64),
}

/// Replication progress as the leader sees it.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Current leader.
    pub leader: u64,
    /// Commit index.
    pub commit: u64,
    /// `(member, matched index, recently active)` for every member (leader only).
    pub peers: Vec<(u64, u64, bool)>,
}

/// What the Raft driver hands the apply loop, in log order.
pub enum ApplyMsg {
    /// Committed entries.
    Entries(Vec<Entry>),
    /// Replace the backend with the one received with a snapshot, then acknowledge.
    Install {
        /// Snapshot metadata.
        meta: SnapshotMetadata,
        /// The received backend file.
        path: std::path::PathBuf,
        /// Acknowledgement.
        done: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Prepare an outgoing snapshot of the backend for followers that need one.
    MakeSnapshot,
}

/// Where the driver hands what the apply loop must do, in log order. The receiving side may
/// apply small batches of entries right away on the calling (Raft) thread.
pub trait ApplySink: Send + Sync {
    /// Hands over `msg`; messages are applied in the order they are sent.
    fn send(&self, msg: ApplyMsg);
    /// The driver has stopped: nothing more will be sent.
    fn close(&self);
}

/// Counters and state the rest of the server reads without talking to the driver.
#[derive(Debug, Default)]
pub struct RaftStatus {
    /// Current term.
    pub term: AtomicU64,
    /// Current leader ID (0 if none).
    pub leader: AtomicU64,
    /// Index of the last log entry.
    pub last_index: AtomicU64,
    /// Commit index.
    pub commit: AtomicU64,
    /// Number of leader changes seen.
    pub leader_changes: AtomicU64,
    /// Set when the driver stopped (shutdown or a fatal storage error).
    pub stopped: AtomicBool,
    /// Set when this member was removed from the cluster.
    pub removed: AtomicBool,
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This member's Raft ID (its etcd member ID).
    pub id: u64,
    /// Time per tick (etcd's heartbeat interval).
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Index raft-rs may consider applied: the WAL's snapshot index. Entries after it are
    /// redelivered on restart; the apply loop skips those the backend already holds, while
    /// conf changes are re-applied to raft-rs.
    pub applied: u64,
    /// Directory for snapshot files.
    pub snap_dir: std::path::PathBuf,
}

/// Errors that stop the driver.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// raft-rs refused the configuration or state.
    #[error("failed to start raft: {0}")]
    Raft(#[from] raft::Error),
    /// Installing a snapshot failed.
    #[error("failed to install snapshot: {0}")]
    Snapshot(String),
    /// The driver's poll could not be set up.
    #[error("failed to set up raft I/O: {0}")]
    Io(#[from] std::io::Error),
    /// `--force-new-cluster` cannot start a cluster from this data.
    #[error("--force-new-cluster: {0}")]
    ForceNewCluster(String),
}

/// A raft-rs log sink that forwards to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let msg = record.msg().to_string();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}"),
            _ => tracing::debug!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}

/// Opens or creates the WAL under `wal_dir`. A new WAL for a bootstrapping member starts
/// with a snapshot at index 1 whose configuration is `voters`, so members added later always
/// receive a snapshot (and with it the configuration). A joining member passes no voters and
/// starts empty. Returns the WAL and the log storage rebuilt from it.
pub fn open_log(
    wal_dir: &std::path::Path,
    voters: &[u64],
    applied: u64,
) -> Result<(Wal, LogStorage), RaftError> {
    if Wal::exists(wal_dir) {
        let (wal, mut rec) = Wal::open(wal_dir)?;
        // Entries the backend applied were committed, even if the commit index in the last
        // persisted hard state lags behind (it is not fsynced on every change).
        let last = rec.snap.index + rec.entries.len() as u64;
        if rec.hard_state.commit < applied.min(last) {
            rec.hard_state.commit = applied.min(last);
        }
        Ok((
            wal,
            LogStorage::recovered(rec.snap, rec.hard_state, rec.entries),
        ))
    } else {
        let mut snap = SnapshotMetadata::default();
        let mut hs = HardState::default();
        if !voters.is_empty() {
            snap.set_conf_state(ConfState::from((voters.to_vec(), vec![])));
            snap.index = 1;
            snap.term = 1;
            hs.term = 1;
            hs.commit = 1;
        }
        let wal = Wal::create(wal_dir, &snap, &hs)?;
        Ok((wal, LogStorage::recovered(snap, hs, Vec::new())))
    }
}

/// The Raft driver: owns the raft-rs node and the WAL.
pub struct Driver {
    node: RawNode<LogStorage>,
    storage: LogStorage,
    wal: Wal,
    status: Arc<RaftStatus>,
    apply: Arc<dyn ApplySink>,
    transport: Arc<Transport>,
    io: PeerIo,
    snap_dir: std::path::PathBuf,
    tick: Duration,
    /// ReadIndex requests waiting for their read state, by context.
    pending_reads: HashMap<u64, Vec<oneshot::Sender<Result<u64, EtcdError>>>>,
    next_read_ctx: u64,
}

impl Driver {
    /// Builds the driver over a recovered log, taking its inputs from `rx`.
    pub fn new(
        cfg: &DriverConfig,
        wal: Wal,
        storage: LogStorage,
        status: Arc<RaftStatus>,
        apply: Arc<dyn ApplySink>,
        transport: Arc<Transport>,
        rx: RaftRx,
    ) -> Result<Self, RaftError> {
        let rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: 1,
            applied: cfg.applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 512,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => cfg.id));
        let mut node = RawNode::new(&rc, storage.clone(), &logger)?;
        status.last_index.store(storage.last(), Ordering::SeqCst);
        status
            .term
            .store(storage.hard_state().term, Ordering::SeqCst);
        status
            .commit
            .store(storage.hard_state().commit, Ordering::SeqCst);
        let cs = storage.conf_state();
        if cs.voters == [cfg.id] && cs.learners.is_empty() {
            // A one-member cluster needs no election timeout to find out it wins.
            node.campaign()?;
        }
        Ok(Self {
            node,
            storage,
            wal,
            status,
            apply,
            io: PeerIo::new(rx, transport.clone()),
            transport,
            snap_dir: cfg.snap_dir.clone(),
            tick: cfg.tick,
            pending_reads: HashMap::new(),
            next_read_ctx: 1,
        })
    }

    /// Runs until every input sender is dropped or storage fails.
    pub fn run(mut self) -> Result<(), RaftError> {
        let mut next_tick = Instant::now() + self.tick;
        // Stream upkeep (keep-alives, redials, idle checks) runs on its own clock: a long
        // heartbeat interval must not starve the streams' keep-alives.
        let upkeep = self.tick.min(MAX_UPKEEP_INTERVAL);
        let mut next_upkeep = Instant::now() + upkeep;
        let mut inputs = Vec::new();
        let result = loop {
            let wait = next_tick
                .min(next_upkeep)
                .saturating_duration_since(Instant::now());
            let mut reads = Vec::new();
            // Everything that arrived together shares the next fsync.
            if !self.io.wait(wait, &mut inputs) {
                break Ok(());
            }
            for input in inputs.drain(..) {
                self.handle(input, &mut reads);
            }
            if !reads.is_empty() {
                // The leader keys pending reads by context, so it must be unique cluster-wide:
                // this member's ID followed by a counter.
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                let mut bytes = self.node.raft.id.to_be_bytes().to_vec();
                bytes.extend_from_slice(&ctx.to_be_bytes());
                self.node.read_index(bytes);
                self.pending_reads.insert(ctx, reads);
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + self.tick;
            }
            if Instant::now() >= next_upkeep {
                self.io.maintain();
                next_upkeep = Instant::now() + upkeep;
            }
            if let Err(e) = self.on_ready() {
                break Err(e);
            }
        };
        self.status.stopped.store(true, Ordering::SeqCst);
        self.apply.close();
        for (_, waiters) in self.pending_reads.drain() {
            for w in waiters {
                let _ = w.send(Err(EtcdError::Stopped));
            }
        }
        result
    }

    fn handle(&mut self, input: Input, reads: &mut Vec<oneshot::Sender<Result<u64, EtcdError>>>) {
        match input {
            Input::Propose { data, failed } => {
                if let Err(e) = self.node.propose(vec![], data) {
                    let err = match e {
                        raft::Error::ProposalDropped => EtcdError::NoLeader,
                        other => EtcdError::Internal(format!("failed to propose: {other}")),
                    };
                    let _ = failed.send(err);
                }
            }
            Input::ReadIndex(done) => reads.push(done),
            Input::Step(m) => {
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!(error = %e, "dropped raft message");
                }
            }
            Input::TrimMemory(index) => {
                let index = index.min(self.storage.last());
                if self.storage.compact(index).is_some() {
                    tracing::debug!(index, "dropped applied raft entries from memory");
                }
            }
            Input::Compact(index) => {
                if let Err(e) = self.compact(index) {
                    tracing::error!(error = %e, "failed to compact the raft log");
                }
            }
            Input::ProposeConfChange { cc, failed } => {
                if let Err(e) = self.node.propose_conf_change(vec![], cc) {
                    let err = match e {
                        raft::Error::ProposalDropped => EtcdError::NoLeader,
                        other => EtcdError::Internal(format!(
                            "failed to propose a membership change: {other}"
                        )),
                    };
                    let _ = failed.send(err);
                }
            }
            Input::Unreachable(id) => self.node.report_unreachable(id),
            Input::SnapshotStatus { to, ok } => {
                let st = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, st);
            }
            Input::TransferLeader(to) => self.node.transfer_leader(to),
            Input::Removed => {
                if !self.status.removed.swap(true, Ordering::SeqCst) {
                    tracing::error!("the member has been permanently removed from the cluster");
                }
            }
            Input::Accepted { from, stream } => self.io.accepted(from, stream),
            Input::Connected {
                to,
                generation,
                stream,
            } => self.io.connected(to, generation, stream),
            Input::DialFailed { to } => self.io.dial_failed(to),
            Input::PeerReset(id) => self.io.reset(id),
            Input::Progress(done) => {
                let mut p = Progress {
                    leader: self.node.raft.leader_id,
                    commit: self.node.raft.raft_log.committed,
                    peers: Vec::new(),
                };
                if self.node.raft.state == StateRole::Leader {
                    for (id, pr) in self.node.raft.prs().iter() {
                        p.peers.push((
                            *id,
                            pr.matched,
                            pr.recent_active || *id == self.node.raft.id,
                        ));
                    }
                }
                let _ = done.send(p);
            }
        }
    }

    /// Sends messages: snapshots on the Tokio side with their file, the rest straight onto
    /// the peers' streams from this thread.
    fn send(&mut self, mut msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        msgs.retain_mut(|m| {
            if m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                self.transport.send_snapshot(std::mem::take(m));
                false
            } else {
                true
            }
        });
        self.io.send(msgs);
    }

    fn compact(&mut self, index: u64) -> Result<(), RaftError> {
        let index = index.min(self.storage.last());
        if let Some(meta) = self.storage.compact(index) {
            let hs = self.storage.hard_state();
            self.wal
                .rotate(&meta, &hs, &self.storage.entries_after_snapshot())?;
            tracing::info!(index, "compacted raft log");
        }
        Ok(())
    }

    fn committed(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for e in &entries {
            if e.get_entry_type() != EntryType::EntryConfChange {
                continue;
            }
            let cc = match decode::conf_change(&e.data) {
                Ok(cc) => cc,
                Err(err) => {
                    tracing::error!(index = e.index, error = %err, "undecodable conf change");
                    continue;
                }
            };
            match self.node.apply_conf_change(&cc) {
                Ok(cs) => self.storage.set_conf_state_at(e.index, cs),
                Err(err) => {
                    tracing::warn!(index = e.index, error = %err, "conf change not applied")
                }
            }
            if cc.get_change_type() == ConfChangeType::RemoveNode && cc.node_id == self.node.raft.id
            {
                tracing::error!("the member has been permanently removed from the cluster");
                self.status.removed.store(true, Ordering::SeqCst);
            }
        }
        if let Some(last) = entries.last() {
            self.status.commit.fetch_max(last.index, Ordering::SeqCst);
        }
        self.apply.send(ApplyMsg::Entries(entries));
    }

    /// Installs a snapshot received from the leader: the apply loop swaps in its backend
    /// first, so the WAL never claims more than the backend holds.
    fn install_snapshot(&mut self, meta: SnapshotMetadata) -> Result<(), RaftError> {
        let path = transport::incoming_snapshot(&self.snap_dir, meta.index);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.apply.send(ApplyMsg::Install {
            meta: meta.clone(),
            path,
            done: done_tx,
        });
        match done_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RaftError::Snapshot(e)),
            Err(_) => return Err(RaftError::Snapshot("apply loop stopped".into())),
        }
        self.storage.apply_snapshot(meta.clone());
        let hs = self.storage.hard_state();
        self.wal.rotate(&meta, &hs, &[])?;
        self.status.commit.fetch_max(meta.index, Ordering::SeqCst);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installed snapshot from leader"
        );
        Ok(())
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        self.send(rd.take_messages());
        if let Some(ss) = rd.ss() {
            let leader = if ss.raft_state == StateRole::Leader {
                self.node.raft.id
            } else {
                ss.leader_id
            };
            let prev = self.status.leader.swap(leader, Ordering::SeqCst);
            if prev != leader && leader != 0 {
                self.status.leader_changes.fetch_add(1, Ordering::SeqCst);
                tracing::info!(leader = format!("{leader:x}"), "elected leader");
            }
        }
        if !rd.snapshot().is_empty() {
            let meta = rd.snapshot().get_metadata().clone();
            self.install_snapshot(meta)?;
        }
        self.committed(rd.take_committed_entries());
        for rs in rd.take_read_states() {
            let mut ctx = [0u8; 8];
            if rs.request_ctx.len() == 16 {
                ctx.copy_from_slice(&rs.request_ctx[8..]);
            }
            if let Some(waiters) = self.pending_reads.remove(&u64::from_be_bytes(ctx)) {
                for w in waiters {
                    let _ = w.send(Ok(rs.index));
                }
            }
        }
        self.wal.save(rd.hs(), rd.entries())?;
        self.storage.append(rd.entries());
        if let Some(last) = rd.entries().last() {
            self.status.last_index.store(last.index, Ordering::SeqCst);
        }
        if let Some(hs) = rd.hs() {
            self.storage.set_hard_state(hs.clone());
            self.status.term.store(hs.term, Ordering::SeqCst);
        }
        self.send(rd.take_persisted_messages());
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.storage.hard_state();
            hs.commit = commit;
            self.storage.set_hard_state(hs);
        }
        self.send(light.take_messages());
        self.committed(light.take_committed_entries());
        self.node.advance_apply();
        if self.storage.take_wanted() {
            self.apply.send(ApplyMsg::MakeSnapshot);
        }
        Ok(())
    }
}
