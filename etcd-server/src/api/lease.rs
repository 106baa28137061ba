//! The Lease service: grant, revoke, keep-alive, time-to-live and listing.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::GrpcResult;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, internal_raft_request::Request as Internal,
    lease_server::Lease,
};
use crate::server::{ApplyResponse, EtcdServer};

/// The Lease service of one member.
#[derive(Debug, Clone)]
pub struct LeaseService {
    server: Arc<EtcdServer>,
}

impl LeaseService {
    /// Serves Lease for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Renews a lease on the leader (forwarding if this member is not it). Unknown leases
/// renew to TTL 0, as etcd answers.
pub(crate) async fn renew(server: &EtcdServer, id: i64) -> Result<i64, Status> {
    if server.lessor().is_primary() {
        return match server.lessor().renew_checked(id) {
            Ok((ttl, checkpointed)) => {
                if checkpointed {
                    clear_checkpoint(server, id).await;
                }
                Ok(ttl)
            }
            Err(EtcdError::LeaseNotFound) => Ok(0),
            Err(e) => Err(e.status()),
        };
    }
    let mut c = server.leader_client().await?;
    Ok(
        c.lease_renew(crate::proto::peerpb::LeaseRenewRequest { id })
            .await?
            .into_inner()
            .ttl,
    )
}

/// After a renewal, a checkpointed remaining TTL is stale: replicate "no checkpoint" so a new
/// leader starts the lease from its full TTL, as etcd does.
async fn clear_checkpoint(server: &EtcdServer, id: i64) {
    use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest};
    let req = Internal::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id,
            remaining_ttl: 0,
        }],
    });
    if let Err(e) = server.propose(req).await {
        tracing::debug!(error = %e, lease = id, "failed to clear a lease checkpoint");
    }
}

/// Approximate backend bytes of one lease record (for the quota check).
const LEASE_COST: usize = 64;

/// Grants a lease through Raft (an `id` of 0 asks for a generated one).
pub(crate) async fn grant(
    server: &EtcdServer,
    mut r: LeaseGrantRequest,
) -> Result<LeaseGrantResponse, EtcdError> {
    server.check_quota(LEASE_COST).await?;
    if r.id == 0 {
        r.id = (server.next_id() & (u64::MAX >> 1)) as i64;
    }
    match server.propose(Internal::LeaseGrant(r)).await? {
        ApplyResponse::LeaseGrant(resp) => Ok(resp),
        other => Err(EtcdError::Internal(format!("unexpected {other:?}"))),
    }
}

/// TTL of the lease a Lock or Campaign without a lease gets: clientv3 `concurrency`'s default
/// session TTL.
pub(crate) const SESSION_TTL: i64 = 60;

/// The lease a Lock or Campaign runs under, as etcd's servers open a `concurrency.Session`
/// with the request's lease: lease 0 means "no lease given", and the caller gets a fresh
/// lease of [`SESSION_TTL`] that nobody renews (so its lock or leadership ends by itself a
/// minute later unless released). Without this, every lease-0 caller would share the key
/// `<name>/0` and all of them would hold the lock at once.
pub(crate) async fn session_lease(server: &EtcdServer, lease: i64) -> Result<i64, EtcdError> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = grant(
        server,
        LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        },
    )
    .await?;
    Ok(granted.id)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    #[instrument(skip_all, fields(id = req.get_ref().id, ttl = req.get_ref().ttl))]
    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> GrpcResult<LeaseGrantResponse> {
        let mut resp = grant(&self.server, req.into_inner()).await?;
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> GrpcResult<LeaseRevokeResponse> {
        match self
            .server
            .propose(Internal::LeaseRevoke(req.into_inner()))
            .await?
        {
            ApplyResponse::LeaseRevoke(mut resp) => {
                self.server.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(EtcdError::Internal(format!("unexpected {other:?}")).status()),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    #[instrument(skip_all)]
    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> GrpcResult<Self::LeaseKeepAliveStream> {
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let server = self.server.clone();
        tokio::spawn(async move {
            while let Some(msg) = incoming.next().await {
                let Ok(msg) = msg else { break };
                // Linearizable: the renewal must see every grant applied before it.
                let reply = match server.read_barrier().await {
                    Err(e) => Err(e.status()),
                    Ok(()) => {
                        let ttl = renew(&server, msg.id).await;
                        ttl.map(|ttl| {
                            let mut resp = LeaseKeepAliveResponse {
                                header: None,
                                id: msg.id,
                                ttl,
                            };
                            server.fill_header(&mut resp.header);
                            resp
                        })
                    }
                };
                let stop = reply.is_err();
                if tx.send(reply).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(id = req.get_ref().id))]
    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> GrpcResult<LeaseTimeToLiveResponse> {
        let r = req.into_inner();
        self.server.read_barrier().await?;
        // Only the leader runs lease clocks; a follower asks it.
        let found = if self.server.lessor().is_primary() {
            self.server
                .lessor()
                .time_to_live(r.id)
                .map(|t| (t.remaining, t.granted_ttl, t.keys))
        } else {
            let mut c = self.server.leader_client().await?;
            let t = c
                .lease_time_to_live(crate::proto::peerpb::LeaseTtlRequest { id: r.id })
                .await?
                .into_inner();
            t.found.then_some((t.remaining, t.granted, t.keys))
        };
        let mut resp = match found {
            Some((remaining, granted_ttl, keys)) => LeaseTimeToLiveResponse {
                header: None,
                id: r.id,
                ttl: remaining,
                granted_ttl,
                keys: if r.keys { keys } else { vec![] },
            },
            None => LeaseTimeToLiveResponse {
                header: None,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            },
        };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[instrument(skip_all)]
    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> GrpcResult<LeaseLeasesResponse> {
        self.server.read_barrier().await?;
        let leases = self
            .server
            .lessor()
            .leases()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        let mut resp = LeaseLeasesResponse {
            header: None,
            leases,
        };
        self.server.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}
