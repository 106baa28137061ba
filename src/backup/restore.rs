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
        let meta: Metadata = serde_json::from_slice(&bytes)
            .map_err(|e| missing(format!("the metadata of backup {key} does not parse: {e}")))?;
        if meta.key != *key {
            return Err(missing(format!(
                "the metadata beside {key} names another snapshot ({})",
                meta.key
            )));
        }
        if meta.verified == Some(false) {
            return Err(missing(format!(
                "backup {key} failed its verification: {}",
                meta.verify_error.as_deref().unwrap_or("no reason recorded")
            )));
        }
        return Ok(meta);
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
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Restore(format!("creating {}: {e}", dir.display())))?;
    let file = dir.join("restore.snap");
    verify::download(store, meta, &file).await?;
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

/// Where the backup a member restores from is: the bucket, and the namespace and cluster whose
/// backups they are. The init container reads it as JSON from the ConfigMap's
/// [`super::in_place::SOURCE_FILE`]; `etcd-operator backup restore --source` takes it too.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The bucket.
    pub s3: crate::crd::S3Location,
    /// The namespace of the cluster whose backups they are.
    pub namespace: String,
    /// That cluster's name.
    pub cluster: String,
    /// The snapshot's key; the newest usable backup without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Set for an in-place restore: the member's data is replaced (moved aside, kept), once
    /// per restore ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place: Option<InPlaceTarget>,
    /// The prefix of the environment variables holding this bucket's credentials
    /// (`<prefix>AWS_ACCESS_KEY_ID`, ...); none: `AWS_*`, or the default AWS chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_env: Option<String>,
}

/// The prefix of the restore init container's credentials for `fromBackup`'s own bucket.
pub const BOOTSTRAP_CREDENTIALS: &str = "BOOTSTRAP_";

/// What an in-place restore makes every member's data dir as.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceTarget {
    /// The restore's ID.
    pub id: String,
    /// The new cluster's token.
    pub token: String,
    /// The new cluster's `initial-cluster` (every member).
    pub initial_cluster: String,
}

/// What a member's configuration file (etcd's YAML config file) says about bootstrapping.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemberConfig {
    /// `name`.
    pub name: String,
    /// `data-dir`.
    pub data_dir: PathBuf,
    /// `initial-cluster`.
    pub initial_cluster: String,
    /// `initial-cluster-token`.
    #[serde(default)]
    pub initial_cluster_token: String,
    /// `initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: String,
    /// `initial-cluster-state` (`new` by default, as in etcd).
    #[serde(default)]
    pub initial_cluster_state: Option<String>,
}

impl MemberConfig {
    /// Reads the file at `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Restore(format!("reading {}: {e}", path.display())))?;
        serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Restore(format!("{}: {e}", path.display())))
    }
}

/// What [`restore_from_config`] did.
#[derive(Debug)]
pub enum Restored {
    /// The member's data dir was made from this backup.
    Restored(Box<Metadata>),
    /// Nothing to do, and why.
    Skipped(String),
}

/// The restore init step of one member: with `initial-cluster-state: new` and no data yet,
/// makes the member's data dir from the backup `source` names (downloaded beside the data dir,
/// checked, restored under the member's own name and peer URL, then deleted). A member that
/// has data, or that joins an existing cluster, is left alone, so the step is safe to run
/// at every start of the pod.
pub async fn restore_from_config(
    config: &MemberConfig,
    source: &Source,
    credentials: Option<super::StaticCredentials>,
    server_bin: &Path,
) -> Result<Restored, Error> {
    if let Some(target) = &source.in_place {
        return restore_in_place(config, source, target, credentials, server_bin).await;
    }
    if config.initial_cluster_state.as_deref().unwrap_or("new") != "new" {
        return Ok(Restored::Skipped(format!(
            "{} joins an existing cluster",
            config.name
        )));
    }
    let has_data = match std::fs::read_dir(&config.data_dir) {
        Ok(mut d) => d.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(Error::Restore(format!(
                "reading {}: {e}",
                config.data_dir.display()
            )));
        }
    };
    if has_data {
        return Ok(Restored::Skipped(format!(
            "{} already has data in {}",
            config.name,
            config.data_dir.display()
        )));
    }
    let store = Store::new(&source.s3, &source.namespace, &source.cluster, credentials).await;
    let from = FromBackup {
        s3: None,
        cluster: None,
        key: source.key.clone(),
    };
    let meta = choose(&store, &from).await?;
    let scratch = config.data_dir.with_extension("restore");
    let file = fetch(&store, &meta, &scratch).await;
    let result = match file {
        Ok(file) => {
            restore_member(
                server_bin,
                &file,
                Member {
                    name: &config.name,
                    peer_url: &config.initial_advertise_peer_urls,
                    initial_cluster: &config.initial_cluster,
                    token: &config.initial_cluster_token,
                    data_dir: &config.data_dir,
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|()| Restored::Restored(Box::new(meta)))
}

/// The in-place restore of one member (its pod's init container): once per restore ID (a
/// marker beside the data dir says it is done), the member's data dir is moved aside to
/// `data.pre-restore-<id>` (kept, never deleted) and made again from the backup under the
/// new cluster's token and `initial-cluster`. A restore cut short (the pod died) starts over
/// on its next start: the original data is already aside, so only the partial copy goes.
async fn restore_in_place(
    config: &MemberConfig,
    source: &Source,
    target: &InPlaceTarget,
    credentials: Option<super::StaticCredentials>,
    server_bin: &Path,
) -> Result<Restored, Error> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Restore(format!("{what} {}: {e}", p.display()))
    };
    let parent = config
        .data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let safe_id: String = target
        .id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let marker = parent.join(format!(".restored-{safe_id}"));
    if marker.exists() {
        return Ok(Restored::Skipped(format!(
            "{} was restored by restore {} already",
            config.name, target.id
        )));
    }
    let key = source
        .key
        .clone()
        .ok_or_else(|| Error::Restore("an in-place restore names its backup's key".into()))?;
    let store = Store::new(&source.s3, &source.namespace, &source.cluster, credentials).await;
    let from = FromBackup {
        s3: None,
        cluster: None,
        key: Some(key),
    };
    let meta = choose(&store, &from).await?;
    // Downloaded and checked before the data is touched.
    let scratch = config.data_dir.with_extension("restore");
    let file = fetch(&store, &meta, &scratch).await;
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    let aside = parent.join(format!("data.pre-restore-{safe_id}"));
    if config.data_dir.exists() {
        if aside.exists() {
            // An earlier attempt moved the original aside: what is here is its partial copy.
            std::fs::remove_dir_all(&config.data_dir)
                .map_err(|e| io("removing the partial restore in", &config.data_dir, e))?;
        } else {
            std::fs::rename(&config.data_dir, &aside)
                .map_err(|e| io("moving aside", &config.data_dir, e))?;
        }
    }
    let result = restore_member(
        server_bin,
        &file,
        Member {
            name: &config.name,
            peer_url: &config.initial_advertise_peer_urls,
            initial_cluster: &target.initial_cluster,
            token: &target.token,
            data_dir: &config.data_dir,
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    std::fs::write(&marker, format!("{}\n", meta.key))
        .and_then(|()| std::fs::File::open(parent).and_then(|d| d.sync_all()))
        .map_err(|e| io("writing", &marker, e))?;
    Ok(Restored::Restored(Box::new(meta)))
}
