//! The member: bootstraps or recovers its state, runs the Raft driver and the apply loop, and
//! offers the API layer two primitives: `propose` (a write, answered once applied) and
//! `read_barrier` (linearizable reads through ReadIndex).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tokio::sync::{oneshot, watch};

use crate::alarm::{self, Alarms};
use crate::apply;
use crate::backend::Backend;
use crate::lease::Lessor;
use crate::watch::WatchHub;
use crate::config::{ClusterState, Config};
use crate::error::EtcdError;
use crate::membership::{Cluster, MembershipError};
use crate::mvcc::{Batch, KvStore, MvccError};
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionResponse, DeleteRangeResponse,
    InternalRaftRequest, LeaseGrantResponse, LeaseRevokeResponse, PutResponse, ResponseHeader,
    TxnResponse, alarm_request::AlarmAction, internal_raft_request::Request,
};
use crate::proto::mvccpb::Event;
use crate::raft::{self, Committed, DriverConfig, Input, RaftStatus};

/// How long a client request may wait for Raft before `etcdserver: request timed out`.
const REQUEST_TIMEOUT_BASE: Duration = Duration::from_secs(5);
/// Backend commits are fsynced at least this often (etcd's batch interval).
const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// ... or after this many applied entries.
const BACKEND_SYNC_ENTRIES: u64 = 10_000;

/// The result of applying one request.
#[derive(Debug, Clone)]
pub enum ApplyResponse {
    /// Put.
    Put(PutResponse),
    /// DeleteRange.
    DeleteRange(DeleteRangeResponse),
    /// Txn.
    Txn(TxnResponse),
    /// Compaction.
    Compaction(CompactionResponse),
    /// LeaseGrant.
    LeaseGrant(LeaseGrantResponse),
    /// LeaseRevoke.
    LeaseRevoke(LeaseRevokeResponse),
    /// Alarm.
    Alarm(AlarmResponse),
}

type ApplyResult = Result<ApplyResponse, EtcdError>;

/// The Raft driver's input, shared so that `stop` can close it for everyone at once.
type RaftSender = Arc<Mutex<Option<mpsc::Sender<Input>>>>;

