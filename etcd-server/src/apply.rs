//! etcd's applier: executes KV requests against MVCC transactions exactly as etcd does,
//! including its quirks (compares evaluated before any write, nested-txn paths, sort rules).

use std::cmp::Ordering;

use crate::error::EtcdError;
use crate::mvcc::{RangeOptions, RangeResult, ReadTxn, TxnWrite};
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
};
use crate::proto::mvccpb::{Event, KeyValue};

/// Read access shared by read views and write transactions.
pub trait KvRead {
    /// Range read with etcd's key conventions.
    fn range(&self, key: &[u8], end: &[u8], ro: RangeOptions) -> Result<RangeResult, EtcdError>;
    /// The revision reads observe.
    fn rev(&self) -> i64;
    /// The compaction revision.
    fn first_rev(&self) -> i64;
}

impl KvRead for ReadTxn<'_> {
    fn range(&self, key: &[u8], end: &[u8], ro: RangeOptions) -> Result<RangeResult, EtcdError> {
        Ok(ReadTxn::range(self, key, end, ro)?)
    }
    fn rev(&self) -> i64 {
        ReadTxn::rev(self)
    }
    fn first_rev(&self) -> i64 {
        ReadTxn::first_rev(self)
    }
}

impl KvRead for TxnWrite<'_, '_> {
    fn range(&self, key: &[u8], end: &[u8], ro: RangeOptions) -> Result<RangeResult, EtcdError> {
        Ok(TxnWrite::range(self, key, end, ro)?)
    }
    fn rev(&self) -> i64 {
        TxnWrite::rev(self)
    }
    fn first_rev(&self) -> i64 {
        TxnWrite::first_rev(self)
    }
}

/// Whether a lease ID names a live lease.
pub trait LeaseCheck {
    /// True if `id` is a granted, unexpired lease.
    fn exists(&self, id: i64) -> bool;
}

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

/// etcd's Range: filters, sort and limit applied after the MVCC read.
pub fn range(r: &impl KvRead, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
    let filtered = req.sort_order != SortOrder::None as i32
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Fetch one extra key so `more` can be computed; fetch everything when sorting/filtering.
    let limit = if filtered {
        0
    } else if req.limit > 0 {
        req.limit + 1
    } else {
        req.limit
    };
    let ro = RangeOptions {
        limit,
        rev: req.revision,
        count_only: req.count_only,
    };
    let mut rr = r.range(&req.key, &req.range_end, ro)?;
    let prune =
        |kvs: &mut Vec<KeyValue>, drop: &dyn Fn(&KeyValue) -> bool| kvs.retain(|kv| !drop(kv));
    if req.max_mod_revision != 0 {
        prune(&mut rr.kvs, &|kv| kv.mod_revision > req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        prune(&mut rr.kvs, &|kv| kv.mod_revision < req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        prune(&mut rr.kvs, &|kv| {
            kv.create_revision > req.max_create_revision
        });
    }
    if req.min_create_revision != 0 {
        prune(&mut rr.kvs, &|kv| {
            kv.create_revision < req.min_create_revision
        });
    }
    let mut order = req.sort_order;
    if req.sort_target != SortTarget::Key as i32 && order == SortOrder::None as i32 {
        order = SortOrder::Ascend as i32;
    }
    let cmp: Option<fn(&KeyValue, &KeyValue) -> Ordering> =
        match SortTarget::try_from(req.sort_target) {
            Ok(SortTarget::Key) => Some(|a, b| a.key.cmp(&b.key)),
            Ok(SortTarget::Version) => Some(|a, b| a.version.cmp(&b.version)),
            Ok(SortTarget::Create) => Some(|a, b| a.create_revision.cmp(&b.create_revision)),
            Ok(SortTarget::Mod) => Some(|a, b| a.mod_revision.cmp(&b.mod_revision)),
            Ok(SortTarget::Value) => Some(|a, b| a.value.cmp(&b.value)),
            Err(_) => None,
        };
    if let Some(cmp) = cmp {
        // Stable sorts: ties keep key order, as etcd's small-slice sorts do.
        if order == SortOrder::Ascend as i32 {
            rr.kvs.sort_by(cmp);
        } else if order == SortOrder::Descend as i32 {
            rr.kvs.sort_by(|a, b| cmp(b, a));
        }
    }
    let mut more = false;
    if req.limit > 0 && rr.kvs.len() > req.limit as usize {
        rr.kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut rr.kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(rr.rev),
        kvs: rr.kvs,
        more,
        count: rr.count,
    })
}

fn single_key(txn: &TxnWrite<'_, '_>, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
    Ok(KvRead::range(txn, key, b"", RangeOptions::default())?
        .kvs
        .into_iter()
        .next())
}

/// etcd's Put inside a write transaction. Preconditions (lease, ignore_*) are checked by the
/// caller for txns; a standalone put checks them here.
pub fn put(txn: &mut TxnWrite<'_, '_>, req: &PutRequest) -> Result<PutResponse, EtcdError> {
    let mut value = &req.value;
    let mut lease = req.lease;
    let prev = if req.ignore_value || req.ignore_lease || req.prev_kv {
        single_key(txn, &req.key)?
    } else {
        None
    };
    if (req.ignore_value || req.ignore_lease) && prev.is_none() {
        return Err(EtcdError::KeyNotFound);
    }
    if let Some(p) = &prev {
        if req.ignore_value {
            value = &p.value;
        }
        if req.ignore_lease {
            lease = p.lease;
        }
    }
    let value = value.clone();
    let rev = txn.put(&req.key, &value, lease)?;
    Ok(PutResponse {
        header: header(rev),
        prev_kv: if req.prev_kv { prev } else { None },
    })
}

/// etcd's DeleteRange inside a write transaction.
pub fn delete_range(
    txn: &mut TxnWrite<'_, '_>,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, EtcdError> {
    let prev_kvs = if req.prev_kv {
        KvRead::range(txn, &req.key, &req.range_end, RangeOptions::default())?.kvs
    } else {
        Vec::new()
    };
    let (deleted, rev) = txn.delete_range(&req.key, &req.range_end)?;
    Ok(DeleteRangeResponse {
        header: header(rev),
        deleted,
        prev_kvs,
    })
}

/// A standalone Put: checks the lease first, as etcd does outside txns.
pub fn apply_put(
    txn: &mut TxnWrite<'_, '_>,
    req: &PutRequest,
    leases: &dyn LeaseCheck,
) -> Result<PutResponse, EtcdError> {
    if req.lease != 0 && !leases.exists(req.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    put(txn, req)
}

/// Whether a txn has only range operations (etcd serves those without Raft).
pub fn is_txn_readonly(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int = |v: i64| -> i64 {
        match (CompareTarget::try_from(c.target), &c.target_union) {
            (Ok(CompareTarget::Version), Some(TargetUnion::Version(x))) => *x,
            (Ok(CompareTarget::Create), Some(TargetUnion::CreateRevision(x))) => *x,
            (Ok(CompareTarget::Mod), Some(TargetUnion::ModRevision(x))) => *x,
            (Ok(CompareTarget::Lease), Some(TargetUnion::Lease(x))) => *x,
            _ => v,
        }
    };
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Version) => kv.version.cmp(&int(0)),
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(0)),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(0)),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(0)),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

