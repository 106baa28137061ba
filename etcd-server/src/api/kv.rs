//! The KV service: Range, Put, DeleteRange, Txn and Compact.

use std::sync::Arc;

use tonic::{Request, Response};
use tracing::instrument;

use super::GrpcResult;
use crate::apply;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    internal_raft_request::Request as Internal,
    kv_server::Kv,
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
};
use crate::server::{ApplyResponse, EtcdServer};

/// The KV service of one member.
#[derive(Debug, Clone)]
pub struct KvService {
    server: Arc<EtcdServer>,
}

impl KvService {
    /// Serves KV for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }
}

/// etcd's `checkRangeRequest`.
pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(Op::RequestRange(r)) => check_range(r),
        Some(Op::RequestPut(r)) => check_put(r),
        Some(Op::RequestDeleteRange(r)) => check_delete(r),
        Some(Op::RequestTxn(t)) => check_txn_ops(t, max_ops),
        None => Ok(()),
    }
}

/// etcd's `checkTxnRequest`: op counts and per-op validation over the whole tree.
fn check_txn_ops(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_ops - opc)?;
    }
    Ok(())
}

/// Everything etcd checks before a txn is proposed: the whole tree first, then (only from the
/// top) its duplicate-key rule (`checkIntervals`), in that order.
pub fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// A key interval `[begin, end)` where an empty `end` is +infinity, as in etcd's
/// `StringAffineInterval` (so a delete with `range_end == "\0"` overlaps nothing).
#[derive(Debug, Clone)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

fn affine_lt(a: &[u8], b: &[u8]) -> bool {
    // Empty sorts last.
    match (a.is_empty(), b.is_empty()) {
        (true, _) => false,
        (false, true) => true,
        (false, false) => a < b,
    }
}

impl Interval {
    fn point(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        Self {
            begin: key.to_vec(),
            end,
        }
    }

    fn contains_point(&self, key: &[u8]) -> bool {
        let p = Self::point(key);
        affine_lt(&self.begin, &p.end) && affine_lt(&p.begin, &self.end)
    }
}

type PutSet = std::collections::BTreeSet<Vec<u8>>;

fn overlaps(dels: &[Interval], key: &[u8]) -> bool {
    dels.iter().any(|d| d.contains_point(key))
}