/// Errors while starting a member.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad cluster configuration.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Storage could not be opened.
    #[error("failed to open the backend: {0}")]
    Mvcc(#[from] MvccError),
    /// The WAL or Raft failed.
    #[error(transparent)]
    Raft(#[from] raft::RaftError),
    /// Something else about the data directory.
    #[error("failed to prepare data dir {path}: {reason}")]
    DataDir {
        /// The data dir.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One etcd member.
pub struct EtcdServer {
    cfg: Config,
    store: Arc<KvStore>,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    hub: Arc<WatchHub>,
    cluster: Arc<RwLock<Cluster>>,
    member_id: u64,
    raft_tx: RaftSender,
    status: Arc<RaftStatus>,
    waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>>,
    applied: watch::Receiver<u64>,
    next_id: AtomicU64,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer").field("member_id", &format_args!("{:x}", self.member_id)).finish()
    }
}

impl EtcdServer {
    /// Opens the data dir (bootstrapping a new member if it is empty) and starts Raft and the
    /// apply loop.
    pub fn start(cfg: Config) -> Result<Arc<Self>, StartError> {
        let member_dir = cfg.data_dir.join("member");
        let wal_dir = member_dir.join("wal");
        let db_path = member_dir.join("snap").join("db");
        let existing = raft::wal::Wal::exists(&wal_dir);
        if !existing && cfg.initial_cluster_state == ClusterState::Existing {
            return Err(StartError::DataDir {
                path: cfg.data_dir.display().to_string(),
                reason: "joining an existing cluster (--initial-cluster-state=existing) needs the peer transport, which is not supported yet".into(),
            });
        }
        let backend = Backend::open(&db_path).map_err(MvccError::from)?;
        let cluster = match Cluster::load(&backend)? {
            Some(c) if existing => {
                tracing::info!(cluster_id = format!("{:x}", c.id), "restarting member; --initial-cluster flags are ignored");
                c
            }
            _ => {
                let c = Cluster::from_initial(&cfg.initial_cluster, &cfg.initial_cluster_token)?;
                c.save(&backend)?;
                c
            }
        };
        let member_id = match cluster.members.values().find(|m| m.name == cfg.name) {
            Some(m) if existing => m.id,
            _ => cluster.local_member(&cfg.name, &cfg.advertise_peer_urls)?,
        };
        // Publish this member's client URLs (etcd does this through Raft once started).
        let mut cluster = cluster;
        if let Some(m) = cluster.members.get_mut(&member_id) {
            if m.client_ur_ls != cfg.advertise_client_urls {
                m.client_ur_ls = cfg.advertise_client_urls.clone();
                cluster.save(&backend)?;
            }
        }
        let store = Arc::new(KvStore::open(backend)?);
        let lessor = Arc::new(Lessor::new(min_lease_ttl(&cfg)));
        let alarms = Arc::new(Alarms::default());
        {
            let view = store.read()?;
            let live = view.all_live()?;
            lessor.recover(view.backend_tx(), &live).map_err(MvccError::from)?;
            alarms.recover(view.backend_tx()).map_err(MvccError::from)?;
        }
        let hub = WatchHub::start(store.clone(), cfg.watch_progress_notify_interval);
        let (applied_index, _) = store.applied();
        let (wal, storage) = raft::open_log(&wal_dir, &cluster.voters(), applied_index)?;
        let status = Arc::new(RaftStatus::default());
        let (apply_tx, apply_rx) = mpsc::channel::<Committed>();
        let (raft_tx, raft_rx) = mpsc::channel::<Input>();
        let driver_cfg = DriverConfig { id: member_id, tick: cfg.heartbeat, election_ticks: cfg.election_ticks, applied: applied_index };
        let driver = raft::Driver::new(&driver_cfg, wal, storage, status.clone(), apply_tx)?;
        let (applied_tx, applied_rx) = watch::channel(applied_index);
        let server = Arc::new(Self {
            cfg,
            store: store.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            hub: hub.clone(),
            cluster: Arc::new(RwLock::new(cluster)),
            member_id,
            raft_tx: Arc::new(Mutex::new(Some(raft_tx))),
            status: status.clone(),
            waiters: Arc::default(),
            applied: applied_rx,
            next_id: AtomicU64::new(initial_request_id(member_id)),
            threads: Mutex::default(),
        });
        let raft_thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                if let Err(e) = driver.run(raft_rx) {
                    tracing::error!(error = %e, "raft stopped; the member can no longer serve writes");
                }
            })
            .map_err(|e| StartError::DataDir { path: String::new(), reason: e.to_string() })?;
        let applier = Applier {
            store,
            lessor,
            alarms,
            hub,
            waiters: server.waiters.clone(),
            member_id,
            applied_tx,
            raft_tx: server.raft_tx.clone(),
            snapshot_count: server.cfg.snapshot_count,
            status,
        };
        let apply_thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || applier.run(apply_rx))
            .map_err(|e| StartError::DataDir { path: String::new(), reason: e.to_string() })?;
        server.threads.lock().unwrap_or_else(|p| p.into_inner()).extend([raft_thread, apply_thread]);
        Ok(server)
    }

    /// Stops Raft and the apply loop, waiting for the last backend commit.
    pub fn stop(&self) {
        self.hub.stop();
        self.raft_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The MVCC store.
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// The lessor.
    pub fn lessor(&self) -> &Lessor {
        &self.lessor
    }

    /// The active alarms.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// The watch hub.
    pub fn hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }

    /// Whether this member is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.status.leader.load(Ordering::SeqCst) == self.member_id
    }

    /// A fresh unique ID (etcd's request ID generator; also used for lease IDs).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// etcd's quota check before a write that adds `cost` bytes: if the backend would exceed
    /// `--quota-backend-bytes`, raise the NOSPACE alarm and refuse the write.
    pub async fn check_quota(&self, cost: usize) -> Result<(), EtcdError> {
        let size = self.store.backend().size() as i64;
        if size + (cost as i64) < self.cfg.quota_backend_bytes {
            return Ok(());
        }
        if !self.alarms.has(AlarmType::Nospace) {
            let req = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.member_id,
                alarm: AlarmType::Nospace as i32,
            };
            if let Err(e) = self.propose(Request::Alarm(req)).await {
                tracing::warn!(error = %e, "failed to raise the NOSPACE alarm");
            }
        }
        Err(EtcdError::NoSpace)
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The cluster as this member knows it.
    pub fn cluster(&self) -> Cluster {
        self.cluster.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Raft counters.
    pub fn raft_status(&self) -> &RaftStatus {
        &self.status
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    fn request_timeout(&self) -> Duration {
        REQUEST_TIMEOUT_BASE + self.cfg.heartbeat * (2 * self.cfg.election_ticks as u32)
    }

    /// A response header for this member, at `revision` (or the current one if 0).
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.cluster.read().unwrap_or_else(|p| p.into_inner()).id;
        h.member_id = self.member_id;
        h.raft_term = self.status.term.load(Ordering::SeqCst);
        if h.revision == 0 {
            h.revision = self.store.current_rev();
        }
    }

    fn send(&self, input: Input) -> Result<(), EtcdError> {
        let guard = self.raft_tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.as_ref().ok_or(EtcdError::Stopped)?;
        tx.send(input).map_err(|_| EtcdError::Stopped)
    }

    /// Replicates `req` through Raft and waits until it is applied here.
    pub async fn propose(&self, req: Request) -> Result<ApplyResponse, EtcdError> {
        if self.status.stopped.load(Ordering::SeqCst) {
            return Err(EtcdError::Stopped);
        }
        let id = self.next_id();
        let msg = InternalRaftRequest { id, origin: self.member_id, request: Some(req) };
        let data = msg.encode_to_vec();
        if data.len() > self.cfg.max_request_bytes as usize {
            return Err(EtcdError::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let (failed_tx, failed_rx) = oneshot::channel();
        if let Err(e) = self.send(Input::Propose { data, failed: failed_tx }) {
            self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(e);
        }
        let outcome = tokio::time::timeout(self.request_timeout(), async {
            tokio::select! {
                r = rx => r.unwrap_or(Err(EtcdError::Stopped)),
                Ok(e) = failed_rx => Err(e),
            }
        })
        .await;
        match outcome {
            Ok(r) => {
                if r.is_err() {
                    self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                }
                r
            }
            Err(_) => {
                self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                Err(EtcdError::Timeout)
            }
        }
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex),
    /// so a read that follows is linearizable.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::ReadIndex(tx))?;
        let deadline = self.request_timeout();
        let index = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(EtcdError::Stopped),
            Err(_) => return Err(EtcdError::Timeout),
        };
        let mut applied = self.applied.clone();
        match tokio::time::timeout(deadline, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }
}

/// etcd's minimum lease TTL: ceil(1.5 × election timeout), in seconds.
fn min_lease_ttl(cfg: &Config) -> i64 {
    let ticks = (3 * cfg.election_ticks as u32) / 2;
    let d = cfg.heartbeat * ticks;
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
}

fn initial_request_id(member_id: u64) -> u64 {
    // etcd's idutil layout: 2 bytes of member ID, 5 bytes of milliseconds, 1 byte counter.
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    ((member_id & 0xffff) << 48) | ((ms & 0xff_ffff_ffff) << 8)
}

/// The apply loop: applies committed entries to the MVCC store in log order.
struct Applier {
    store: Arc<KvStore>,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    hub: Arc<WatchHub>,
    waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>>,
    member_id: u64,
    applied_tx: watch::Sender<u64>,
    raft_tx: RaftSender,
    snapshot_count: u64,
    status: Arc<RaftStatus>,
}

impl Applier {
    fn run(self, rx: mpsc::Receiver<Committed>) {
        let (mut durable_index, _) = self.store.applied();
        let mut last_sync = Instant::now();
        let mut snap_index = durable_index;
        loop {
            let mut entries = match rx.recv_timeout(BACKEND_SYNC_INTERVAL) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            for more in rx.try_iter().take(64) {
                entries.extend(more);
            }
            let (applied, _) = self.store.applied();
            entries.retain(|e| e.index > applied);
            let dirty = applied > durable_index;
            if entries.is_empty() && !(dirty && last_sync.elapsed() >= BACKEND_SYNC_INTERVAL) {
                continue;
            }
            let last = entries.last().map(|e| (e.index, e.term)).unwrap_or(self.store.applied());
            let durable = last_sync.elapsed() >= BACKEND_SYNC_INTERVAL
                || last.0 - durable_index >= BACKEND_SYNC_ENTRIES;
            let mut published: Vec<(i64, Vec<Event>)> = Vec::new();
            let result = self.store.write_batch(last.0, last.1, durable, |b| {
                let mut outcomes = Vec::with_capacity(entries.len());
                for e in &entries {
                    if e.data.is_empty() {
                        continue;
                    }
                    let req = match InternalRaftRequest::decode(e.data.as_ref()) {
                        Ok(r) => r,
                        Err(err) => {
                            tracing::error!(index = e.index, error = %err, "skipping undecodable raft entry");
                            continue;
                        }
                    };
                    let (outcome, events) = apply_one(b, req.request, &self.lessor, &self.alarms)?;
                    if !events.is_empty() {
                        self.lessor.on_events(&events);
                        published.push((b.rev(), events));
                    }
                    if req.origin == self.member_id {
                        outcomes.push((req.id, outcome));
                    }
                }
                Ok(outcomes)
            });
            let outcomes = match result {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "failed to apply committed entries; stopping the member");
                    self.status.stopped.store(true, Ordering::SeqCst);
                    break;
                }
            };
            if durable {
                durable_index = last.0;
                last_sync = Instant::now();
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
            if durable && durable_index >= snap_index + self.snapshot_count {
                snap_index = durable_index;
                if let Some(tx) = self.raft_tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.send(Input::Compact(durable_index));
                }
            }
        }
        // Make everything applied durable before exiting.
        let (index, term) = self.store.applied();
        if let Err(e) = self.store.write_batch(index, term, true, |_| Ok(())) {
            tracing::error!(error = %e, "failed to sync the backend on shutdown");
        }
    }
}

