//! Alarms (NOSPACE, CORRUPT), Raft-applied and persisted, plus the backend quota check that
//! raises NOSPACE.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use redb::{ReadableTable, TableDefinition};

use crate::backend::BackendError;
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, PutRequest, RequestOp, TxnRequest,
    alarm_request::AlarmAction, request_op::Request as Op,
};

/// Active alarms: key `(member ID, alarm type)`.
pub const ALARMS: TableDefinition<(u64, i32), ()> = TableDefinition::new("alarm");

/// The active alarms of the cluster.
#[derive(Debug, Default)]
pub struct Alarms {
    active: Mutex<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<(u64, i32)>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the persisted alarms.
    pub fn recover(&self, tx: &redb::ReadTransaction) -> Result<(), BackendError> {
        let mut active = self.lock();
        active.clear();
        match tx.open_table(ALARMS) {
            Ok(t) => {
                for item in t.iter()? {
                    let (k, _) = item?;
                    active.insert(k.value());
                }
                Ok(())
            }
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether alarm `ty` is active on any member.
    pub fn has(&self, ty: AlarmType) -> bool {
        self.lock().iter().any(|(_, t)| *t == ty as i32)
    }

    /// All active alarms.
    pub fn list(&self) -> Vec<AlarmMember> {
        self.lock()
            .iter()
            .map(|(m, t)| AlarmMember {
                member_id: *m,
                alarm: *t,
            })
            .collect()
    }

    /// Applies an `AlarmRequest` as etcd does: activate and deactivate report the alarm only
    /// if they changed something; get lists the alarms of the given type (all for NONE).
    pub fn apply(
        &self,
        tx: &redb::WriteTransaction,
        req: &AlarmRequest,
    ) -> Result<AlarmResponse, BackendError> {
        let mut resp = AlarmResponse::default();
        let key = (req.member_id, req.alarm);
        let member = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                resp.alarms = self
                    .list()
                    .into_iter()
                    .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                    .collect();
            }
            Ok(AlarmAction::Activate) => {
                if req.alarm != AlarmType::None as i32 && self.lock().insert(key) {
                    tx.open_table(ALARMS)?.insert(key, ())?;
                    tracing::warn!(
                        member = format!("{:x}", req.member_id),
                        alarm = req.alarm,
                        "alarm raised"
                    );
                    resp.alarms.push(member);
                }
            }
            Ok(AlarmAction::Deactivate) => {
                if self.lock().remove(&key) {
                    tx.open_table(ALARMS)?.remove(key)?;
                    tracing::info!(
                        member = format!("{:x}", req.member_id),
                        alarm = req.alarm,
                        "alarm disarmed"
                    );
                    resp.alarms.push(member);
                }
            }
            Err(_) => {}
        }
        Ok(resp)
    }
}

/// Approximate bytes a put adds to the backend (etcd's quota cost).
pub fn put_cost(p: &PutRequest) -> usize {
    p.key.len() + p.value.len() + 64
}

fn ops_cost(ops: &[RequestOp]) -> usize {
    ops.iter()
        .map(|op| match &op.request {
            Some(Op::RequestPut(p)) => put_cost(p),
            Some(Op::RequestTxn(t)) => txn_cost(t),
            _ => 0,
        })
        .sum()
}

/// Bytes a txn may add: the larger branch, as etcd counts it.
pub fn txn_cost(t: &TxnRequest) -> usize {
    ops_cost(&t.success).max(ops_cost(&t.failure))
}
