//! The lessor: leases, their TTLs and the keys attached to them.
//!
//! Grants and revocations are Raft-applied (so every member agrees on which leases exist and
//! what is attached); expiry clocks run only on the leader, which revokes expired leases by
//! proposing `LeaseRevoke`. Keep-alives are leader-local, as in etcd. On restart (or when a
//! member becomes leader) every lease's remaining TTL is refreshed to its full TTL.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{ReadableTable, TableDefinition};

use crate::apply::LeaseCheck;
use crate::backend::BackendError;
use crate::error::EtcdError;
use crate::proto::mvccpb::{Event, event::EventType};

/// Leases by ID; the value is the granted TTL in seconds (8 bytes, big-endian).
pub const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("lease");

/// etcd's `MaxLeaseTTL`.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug, Clone)]
struct Lease {
    ttl: i64,
    /// Remaining TTL recorded by the last checkpoint (0: none; the full TTL applies).
    remaining: i64,
    /// When the lease expires, if this member is the leader.
    expiry: Option<Instant>,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<i64, Lease>,
    key_lease: HashMap<Vec<u8>, i64>,
    primary: bool,
    /// Expired leases whose revocation has been proposed.
    revoking: HashSet<i64>,
}

/// What `LeaseTimeToLive` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToLive {
    /// Granted TTL.
    pub granted_ttl: i64,
    /// Remaining seconds (rounded up).
    pub remaining: i64,
    /// Attached keys.
    pub keys: Vec<Vec<u8>>,
}

/// The lessor of one member.
#[derive(Debug)]
pub struct Lessor {
    inner: Mutex<Inner>,
    min_ttl: i64,
}

impl LeaseCheck for Lessor {
    fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }
}

