//! Offline snapshot tools: `etcd-server snapshot status FILE` and `etcd-server snapshot restore`.
//!
//! A snapshot (what `Maintenance.Snapshot` streams and `etcdctl snapshot save` writes) is the
//! backend file followed by the SHA-256 of those bytes. Restore verifies the checksum, copies
//! the backend into a fresh data dir, gives it the new cluster's identity (members, IDs) and a
//! new WAL, and keeps every key, revision and lease.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};

use crate::backend::{
    Backend, KV, META, META_COMPACT_REV, META_CONSISTENT_INDEX, META_CURRENT_REV, META_TERM,
};
use crate::membership::Cluster;

/// Errors of the snapshot tools.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing files failed.
    #[error("failed to {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The checksum does not match: the file is corrupted or truncated.
    #[error("snapshot file integrity check failed: {0}")]
    Integrity(String),
    /// The target data dir is not empty.
    #[error("data-dir {0:?} exists and is not empty; restore needs a fresh directory")]
    DataDirNotEmpty(PathBuf),
    /// The backend inside the snapshot could not be read or written.
    #[error("failed to read the snapshot's backend: {0}")]
    Backend(String),
    /// The cluster flags are wrong.
    #[error(transparent)]
    Membership(#[from] crate::membership::MembershipError),
    /// Creating the WAL failed.
    #[error(transparent)]
    Raft(#[from] crate::raft::RaftError),
}

fn backend_err(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Backend(e.to_string())
}

/// What `snapshot status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C over every stored key-value revision (the same hash as `HashKV` at the current
    /// revision).
    pub hash: u32,
    /// The store revision.
    pub revision: i64,
    /// Number of stored key-value revisions.
    pub total_keys: u64,
    /// Size of the backend in bytes (without the checksum).
    pub total_size: u64,
}

/// Reads a snapshot file and verifies its trailing SHA-256. Returns the backend bytes.
pub fn read_verified(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let mut data = std::fs::read(path).map_err(|source| SnapshotError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    })?;
    if data.len() < 32 {
        return Err(SnapshotError::Integrity(format!(
            "{} is too short to be a snapshot",
            path.display()
        )));
    }
    let sum = data.split_off(data.len() - 32);
    if Sha256::digest(&data).as_slice() != sum.as_slice() {
        return Err(SnapshotError::Integrity(format!(
            "sha256 mismatch in {}",
            path.display()
        )));
    }
    Ok(data)
}

/// `snapshot status`.
pub fn status(path: &Path) -> Result<Status, SnapshotError> {
    let data = read_verified(path)?;
    let tmp = tempfile::tempdir().map_err(|source| SnapshotError::Io {
        what: "create a temporary dir for",
        path: path.to_owned(),
        source,
    })?;
    let db_path = tmp.path().join("db");
    std::fs::write(&db_path, &data).map_err(|source| SnapshotError::Io {
        what: "write",
        path: db_path.clone(),
        source,
    })?;
    let db = redb::Database::open(&db_path).map_err(backend_err)?;
    let tx = db.begin_read().map_err(backend_err)?;
    let kv = tx.open_table(KV).map_err(backend_err)?;
    let meta = tx.open_table(META).map_err(backend_err)?;
    let mut hash = 0u32;
    let mut total_keys = 0u64;
    let mut last = 1i64;
    for item in kv.iter().map_err(backend_err)? {
        let (k, v) = item.map_err(backend_err)?;
        let (main, sub) = k.value();
        hash = crc32c::crc32c_append(hash, &main.to_be_bytes());
        hash = crc32c::crc32c_append(hash, &sub.to_be_bytes());
        hash = crc32c::crc32c_append(hash, v.value());
        total_keys += 1;
        last = main;
    }
    let current = meta
        .get(META_CURRENT_REV)
        .map_err(backend_err)?
        .map(|v| v.value() as i64)
        .unwrap_or(1);
    Ok(Status {
        hash,
        revision: current.max(last),
        total_keys,
        total_size: data.len() as u64,
    })
}

/// Options of `snapshot restore`, with etcd's flag names.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `--data-dir` (default `${name}.etcd`).
    pub data_dir: PathBuf,
    /// `--name`.
    pub name: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
}

/// `snapshot restore`: builds a fresh member data dir from a snapshot.
pub fn restore(path: &Path, opts: &RestoreOptions) -> Result<(), SnapshotError> {
    let data = read_verified(path)?;
    if opts.data_dir.exists() {
        let mut entries =
            std::fs::read_dir(&opts.data_dir).map_err(|source| SnapshotError::Io {
                what: "read",
                path: opts.data_dir.clone(),
                source,
            })?;
        if entries.next().is_some() {
            return Err(SnapshotError::DataDirNotEmpty(opts.data_dir.clone()));
        }
    }
    let cluster = Cluster::from_initial(&opts.initial_cluster, &opts.initial_cluster_token)?;
    cluster.local_member(&opts.name, &opts.initial_advertise_peer_urls)?;
    let member_dir = opts.data_dir.join("member");
    let db_path = member_dir.join("snap").join("db");
    std::fs::create_dir_all(db_path.parent().unwrap_or(&member_dir)).map_err(|source| {
        SnapshotError::Io {
            what: "create",
            path: member_dir.clone(),
            source,
        }
    })?;
    std::fs::write(&db_path, &data).map_err(|source| SnapshotError::Io {
        what: "write",
        path: db_path.clone(),
        source,
    })?;
    let backend = Backend::open(&db_path).map_err(backend_err)?;
    {
        // The new cluster starts its Raft log from scratch: reset the applied index, keep the
        // revisions, and drop alarms, which belonged to the old cluster's members.
        let db = backend.db();
        let tx = db.begin_write().map_err(backend_err)?;
        {
            let mut meta = tx.open_table(META).map_err(backend_err)?;
            let current = meta
                .get(META_CURRENT_REV)
                .map_err(backend_err)?
                .map(|v| v.value());
            let compact = meta
                .get(META_COMPACT_REV)
                .map_err(backend_err)?
                .map(|v| v.value());
            meta.retain(|_, _| false).map_err(backend_err)?;
            meta.insert(META_CONSISTENT_INDEX, 0).map_err(backend_err)?;
            meta.insert(META_TERM, 0).map_err(backend_err)?;
            if let Some(c) = current {
                meta.insert(META_CURRENT_REV, c).map_err(backend_err)?;
            }
            if let Some(c) = compact {
                meta.insert(META_COMPACT_REV, c).map_err(backend_err)?;
            }
            let mut alarms = tx.open_table(crate::alarm::ALARMS).map_err(backend_err)?;
            alarms.retain(|_, _| false).map_err(backend_err)?;
        }
        tx.commit().map_err(backend_err)?;
    }
    cluster.save(&backend)?;
    drop(backend);
    crate::raft::open_log(&member_dir.join("wal"), &cluster.voters(), 0)?;
    Ok(())
}
