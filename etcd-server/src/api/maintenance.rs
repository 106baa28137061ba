//! The Maintenance service: status, hashes, defragmentation, alarms, snapshots.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{GrpcResult, not_supported};
use crate::config::ETCD_VERSION;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse, maintenance_server::Maintenance,
};
use crate::server::EtcdServer;

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
    async fn alarm(&self, _: Request<AlarmRequest>) -> GrpcResult<AlarmResponse> {
        Err(not_supported("Alarm"))
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
            errors: vec![],
            db_size_in_use: db_size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: s.config().quota_backend_bytes,
            downgrade_info: None,
        };
        s.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn defragment(&self, _: Request<DefragmentRequest>) -> GrpcResult<DefragmentResponse> {
        Err(not_supported("Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> GrpcResult<HashResponse> {
        Err(not_supported("Hash"))
    }

    async fn hash_kv(&self, _: Request<HashKvRequest>) -> GrpcResult<HashKvResponse> {
        Err(not_supported("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> GrpcResult<Self::SnapshotStream> {
        Err(not_supported("Snapshot"))
    }

    async fn move_leader(&self, _: Request<MoveLeaderRequest>) -> GrpcResult<MoveLeaderResponse> {
        Err(not_supported("MoveLeader"))
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> GrpcResult<DowngradeResponse> {
        Err(not_supported("Downgrade"))
    }
}
