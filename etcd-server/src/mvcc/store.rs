//! The MVCC store: the key index in memory, key-value revisions in the backend.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost::Message;
use redb::{ReadableDatabase, ReadableTable};

use super::index::TreeIndex;
use super::{MvccError, Revision};
use crate::backend::{
    Backend, BackendError, KV, META, META_COMPACT_REV, META_CONSISTENT_INDEX, META_CURRENT_REV,
    META_TERM,
};
use crate::proto::mvccpb::{Event, KeyValue, event::EventType};

const TOMBSTONE: u8 = 1;
const LIVE: u8 = 0;

/// Options of an MVCC range read.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeOptions {
    /// Maximum number of key-values to return; 0 for no limit.
    pub limit: i64,
    /// Revision to read at; 0 (or negative) for the current one.
    pub rev: i64,
    /// Return only the count.
    pub count_only: bool,
}

/// Result of an MVCC range read.
#[derive(Debug, Clone, Default)]
pub struct RangeResult {
    /// The key-values, in key order.
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range at the read revision, regardless of `limit`.
    pub count: i64,
    /// The store's current revision at the time of the read.
    pub rev: i64,
}

#[derive(Debug)]
struct State {
    index: TreeIndex,
    current_rev: i64,
    /// etcd's `compactMainRev`: -1 until the first compaction.
    compact_rev: i64,
    applied_index: u64,
    applied_term: u64,
    /// `(key, lease)` of the live keys attached to a lease, found while loading; taken once
    /// by `take_loaded_leases` to rebuild the lessor.
    loaded_leases: Vec<(Vec<u8>, i64)>,
}

/// The MVCC store. Reads take a shared lock; the single apply loop writes under the exclusive
/// lock and commits the backend before releasing it, so readers never see the index ahead of
/// the backend.
#[derive(Debug)]
pub struct KvStore {
    backend: Backend,
    state: RwLock<State>,
}

fn encode(flag: u8, kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + kv.encoded_len());
    buf.push(flag);
    kv.encode(&mut buf).expect("Vec grows as needed");
    buf
}

fn decode(bytes: &[u8]) -> Result<(bool, KeyValue), BackendError> {
    let (flag, rest) = bytes
        .split_first()
        .ok_or_else(|| BackendError::Corrupt("empty key-value record".into()))?;
    let kv = KeyValue::decode(rest).map_err(|e| BackendError::Corrupt(e.to_string()))?;
    Ok((*flag == TOMBSTONE, kv))
}

/// The key-value stored at revision `r`, which the index says exists.
fn read_rev<T: ReadableTable<(i64, i64), &'static [u8]>>(
    table: &T,
    r: Revision,
) -> Result<KeyValue, MvccError> {
    let bytes = table
        .get((r.main, r.sub))
        .map_err(BackendError::from)?
        .ok_or_else(|| BackendError::Corrupt(format!("revision {r:?} missing from backend")))?;
    Ok(decode(bytes.value())?.1)
}

fn range_at<T: ReadableTable<(i64, i64), &'static [u8]>>(
    index: &TreeIndex,
    compact_rev: i64,
    table: &T,
    key: &[u8],
    end: &[u8],
    cur_rev: i64,
    ro: RangeOptions,
) -> Result<RangeResult, MvccError> {
    let mut rev = ro.rev;
    if rev > cur_rev {
        return Err(MvccError::FutureRev);
    }
    if rev <= 0 {
        rev = cur_rev;
    }
    if rev < compact_rev {
        return Err(MvccError::Compacted);
    }
    let limit = if ro.count_only {
        0
    } else {
        usize::try_from(ro.limit.max(0)).unwrap_or(0)
    };
    let found = index.range(key, end, rev, limit);
    let mut out = RangeResult {
        kvs: Vec::new(),
        count: found.count as i64,
        rev: cur_rev,
    };
    if ro.count_only {
        return Ok(out);
    }
    out.kvs.reserve(found.revs.len());
    for (_, r) in found.revs {
        out.kvs.push(read_rev(table, r)?);
    }
    Ok(out)
}

