//! The Lock service (`v3lockpb`): distributed mutexes as keys bound to a lease under the lock
//! name, granted in create-revision order.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::GrpcResult;
use crate::concurrency::{self as cc, create_rev_is};
use crate::proto::etcdserverpb::{ResponseHeader, TxnRequest, response_op::Response as OpResp};
use crate::proto::v3lockpb::{
    LockRequest, LockResponse, UnlockRequest, UnlockResponse, lock_server::Lock,
};
use crate::server::EtcdServer;

/// The Lock service of one member.
#[derive(Debug, Clone)]
pub struct LockService {
    server: Arc<EtcdServer>,
}

impl LockService {
    /// Serves Lock for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }

    async fn acquire(
        &self,
        name: &[u8],
        lease: i64,
    ) -> Result<(Vec<u8>, Option<ResponseHeader>), Status> {
        let s = &self.server;
        let lease = super::lease::session_lease(s, lease).await?;
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{lease:x}").as_bytes());
        let t = TxnRequest {
            compare: vec![create_rev_is(&key, 0)],
            success: vec![cc::put_op(&key, b"", lease)],
            failure: vec![cc::get_op(&key)],
        };
        let resp = cc::txn(s, t).await?;
        let my_rev = if resp.succeeded {
            resp.header.as_ref().map_or(0, |h| h.revision)
        } else {
            match resp.responses.first().and_then(|r| r.response.as_ref()) {
                Some(OpResp::ResponseRange(r)) => r.kvs.first().map_or(0, |kv| kv.create_revision),
                _ => 0,
            }
        };
        let waited = cc::wait_deletes(s, &prefix, my_rev - 1).await;
        let header = match waited {
            Ok(h) => h,
            Err(e) => {
                let _ = cc::txn(
                    s,
                    TxnRequest {
                        compare: vec![],
                        success: vec![cc::delete_op(&key)],
                        failure: vec![],
                    },
                )
                .await;
                return Err(e.into());
            }
        };
        // The key may have gone with its lease while we waited.
        let still = cc::range(
            s,
            &crate::proto::etcdserverpb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )
        .await?;
        if still.kvs.is_empty() {
            return Err(Status::unknown("mutex: session is expired"));
        }
        Ok((key, header.or(still.header)))
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    #[instrument(skip_all, fields(name = ?String::from_utf8_lossy(&req.get_ref().name)))]
    async fn lock(&self, req: Request<LockRequest>) -> GrpcResult<LockResponse> {
        let r = req.into_inner();
        let (key, mut header) = self.acquire(&r.name, r.lease).await?;
        if let Some(h) = header.as_mut() {
            h.revision = 0;
        }
        self.server.fill_header(&mut header);
        Ok(Response::new(LockResponse { header, key }))
    }

    #[instrument(skip_all, fields(key = ?String::from_utf8_lossy(&req.get_ref().key)))]
    async fn unlock(&self, req: Request<UnlockRequest>) -> GrpcResult<UnlockResponse> {
        let key = req.into_inner().key;
        let resp = cc::txn(
            &self.server,
            TxnRequest {
                compare: vec![],
                success: vec![cc::delete_op(&key)],
                failure: vec![],
            },
        )
        .await?;
        let mut header = resp.header;
        self.server.fill_header(&mut header);
        Ok(Response::new(UnlockResponse { header }))
    }
}
