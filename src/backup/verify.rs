//! Verifying a backup: download it, check both SHA-256 sums, restore it with
//! `etcd-server snapshot restore` into a scratch data dir, start a member on it on free
//! loopback ports, and compare its `HashKV` and key count at the snapshot's revision with what
//! the source member held when the backup was taken.

use std::path::Path;
use std::time::Duration;

use sha2::Digest as _;

use super::store::Store;
use super::{Error, Metadata};
use crate::crd::BackupCompression;
use crate::etcd::{Digest, EtcdAdmin};

/// How long the scratch member may take to restore and answer.
const SCRATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// The backup is bad: it does not hold what its metadata or the cluster says.
fn failed(key: &str, reason: String) -> Error {
    Error::Verify {
        key: key.to_owned(),
        reason,
    }
}

/// The backup could not be checked here (this machine, not the backup).
fn unchecked(key: &str, reason: String) -> Error {
    Error::Unverifiable {
        key: key.to_owned(),
        reason,
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// The snapshot of `meta`, downloaded and checked against both sums.
pub async fn download(store: &Store, meta: &Metadata) -> Result<Vec<u8>, Error> {
    let key = &meta.key;
    let object = store.get(key).await?;
    let sum = hex(&sha2::Sha256::digest(&object));
    if sum != meta.sha256 {
        return Err(failed(
            key,
            format!(
                "the object's SHA-256 is {sum}, its metadata says {} ({} bytes, {} expected)",
                meta.sha256,
                object.len(),
                meta.size
            ),
        ));
    }
    let raw = match meta.compression {
        BackupCompression::Zstd => zstd::decode_all(object.as_slice())
            .map_err(|e| failed(key, format!("it does not decompress: {e}")))?,
        BackupCompression::None => object,
    };
    let sum = hex(&sha2::Sha256::digest(&raw));
    if sum != meta.raw_sha256 {
        return Err(failed(
            key,
            format!(
                "the snapshot's SHA-256 is {sum}, its metadata says {}",
                meta.raw_sha256
            ),
        ));
    }
    Ok(raw)
}

/// Restores `meta`'s snapshot into a scratch member run by `server_bin` and compares it with
/// `expected` (the source at the snapshot's revision). The scratch member and its files are
/// gone when this returns.
pub async fn verify(
    etcd: &dyn EtcdAdmin,
    store: &Store,
    meta: &Metadata,
    expected: Digest,
    server_bin: &Path,
) -> Result<(), Error> {
    let key = &meta.key;
    let raw = download(store, meta).await?;
    let io = |what: &str, e: std::io::Error| unchecked(key, format!("{what}: {e}"));
    let dir = tempfile::tempdir().map_err(|e| io("scratch dir", e))?;
    let file = dir.path().join("backup.snap");
    std::fs::write(&file, &raw).map_err(|e| io("writing the snapshot", e))?;
    let data = dir.path().join("data");
    let client = free_port().map_err(|e| io("a free port", e))?;
    let mut peer = free_port().map_err(|e| io("a free port", e))?;
    for _ in 0..10 {
        if peer != client {
            break;
        }
        peer = free_port().map_err(|e| io("a free port", e))?;
    }
    let peer_url = format!("http://127.0.0.1:{peer}");
    let client_url = format!("http://127.0.0.1:{client}");
    let restore = tokio::process::Command::new(server_bin)
        .arg("snapshot")
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .args(["--name", "verify"])
        .arg(format!("--initial-cluster=verify={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRATCH_TIMEOUT, restore)
        .await
        .map_err(|_| unchecked(key, "etcd-server snapshot restore timed out".into()))?
        .map_err(|e| io(&format!("running {}", server_bin.display()), e))?;
    if !out.status.success() {
        return Err(failed(
            key,
            format!(
                "etcd-server snapshot restore refused it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let log = std::fs::File::create(dir.path().join("member.log"))
        .map_err(|e| io("the scratch member's log", e))?;
    let mut member = tokio::process::Command::new(server_bin)
        .args(["--name", "verify"])
        .arg("--data-dir")
        .arg(&data)
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=verify={peer_url}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io(&format!("starting {}", server_bin.display()), e))?;
    let deadline = tokio::time::Instant::now() + SCRATCH_TIMEOUT;
    let got = loop {
        if let Ok(Some(status)) = member.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("member.log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or_default().to_owned();
            let reason = format!("the restored member exited ({status}): {last}");
            // Another process took its port: nothing to say about the backup.
            return Err(if log.contains("Address already in use") {
                unchecked(key, reason)
            } else {
                failed(key, reason)
            });
        }
        match etcd.digest(&client_url, meta.revision).await {
            Ok(d) => break d,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(unchecked(
                    key,
                    format!("the restored member did not answer: {e}"),
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let _ = member.kill().await;
    if got != expected {
        return Err(failed(
            key,
            format!(
                "restored, it holds {} keys with HashKV {} at revision {}; the cluster held {} keys with HashKV {}",
                got.keys, got.hash, meta.revision, expected.keys, expected.hash
            ),
        ));
    }
    Ok(())
}