fn load_state(backend: &Backend) -> Result<State, MvccError> {
    let mut index = TreeIndex::default();
    let mut last_main = 1;
    // Keys attached to a lease as of their newest revision, collected in the same pass.
    let mut leases: std::collections::HashMap<Vec<u8>, i64> = Default::default();
    {
        let tx = backend.db().begin_read().map_err(BackendError::from)?;
        let kv = tx.open_table(KV).map_err(BackendError::from)?;
        for item in kv.iter().map_err(BackendError::from)? {
            let (k, v) = item.map_err(BackendError::from)?;
            let (main, sub) = k.value();
            let (tomb, kv) = decode(v.value())?;
            let rev = Revision { main, sub };
            if tomb {
                index.tombstone(&kv.key, rev);
            } else {
                index.put(&kv.key, rev, kv.create_revision, kv.version);
            }
            if !tomb && kv.lease != 0 {
                leases.insert(kv.key, kv.lease);
            } else if !leases.is_empty() {
                leases.remove(&kv.key);
            }
            last_main = main;
        }
    }
    let meta = |k| backend.meta(k);
    let current_rev = (meta(META_CURRENT_REV)?.unwrap_or(1) as i64).max(last_main);
    let compact_rev = meta(META_COMPACT_REV)?.map(|v| v as i64).unwrap_or(-1);
    let applied_index = meta(META_CONSISTENT_INDEX)?.unwrap_or(0);
    let applied_term = meta(META_TERM)?.unwrap_or(0);
    Ok(State {
        index,
        current_rev,
        compact_rev,
        applied_index,
        applied_term,
        loaded_leases: leases.into_iter().collect(),
    })
}

impl KvStore {
    /// Opens the store over `backend`, rebuilding the key index from the stored revisions.
    pub fn open(backend: Backend) -> Result<Self, MvccError> {
        let state = load_state(&backend)?;
        Ok(Self {
            backend,
            state: RwLock::new(state),
        })
    }

    /// Replaces the whole store with the backend file at `path` (from a leader's snapshot).
    pub fn install(&self, path: &std::path::Path, index: u64) -> Result<(), MvccError> {
        let mut state = self.state_mut();
        self.backend.replace_with(path, index)?;
        *state = load_state(&self.backend)?;
        Ok(())
    }

    /// `(key, lease)` of every live key attached to a lease when the store was opened or
    /// installed (to rebuild lease attachments); empty after the first call.
    pub fn take_loaded_leases(&self) -> Vec<(Vec<u8>, i64)> {
        std::mem::take(&mut self.state_mut().loaded_leases)
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend under the store.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The current revision.
    pub fn current_rev(&self) -> i64 {
        self.state().current_rev
    }

    /// The last compaction revision (-1 before any compaction).
    pub fn compact_rev(&self) -> i64 {
        self.state().compact_rev
    }

    /// `(index, term)` of the last Raft entry applied to the store.
    pub fn applied(&self) -> (u64, u64) {
        let s = self.state();
        (s.applied_index, s.applied_term)
    }

    /// Number of keys with retained history (etcd's `etcd_debugging_mvcc_keys_total`).
    pub fn keys_total(&self) -> usize {
        self.state().index.len()
    }

    /// Runs `f` while no reader or writer is active, after making every commit durable (for
    /// defragmentation and consistent file snapshots).
    pub fn exclusive<R>(
        &self,
        f: impl FnOnce(&Backend) -> Result<R, BackendError>,
    ) -> Result<R, MvccError> {
        self.exclusive_at(|b, _| f(b))
    }

    /// Like [`Self::exclusive`], with the revision the backend holds meanwhile (what a copy
    /// made inside holds, which a reader of the revision afterwards could overstate).
    pub fn exclusive_at<R>(
        &self,
        f: impl FnOnce(&Backend, i64) -> Result<R, BackendError>,
    ) -> Result<R, MvccError> {
        let state = self.state_mut();
        self.backend.sync()?;
        let out = f(&self.backend, state.current_rev)?;
        drop(state);
        Ok(out)
    }

    /// A consistent read view at the current revision.
    pub fn read(&self) -> Result<ReadTxn<'_>, MvccError> {
        let state = self.state();
        let tx = self.backend.db().begin_read().map_err(BackendError::from)?;
        let kv = tx.open_table(KV).map_err(BackendError::from)?;
        Ok(ReadTxn { state, kv, tx })
    }

