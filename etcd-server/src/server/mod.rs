//! The member: bootstraps or recovers its state, runs the Raft driver and the apply loop, and
//! offers the API layer two primitives: `propose` (a write, answered once applied) and
//! `read_barrier` (linearizable reads through ReadIndex).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tokio::sync::{oneshot, watch};

use crate::alarm::{self, Alarms};
use crate::apply;
use crate::backend::Backend;
use crate::config::{ClusterState, Config};
use crate::error::EtcdError;
use crate::lease::Lessor;
use crate::membership::{Cluster, MembershipError};
use crate::mvcc::{Batch, KvStore, MvccError};
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionResponse, ConfChangeContext,
    DeleteRangeResponse, InternalRaftRequest, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    ResponseHeader, TxnResponse, alarm_request::AlarmAction, internal_raft_request::Request,
};
use crate::proto::mvccpb::Event;
use crate::raft::storage::LogStorage;
use crate::raft::transport::Transport;
use crate::raft::{self, ApplyMsg, ApplySink, DriverConfig, Input, RaftStatus};
use crate::tls::ReloadingTls;
use crate::watch::WatchHub;

mod apply_loop;
mod bootstrap;
mod lease_expiry;

use apply_loop::{Applier, ApplyQueue};
use bootstrap::*;

/// The peer TLS material shared by the transport and start-up.
pub type PeerTls = Arc<ReloadingTls>;
pub use lease_expiry::run_lease_expiry;

/// How long a client request may wait for Raft before `etcdserver: request timed out`.
const REQUEST_TIMEOUT_BASE: Duration = Duration::from_secs(5);
/// Backend commits are fsynced at least this often (etcd's batch interval).
const BACKEND_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// ... or after this many applied entries.
const BACKEND_SYNC_ENTRIES: u64 = 10_000;
/// Applied entries the in-memory Raft log keeps for followers that fall behind: twice etcd's
/// `SnapshotCatchUpEntries`. The rest, durable in the backend, is dropped from memory every
/// `LOG_TRIM_STEP` entries instead of waiting for `--snapshot-count` (which only decides when
/// the WAL is rewritten); a follower further behind receives a snapshot.
const LOG_KEEP: u64 = 10_000;
/// How many applied entries beyond `LOG_KEEP` accumulate before the in-memory log is trimmed.
const LOG_TRIM_STEP: u64 = 10_000;

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
    /// A membership change: the members after it.
    Members(Vec<crate::proto::etcdserverpb::Member>),
}

type ApplyResult = Result<ApplyResponse, EtcdError>;

/// The Raft driver's input, shared so that `stop` can close it for everyone at once.
type RaftSender = Arc<Mutex<Option<raft::input::RaftTx>>>;

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
    /// The data dir is empty but the cluster says this member already started: its data was
    /// lost. Starting would make it vote with an empty log; it must be removed and added again.
    #[error("member {id:x} has already been bootstrapped")]
    AlreadyBootstrapped {
        /// This member's ID.
        id: u64,
    },
    /// The data dir holds a Raft log but no backend (or one without the cluster): the
    /// member's state was lost while its log says it exists. Bootstrapping again would apply
    /// the log's tail to an empty store and diverge from the cluster.
    #[error(
        "the backend is lost: {wal} exists but {db} is missing or holds no cluster; restore \
         the member from a snapshot, or remove its data dir and add it to the cluster again"
    )]
    BackendLost {
        /// The WAL directory.
        wal: String,
        /// The backend file.
        db: String,
    },
    /// The data dir is empty and the running cluster no longer lists this member.
    #[error("{}", crate::membership::REMOVED_MESSAGE)]
    Removed,
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
    transport: Arc<Transport>,
    snap_dir: PathBuf,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("member_id", &format_args!("{:x}", self.member_id))
            .finish()
    }
}

