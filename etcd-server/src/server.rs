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
use crate::watch::WatchHub;

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
type RaftSender = Arc<Mutex<Option<raft::peer_io::RaftTx>>>;

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

fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

/// `(member ID, peer URLs)` of every member.
fn peer_list(c: &Cluster) -> Vec<(u64, Vec<String>)> {
    c.members
        .values()
        .map(|m| (m.id, m.peer_ur_ls.clone()))
        .collect()
}

/// Rebuilds the lessor's and alarms' in-memory state from the backend.
fn recover_aux(store: &KvStore, lessor: &Lessor, alarms: &Alarms) -> Result<(), MvccError> {
    let leased = store.take_loaded_leases();
    let view = store.read()?;
    lessor.recover(view.backend_tx(), &leased)?;
    alarms.recover(view.backend_tx())?;
    Ok(())
}

/// The peer URLs in `--initial-cluster` other than this member's.
fn other_peer_urls(cfg: &Config) -> Vec<String> {
    let own = sorted(&cfg.advertise_peer_urls);
    cfg.initial_cluster
        .split(',')
        .filter_map(|p| p.split_once('=').map(|(_, u)| u.trim().to_owned()))
        .filter(|u| !own.contains(u))
        .collect()
}

/// The address peer connections leave from: the first `--listen-peer-urls` IP, as the Raft
/// transport binds (so peers and firewalls see the member's own address).
fn peer_source(cfg: &Config) -> Option<std::net::IpAddr> {
    cfg.listen_peer
        .first()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// Removes received snapshot files at or below `index` that were never installed (Raft
/// ignored them, or a newer one won).
fn remove_stale_incoming(snap_dir: &std::path::Path, index: u64) {
    let Ok(dir) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".in.db")) else {
            continue;
        };
        if u64::from_str_radix(hex, 16).is_ok_and(|i| i <= index) {
            let _ = std::fs::remove_file(ent.path());
        }
    }
}

/// Asks one peer for the cluster's members, from `source`.
async fn ask_members(
    url: String,
    source: Option<std::net::IpAddr>,
) -> Option<crate::proto::peerpb::MembersResponse> {
    use crate::proto::peerpb::{MembersRequest, peer_client::PeerClient};
    let ep = tonic::transport::Endpoint::from_shared(url)
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(1))
        .local_address(source);
    let mut client = PeerClient::new(ep.connect().await.ok()?);
    client
        .members(MembersRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Before bootstrapping a new cluster from an empty data dir: if a peer that already runs
/// this cluster says this member started before (it has published its client URLs) or was
/// removed,
/// its data was lost and bootstrapping again would make it vote with an empty log. As etcd
/// does, refuse. Peers that do not answer (the usual case: they are bootstrapping too) are
/// not waited for.
fn check_not_bootstrapped(cfg: &Config, cluster: &Cluster, id: u64) -> Result<(), StartError> {
    let urls = other_peer_urls(cfg);
    if urls.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Handle::current();
    let answers = rt.block_on(async {
        let source = peer_source(cfg);
        let asks = urls.into_iter().map(|u| ask_members(u, source));
        tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(asks))
            .await
            .unwrap_or_default()
    });
    for resp in answers.into_iter().flatten() {
        if resp.cluster_id != cluster.id {
            continue;
        }
        match resp.members.iter().find(|m| m.id == id) {
            // Client URLs are published once the member has started (initial members carry
            // their names from the start, so the name says nothing).
            Some(m) if !m.client_ur_ls.is_empty() => {
                return Err(StartError::AlreadyBootstrapped { id });
            }
            Some(_) => {}
            None => return Err(StartError::Removed),
        }
    }
    Ok(())
}

/// Asks the members named in `--initial-cluster` (other than this one) for the cluster, as a
/// member started with `--initial-cluster-state=existing` must.
fn join_existing(cfg: &Config) -> Result<Cluster, StartError> {
    let urls = other_peer_urls(cfg);
    if urls.is_empty() {
        return Err(StartError::DataDir {
            path: cfg.data_dir.display().to_string(),
            reason: "--initial-cluster-state=existing needs other members in --initial-cluster"
                .into(),
        });
    }
    let rt = tokio::runtime::Handle::current();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for url in &urls {
            if let Some(resp) = rt.block_on(ask_members(url.clone(), peer_source(cfg))) {
                let members = resp.members.into_iter().map(|m| (m.id, m)).collect();
                return Ok(Cluster {
                    id: resp.cluster_id,
                    members,
                    removed: Default::default(),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(StartError::DataDir {
                path: cfg.data_dir.display().to_string(),
                reason: format!("could not reach any member of the existing cluster at {urls:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
    }
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
    pub fn start(cfg: Config) -> Result<Arc<Self>, StartError> {
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
                let c = join_existing(&cfg)?;
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
                check_not_bootstrapped(&cfg, &c, id)?;
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
        let (wal, storage) = raft::open_log(&wal_dir, &voters, applied_index)?;
        let status = Arc::new(RaftStatus::default());
        let (raft_tx, raft_rx) = raft::peer_io::channel().map_err(raft::RaftError::Io)?;
        let local_ip = cfg.listen_peer.first().map(|a| a.ip());
        let transport = Transport::new(
            member_id,
            cluster.id,
            local_ip,
            snap_dir.clone(),
            tokio::runtime::Handle::current(),
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
        let r = self.wait_applied(id, rx, failed_rx).await?;
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
    ) -> Result<ApplyResponse, EtcdError> {
        let outcome = tokio::time::timeout(self.request_timeout(), async {
            tokio::select! {
                r = rx => r.unwrap_or(Err(EtcdError::Stopped)),
                Ok(e) = failed_rx => Err(e),
            }
        })
        .await;
        let r = outcome.unwrap_or(Err(EtcdError::Timeout));
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
            match self
                .propose_internal(Request::MemberAttributes(attrs))
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
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e);
        }
        self.wait_applied(id, rx, failed_rx).await
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

/// The apply loop: applies committed entries to the MVCC store in log order.
struct Applier {
    /// The election timeout, by which lease clocks are extended on promotion.
    election: Duration,
    store: Arc<KvStore>,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    hub: Arc<WatchHub>,
    cluster: Arc<RwLock<Cluster>>,
    transport: Arc<Transport>,
    storage: LogStorage,
    snap_dir: PathBuf,
    waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>>,
    member_id: u64,
    applied_tx: watch::Sender<u64>,
    raft_tx: RaftSender,
    snapshot_count: u64,
    status: Arc<RaftStatus>,
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
    use protobuf::Message as _;
    if e.data.is_empty() {
        return Decoded::Empty;
    }
    if e.get_entry_type() == ::raft::eraftpb::EntryType::EntryConfChange {
        return match ::raft::eraftpb::ConfChange::parse_from_bytes(&e.data) {
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
struct ApplyQueue {
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
    fn new(applier: Applier) -> Arc<Self> {
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
    fn run(&self) {
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
                    if let Err(e) = t.delete_range(k, b"") {
                        return Err(e);
                    }
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
