//! Disk measurements: the space a data dir takes (allocated blocks, as `du` counts them) and an
//! fsync latency probe run on the filesystem that holds both servers' data.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::report::{Latency, new_histogram};

/// Bytes allocated on disk by every file under `path` (`du -s` in bytes).
pub fn dir_size(path: &Path) -> Result<u64> {
    let io = |source| Error::Io {
        action: "measure a data dir",
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Ok(meta.blocks() * 512);
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(io)? {
        total += dir_size(&entry.map_err(io)?.path())?;
    }
    Ok(total)
}

/// The result of [`fsync_probe`].
#[derive(Debug, Clone, Serialize)]
pub struct FsyncProbe {
    /// Number of writes.
    pub writes: usize,
    /// Bytes per write.
    pub write_bytes: usize,
    /// Latency of write + fdatasync, milliseconds.
    pub latency_ms: Latency,
}

/// Appends `writes` blocks of 4 KiB to a fresh file in `dir`, each followed by `fdatasync`, as a
/// write-ahead log does, and times each write + sync. The file is removed afterwards.
pub fn fsync_probe(dir: &Path, writes: usize) -> Result<FsyncProbe> {
    const BLOCK: usize = 4096;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create the probe dir",
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join("etcd-bench-fsync-probe");
    let io = |source| Error::Io {
        action: "write the fsync probe file",
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::create(&path).map_err(io)?;
    let block = vec![0xa5u8; BLOCK];
    let mut h = new_histogram();
    for _ in 0..writes {
        let t0 = Instant::now();
        file.write_all(&block).map_err(io)?;
        file.sync_data().map_err(io)?;
        let us = u64::try_from(t0.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        h.saturating_record(us);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(FsyncProbe {
        writes,
        write_bytes: BLOCK,
        latency_ms: Latency::from_histogram(&h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_and_size() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let p = fsync_probe(dir.path(), 5).unwrap_or_else(|e| panic!("probe: {e}"));
        assert_eq!(p.writes, 5);
        assert!(p.latency_ms.p50 > 0.0 && p.latency_ms.p50 <= p.latency_ms.max);
        std::fs::write(dir.path().join("f"), vec![1u8; 10_000]).unwrap_or_default();
        let size = dir_size(dir.path()).unwrap_or(0);
        assert!(size >= 10_000, "{size}");
    }
}