fn apply_compare(r: &impl KvRead, c: &Compare) -> bool {
    let Ok(rr) = r.range(&c.key, &c.range_end, RangeOptions::default()) else {
        return false;
    };
    if rr.kvs.is_empty() {
        // A missing key compares as zero, except VALUE, which always fails.
        return c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default());
    }
    rr.kvs.iter().all(|kv| compare_kv(c, kv))
}

/// Evaluates every compare on the taken path up front (etcd's `compareToPath`): nested txns
/// see the state before the outer txn's writes.
fn compare_to_path(r: &impl KvRead, t: &TxnRequest, path: &mut Vec<bool>) {
    let ok = t.compare.iter().all(|c| apply_compare(r, c));
    path.push(ok);
    for op in if ok { &t.success } else { &t.failure } {
        if let Some(Request::RequestTxn(inner)) = &op.request {
            compare_to_path(r, inner, path);
        }
    }
}

/// Walks the ops on the taken path, calling `check` on each non-txn op.
fn check_path(
    t: &TxnRequest,
    path: &[bool],
    pos: &mut usize,
    check: &mut dyn FnMut(&RequestOp) -> Result<(), EtcdError>,
) -> Result<(), EtcdError> {
    let ok = path[*pos];
    *pos += 1;
    for op in if ok { &t.success } else { &t.failure } {
        match &op.request {
            Some(Request::RequestTxn(inner)) => check_path(inner, path, pos, check)?,
            _ => check(op)?,
        }
    }
    Ok(())
}

fn check_range_op(r: &impl KvRead, op: &RequestOp) -> Result<(), EtcdError> {
    if let Some(Request::RequestRange(req)) = &op.request {
        if req.revision == 0 {
            return Ok(());
        }
        if req.revision > r.rev() {
            return Err(EtcdError::FutureRev);
        }
        if req.revision < r.first_rev() {
            return Err(EtcdError::Compacted);
        }
    }
    Ok(())
}

