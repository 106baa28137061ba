//! The peer service (`peerpb.Peer`), served on `--listen-peer-urls`: Raft messages and
//! snapshots from other members, cluster information for joining members, and the lease
//! operations only the leader can answer.

use std::sync::Arc;

use futures::StreamExt;
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::GrpcResult;
use crate::error::EtcdError;
use crate::proto::peerpb::{
    Ack, LeaseRenewRequest, LeaseRenewResponse, LeaseTtlRequest, LeaseTtlResponse, MembersRequest,
    MembersResponse, PromoteRequest, PromoteResponse, RaftEnvelope, SnapshotChunk,
    peer_server::Peer,
};
use crate::raft::Input;
use crate::raft::transport::incoming_snapshot;
use crate::server::EtcdServer;

/// The peer service of one member.
#[derive(Debug, Clone)]
pub struct PeerService {
    server: Arc<EtcdServer>,
}

impl PeerService {
    /// Serves the peer protocol for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        let ours = self.server.cluster().id;
        if cluster_id != ours {
            tracing::error!(
                local = format!("{ours:x}"),
                remote = format!("{cluster_id:x}"),
                "rejected a peer of another cluster (cluster ID mismatch)"
            );
            return Err(Status::failed_precondition(format!(
                "cluster ID mismatch: local {ours:x}, remote {cluster_id:x}"
            )));
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    Message::parse_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn send(&self, req: Request<Streaming<RaftEnvelope>>) -> GrpcResult<Ack> {
        let mut stream = req.into_inner();
        while let Some(env) = stream.next().await {
            let env = env?;
            self.check_cluster(env.cluster_id)?;
            if self.server.cluster().removed.contains(&env.from) {
                return Err(Status::permission_denied(
                    crate::membership::REMOVED_MESSAGE,
                ));
            }
            let m = decode(&env.message)?;
            if self.server.raft_input(Input::Step(Box::new(m))).is_err() {
                return Err(EtcdError::Stopped.status());
            }
        }
        Ok(Response::new(Ack {}))
    }

    async fn snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> GrpcResult<Ack> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_cluster(first.cluster_id)?;
        let m = decode(&first.message)?;
        let index = m.get_snapshot().get_metadata().index;
        let dir = self.server.snap_dir();
        let path = incoming_snapshot(&dir, index);
        let tmp = path.with_extension("part");
        let io = |e: std::io::Error| Status::internal(format!("failed to store snapshot: {e}"));
        let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
        f.write_all(&first.data).await.map_err(io)?;
        while let Some(chunk) = stream.next().await {
            f.write_all(&chunk?.data).await.map_err(io)?;
        }
        f.sync_all().await.map_err(io)?;
        drop(f);
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        tracing::info!(index, from = format!("{:x}", m.from), "received snapshot");
        self.server
            .raft_input(Input::Step(Box::new(m)))
            .map_err(EtcdError::status)?;
        Ok(Response::new(Ack {}))
    }

    async fn members(&self, _: Request<MembersRequest>) -> GrpcResult<MembersResponse> {
        let c = self.server.cluster();
        Ok(Response::new(MembersResponse {
            cluster_id: c.id,
            members: c.members.into_values().collect(),
        }))
    }

    async fn lease_renew(&self, req: Request<LeaseRenewRequest>) -> GrpcResult<LeaseRenewResponse> {
        if !self.server.lessor().is_primary() {
            return Err(EtcdError::NotLeader.status());
        }
        let ttl = super::lease::renew(&self.server, req.get_ref().id).await?;
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn promote(&self, req: Request<PromoteRequest>) -> GrpcResult<PromoteResponse> {
        let members = super::cluster::promote_on_leader(&self.server, req.get_ref().id).await?;
        Ok(Response::new(PromoteResponse { members }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTtlRequest>,
    ) -> GrpcResult<LeaseTtlResponse> {
        Ok(Response::new(
            match self.server.lessor().time_to_live(req.get_ref().id) {
                Some(t) => LeaseTtlResponse {
                    found: true,
                    remaining: t.remaining,
                    granted: t.granted_ttl,
                    keys: t.keys,
                },
                None => LeaseTtlResponse::default(),
            },
        ))
    }
}
