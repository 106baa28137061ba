//! Starting a new cluster from a backup (`spec.bootstrap.fromBackup`): the backup is chosen,
//! downloaded once and checked against its metadata's sums, then each member's data dir is
//! made from it with `etcd-server snapshot restore`, under the member's own name and peer URL,
//! before the member first starts.

use std::path::{Path, PathBuf};

use super::store::Store;
use super::{Error, Metadata, list, metadata_key, verify};
use crate::crd::FromBackup;

/// The backup `from` names: its key, or the newest (a verified one if any, never one that
/// failed verification).
pub async fn choose(store: &Store, from: &FromBackup) -> Result<Metadata, Error> {
    let missing = |reason: String| Error::Restore(reason);
    if let Some(key) = &from.key {
        let bytes = store
            .get(&metadata_key(key))
            .await
            .map_err(|e| missing(format!("backup {key} has no readable metadata ({e})")))?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| missing(format!("the metadata of backup {key} does not parse: {e}")));
    }
    let all = list(store).await?;
    all.iter()
        .find(|m| m.verified == Some(true))
        .or_else(|| all.iter().find(|m| m.verified.is_none()))
        .cloned()
        .ok_or_else(|| {
            missing(format!(
                "no usable backup under s3://{}/{}",
                store.bucket(),
                store.prefix
            ))
        })
}

/// Downloads `meta`'s snapshot, checked against both sums, into `dir`; returns the file.
pub async fn fetch(store: &Store, meta: &Metadata, dir: &Path) -> Result<PathBuf, Error> {
    let raw = verify::download(store, meta).await?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Restore(format!("creating {}: {e}", dir.display())))?;
    let file = dir.join("restore.snap");
    std::fs::write(&file, raw)
        .map_err(|e| Error::Restore(format!("writing {}: {e}", file.display())))?;
    Ok(file)
}

/// What a member's data dir is made with.
pub struct Member<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its peer URL.
    pub peer_url: &'a str,
    /// The new cluster's `initial-cluster`.
    pub initial_cluster: &'a str,
    /// The new cluster's token.
    pub token: &'a str,
    /// The data dir to make (must not exist or be empty).
    pub data_dir: &'a Path,
}

/// Makes `member`'s data dir from `snapshot` with `server_bin snapshot restore`.
pub async fn restore_member(
    server_bin: &Path,
    snapshot: &Path,
    member: Member<'_>,
) -> Result<(), Error> {
    let out = tokio::process::Command::new(server_bin)
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg("--data-dir")
        .arg(member.data_dir)
        .args(["--name", member.name])
        .arg(format!("--initial-cluster={}", member.initial_cluster))
        .arg(format!("--initial-cluster-token={}", member.token))
        .arg(format!("--initial-advertise-peer-urls={}", member.peer_url))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Restore(format!("running {}: {e}", server_bin.display())))?;
    if !out.status.success() {
        return Err(Error::Restore(format!(
            "etcd-server snapshot restore for {} failed: {}",
            member.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