fn encode(ttl: i64, remaining: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&ttl.to_be_bytes());
    b[8..].copy_from_slice(&remaining.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> (i64, i64) {
    let int = |r: std::ops::Range<usize>| {
        b.get(r)
            .and_then(|s| s.try_into().ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0)
    };
    (int(0..8), int(8..16))
}

impl Lessor {
    /// A lessor whose minimum TTL is `min_ttl` seconds (etcd: ceil(1.5 × election timeout)).
    pub fn new(min_ttl: i64) -> Self {
        Self {
            inner: Mutex::default(),
            min_ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads leases from the backend and re-attaches the live keys that name them.
    pub fn recover(
        &self,
        tx: &redb::ReadTransaction,
        leased: &[(Vec<u8>, i64)],
    ) -> Result<(), BackendError> {
        let mut inner = self.lock();
        inner.leases.clear();
        inner.key_lease.clear();
        match tx.open_table(LEASES) {
            Ok(t) => {
                for item in t.iter()? {
                    let (k, v) = item?;
                    let (ttl, remaining) = decode(v.value());
                    inner.leases.insert(
                        k.value(),
                        Lease {
                            ttl,
                            remaining,
                            expiry: None,
                            keys: BTreeSet::new(),
                        },
                    );
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        for (key, lease) in leased {
            if let Some(l) = inner.leases.get_mut(lease) {
                l.keys.insert(key.clone());
                inner.key_lease.insert(key.clone(), *lease);
            }
        }
        Ok(())
    }

    /// Applies a grant. Returns the effective TTL.
    pub fn grant(
        &self,
        tx: &redb::WriteTransaction,
        id: i64,
        ttl: i64,
    ) -> Result<Result<i64, EtcdError>, BackendError> {
        if id == 0 {
            return Ok(Err(EtcdError::LeaseNotFound));
        }
        if ttl > MAX_LEASE_TTL {
            return Ok(Err(EtcdError::LeaseTtlTooLarge));
        }
        let mut inner = self.lock();
        if inner.leases.contains_key(&id) {
            return Ok(Err(EtcdError::LeaseExist));
        }
        let ttl = ttl.max(self.min_ttl);
        let expiry = inner
            .primary
            .then(|| Instant::now() + Duration::from_secs(ttl as u64));
        tx.open_table(LEASES)?
            .insert(id, encode(ttl, 0).as_slice())?;
        inner.leases.insert(
            id,
            Lease {
                ttl,
                remaining: 0,
                expiry,
                keys: BTreeSet::new(),
            },
        );
        Ok(Ok(ttl))
    }

    /// The keys attached to `id`, or None if the lease does not exist.
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }

    /// Forgets lease `id` (after its keys were deleted).
    pub fn remove(&self, tx: &redb::WriteTransaction, id: i64) -> Result<(), BackendError> {
        tx.open_table(LEASES)?.remove(id)?;
        let mut inner = self.lock();
        if let Some(l) = inner.leases.remove(&id) {
            for k in l.keys {
                inner.key_lease.remove(&k);
            }
        }
        inner.revoking.remove(&id);
        Ok(())
    }

    /// Updates key attachments after a write transaction produced `events`.
    pub fn on_events(&self, events: &[Event]) {
        let mut inner = self.lock();
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            let new_lease = if ev.r#type == EventType::Put as i32 {
                kv.lease
            } else {
                0
            };
            let old = inner.key_lease.get(&kv.key).copied().unwrap_or(0);
            if old == new_lease {
                continue;
            }
            if old != 0 {
                if let Some(l) = inner.leases.get_mut(&old) {
                    l.keys.remove(&kv.key);
                }
                inner.key_lease.remove(&kv.key);
            }
            if new_lease != 0
                && let Some(l) = inner.leases.get_mut(&new_lease)
            {
                l.keys.insert(kv.key.clone());
                inner.key_lease.insert(kv.key.clone(), new_lease);
            }
        }
    }

    /// Applies a checkpoint: the remaining TTL a new leader starts the lease from.
    pub fn checkpoint(
        &self,
        tx: &redb::WriteTransaction,
        id: i64,
        remaining: i64,
    ) -> Result<(), BackendError> {
        let mut inner = self.lock();
        let Some(l) = inner.leases.get_mut(&id) else {
            return Ok(());
        };
        l.remaining = remaining;
        tx.open_table(LEASES)?
            .insert(id, encode(l.ttl, remaining).as_slice())?;
        Ok(())
    }

    #[cfg(test)]
    /// Renews lease `id` (leader only); returns its TTL, and whether a checkpoint must be
    /// cleared so a future leader does not start it from the stale remaining TTL.
    pub fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        self.renew_checked(id).map(|(ttl, _)| ttl)
    }

    /// Like [`Lessor::renew`], also saying whether the lease carries a checkpoint to clear.
    pub fn renew_checked(&self, id: i64) -> Result<(i64, bool), EtcdError> {
        let mut inner = self.lock();
        if !inner.primary {
            return Err(EtcdError::NotLeader);
        }
        let l = inner.leases.get_mut(&id).ok_or(EtcdError::LeaseNotFound)?;
        l.expiry = Some(Instant::now() + Duration::from_secs(l.ttl as u64));
        Ok((l.ttl, l.remaining > 0))
    }

    /// `(id, remaining seconds)` of every lease whose clock runs here, for checkpointing.
    pub fn remaining_all(&self) -> Vec<(i64, i64)> {
        let now = Instant::now();
        self.lock()
            .leases
            .iter()
            .filter_map(|(id, l)| {
                let e = l.expiry?;
                let left = e.saturating_duration_since(now);
                Some((
                    *id,
                    (left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0)).max(1),
                ))
            })
            .collect()
    }

    /// Remaining TTL and keys of lease `id`.
    pub fn time_to_live(&self, id: i64) -> Option<TimeToLive> {
        let inner = self.lock();
        let l = inner.leases.get(&id)?;
        // Whole seconds, rounded down, as etcd reports them.
        let remaining = match l.expiry {
            Some(e) => e.saturating_duration_since(Instant::now()).as_secs() as i64,
            None => l.ttl,
        };
        Some(TimeToLive {
            granted_ttl: l.ttl,
            remaining,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// IDs of all leases.
    pub fn leases(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases past their expiry that nobody is revoking yet; marks them as being revoked.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        let mut inner = self.lock();
        let expired: Vec<i64> = inner
            .leases
            .iter()
            .filter(|(id, l)| l.expiry.is_some_and(|e| e <= now) && !inner.revoking.contains(*id))
            .map(|(id, _)| *id)
            .collect();
        inner.revoking.extend(expired.iter().copied());
        expired
    }

    /// A proposed revocation failed: let the expiry loop try again.
    pub fn revoke_failed(&self, id: i64) {
        self.lock().revoking.remove(&id);
    }

    /// This member became leader: start every lease's clock from its last checkpoint (or its
    /// full TTL), plus `extend`, so leader changes neither expire leases early nor extend them
    /// without bound.
    pub fn promote(&self, extend: Duration) {
        let mut inner = self.lock();
        inner.primary = true;
        inner.revoking.clear();
        let now = Instant::now();
        for l in inner.leases.values_mut() {
            let from = if l.remaining > 0 {
                l.remaining.min(l.ttl)
            } else {
                l.ttl
            };
            l.expiry = Some(now + Duration::from_secs(from as u64) + extend);
        }
    }

    /// This member lost leadership: stop the clocks.
    pub fn demote(&self) {
        let mut inner = self.lock();
        inner.primary = false;
        for l in inner.leases.values_mut() {
            l.expiry = None;
        }
    }

    /// Promotes or demotes the lessor to match leadership (no-op when it already matches).
    pub fn follow_leadership(&self, is_leader: bool, extend: Duration) {
        match (is_leader, self.is_primary()) {
            (true, false) => self.promote(extend),
            (false, true) => self.demote(),
            _ => {}
        }
    }

    /// Whether this member runs the expiry clocks.
    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn db() -> (tempfile::TempDir, redb::Database) {
        let d = tempfile::tempdir().expect("tempdir");
        let db = redb::Database::create(d.path().join("db")).expect("db");
        (d, db)
    }

    fn put(key: &str, lease: i64) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.into(),
                lease,
                create_revision: 2,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn grant_attach_detach_and_errors() {
        let (_d, db) = db();
        let l = Lessor::new(2);
        l.promote(Duration::ZERO);
        let tx = db.begin_write().expect("tx");
        assert_eq!(
            l.grant(&tx, 7, 1).expect("io"),
            Ok(2),
            "minimum TTL applies"
        );
        assert_eq!(l.grant(&tx, 7, 10).expect("io"), Err(EtcdError::LeaseExist));
        assert_eq!(
            l.grant(&tx, 8, MAX_LEASE_TTL + 1).expect("io"),
            Err(EtcdError::LeaseTtlTooLarge)
        );
        l.on_events(&[put("a", 7), put("b", 7)]);
        assert_eq!(l.keys(7), Some(vec![b"a".to_vec(), b"b".to_vec()]));
        // Put with lease 0 detaches; delete detaches.
        l.on_events(&[put("a", 0)]);
        let del = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"b".to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        };
        l.on_events(&[del]);
        assert_eq!(l.keys(7), Some(vec![]));
        assert_eq!(l.renew(99), Err(EtcdError::LeaseNotFound));
        assert_eq!(l.renew(7), Ok(2));
        let ttl = l.time_to_live(7).expect("exists");
        assert_eq!(
            (ttl.granted_ttl, ttl.remaining),
            (2, 1),
            "remaining TTL rounds down"
        );
        l.remove(&tx, 7).expect("remove");
        assert!(!l.exists(7));
    }

    #[test]
    fn promotion_starts_from_the_checkpoint() {
        let (_d, db) = db();
        let l = Lessor::new(1);
        let tx = db.begin_write().expect("tx");
        l.grant(&tx, 1, 100).expect("io").expect("granted");
        l.grant(&tx, 2, 100).expect("io").expect("granted");
        l.checkpoint(&tx, 1, 10).expect("checkpoint");
        l.promote(Duration::ZERO);
        let t1 = l.time_to_live(1).expect("lease 1");
        let t2 = l.time_to_live(2).expect("lease 2");
        assert!(
            t1.remaining <= 10,
            "checkpointed lease resumes from its remaining TTL: {t1:?}"
        );
        assert!(
            t2.remaining > 90,
            "lease without checkpoint gets its full TTL: {t2:?}"
        );
        // A renewal reports the checkpoint so it can be cleared.
        assert_eq!(l.renew_checked(1), Ok((100, true)));
        assert_eq!(l.renew_checked(2), Ok((100, false)));
    }

    #[test]
    fn expiry_is_reported_once() {
        let (_d, db) = db();
        let l = Lessor::new(1);
        l.promote(Duration::ZERO);
        let tx = db.begin_write().expect("tx");
        l.grant(&tx, 1, 1).expect("io").expect("granted");
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(l.take_expired(later), vec![1]);
        assert!(l.take_expired(later).is_empty());
        l.revoke_failed(1);
        assert_eq!(l.take_expired(later), vec![1]);
    }
}
