//! The Election service (`v3electionpb`): leader election as keys bound to a lease under the
//! election name; the oldest key (lowest create revision) leads.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::GrpcResult;
use crate::concurrency::{self as cc, create_rev_is};
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    TxnRequest, TxnResponse, WatchCreateRequest, response_op::Response as OpResp,
};
use crate::proto::mvccpb::{KeyValue, event::EventType};
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse, election_server::Election,
};
use crate::server::EtcdServer;

/// `concurrency.ErrElectionNotLeader`.
pub const ERR_NOT_LEADER: &str = "election: not leader";
/// `concurrency.ErrElectionNoLeader`.
pub const ERR_NO_LEADER: &str = "election: no leader";

/// The Election service of one member.
#[derive(Debug, Clone)]
pub struct ElectionService {
    server: Arc<EtcdServer>,
}

impl ElectionService {
    /// Serves Election for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }
}

fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

async fn proclaim(
    server: &EtcdServer,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<TxnResponse, Status> {
    let t = TxnRequest {
        compare: vec![create_rev_is(&leader.key, leader.rev)],
        success: vec![cc::put_op(&leader.key, value, leader.lease)],
        failure: vec![],
    };
    let resp = cc::txn(server, t).await?;
    if !resp.succeeded {
        return Err(Status::unknown(ERR_NOT_LEADER));
    }
    Ok(resp)
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

/// Follows the leadership of election `name`, sending the leader's key-value whenever the
/// leader or its value changes, until the receiver goes away.
async fn observe(
    server: Arc<EtcdServer>,
    name: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), EtcdError> {
    let pfx = prefix(&name);
    loop {
        let resp = cc::oldest(&server, &pfx).await?;
        let at = resp.header.as_ref().map_or(0, |h| h.revision);
        let Some(kv) = resp.kvs.into_iter().next() else {
            // No leader yet: wait for any key to appear under the prefix.
            let (mut stream, mut rx) = server.hub().open_stream();
            stream
                .create(WatchCreateRequest {
                    key: pfx.clone(),
                    range_end: cc::prefix_end(&pfx),
                    start_revision: at + 1,
                    ..Default::default()
                })
                .await;
            loop {
                let Some(out) = rx.recv().await else {
                    return Err(EtcdError::Stopped);
                };
                if out
                    .resp
                    .events
                    .iter()
                    .any(|e| e.r#type == EventType::Put as i32)
                {
                    break;
                }
                if tx.is_closed() {
                    return Ok(());
                }
            }
            continue;
        };
        if !send_leader(&server, &tx, kv.clone()).await {
            return Ok(());
        }
        // Follow the leader key until it is deleted.
        let (mut stream, mut rx) = server.hub().open_stream();
        stream
            .create(WatchCreateRequest {
                key: kv.key.clone(),
                start_revision: at + 1,
                ..Default::default()
            })
            .await;
        'follow: loop {
            let Some(out) = rx.recv().await else {
                return Err(EtcdError::Stopped);
            };
            for ev in out.resp.events {
                if ev.r#type == EventType::Delete as i32 {
                    break 'follow;
                }
                if let Some(kv) = ev.kv
                    && !send_leader(&server, &tx, kv).await
                {
                    return Ok(());
                }
            }
        }
    }
}

async fn send_leader(
    server: &EtcdServer,
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
    kv: KeyValue,
) -> bool {
    let mut header = None;
    server.fill_header(&mut header);
    tx.send(Ok(LeaderResponse {
        header,
        kv: Some(kv),
    }))
    .await
    .is_ok()
}

#[tonic::async_trait]
impl Election for ElectionService {
    #[instrument(skip_all, fields(name = ?String::from_utf8_lossy(&req.get_ref().name)))]
    async fn campaign(&self, req: Request<CampaignRequest>) -> GrpcResult<CampaignResponse> {
        let mut r = req.into_inner();
        let s = &self.server;
        r.lease = super::lease::session_lease(s, r.lease).await?;
        let pfx = prefix(&r.name);
        let mut key = pfx.clone();
        key.extend_from_slice(format!("{:x}", r.lease).as_bytes());
        let t = TxnRequest {
            compare: vec![create_rev_is(&key, 0)],
            success: vec![cc::put_op(&key, &r.value, r.lease)],
            failure: vec![cc::get_op(&key)],
        };
        let resp = cc::txn(s, t).await?;
        let mut leader = LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev: 0,
            lease: r.lease,
        };
        if resp.succeeded {
            leader.rev = resp.header.as_ref().map_or(0, |h| h.revision);
        } else if let Some(OpResp::ResponseRange(rr)) =
            resp.responses.first().and_then(|x| x.response.as_ref())
        {
            let existing = rr.kvs.first().cloned().unwrap_or_default();
            leader.rev = existing.create_revision;
            if existing.value != r.value {
                proclaim(s, &leader, &r.value).await?;
            }
        }
        let waited = cc::wait_deletes(s, &pfx, leader.rev - 1).await;
        let header = match waited {
            Ok(h) => h,
            Err(e) => {
                let _ = cc::txn(
                    s,
                    TxnRequest {
                        compare: vec![create_rev_is(&key, leader.rev)],
                        success: vec![cc::delete_op(&key)],
                        failure: vec![],
                    },
                )
                .await;
                return Err(e.into());
            }
        };
        let mut header = header;
        if let Some(h) = header.as_mut() {
            h.revision = 0;
        }
        s.fill_header(&mut header);
        Ok(Response::new(CampaignResponse {
            header,
            leader: Some(leader),
        }))
    }

    #[instrument(skip_all)]
    async fn proclaim(&self, req: Request<ProclaimRequest>) -> GrpcResult<ProclaimResponse> {
        let r = req.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown("\"leader\" field must be provided"))?;
        let resp = proclaim(&self.server, &leader, &r.value).await?;
        let mut header = resp.header;
        self.server.fill_header(&mut header);
        Ok(Response::new(ProclaimResponse { header }))
    }

    #[instrument(skip_all, fields(name = ?String::from_utf8_lossy(&req.get_ref().name)))]
    async fn leader(&self, req: Request<LeaderRequest>) -> GrpcResult<LeaderResponse> {
        let name = req.into_inner().name;
        let resp = cc::oldest(&self.server, &prefix(&name)).await?;
        let kv = resp
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| Status::unknown(ERR_NO_LEADER))?;
        let mut header = resp.header;
        self.server.fill_header(&mut header);
        Ok(Response::new(LeaderResponse {
            header,
            kv: Some(kv),
        }))
    }

    type ObserveStream = ObserveStream;

    #[instrument(skip_all, fields(name = ?String::from_utf8_lossy(&req.get_ref().name)))]
    async fn observe(&self, req: Request<LeaderRequest>) -> GrpcResult<Self::ObserveStream> {
        let name = req.into_inner().name;
        let (tx, rx) = mpsc::channel(16);
        let server = self.server.clone();
        tokio::spawn(async move {
            let errors = tx.clone();
            if let Err(e) = observe(server, name, tx).await {
                let _ = errors.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all)]
    async fn resign(&self, req: Request<ResignRequest>) -> GrpcResult<ResignResponse> {
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown("\"leader\" field must be provided"))?;
        let t = TxnRequest {
            compare: vec![create_rev_is(&leader.key, leader.rev)],
            success: vec![cc::delete_op(&leader.key)],
            failure: vec![],
        };
        let resp = cc::txn(&self.server, t).await?;
        let mut header = resp.header;
        self.server.fill_header(&mut header);
        Ok(Response::new(ResignResponse { header }))
    }
}