/// Returns the keys put and ranges deleted by `ops` (recursively), or DuplicateKey if a put
/// overlaps another put or a delete on the same path.
fn check_intervals(ops: &[RequestOp]) -> Result<(PutSet, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Op::RequestDeleteRange(d)) => Some(if d.range_end.is_empty() {
                Interval::point(&d.key)
            } else {
                Interval {
                    begin: d.key.clone(),
                    end: d.range_end.clone(),
                }
            }),
            _ => None,
        })
        .collect();
    let mut puts = PutSet::new();
    for op in ops {
        let Some(Op::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || overlaps(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // Then and else are exclusive, so a key put by both branches is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || overlaps(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Op::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || overlaps(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

impl KvService {
    fn unexpected(resp: ApplyResponse) -> tonic::Status {
        EtcdError::Internal(format!("unexpected apply response {resp:?}")).status()
    }
}

impl KvService {
    /// Range, called by the tonic service and by the connection's direct path.
    #[instrument(skip_all, fields(key = ?String::from_utf8_lossy(&r.key)))]
    pub async fn handle_range(&self, r: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        check_range(&r)?;
        if !r.serializable {
            self.server.read_barrier().await?;
        }
        let view = self.server.store().read().map_err(EtcdError::from)?;
        let mut resp = apply::range(&view, &r)?;
        drop(view);
        self.server.fill_header(&mut resp.header);
        Ok(resp)
    }

    /// Put, called by the tonic service and by the connection's direct path.
    #[instrument(skip_all, fields(key = ?String::from_utf8_lossy(&r.key)))]
    pub async fn handle_put(&self, r: PutRequest) -> Result<PutResponse, tonic::Status> {
        check_put(&r)?;
        self.server.check_quota(crate::alarm::put_cost(&r)).await?;
        match self.server.propose(Internal::Put(r)).await? {
            ApplyResponse::Put(mut resp) => {
                self.server.fill_header(&mut resp.header);
                Ok(resp)
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// DeleteRange, called by the tonic service and by the connection's direct path.
    #[instrument(skip_all, fields(key = ?String::from_utf8_lossy(&r.key)))]
    pub async fn handle_delete_range(
        &self,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, tonic::Status> {
        check_delete(&r)?;
        match self.server.propose(Internal::DeleteRange(r)).await? {
            ApplyResponse::DeleteRange(mut resp) => {
                self.server.fill_header(&mut resp.header);
                Ok(resp)
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// Txn, called by the tonic service and by the connection's direct path.
    #[instrument(skip_all)]
    pub async fn handle_txn(&self, r: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        check_txn(&r, self.server.config().max_txn_ops)?;
        if apply::is_txn_readonly(&r) {
            let serializable = r
                .success
                .iter()
                .chain(&r.failure)
                .all(|op| matches!(&op.request, Some(Op::RequestRange(rr)) if rr.serializable));
            if !serializable {
                self.server.read_barrier().await?;
            }
            let view = self.server.store().read().map_err(EtcdError::from)?;
            let mut resp = apply::txn_read(&view, &r)?;
            drop(view);
            self.server.fill_header(&mut resp.header);
            return Ok(resp);
        }
        let cost = crate::alarm::txn_cost(&r);
        if cost > 0 {
            self.server.check_quota(cost).await?;
        }
        match self.server.propose(Internal::Txn(r)).await? {
            ApplyResponse::Txn(mut resp) => {
                self.server.fill_header(&mut resp.header);
                Ok(resp)
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// Compact, called by the tonic service and by the connection's direct path.
    #[instrument(skip_all, fields(revision = r.revision))]
    pub async fn handle_compact(
        &self,
        r: CompactionRequest,
    ) -> Result<CompactionResponse, tonic::Status> {
        match self.server.propose(Internal::Compaction(r)).await? {
            ApplyResponse::Compaction(mut resp) => {
                self.server.fill_header(&mut resp.header);
                Ok(resp)
            }
            other => Err(Self::unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> GrpcResult<RangeResponse> {
        self.handle_range(req.into_inner()).await.map(Response::new)
    }

    async fn put(&self, req: Request<PutRequest>) -> GrpcResult<PutResponse> {
        self.handle_put(req.into_inner()).await.map(Response::new)
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> GrpcResult<DeleteRangeResponse> {
        self.handle_delete_range(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn txn(&self, req: Request<TxnRequest>) -> GrpcResult<TxnResponse> {
        self.handle_txn(req.into_inner()).await.map(Response::new)
    }

    async fn compact(&self, req: Request<CompactionRequest>) -> GrpcResult<CompactionResponse> {
        self.handle_compact(req.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{Compare, DeleteRangeRequest};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }
    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestTxn(txn(success, failure))),
        }
    }

    #[test]
    fn duplicate_key_rules_match_etcd() {
        let table: Vec<(&str, TxnRequest, bool)> = vec![
            ("put+put", txn(vec![put("a"), put("a")], vec![]), false),
            (
                "put+delete",
                txn(vec![put("a"), del("a", "")], vec![]),
                false,
            ),
            (
                "put inside deleted range",
                txn(vec![put("b"), del("a", "c")], vec![]),
                false,
            ),
            (
                "delete+delete overlap ok",
                txn(vec![del("a", "c"), del("b", "")], vec![]),
                true,
            ),
            (
                "then/else separate",
                txn(vec![put("a")], vec![put("a")]),
                true,
            ),
            (
                "nested then+else same key ok",
                txn(vec![nested(vec![put("a")], vec![put("a")])], vec![]),
                true,
            ),
            (
                "nested vs outer put",
                txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![]),
                false,
            ),
            (
                "delete to \\0 overlaps nothing",
                txn(vec![put("b"), del("a", "\0")], vec![]),
                true,
            ),
            (
                "distinct keys",
                txn(vec![put("a"), put("b"), del("c", "")], vec![]),
                true,
            ),
        ];
        // The whole tree is validated before the duplicate-key rule, as etcd does.
        let empty_later = txn(
            vec![nested(vec![put("a"), put("a")], vec![]), put("")],
            vec![],
        );
        assert_eq!(check_txn(&empty_later, 128), Err(EtcdError::EmptyKey));
        for (name, t, ok) in table {
            let got = check_txn(&t, 128);
            assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
            if !ok {
                assert_eq!(got, Err(EtcdError::DuplicateKey), "{name}");
            }
        }
    }

    #[test]
    fn edge_validation() {
        let many = txn((0..129).map(|i| put(&i.to_string())).collect(), vec![]);
        assert_eq!(check_txn(&many, 128), Err(EtcdError::TooManyOps));
        let empty_cmp = TxnRequest {
            compare: vec![Compare::default()],
            ..Default::default()
        };
        assert_eq!(check_txn(&empty_cmp, 128), Err(EtcdError::EmptyKey));
        assert_eq!(check_put(&PutRequest::default()), Err(EtcdError::EmptyKey));
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
        let p = PutRequest {
            key: b"k".to_vec(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::LeaseProvided));
        let r = RangeRequest {
            key: b"k".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert_eq!(check_range(&r), Err(EtcdError::InvalidSortOption));
    }
}