    /// Takes the store for a write batch without waiting: `None` while a reader holds it (a
    /// long range) or an exclusive operation runs (defragmentation, a snapshot copy). For
    /// callers that must not block, such as the Raft thread applying puts inline.
    pub fn try_lock(&self) -> Option<StoreLock<'_>> {
        match self.state.try_write() {
            Ok(g) => Some(StoreLock(g)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(StoreLock(p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Runs `f` as one backend transaction, then records `(index, term)` as applied and
    /// commits. With `durable == false` the commit is not fsynced; the Raft WAL covers it.
    pub fn write_batch<R>(
        &self,
        index: u64,
        term: u64,
        durable: bool,
        f: impl FnOnce(&mut Batch<'_>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        self.write_batch_locked(None, index, term, durable, f)
    }

    /// `write_batch` under `held` (from `try_lock`), or under the lock taken now.
    pub fn write_batch_locked<R>(
        &self,
        held: Option<StoreLock<'_>>,
        index: u64,
        term: u64,
        durable: bool,
        f: impl FnOnce(&mut Batch<'_>) -> Result<R, MvccError>,
    ) -> Result<R, MvccError> {
        let mut state = match held {
            Some(StoreLock(g)) => g,
            None => self.state_mut(),
        };
        let mut tx = self
            .backend
            .db()
            .begin_write()
            .map_err(BackendError::from)?;
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        tx.set_durability(durability).map_err(BackendError::from)?;
        let out = {
            let kv = tx.open_table(KV).map_err(BackendError::from)?;
            let mut batch = Batch {
                state: &mut state,
                kv,
                tx: &tx,
            };
            f(&mut batch)?
        };
        {
            let mut meta = tx.open_table(META).map_err(BackendError::from)?;
            let mut put =
                |k: &str, v: u64| meta.insert(k, v).map(|_| ()).map_err(BackendError::from);
            put(META_CONSISTENT_INDEX, index)?;
            put(META_TERM, term)?;
            put(META_CURRENT_REV, state.current_rev as u64)?;
            if state.compact_rev >= 0 {
                put(META_COMPACT_REV, state.compact_rev as u64)?;
            }
        }
        crate::metrics::time(&crate::metrics::BACKEND_COMMIT, || tx.commit())
            .map_err(BackendError::from)?;
        self.backend.refresh_size();
        state.applied_index = index;
        state.applied_term = term;
        Ok(out)
    }
}

/// The store held for one write batch (see `KvStore::try_lock`).
pub struct StoreLock<'a>(RwLockWriteGuard<'a, State>);

impl StoreLock<'_> {
    /// `(index, term)` of the last Raft entry applied to the store.
    pub fn applied(&self) -> (u64, u64) {
        (self.0.applied_index, self.0.applied_term)
    }
}

/// A consistent read view.
pub struct ReadTxn<'a> {
    state: RwLockReadGuard<'a, State>,
    kv: redb::ReadOnlyTable<(i64, i64), &'static [u8]>,
    tx: redb::ReadTransaction,
}

impl ReadTxn<'_> {
    /// The current revision.
    pub fn rev(&self) -> i64 {
        self.state.current_rev
    }

    /// The compaction revision (-1 before any compaction).
    pub fn first_rev(&self) -> i64 {
        self.state.compact_rev
    }

    /// Range read with etcd's conventions for `key`/`end`.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        ro: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let s = &self.state;
        range_at(
            &s.index,
            s.compact_rev,
            &self.kv,
            key,
            end,
            s.current_rev,
            ro,
        )
    }

    /// The backend read transaction, for tables outside the MVCC keyspace.
    pub fn backend_tx(&self) -> &redb::ReadTransaction {
        &self.tx
    }

    /// Every change with revision in `[from, to]`, as watch events in revision order.
    pub fn events(&self, from: i64, to: i64) -> Result<Vec<Event>, MvccError> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for item in self
            .kv
            .range((from, i64::MIN)..=(to, i64::MAX))
            .map_err(BackendError::from)?
        {
            let (_, v) = item.map_err(BackendError::from)?;
            let (tomb, kv) = decode(v.value())?;
            let ty = if tomb {
                EventType::Delete
            } else {
                EventType::Put
            };
            out.push(Event {
                r#type: ty as i32,
                kv: Some(kv),
                prev_kv: None,
            });
        }
        Ok(out)
    }

    /// A CRC-32C over every stored revision `<= rev` (keys and values), for `HashKV`: equal on
    /// members with the same history and compaction, and stable across restarts.
    pub fn hash_kv(&self, rev: i64) -> Result<u32, MvccError> {
        let mut h = 0u32;
        for item in self
            .kv
            .range((i64::MIN, i64::MIN)..=(rev, i64::MAX))
            .map_err(BackendError::from)?
        {
            let (k, v) = item.map_err(BackendError::from)?;
            let (main, sub) = k.value();
            h = crc32c::crc32c_append(h, &main.to_be_bytes());
            h = crc32c::crc32c_append(h, &sub.to_be_bytes());
            h = crc32c::crc32c_append(h, v.value());
        }
        Ok(h)
    }
}

/// One apply batch: a backend write transaction plus exclusive access to the index.
pub struct Batch<'a> {
    state: &'a mut State,
    kv: redb::Table<'a, (i64, i64), &'static [u8]>,
    tx: &'a redb::WriteTransaction,
}

