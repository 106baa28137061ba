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

/// Writes what goes through it to a file and into a SHA-256, counting bytes.
struct HashingFile {
    file: std::io::BufWriter<std::fs::File>,
    sha: sha2::Sha256,
    size: u64,
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Decompresses (or not) into the file.
enum Out {
    Plain(HashingFile),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashingFile>>),
}

/// Downloads the snapshot of `meta` into the file `to`, streamed (never whole in memory):
/// the object's SHA-256 is checked as it arrives, and the decompressed snapshot's as it is
/// written. A backup whose sums differ is an [`Error::Verify`]; a store or disk failure is
/// not the backup's fault ([`Error::Store`] / [`Error::Unverifiable`]). On error the file is
/// removed.
pub async fn download(store: &Store, meta: &Metadata, to: &Path) -> Result<(), Error> {
    let result = download_inner(store, meta, to).await;
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result
}

async fn download_inner(store: &Store, meta: &Metadata, to: &Path) -> Result<(), Error> {
    use std::io::Write as _;
    let key = &meta.key;
    let io = |e: std::io::Error| unchecked(key, format!("writing {}: {e}", to.display()));
    let file = HashingFile {
        file: std::io::BufWriter::new(std::fs::File::create(to).map_err(io)?),
        sha: sha2::Sha256::new(),
        size: 0,
    };
    let mut out = match meta.compression {
        BackupCompression::Zstd => Out::Zstd(Box::new(
            zstd::stream::write::Decoder::new(file).map_err(io)?,
        )),
        BackupCompression::None => Out::Plain(file),
    };
    let mut body = store.get_stream(key).await?;
    let mut stored = sha2::Sha256::new();
    let mut stored_size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Store {
            op: "read from",
            bucket: store.bucket().to_owned(),
            message: e.to_string(),
        })?;
        stored.update(&chunk);
        stored_size += chunk.len() as u64;
        let written = match &mut out {
            Out::Plain(f) => f.write_all(&chunk),
            Out::Zstd(z) => z.write_all(&chunk),
        };
        if let Err(e) = written {
            // A decoder error means the bytes are not zstd; a file error is this machine's.
            return Err(match (&out, e.kind()) {
                (Out::Zstd(_), std::io::ErrorKind::Other | std::io::ErrorKind::InvalidData) => {
                    failed(key, format!("it does not decompress: {e}"))
                }
                _ => io(e),
            });
        }
    }
    let sum = hex(&stored.finalize());
    if sum != meta.sha256 {
        return Err(failed(
            key,
            format!(
                "the object's SHA-256 is {sum}, its metadata says {} ({stored_size} bytes, {} expected)",
                meta.sha256, meta.size
            ),
        ));
    }
    let mut file = match out {
        Out::Plain(f) => f,
        Out::Zstd(mut z) => {
            z.flush()
                .map_err(|e| failed(key, format!("it does not decompress: {e}")))?;
            z.into_inner()
        }
    };
    file.flush().map_err(io)?;
    let sum = hex(&file.sha.clone().finalize());
    if sum != meta.raw_sha256 || file.size != meta.raw_size {
        return Err(failed(
            key,
            format!(
                "the snapshot's SHA-256 is {sum} ({} bytes), its metadata says {} ({} bytes)",
                file.size, meta.raw_sha256, meta.raw_size
            ),
        ));
    }
    file.file
        .into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(())
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
    let io = |what: &str, e: std::io::Error| unchecked(key, format!("{what}: {e}"));
    let dir = tempfile::tempdir().map_err(|e| io("scratch dir", e))?;
    let file = dir.path().join("backup.snap");
    download(store, meta, &file).await?;
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