fn check_put_op(r: &impl KvRead, op: &RequestOp, leases: &dyn LeaseCheck) -> Result<(), EtcdError> {
    if let Some(Request::RequestPut(req)) = &op.request {
        if (req.ignore_value || req.ignore_lease)
            && r.range(&req.key, b"", RangeOptions::default())?
                .kvs
                .is_empty()
        {
            return Err(EtcdError::KeyNotFound);
        }
        if req.lease != 0 && !leases.exists(req.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
    }
    Ok(())
}

/// A put with `ignore_value`/`ignore_lease` on a key an earlier delete of the same txn
/// removed would fail half-way through the txn (etcd 3.4 panics there). Refuse it up front,
/// so a failing txn never leaves writes behind.
fn check_ignore_after_delete(
    t: &TxnRequest,
    path: &[bool],
    pos: &mut usize,
    deleted: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), EtcdError> {
    let ok = path[*pos];
    *pos += 1;
    for op in if ok { &t.success } else { &t.failure } {
        match &op.request {
            Some(Request::RequestTxn(inner)) => {
                check_ignore_after_delete(inner, path, pos, deleted)?
            }
            Some(Request::RequestDeleteRange(d)) => {
                deleted.push((d.key.clone(), d.range_end.clone()))
            }
            Some(Request::RequestPut(p)) if p.ignore_value || p.ignore_lease => {
                let hit = deleted.iter().any(|(k, end)| match end.as_slice() {
                    [] => k == &p.key,
                    [0] => p.key >= *k,
                    e => p.key >= *k && p.key.as_slice() < e,
                });
                if hit {
                    return Err(EtcdError::KeyNotFound);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Executes the ops of the taken path. `exec` runs one non-txn op.
fn run_path<T>(
    ctx: &mut T,
    t: &TxnRequest,
    path: &[bool],
    pos: &mut usize,
    exec: &mut dyn FnMut(&mut T, &Request) -> Result<Response, EtcdError>,
) -> Result<TxnResponse, EtcdError> {
    let ok = path[*pos];
    *pos += 1;
    let mut responses = Vec::new();
    for op in if ok { &t.success } else { &t.failure } {
        let resp = match &op.request {
            Some(Request::RequestTxn(inner)) => Some(Response::ResponseTxn(run_path(
                ctx, inner, path, pos, exec,
            )?)),
            Some(req) => Some(exec(ctx, req)?),
            None => None,
        };
        responses.push(ResponseOp { response: resp });
    }
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: ok,
        responses,
    })
}

/// A read-only txn, served from a read view.
pub fn txn_read(r: &impl KvRead, t: &TxnRequest) -> Result<TxnResponse, EtcdError> {
    let mut path = Vec::new();
    compare_to_path(r, t, &mut path);
    check_path(t, &path, &mut 0, &mut |op| check_range_op(r, op))?;
    let mut resp = run_path(&mut (), t, &path, &mut 0, &mut |_, req| match req {
        Request::RequestRange(rr) => Ok(Response::ResponseRange(range(r, rr)?)),
        _ => Err(EtcdError::Internal("write op in read-only txn".into())),
    })?;
    resp.header = header(r.rev());
    Ok(resp)
}

/// A txn with writes, applied in one MVCC write transaction. Returns the response and the
/// watch events of its revision.
pub fn txn_write(
    txn: &mut TxnWrite<'_, '_>,
    t: &TxnRequest,
    leases: &dyn LeaseCheck,
) -> Result<TxnResponse, EtcdError> {
    let mut path = Vec::new();
    compare_to_path(txn, t, &mut path);
    {
        let r: &TxnWrite<'_, '_> = txn;
        check_path(t, &path, &mut 0, &mut |op| check_put_op(r, op, leases))?;
        check_path(t, &path, &mut 0, &mut |op| check_range_op(r, op))?;
        check_ignore_after_delete(t, &path, &mut 0, &mut Vec::new())?;
    }
    let mut resp = run_path(txn, t, &path, &mut 0, &mut |txn, req| {
        Ok(match req {
            Request::RequestRange(r) => Response::ResponseRange(range(txn, r)?),
            Request::RequestPut(p) => Response::ResponsePut(put(txn, p)?),
            Request::RequestDeleteRange(d) => Response::ResponseDeleteRange(delete_range(txn, d)?),
            Request::RequestTxn(_) => unreachable!("nested txns are walked by run_path"),
        })
    })?;
    resp.header = header(txn.rev());
    Ok(resp)
}

/// Attaches `prev_kv` to watch events: the key's value just before each event's revision.
/// Left empty when that revision has been compacted, as etcd does.
pub fn fill_prev_kvs(r: &impl KvRead, events: &mut [Event]) {
    use crate::proto::mvccpb::event::EventType;
    for ev in events {
        let Some(kv) = &ev.kv else { continue };
        // A create event has no previous value, even if the key existed earlier in the same
        // revision (deleted and re-put in one txn): etcd skips it.
        if ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision {
            continue;
        }
        let ro = RangeOptions {
            rev: kv.mod_revision - 1,
            ..Default::default()
        };
        if let Ok(rr) = r.range(&kv.key, b"", ro) {
            ev.prev_kv = rr.kvs.into_iter().next();
        }
    }
}