impl<'a> Batch<'a> {
    /// Starts one etcd write transaction (at most one new revision).
    pub fn txn(&mut self) -> TxnWrite<'_, 'a> {
        let begin_rev = self.state.current_rev;
        TxnWrite {
            batch: self,
            begin_rev,
            changes: Vec::new(),
        }
    }

    /// The current revision.
    pub fn rev(&self) -> i64 {
        self.state.current_rev
    }

    /// The backend write transaction, for tables outside the MVCC keyspace (leases, alarms).
    /// Changes commit atomically with the batch.
    pub fn backend_tx(&self) -> &redb::WriteTransaction {
        self.tx
    }

    /// Compacts history at `rev`: removes every revision not needed to read at `rev` or later.
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev <= self.state.compact_rev {
            return Err(MvccError::Compacted);
        }
        if rev > self.state.current_rev {
            return Err(MvccError::FutureRev);
        }
        let keep = self.state.index.compact(rev);
        self.kv
            .retain_in((i64::MIN, i64::MIN)..=(rev, i64::MAX), |k, _| {
                keep.contains(&Revision {
                    main: k.0,
                    sub: k.1,
                })
            })
            .map_err(BackendError::from)?;
        self.state.compact_rev = rev;
        Ok(())
    }
}

/// An etcd write transaction: every change shares revision `begin_rev + 1`, and reads inside
/// it see its earlier writes.
pub struct TxnWrite<'b, 'a> {
    batch: &'b mut Batch<'a>,
    begin_rev: i64,
    changes: Vec<KeyValue>,
}

impl TxnWrite<'_, '_> {
    /// The revision reads inside this transaction observe.
    pub fn rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    /// The compaction revision (-1 before any compaction).
    pub fn first_rev(&self) -> i64 {
        self.batch.state.compact_rev
    }