impl EtcdServer {
    /// Opens the data dir (bootstrapping or joining a cluster if it is empty) and starts Raft
    /// and the apply loop. Must run inside a tokio runtime (the peer transport lives there);
    /// joining an existing cluster blocks on asking its members, so call it from a blocking
    /// task.
    pub fn start(cfg: Config, peer_tls: Option<PeerTls>) -> Result<Arc<Self>, StartError> {
        let member_dir = cfg.data_dir.join("member");
        let wal_dir = member_dir.join("wal");
        let snap_dir = member_dir.join("snap");
        let db_path = snap_dir.join("db");
        let existing = raft::wal::Wal::exists(&wal_dir);
        // The WAL is what says "this member exists" (as in etcd): a member with a WAL never
        // bootstraps again, whatever happened to its backend.
        let backend_lost = || StartError::BackendLost {
            wal: wal_dir.display().to_string(),
            db: db_path.display().to_string(),
        };
        if existing && !db_path.exists() {
            return Err(backend_lost());
        }
        let backend = Backend::open(&db_path).map_err(MvccError::from)?;
        let stored = Cluster::load(&backend)?;
        if existing && stored.is_none() {
            return Err(backend_lost());
        }
        let (cluster, member_id, voters) = match stored {
            Some(c) if existing => {
                tracing::info!(
                    cluster_id = format!("{:x}", c.id),
                    "restarting member; --initial-cluster flags are ignored"
                );
                let id = c
                    .members
                    .values()
                    .find(|m| {
                        m.name == cfg.name || m.peer_ur_ls == sorted(&cfg.advertise_peer_urls)
                    })
                    .map(|m| m.id)
                    .ok_or_else(|| StartError::DataDir {
                        path: cfg.data_dir.display().to_string(),
                        reason: format!(
                            "member {:?} is not in the cluster stored in the data dir",
                            cfg.name
                        ),
                    })?;
                (c, id, Vec::new())
            }
            _ if cfg.initial_cluster_state == ClusterState::Existing => {
                let c = join_existing(&cfg, peer_tls.as_ref())?;
                let id = c
                    .local_member(&cfg.name, &cfg.advertise_peer_urls)
                    .or_else(|_| {
                        c.members
                            .values()
                            .find(|m| m.peer_ur_ls == sorted(&cfg.advertise_peer_urls))
                            .map(|m| m.id)
                            .ok_or_else(|| MembershipError::NameNotInCluster {
                                name: cfg.name.clone(),
                            })
                    })?;
                // Listed with client URLs: it started before, and its data is gone.
                if c.members
                    .get(&id)
                    .is_some_and(|m| !m.client_ur_ls.is_empty())
                {
                    return Err(StartError::AlreadyBootstrapped { id });
                }
                c.save(&backend)?;
                tracing::info!(
                    cluster_id = format!("{:x}", c.id),
                    member_id = format!("{id:x}"),
                    "joining existing cluster"
                );
                (c, id, Vec::new())
            }
            _ => {
                let c = Cluster::from_initial(&cfg.initial_cluster, &cfg.initial_cluster_token)?;
                let id = c.local_member(&cfg.name, &cfg.advertise_peer_urls)?;
                check_not_bootstrapped(&cfg, peer_tls.as_ref(), &c, id)?;
                c.save(&backend)?;
                let voters = c.voters();
                (c, id, voters)
            }
        };
        let store = Arc::new(KvStore::open(backend)?);
        let lessor = Arc::new(Lessor::new(min_lease_ttl(&cfg)));
        let alarms = Arc::new(Alarms::default());
        recover_aux(&store, &lessor, &alarms)?;
        let hub = WatchHub::start(store.clone(), cfg.watch_progress_notify_interval);
        let (applied_index, _) = store.applied();
        if existing && cfg.force_new_cluster {
            let context = |_member: u64| ConfChangeContext::default().encode_to_vec();
            let forced =
                raft::force_new::force_new_cluster(&wal_dir, member_id, applied_index, &context)?;
            tracing::warn!(
                cluster_id = format!("{:x}", cluster.id),
                member_id = format!("{member_id:x}"),
                commit_index = forced.commit,
                removed = ?forced.removed.iter().map(|m| format!("{m:x}")).collect::<Vec<_>>(),
                discarded_uncommitted_entries = forced.discarded,
                "forcing restart as a one-member cluster (--force-new-cluster): every other \
                 member is removed; add members again from empty data directories"
            );
        }
        let (wal, storage) = raft::open_log(&wal_dir, &voters, applied_index)?;
        let status = Arc::new(RaftStatus::default());
        let (raft_tx, raft_rx) = raft::input::channel().map_err(raft::RaftError::Io)?;
        let local_ip = cfg.listen_peer.first().map(|a| a.addr.ip());
        let transport = Transport::new(
            member_id,
            cluster.id,
            local_ip,
            snap_dir.clone(),
            tokio::runtime::Handle::current(),
            peer_tls,
        );
        transport.set_raft(raft_tx.clone());
        transport.set_peers(&peer_list(&cluster), &cluster.removed);
        let driver_cfg = DriverConfig {
            id: member_id,
            tick: cfg.heartbeat,
            election_ticks: cfg.election_ticks,
            applied: storage.snapshot_metadata().index,
            snap_dir: snap_dir.clone(),
        };
        let (applied_tx, applied_rx) = watch::channel(applied_index);
        let cluster = Arc::new(RwLock::new(cluster));
        let waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>> = Arc::default();
        let raft_tx = Arc::new(Mutex::new(Some(raft_tx)));
        let apply_queue = ApplyQueue::new(Applier {
            election: cfg.heartbeat * cfg.election_ticks as u32,
            store: store.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            hub: hub.clone(),
            cluster: cluster.clone(),
            transport: transport.clone(),
            storage: storage.clone(),
            snap_dir: snap_dir.clone(),
            waiters: waiters.clone(),
            member_id,
            applied_tx,
            raft_tx: raft_tx.clone(),
            snapshot_count: cfg.snapshot_count,
            status: status.clone(),
        });
        let driver = raft::Driver::new(
            &driver_cfg,
            wal,
            storage,
            status.clone(),
            apply_queue.clone(),
            transport.clone(),
            raft_rx,
        )?;
        let server = Arc::new(Self {
            cfg,
            store: store.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            hub: hub.clone(),
            cluster: cluster.clone(),
            member_id,
            raft_tx,
            status,
            waiters,
            applied: applied_rx,
            next_id: AtomicU64::new(initial_request_id(member_id)),
            threads: Mutex::default(),
            transport: transport.clone(),
            snap_dir: snap_dir.clone(),
        });
        let raft_thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.run()));
                match run {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "raft stopped; the member can no longer serve writes");
                    }
                    // raft-rs panics on a log it cannot trust (a commit index beyond the last
                    // entry: the log was lost). A member without Raft only pretends to serve,
                    // so exit, as etcd does, and let the supervisor see it.
                    Err(_) => {
                        tracing::error!("raft panicked; exiting");
                        std::process::exit(1);
                    }
                }
            })
            .map_err(|e| StartError::DataDir { path: String::new(), reason: e.to_string() })?;
        let apply_thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || apply_queue.run())
            .map_err(|e| StartError::DataDir {
                path: String::new(),
                reason: e.to_string(),
            })?;
        server
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([raft_thread, apply_thread]);
        Ok(server)
    }

    /// Stops Raft and the apply loop, waiting for the last backend commit.
    pub fn stop(&self) {
        self.hub.stop();
        self.transport.close();
        self.raft_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
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
        self.cluster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
        self.fill_header_no_revision(header);
        let h = header.get_or_insert_with(ResponseHeader::default);
        if h.revision == 0 {
            h.revision = self.store.current_rev();
        }
    }

    /// A response header without a revision (etcd's Cluster service omits it).
    pub fn fill_header_no_revision(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.cluster.read().unwrap_or_else(|p| p.into_inner()).id;
        h.member_id = self.member_id;
        h.raft_term = self.status.term.load(Ordering::SeqCst);
    }

    /// Hands an input to the Raft driver.
    pub fn raft_input(&self, input: Input) -> Result<(), EtcdError> {
        self.send(input)
    }

    /// Directory of snapshot files.
    pub fn snap_dir(&self) -> PathBuf {
        self.snap_dir.clone()
    }

    /// Checks a backend file received with a snapshot at Raft index `index` before Raft hears
    /// of it: it must be a backend that applied at least up to `index` and holds the cluster.
    pub fn verify_snapshot(path: &std::path::Path, index: u64) -> Result<(), String> {
        crate::backend::verify_snapshot(path, index).map_err(|e| e.to_string())
    }

    /// The peer transport.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    fn send(&self, input: Input) -> Result<(), EtcdError> {
        let guard = self.raft_tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.as_ref().ok_or(EtcdError::Stopped)?;
        tx.send(input).map_err(|_| EtcdError::Stopped)
    }

    /// Whether this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.cluster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .members
            .get(&self.member_id)
            .is_some_and(|m| m.is_learner)
    }

    /// Replication progress, from the Raft driver.
    pub async fn progress(&self) -> Result<raft::Progress, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::Progress(tx))?;
        rx.await.map_err(|_| EtcdError::Stopped)
    }

    /// Proposes a membership change and waits until it is applied here. Returns the members
    /// after the change.
    pub async fn propose_conf_change(
        &self,
        change: ::raft::eraftpb::ConfChangeType,
        node_id: u64,
        member: Option<crate::proto::etcdserverpb::Member>,
    ) -> Result<Vec<crate::proto::etcdserverpb::Member>, EtcdError> {
        if self.status.stopped.load(Ordering::SeqCst) {
            return Err(EtcdError::Stopped);
        }
        let id = self.next_id();
        let ctx = ConfChangeContext {
            id,
            origin: self.member_id,
            member,
        };
        let mut cc = ::raft::eraftpb::ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = node_id;
        cc.context = ctx.encode_to_vec().into();
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let (failed_tx, failed_rx) = oneshot::channel();
        if let Err(e) = self.send(Input::ProposeConfChange {
            cc,
            failed: failed_tx,
        }) {
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e);
        }
        let r = self
            .wait_applied(id, rx, failed_rx, self.request_timeout())
            .await?;
        match r {
            ApplyResponse::Members(m) => Ok(m),
            other => Err(EtcdError::Internal(format!("unexpected {other:?}"))),
        }
    }

    async fn wait_applied(
        &self,
        id: u64,
        rx: oneshot::Receiver<ApplyResult>,
        failed_rx: oneshot::Receiver<EtcdError>,
        timeout: Duration,
    ) -> Result<ApplyResponse, EtcdError> {
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                r = rx => r.unwrap_or(Err(EtcdError::Stopped)),
                Ok(e) = failed_rx => {
                    // Raft dropped the proposal (no leader, a leader transfer in progress).
                    crate::metrics::PROPOSALS_FAILED.inc();
                    Err(e)
                }
            }
        })
        .await;
        let r = outcome.unwrap_or_else(|_| {
            crate::metrics::PROPOSALS_FAILED.inc();
            Err(EtcdError::Timeout)
        });
        if r.is_err() {
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        r
    }

    /// Transfers leadership to `target` and waits for it to take over.
    pub async fn move_leader(&self, target: u64) -> Result<(), EtcdError> {
        self.send(Input::TransferLeader(target))?;
        let deadline = Instant::now() + self.cfg.heartbeat * (4 * self.cfg.election_ticks as u32);
        while self.status.leader.load(Ordering::SeqCst) != target {
            if Instant::now() > deadline {
                return Err(EtcdError::TimeoutLeaderTransfer);
            }
            tokio::time::sleep(self.cfg.heartbeat).await;
        }
        Ok(())
    }

    /// A peer-protocol client to the current leader, for lease operations only it can answer.
    pub async fn leader_client(
        &self,
    ) -> Result<crate::proto::peerpb::peer_client::PeerClient<tonic::transport::Channel>, EtcdError>
    {
        let leader = self.status.leader.load(Ordering::SeqCst);
        if leader == 0 {
            return Err(EtcdError::NoLeader);
        }
        self.transport
            .rpc_client(leader)
            .await
            .ok_or(EtcdError::NoLeader)
    }

    /// Publishes this member's name and client URLs through Raft until the cluster records
    /// them (etcd's `publish`), so every member lists them.
    pub async fn publish_attributes(&self) {
        use crate::proto::etcdserverpb::MemberAttributes;
        loop {
            let current = self.cluster().members.get(&self.member_id).cloned();
            let Some(m) = current else { return };
            if m.name == self.cfg.name && m.client_ur_ls == self.cfg.advertise_client_urls {
                return;
            }
            let attrs = MemberAttributes {
                id: self.member_id,
                name: self.cfg.name.clone(),
                client_urls: self.cfg.advertise_client_urls.clone(),
            };
            // A proposal the next leader overwrote is never applied, and nothing says so:
            // wait about two election timeouts, not a whole request timeout, before trying
            // again. Until this is applied, a peer cannot tell that this member started, so
            // a restart of it from an empty data dir would not be refused.
            let attempt = (self.cfg.heartbeat * (2 * self.cfg.election_ticks as u32))
                .max(Duration::from_millis(500));
            match self
                .propose_within(Request::MemberAttributes(attrs), attempt)
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "failed to publish member attributes; retrying")
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.status.stopped.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Whether this member was removed from the cluster.
    pub fn is_removed(&self) -> bool {
        self.status.removed.load(Ordering::SeqCst)
    }

    /// Replicates a client's `req` through Raft and waits until it is applied here. Learners
    /// refuse client writes, as in etcd.
    pub async fn propose(&self, req: Request) -> Result<ApplyResponse, EtcdError> {
        if self.is_learner() {
            return Err(EtcdError::NotSupportedForLearner);
        }
        self.propose_internal(req).await
    }

    /// Replicates `req` through Raft (from any member, learners included: Raft forwards it to
    /// the leader) and waits until it is applied here.
    pub async fn propose_internal(&self, req: Request) -> Result<ApplyResponse, EtcdError> {
        self.propose_within(req, self.request_timeout()).await
    }

    /// [`Self::propose_internal`], waiting at most `timeout` for the entry to be applied.
    async fn propose_within(
        &self,
        req: Request,
        timeout: Duration,
    ) -> Result<ApplyResponse, EtcdError> {
        if self.status.stopped.load(Ordering::SeqCst) {
            return Err(EtcdError::Stopped);
        }
        let id = self.next_id();
        let msg = InternalRaftRequest {
            id,
            origin: self.member_id,
            request: Some(req),
        };
        let data = msg.encode_to_vec();
        if data.len() > self.cfg.max_request_bytes as usize {
            return Err(EtcdError::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let (failed_tx, failed_rx) = oneshot::channel();
        if let Err(e) = self.send(Input::Propose {
            data,
            failed: failed_tx,
        }) {
            crate::metrics::PROPOSALS_FAILED.inc();
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e);
        }
        self.wait_applied(id, rx, failed_rx, timeout).await
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex),
    /// so a read that follows is linearizable.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        if self.is_learner() {
            return Err(EtcdError::NotSupportedForLearner);
        }
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
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ((member_id & 0xffff) << 48) | ((ms & 0xff_ffff_ffff) << 8)
}
