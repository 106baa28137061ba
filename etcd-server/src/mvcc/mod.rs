//! Multi-version key-value store with etcd's revision semantics.
//!
//! The interface is narrow on purpose: [`KvStore::read`] gives a consistent [`ReadTxn`], and the
//! apply loop changes the store only through [`KvStore::write_batch`], whose [`TxnWrite`]s are
//! etcd's write transactions (one revision each, however many keys they touch).

pub mod index;
mod store;

pub use store::{Batch, KvStore, RangeOptions, RangeResult, ReadTxn, StoreLock, TxnWrite};

use crate::backend::BackendError;
use crate::error::EtcdError;

/// A point in MVCC history: `main` is the store revision, `sub` orders changes within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Revision {
    /// The store revision (what clients see as `mod_revision`).
    pub main: i64,
    /// Position of the change within its revision.
    pub sub: i64,
}

/// Errors from the MVCC layer.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision has been compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// The storage layer failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<MvccError> for EtcdError {
    fn from(e: MvccError) -> Self {
        match e {
            MvccError::Compacted => EtcdError::Compacted,
            MvccError::FutureRev => EtcdError::FutureRev,
            MvccError::Backend(b) => EtcdError::Internal(b.to_string()),
        }
    }
}
