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

pub mod storage;
pub mod wal;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, SnapshotMetadata};
use raft::{RawNode, StateRole};
use tokio::sync::oneshot;

use crate::error::EtcdError;
use storage::LogStorage;
use wal::{Wal, WalError};

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
}

/// Committed entries on their way to the apply loop.
pub type Committed = Vec<Entry>;

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
    /// Index already applied to the backend.
    pub applied: u64,
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

/// Opens or creates the WAL under `wal_dir`. A new WAL starts with `voters` as the
/// configuration. Returns the WAL and the log storage rebuilt from it.
pub fn open_log(wal_dir: &std::path::Path, voters: &[u64], applied: u64) -> Result<(Wal, LogStorage), RaftError> {
    if Wal::exists(wal_dir) {
        let (wal, mut rec) = Wal::open(wal_dir)?;
        // Entries the backend applied were committed, even if the commit index in the last
        // persisted hard state lags behind (it is not fsynced on every change).
        let last = rec.snap.index + rec.entries.len() as u64;
        if rec.hard_state.commit < applied.min(last) {
            rec.hard_state.commit = applied.min(last);
        }
        Ok((wal, LogStorage::recovered(rec.snap, rec.hard_state, rec.entries)))
    } else {
        let mut snap = SnapshotMetadata::default();
        snap.set_conf_state(ConfState::from((voters.to_vec(), vec![])));
        let hs = HardState::default();
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
    apply_tx: Sender<Committed>,
    tick: Duration,
    /// ReadIndex requests waiting for their read state, by context.
    pending_reads: HashMap<u64, Vec<oneshot::Sender<Result<u64, EtcdError>>>>,
    next_read_ctx: u64,
}

impl Driver {
    /// Builds the driver over a recovered log.
    pub fn new(
        cfg: &DriverConfig,
        wal: Wal,
        storage: LogStorage,
        status: Arc<RaftStatus>,
        apply_tx: Sender<Committed>,
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
        status.term.store(storage.hard_state().term, Ordering::SeqCst);
        status.commit.store(storage.hard_state().commit, Ordering::SeqCst);
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
            apply_tx,
            tick: cfg.tick,
            pending_reads: HashMap::new(),
            next_read_ctx: 1,
        })
    }

    /// Runs until every input sender is dropped or storage fails.
    pub fn run(mut self, rx: Receiver<Input>) -> Result<(), RaftError> {
        let mut next_tick = Instant::now() + self.tick;
        let result = loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut reads = Vec::new();
            match rx.recv_timeout(wait) {
                Ok(input) => {
                    self.handle(input, &mut reads);
                    // Take everything already queued: it all shares the next fsync.
                    for input in rx.try_iter().take(8192) {
                        self.handle(input, &mut reads);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            }
            if !reads.is_empty() {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                self.node.read_index(ctx.to_be_bytes().to_vec());
                self.pending_reads.insert(ctx, reads);
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + self.tick;
            }
            if let Err(e) = self.on_ready() {
                break Err(e);
            }
        };
        self.status.stopped.store(true, Ordering::SeqCst);
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
            Input::Compact(index) => {
                if let Err(e) = self.compact(index) {
                    tracing::error!(error = %e, "failed to compact the raft log");
                }
            }
        }
    }

    fn compact(&mut self, index: u64) -> Result<(), RaftError> {
        let index = index.min(self.storage.last());
        if let Some(meta) = self.storage.compact(index) {
            let hs = self.storage.hard_state();
            self.wal.rotate(&meta, &hs, &self.storage.entries_after_snapshot())?;
            tracing::info!(index, "compacted raft log");
        }
        Ok(())
    }

    fn committed(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for e in &entries {
            if e.get_entry_type() != EntryType::EntryNormal {
                tracing::warn!(index = e.index, "membership changes are not supported yet; entry skipped");
            }
        }
        if let Some(last) = entries.last() {
            self.status.commit.fetch_max(last.index, Ordering::SeqCst);
        }
        let _ = self.apply_tx.send(entries);
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        // Single-member for now: there are no peers to send to.
        drop(rd.take_messages());
        if let Some(ss) = rd.ss() {
            let leader = if ss.raft_state == StateRole::Leader { self.node.raft.id } else { ss.leader_id };
            let prev = self.status.leader.swap(leader, Ordering::SeqCst);
            if prev != leader && leader != 0 {
                self.status.leader_changes.fetch_add(1, Ordering::SeqCst);
                tracing::info!(leader = format!("{leader:x}"), "elected leader");
            }
        }
        self.committed(rd.take_committed_entries());
        for rs in rd.take_read_states() {
            let mut ctx = [0u8; 8];
            if rs.request_ctx.len() == 8 {
                ctx.copy_from_slice(&rs.request_ctx);
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
        drop(rd.take_persisted_messages());
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.storage.hard_state();
            hs.commit = commit;
            self.storage.set_hard_state(hs);
        }
        drop(light.take_messages());
        self.committed(light.take_committed_entries());
        self.node.advance_apply();
        Ok(())
    }
}