/// Applies one request. Client-visible failures are returned as `Ok((Err(..), _))`; only
/// storage failures abort the batch. Also returns the watch events of the new revision.
fn apply_one(
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
                header: Some(ResponseHeader { revision: b.rev(), ..Default::default() }),
            })),
            Err(MvccError::Backend(e)) => return Err(MvccError::Backend(e)),
            Err(e) => Err(EtcdError::from(e)),
        },
        Some(Request::LeaseGrant(g)) => {
            let granted = lessor.grant(b.backend_tx(), g.id, g.ttl).map_err(storage)?;
            granted.map(|ttl| {
                ApplyResponse::LeaseGrant(LeaseGrantResponse {
                    header: Some(ResponseHeader { revision: b.rev(), ..Default::default() }),
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
                    if let Err(e) = t.delete_range(k, b"") {
                        return Err(e);
                    }
                }
                events = t.end();
                lessor.remove(b.backend_tx(), r.id).map_err(storage)?;
                Ok(ApplyResponse::LeaseRevoke(LeaseRevokeResponse {
                    header: Some(ResponseHeader { revision: b.rev(), ..Default::default() }),
                }))
            }
        },
        Some(Request::Alarm(a)) => {
            let resp = alarms.apply(b.backend_tx(), &a).map_err(storage)?;
            Ok(ApplyResponse::Alarm(resp))
        }
        Some(Request::Range(_)) | None => Err(EtcdError::NotCapable),
    };
    match out {
        Err(EtcdError::Internal(e)) => Err(MvccError::Backend(crate::backend::BackendError::Storage(e))),
        other => Ok((other, events)),
    }
}
