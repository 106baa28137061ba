//! Server-side building blocks for the Lock and Election services: etcd's `concurrency`
//! recipes (keys bound to a lease under a name prefix, ordered by create revision), run
//! in-process against this member's KV and watch hub.

use crate::apply;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
    compare::{CompareResult, CompareTarget, TargetUnion},
    internal_raft_request::Request as Internal,
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
    watch_create_request::FilterType,
};
use crate::proto::mvccpb::event::EventType;
use crate::server::{ApplyResponse, EtcdServer};

pub use etcd_api::keys::prefix_end;

/// A compare `create_revision(key) == rev`.
pub fn create_rev_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

/// A put op.
pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// A single-key get op.
pub fn get_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// A single-key delete op.
pub fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// Runs a txn through Raft.
pub async fn txn(server: &EtcdServer, t: TxnRequest) -> Result<TxnResponse, EtcdError> {
    match server.propose(Internal::Txn(t)).await? {
        ApplyResponse::Txn(r) => Ok(r),
        other => Err(EtcdError::Internal(format!("unexpected {other:?}"))),
    }
}

/// A linearizable range.
pub async fn range(server: &EtcdServer, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
    server.read_barrier().await?;
    let view = server.store().read()?;
    apply::range(&view, req)
}

/// The oldest key (by create revision) under `prefix`, as of now.
pub async fn oldest(server: &EtcdServer, prefix: &[u8]) -> Result<RangeResponse, EtcdError> {
    let req = RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    };
    range(server, &req).await
}

/// Waits until `key` is deleted at a revision after `rev`.
pub async fn wait_delete(server: &EtcdServer, key: &[u8], rev: i64) -> Result<(), EtcdError> {
    let (mut stream, mut rx) = server.hub().open_stream();
    stream
        .create(WatchCreateRequest {
            key: key.to_vec(),
            start_revision: rev + 1,
            filters: vec![FilterType::Noput as i32],
            ..Default::default()
        })
        .await;
    while let Some(out) = rx.recv().await {
        if out.resp.canceled {
            return Err(EtcdError::Internal(
                "watch for deletion was canceled".into(),
            ));
        }
        if out
            .resp
            .events
            .iter()
            .any(|e| e.r#type == EventType::Delete as i32)
        {
            return Ok(());
        }
    }
    Err(EtcdError::Stopped)
}

/// etcd's `waitDeletes`: waits until no key under `prefix` has a create revision at or below
/// `max_create_rev`. Returns the header of the last read.
pub async fn wait_deletes(
    server: &EtcdServer,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<Option<ResponseHeader>, EtcdError> {
    loop {
        let req = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision: max_create_rev,
            ..Default::default()
        };
        let resp = range(server, &req).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(resp.header);
        };
        let at = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(server, &kv.key, at).await?;
    }
}
