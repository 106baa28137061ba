//! Taking one backup: a member's snapshot streamed through compression and SHA-256 into a
//! multipart upload (never whole in memory or on disk), then its metadata object, written last
//! so that only complete backups are ever listed.

use std::io::Write;

use futures::StreamExt;
use sha2::Digest;

use super::store::{PART_SIZE, Store};
use super::{Error, Metadata};
use crate::crd::BackupCompression;
use crate::etcd::EtcdAdmin;

/// A part's buffer: a part and room for what one write adds past it, so that it never
/// grows (doubling) before it is sent.
const BUFFER: usize = PART_SIZE + (1 << 20);

/// The object keys of a backup taken at `taken` (Unix seconds) at `revision`.
pub fn keys(
    store: &Store,
    cluster: &str,
    taken: i64,
    revision: i64,
    c: BackupCompression,
) -> (String, String) {
    let stamp = chrono::DateTime::from_timestamp(taken, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ");
    let ext = match c {
        BackupCompression::Zstd => "snap.zst",
        BackupCompression::None => "snap",
    };
    let base = format!("{}{cluster}-{stamp}-r{revision}", store.prefix);
    (format!("{base}.{ext}"), format!("{base}.json"))
}

/// Compresses (or not) what is written into it, keeping the output in a buffer the caller
/// drains part by part.
enum Sink {
    Plain(Vec<u8>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match self {
            Self::Plain(v) => v.extend_from_slice(bytes),
            Self::Zstd(z) => z.write_all(bytes).map_err(Error::Compress)?,
        }
        Ok(())
    }

    fn buffer(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Plain(v) => v,
            Self::Zstd(z) => z.get_mut(),
        }
    }

    fn finish(self) -> Result<Vec<u8>, Error> {
        match self {
            Self::Plain(v) => Ok(v),
            Self::Zstd(z) => z.finish().map_err(Error::Compress),
        }
    }
}

/// What a backup is of, and how it is stored.
pub struct Job<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// Its members now.
    pub members: usize,
    /// How the snapshot is stored.
    pub compression: BackupCompression,
    /// Now, Unix seconds.
    pub taken: i64,
    /// The `spec.backup` that asks for it, for the metadata.
    pub spec: serde_json::Value,
}

/// Streams a snapshot of the member at `endpoint` into the bucket; returns its metadata
/// (written last).
pub async fn take(
    etcd: &dyn EtcdAdmin,
    endpoint: &str,
    store: &Store,
    job: Job<'_>,
) -> Result<Metadata, Error> {
    let Job {
        cluster,
        members,
        compression,
        taken,
        spec,
    } = job;
    let snapshot = etcd.snapshot(endpoint).await.map_err(Error::Etcd)?;
    // What the source holds at the revision, for verification: read now, before the upload
    // gives compaction time to move past it.
    let digest = etcd.digest(endpoint, snapshot.revision).await.ok();
    let (key, meta_key) = keys(store, cluster, taken, snapshot.revision, compression);
    let mut sink = match compression {
        BackupCompression::None => Sink::Plain(Vec::with_capacity(BUFFER)),
        BackupCompression::Zstd => Sink::Zstd(
            zstd::stream::write::Encoder::new(Vec::with_capacity(BUFFER), 3)
                .map_err(Error::Compress)?,
        ),
    };
    let mut upload = store.start_upload(&key).await?;
    let (mut raw_sha, mut stored_sha) = (sha2::Sha256::new(), sha2::Sha256::new());
    let (mut raw_size, mut stored_size) = (0u64, 0u64);
    let mut chunks = snapshot.chunks;
    let result: Result<(), Error> = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(Error::Etcd)?;
            raw_sha.update(&chunk);
            raw_size += chunk.len() as u64;
            sink.write(&chunk)?;
            let buffer = sink.buffer();
            if buffer.len() >= PART_SIZE {
                let part = std::mem::replace(buffer, Vec::with_capacity(BUFFER));
                // Uncompressed, the object is the snapshot: one hash serves both.
                if compression != BackupCompression::None {
                    stored_sha.update(&part);
                }
                stored_size += part.len() as u64;
                upload.part(part).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        upload.abort().await;
        return Err(e);
    }
    let last = match sink.finish() {
        Ok(last) => last,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    if compression != BackupCompression::None {
        stored_sha.update(&last);
    }
    stored_size += last.len() as u64;
    if let Err(e) = upload.part(last).await {
        upload.abort().await;
        return Err(e);
    }
    upload.finish().await?;
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let raw_hex = hex(&raw_sha.finalize());
    let meta = Metadata {
        key,
        cluster: cluster.to_owned(),
        taken,
        revision: snapshot.revision,
        cluster_id: format!("{:x}", snapshot.cluster_id),
        members,
        server_version: snapshot.version,
        raw_size,
        size: stored_size,
        sha256: match compression {
            BackupCompression::None => raw_hex.clone(),
            BackupCompression::Zstd => hex(&stored_sha.finalize()),
        },
        raw_sha256: raw_hex,
        compression,
        verified: None,
        verify_error: None,
        digest,
        spec,
    };
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Metadata(e.to_string()))?;
    store.put(&meta_key, text).await?;
    Ok(meta)
}
