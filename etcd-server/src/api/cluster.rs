//! The Cluster service: membership queries and changes.

use std::sync::Arc;

use tonic::{Request, Response};
use tracing::instrument;

use super::{GrpcResult, not_supported};
use crate::proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use crate::server::EtcdServer;

/// The Cluster service of one member.
#[derive(Debug, Clone)]
pub struct ClusterService {
    server: Arc<EtcdServer>,
}

impl ClusterService {
    /// Serves Cluster for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _: Request<MemberAddRequest>) -> GrpcResult<MemberAddResponse> {
        Err(not_supported("MemberAdd"))
    }

    async fn member_remove(&self, _: Request<MemberRemoveRequest>) -> GrpcResult<MemberRemoveResponse> {
        Err(not_supported("MemberRemove"))
    }

    async fn member_update(&self, _: Request<MemberUpdateRequest>) -> GrpcResult<MemberUpdateResponse> {
        Err(not_supported("MemberUpdate"))
    }

    #[instrument(skip_all)]
    async fn member_list(&self, req: Request<MemberListRequest>) -> GrpcResult<MemberListResponse> {
        if req.get_ref().linearizable {
            self.server.read_barrier().await?;
        }
        let members = self.server.cluster().members.into_values().collect();
        let mut resp = MemberListResponse { header: None, members };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn member_promote(&self, _: Request<MemberPromoteRequest>) -> GrpcResult<MemberPromoteResponse> {
        Err(not_supported("MemberPromote"))
    }
}
