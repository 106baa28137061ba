//! The embedded transactional store (redb) under the MVCC layer: table layout and meta keys.
//!
//! Everything the state machine owns lives in one redb file, `member/snap/db` under the data
//! dir, and is changed only by the apply loop. Each apply batch is one redb transaction that also
//! records the Raft index it applied, so replaying the log after a crash is idempotent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, TableDefinition};

/// MVCC key-values by `(main revision, sub revision)`. The value is a one-byte flag
/// (`1` for a tombstone) followed by the protobuf-encoded `mvccpb.KeyValue`.
pub const KV: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("key");
/// Scalar state: see the `META_*` keys.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Cluster members by ID, each a protobuf-encoded `etcdserverpb.Member`.
pub const MEMBERS: TableDefinition<u64, &[u8]> = TableDefinition::new("members");

/// Raft index of the last applied entry.
pub const META_CONSISTENT_INDEX: &str = "consistent_index";
/// Raft term of the last applied entry.
pub const META_TERM: &str = "term";
/// Current MVCC revision.
pub const META_CURRENT_REV: &str = "current_rev";
/// Revision of the last finished compaction.
pub const META_COMPACT_REV: &str = "finished_compact_rev";

/// Errors from the storage layer. Any of them makes the member inoperable: the apply loop
/// stops rather than let memory and disk diverge.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Opening or creating the database failed.
    #[error("failed to open backend {path}: {source}")]
    Open {
        /// Database path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A redb operation failed.
    #[error("failed to access backend: {0}")]
    Storage(String),
    /// Stored bytes could not be decoded.
    #[error("failed to decode backend record: {0}")]
    Corrupt(String),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for BackendError {
            fn from(e: $t) -> Self {
                BackendError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::CompactionError
);

/// redb's page cache. redb's default (1 GiB) lets the cache grow to hold every page ever
/// written, so the member's RSS carried a copy of the whole backend file (about 35 MiB of the
/// RSS after loading 200,000 keys of 256 B). The write path appends at the right edge of the
/// revision-ordered tree and stays cached; pages that fall out are read back from the OS page
/// cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

fn open_db(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
}

/// Opens an existing database and never creates one: `redb`'s `create` turns a missing or
/// empty file into a new, empty database, which for a received snapshot would silently
/// replace the member's state with nothing.
fn open_existing(path: &Path) -> Result<redb::Database, BackendError> {
    let len = std::fs::metadata(path)
        .map_err(|e| BackendError::Storage(format!("{}: {e}", path.display())))?
        .len();
    if len == 0 {
        return Err(BackendError::Corrupt(format!(
            "{} is empty, not a backend",
            path.display()
        )));
    }
    redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .open(path)
        .map_err(|source| BackendError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Checks that `db` is the state a snapshot at Raft index `index` promises: it applied at least
/// up to `index` (entries after it that it also holds are skipped when they arrive) and holds
/// the cluster's members.
fn check_snapshot_db(db: &redb::Database, path: &Path, index: u64) -> Result<(), BackendError> {
    let tx = db.begin_read()?;
    let applied = match tx.open_table(META) {
        Ok(t) => t.get(META_CONSISTENT_INDEX)?.map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if applied.is_none_or(|a| a < index) {
        return Err(BackendError::Corrupt(format!(
            "{} applied raft index {applied:?}, but the snapshot is at {index}",
            path.display()
        )));
    }
    let has_members = match tx.open_table(MEMBERS) {
        Ok(t) => redb::ReadableTable::first(&t)?.is_some(),
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(e.into()),
    };
    if !has_members {
        return Err(BackendError::Corrupt(format!(
            "{} holds no cluster members",
            path.display()
        )));
    }
    Ok(())
}

/// Verifies a backend file received with a snapshot at Raft index `index` before Raft is told
/// about it (see [`check_snapshot_db`]). Opening it also completes redb's recovery of a file
/// copied from a running member, so installing it later is quick.
pub fn verify_snapshot(path: &Path, index: u64) -> Result<(), BackendError> {
    let db = open_existing(path)?;
    check_snapshot_db(&db, path, index)
}

/// fsyncs directory `dir`, making a rename in it durable.
fn sync_dir(dir: &Path) -> Result<(), BackendError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BackendError::Storage(format!("failed to sync {}: {e}", dir.display())))
}

/// The redb database holding the member's state.
#[derive(Debug)]
pub struct Backend {
    /// Behind a lock only so that defragmentation can take it exclusively.
    db: RwLock<redb::Database>,
    path: PathBuf,
    /// The file size as of the last `refresh_size` (every write checks the quota against it:
    /// a `stat` per request was ~4% of the server's CPU under a put load).
    size: AtomicU64,
    /// When `size` was read, in milliseconds since `epoch`.
    size_at_ms: AtomicU64,
    epoch: Instant,
}

/// How stale the cached file size may get when no commit refreshed it.
const SIZE_MAX_AGE: Duration = Duration::from_millis(100);

impl Backend {
    /// Opens (or creates) the database at `path`, creating its tables.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::Storage(e.to_string()))?;
        }
        let db = open_db(path).map_err(|source| BackendError::Open {
            path: path.to_owned(),
            source,
        })?;
        let tx = db.begin_write()?;
        tx.open_table(KV)?;
        tx.open_table(META)?;
        tx.open_table(MEMBERS)?;
        tx.commit()?;
        let backend = Self {
            db: RwLock::new(db),
            path: path.to_owned(),
            size: AtomicU64::new(0),
            size_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        backend.refresh_size();
        Ok(backend)
    }

    /// The underlying database.
    pub fn db(&self) -> RwLockReadGuard<'_, redb::Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every earlier commit durable.
    pub fn sync(&self) -> Result<(), BackendError> {
        let mut tx = self.db().begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        tx.commit()?;
        self.refresh_size();
        Ok(())
    }

    /// Replaces the database with the file at `path` (a backend received with a snapshot).
    /// No transaction may be open: the caller holds the store exclusively.
    pub fn replace_with(&self, path: &Path, index: u64) -> Result<(), BackendError> {
        let new = open_existing(path)?;
        // Checked again here, not only on receipt: the member's state is about to be thrown
        // away for this file.
        check_snapshot_db(&new, path, index)?;
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *db, new);
        drop(old);
        std::fs::rename(path, &self.path).map_err(|e| BackendError::Storage(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        let tx = db.begin_write()?;
        tx.open_table(KV)?;
        tx.open_table(META)?;
        tx.open_table(MEMBERS)?;
        tx.commit()?;
        drop(db);
        self.refresh_size();
        Ok(())
    }

    /// Rewrites the file to release free pages (etcd's defragmentation). No transaction may be
    /// open: the caller holds the store exclusively.
    pub fn defragment(&self) -> Result<(), BackendError> {
        self.sync()?;
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        while db.compact()? {}
        drop(db);
        self.refresh_size();
        Ok(())
    }

    /// Reads one meta value from committed state.
    pub fn meta(&self, key: &str) -> Result<Option<u64>, BackendError> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value()))
    }

    /// Size of the database file in bytes (etcd's `dbSize`), as of the last commit or at most
    /// `SIZE_MAX_AGE` ago.
    pub fn size(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now.saturating_sub(self.size_at_ms.load(Ordering::Relaxed))
            > SIZE_MAX_AGE.as_millis() as u64
        {
            return self.refresh_size();
        }
        self.size.load(Ordering::Relaxed)
    }

    /// Reads the file size again (after a commit); returns it.
    pub fn refresh_size(&self) -> u64 {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        self.size.store(size, Ordering::Relaxed);
        self.size_at_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        size
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