    /// Range read that sees this transaction's own writes.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        ro: RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let s = &self.batch.state;
        range_at(
            &s.index,
            s.compact_rev,
            &self.batch.kv,
            key,
            end,
            self.rev(),
            ro,
        )
    }

    /// Writes `key = value` with `lease`; returns the new revision.
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, MvccError> {
        let rev = self.begin_rev + 1;
        let (created, ver) = match self.batch.state.index.live(key, rev) {
            Some((created, ver)) => (created, ver + 1),
            None => (rev, 1),
        };
        let idx_rev = Revision {
            main: rev,
            sub: self.changes.len() as i64,
        };
        let kv = KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: created,
            mod_revision: rev,
            version: ver,
            lease,
        };
        self.batch
            .kv
            .insert((idx_rev.main, idx_rev.sub), encode(LIVE, &kv).as_slice())
            .map_err(BackendError::from)?;
        self.batch.state.index.put(key, idx_rev, created, ver);
        self.changes.push(kv);
        Ok(rev)
    }

    /// Deletes the live keys in `[key, end)`; returns `(deleted, revision)`.
    pub fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<(i64, i64), MvccError> {
        let at = self.rev();
        let found = self.batch.state.index.range(key, end, at, 0);
        let rev = self.begin_rev + 1;
        for (k, _) in &found.revs {
            let idx_rev = Revision {
                main: rev,
                sub: self.changes.len() as i64,
            };
            let kv = KeyValue {
                key: k.clone(),
                mod_revision: rev,
                ..Default::default()
            };
            self.batch
                .kv
                .insert(
                    (idx_rev.main, idx_rev.sub),
                    encode(TOMBSTONE, &kv).as_slice(),
                )
                .map_err(BackendError::from)?;
            self.batch.state.index.tombstone(k, idx_rev);
            self.changes.push(kv);
        }
        let n = found.revs.len() as i64;
        Ok((
            n,
            if n != 0 || !self.changes.is_empty() {
                rev
            } else {
                self.begin_rev
            },
        ))
    }

    /// Finishes the transaction, bumping the store revision if anything changed. Returns the
    /// watch events it produced, in change order.
    pub fn end(self) -> Vec<Event> {
        if self.changes.is_empty() {
            return Vec::new();
        }
        self.batch.state.current_rev = self.begin_rev + 1;
        self.changes
            .into_iter()
            .map(|kv| {
                let ty = if kv.create_revision == 0 {
                    EventType::Delete
                } else {
                    EventType::Put
                };
                Event {
                    r#type: ty as i32,
                    kv: Some(kv),
                    prev_kv: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::open(&dir.path().join("db")).expect("open");
        (dir, KvStore::open(backend).expect("store"))
    }

    /// The Raft thread applies puts only under `try_lock`: it must fail, not wait, while a
    /// reader or an exclusive operation (defragmentation) holds the store, and a batch written
    /// under it must land like any other.
    #[test]
    fn try_lock_fails_while_the_store_is_held_and_writes_under_the_lock() {
        let (_dir, s) = store();
        put(&s, 1, &[("a", "1")]);
        {
            let _reader = s.read().expect("read");
            assert!(s.try_lock().is_none(), "a reader holds the store");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                s.exclusive(|_| {
                    tx.send(()).expect("send");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Ok(())
                })
                .expect("exclusive");
            });
            rx.recv().expect("exclusive started");
            assert!(s.try_lock().is_none(), "defragmentation holds the store");
        });
        let held = s.try_lock().expect("free again");
        assert_eq!(held.applied(), (1, 1));
        s.write_batch_locked(Some(held), 2, 1, false, |b| {
            let mut t = b.txn();
            t.put(b"b", b"2", 0)?;
            t.end();
            Ok(())
        })
        .expect("write under the lock");
        assert_eq!(s.applied(), (2, 1));
        let got = s
            .read()
            .expect("read")
            .range(b"b", &[], RangeOptions::default());
        assert_eq!(got.expect("range").kvs.len(), 1);
    }

    fn put(s: &KvStore, idx: u64, kvs: &[(&str, &str)]) {
        s.write_batch(idx, 1, false, |b| {
            let mut t = b.txn();
            for (k, v) in kvs {
                t.put(k.as_bytes(), v.as_bytes(), 0)?;
            }
            t.end();
            Ok(())
        })
        .expect("put");
    }

    #[test]
    fn revisions_versions_and_tombstones() {
        let (_d, s) = store();
        assert_eq!(s.current_rev(), 1);
        put(&s, 1, &[("a", "1"), ("b", "1")]);
        assert_eq!(s.current_rev(), 2);
        put(&s, 2, &[("a", "2")]);
        let r = s
            .read()
            .expect("read")
            .range(b"a", b"", RangeOptions::default())
            .expect("range");
        let kv = &r.kvs[0];
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        // A delete that matches nothing does not bump the revision.
        s.write_batch(3, 1, false, |b| {
            let mut t = b.txn();
            assert_eq!(t.delete_range(b"zzz", b"")?, (0, 3));
            assert!(t.end().is_empty());
            Ok(())
        })
        .expect("delete");
        assert_eq!(s.current_rev(), 3);
        s.write_batch(4, 1, false, |b| {
            let mut t = b.txn();
            assert_eq!(t.delete_range(b"a", &[0])?, (2, 4));
            assert_eq!(t.end().len(), 2);
            Ok(())
        })
        .expect("delete");
        put(&s, 5, &[("a", "3")]);
        let r = s
            .read()
            .expect("read")
            .range(b"a", b"", RangeOptions::default())
            .expect("range");
        assert_eq!((r.kvs[0].create_revision, r.kvs[0].version), (5, 1));
        // Historical read.
        let old = RangeOptions {
            rev: 2,
            ..Default::default()
        };
        let r = s
            .read()
            .expect("read")
            .range(b"a", b"c", old)
            .expect("range");
        assert_eq!(r.kvs.len(), 2);
        assert_eq!(r.rev, 5);
    }

    #[test]
    fn compaction_removes_history_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let s = KvStore::open(Backend::open(&path).expect("open")).expect("store");
            for i in 0..5 {
                put(&s, i + 1, &[("k", &i.to_string())]);
            }
            s.write_batch(6, 1, true, |b| b.compact(4))
                .expect("compact");
            let at = |rev| RangeOptions {
                rev,
                ..Default::default()
            };
            let rt = s.read().expect("read");
            assert!(matches!(
                rt.range(b"k", b"", at(3)),
                Err(MvccError::Compacted)
            ));
            assert_eq!(
                rt.range(b"k", b"", at(4)).expect("at compact rev").kvs[0].value,
                b"2"
            );
            assert!(matches!(
                rt.range(b"k", b"", at(7)),
                Err(MvccError::FutureRev)
            ));
        }
        let s = KvStore::open(Backend::open(&path).expect("open")).expect("store");
        assert_eq!((s.current_rev(), s.compact_rev(), s.applied().0), (6, 4, 6));
        let rt = s.read().expect("read");
        let kv = &rt
            .range(b"k", b"", RangeOptions::default())
            .expect("range")
            .kvs[0];
        assert_eq!((kv.version, kv.create_revision, kv.mod_revision), (5, 2, 6));
    }
}
