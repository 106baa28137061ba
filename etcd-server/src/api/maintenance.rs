//! The Maintenance service: status, hashes, defragmentation, alarms, snapshots.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{GrpcResult, not_supported};
use crate::config::ETCD_VERSION;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse, internal_raft_request::Request as Internal, maintenance_server::Maintenance,
};
use crate::server::{ApplyResponse, EtcdServer};

/// Bytes per Snapshot stream message.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// The Maintenance service of one member.
#[derive(Debug, Clone)]
pub struct MaintenanceService {
    server: Arc<EtcdServer>,
}

impl MaintenanceService {
    /// Serves Maintenance for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    #[instrument(skip_all)]
    async fn alarm(&self, req: Request<AlarmRequest>) -> GrpcResult<AlarmResponse> {
        match self
            .server
            .propose(Internal::Alarm(req.into_inner()))
            .await?
        {
            ApplyResponse::Alarm(mut resp) => {
                self.server.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(EtcdError::Internal(format!("unexpected {other:?}")).status()),
        }
    }

    #[instrument(skip_all)]
    async fn status(&self, _: Request<StatusRequest>) -> GrpcResult<StatusResponse> {
        let s = &self.server;
        let raft = s.raft_status();
        let db_size = s.store().backend().size() as i64;
        let mut resp = StatusResponse {
            header: None,
            version: ETCD_VERSION.to_owned(),
            db_size,
            leader: raft.leader.load(Ordering::SeqCst),
            raft_index: raft.commit.load(Ordering::SeqCst),
            raft_term: raft.term.load(Ordering::SeqCst),
            raft_applied_index: s.applied_index(),
            errors: s
                .alarms()
                .list()
                .into_iter()
                .map(|a| {
                    let name = AlarmType::try_from(a.alarm)
                        .map(|t| t.as_str_name())
                        .unwrap_or("UNKNOWN");
                    format!("memberID:{} alarm:{name} ", a.member_id)
                })
                .collect(),
            db_size_in_use: db_size,
            is_learner: s.is_learner(),
            storage_version: String::new(),
            db_size_quota: s.config().quota_backend_bytes,
            downgrade_info: None,
        };
        s.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all)]
    async fn defragment(&self, _: Request<DefragmentRequest>) -> GrpcResult<DefragmentResponse> {
        let server = self.server.clone();
        let before = server.store().backend().size();
        tokio::task::spawn_blocking(move || server.store().exclusive(|b| b.defragment()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(EtcdError::from)?;
        tracing::info!(
            before,
            after = self.server.store().backend().size(),
            "defragmented backend"
        );
        let mut resp = DefragmentResponse { header: None };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all)]
    async fn hash(&self, _: Request<HashRequest>) -> GrpcResult<HashResponse> {
        let view = self.server.store().read().map_err(EtcdError::from)?;
        let hash = view.hash_kv(i64::MAX).map_err(EtcdError::from)?;
        drop(view);
        let mut resp = HashResponse { header: None, hash };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, fields(revision = req.get_ref().revision))]
    async fn hash_kv(&self, req: Request<HashKvRequest>) -> GrpcResult<HashKvResponse> {
        let view = self.server.store().read().map_err(EtcdError::from)?;
        let current = view.rev();
        let compact = view.first_rev();
        // etcd hashes up to `rev` and refuses revisions at or below the compaction.
        let rev = match req.get_ref().revision {
            0 => current,
            r if r > current => return Err(EtcdError::FutureRev.status()),
            r if compact > 0 && r <= compact => return Err(EtcdError::Compacted.status()),
            r => r,
        };
        let hash = view.hash_kv(rev).map_err(EtcdError::from)?;
        drop(view);
        let mut resp = HashKvResponse {
            header: None,
            hash,
            compact_revision: compact,
            hash_revision: rev,
        };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a consistent copy of the backend file followed by its SHA-256, as etcd does.
    #[instrument(skip_all)]
    async fn snapshot(&self, _: Request<SnapshotRequest>) -> GrpcResult<Self::SnapshotStream> {
        let server = self.server.clone();
        let tmp = tempfile::NamedTempFile::new().map_err(|e| Status::internal(e.to_string()))?;
        let tmp_path = tmp.path().to_owned();
        // The revision the copy holds, read while no write can apply (a header filled after
        // the copy could name a later revision than its data).
        let copied = tokio::task::spawn_blocking(move || {
            server.store().exclusive_at(|b, rev| {
                std::fs::copy(b.path(), &tmp_path)
                    .map(|_| rev)
                    .map_err(|e| crate::backend::BackendError::Storage(e.to_string()))
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(EtcdError::from)?;
        let (tx, rx) = mpsc::channel(4);
        let mut header = Some(crate::proto::etcdserverpb::ResponseHeader {
            revision: copied,
            ..Default::default()
        });
        self.server.fill_header(&mut header);
        tokio::spawn(async move {
            let result: std::io::Result<()> = async {
                let mut f = tokio::fs::File::open(tmp.path()).await?;
                let total = f.metadata().await?.len();
                let mut sent = 0u64;
                let mut sha = Sha256::new();
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    sha.update(&buf[..n]);
                    sent += n as u64;
                    let msg = SnapshotResponse {
                        header: header.take(),
                        remaining_bytes: total.saturating_sub(sent),
                        blob: buf[..n].to_vec(),
                        version: String::new(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return Ok(());
                    }
                }
                let last = SnapshotResponse {
                    header: None,
                    remaining_bytes: 0,
                    blob: sha.finalize().to_vec(),
                    version: String::new(),
                };
                let _ = tx.send(Ok(last)).await;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = tx
                    .send(Err(Status::internal(format!(
                        "failed to stream snapshot: {e}"
                    ))))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(target = req.get_ref().target_id))]
    async fn move_leader(&self, req: Request<MoveLeaderRequest>) -> GrpcResult<MoveLeaderResponse> {
        if !self.server.is_leader() {
            return Err(EtcdError::NotLeader.status());
        }
        let target = req.get_ref().target_id;
        let cluster = self.server.cluster();
        match cluster.members.get(&target) {
            Some(m) if !m.is_learner => {}
            _ => return Err(EtcdError::BadLeaderTransferee.status()),
        }
        if target != self.server.member_id() {
            self.server.move_leader(target).await?;
        }
        let mut resp = MoveLeaderResponse { header: None };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> GrpcResult<DowngradeResponse> {
        Err(not_supported("Downgrade"))
    }
}
