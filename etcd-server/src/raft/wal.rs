//! The write-ahead log: Raft entries, hard states and snapshot markers in checksummed records.
//!
//! A WAL is a directory of segments `<seq>-<first index>.wal`. Each record is
//! `len: u32 LE | crc32c: u32 LE | type: u8 | payload`, where `len` and `crc32c` cover
//! `type | payload`. Every `save` ends with one fsync, so a whole Raft batch (many client
//! writes) shares it. A torn record at the tail of the last segment (a crash mid-write) is
//! truncated on open; damage anywhere else is reported, never silently skipped.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

const REC_ENTRY: u8 = 1;
const REC_HARD_STATE: u8 = 2;
const REC_SNAPSHOT: u8 = 3;

/// WAL errors. Any of them stops the member: it cannot promise durability any more.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// File-system failure.
    #[error("failed to access wal {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A record in the middle of the log is damaged.
    #[error("wal: corrupt record in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a WAL holds after replay.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest snapshot marker: entries up to its index live in the backend.
    pub snap: SnapshotMetadata,
    /// The newest hard state.
    pub hard_state: HardState,
    /// Entries after the snapshot, contiguous, with overwritten suffixes resolved.
    pub entries: Vec<Entry>,
}

/// An open WAL, appending to its newest segment.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
}

fn segment_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

fn encode_record(buf: &mut Vec<u8>, ty: u8, payload: &[u8]) {
    let mut crc = crc32c::crc32c(&[ty]);
    crc = crc32c::crc32c_append(crc, payload);
    buf.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.push(ty);
    buf.extend_from_slice(payload);
}

fn pb_bytes(m: &impl protobuf::Message) -> Vec<u8> {
    m.write_to_bytes()
        .expect("encoding a raft message into memory cannot fail")
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).map_err(io_err(dir))? {
        let ent = ent.map_err(io_err(dir))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let Some((seq, _)) = stem.split_once('-') else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(seq, 16) {
            out.push((seq, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Wal {
    /// Whether `dir` holds a WAL.
    pub fn exists(dir: &Path) -> bool {
        segments(dir).map(|s| !s.is_empty()).unwrap_or(false)
    }

    /// Creates a new WAL starting at `snap` (index 0 for a new member).
    pub fn create(dir: &Path, snap: &SnapshotMetadata, hs: &HardState) -> Result<Self, WalError> {
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let name = segment_name(0, snap.index + 1);
        let path = tmp.join(&name);
        let mut file = File::create(&path).map_err(io_err(&path))?;
        let mut buf = Vec::new();
        encode_record(&mut buf, REC_SNAPSHOT, &pb_bytes(snap));
        encode_record(&mut buf, REC_HARD_STATE, &pb_bytes(hs));
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        drop(file);
        sync_dir(&tmp)?;
        fs::rename(&tmp, dir).map_err(io_err(dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Self::open_append(dir, 0, &dir.join(name))
    }

    fn open_append(dir: &Path, seq: u64, path: &Path) -> Result<Self, WalError> {
        let mut file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(path)
            .map_err(io_err(path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            seq,
        })
    }

    /// Opens an existing WAL and replays it.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), WalError> {
        let segs = segments(dir)?;
        let mut rec = Recovered::default();
        let last = segs.len().saturating_sub(1);
        for (i, (_, path)) in segs.iter().enumerate() {
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io_err(path))?;
            let mut off = 0usize;
            while off < data.len() {
                match Self::decode_at(&data, off) {
                    Ok((ty, payload, next)) => {
                        Self::replay(&mut rec, ty, payload).map_err(|reason| {
                            WalError::Corrupt {
                                path: path.clone(),
                                offset: off as u64,
                                reason,
                            }
                        })?;
                        off = next;
                    }
                    Err(reason) if i == last => {
                        // A torn write at the very end: the record was never acknowledged.
                        tracing::warn!(path = %path.display(), offset = off, %reason, "truncating torn wal tail");
                        let f = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io_err(path))?;
                        f.set_len(off as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(io_err(path))?;
                        break;
                    }
                    Err(reason) => {
                        return Err(WalError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            reason,
                        });
                    }
                }
            }
        }
        let (seq, path) = segs.last().cloned().ok_or_else(|| WalError::Corrupt {
            path: dir.to_owned(),
            offset: 0,
            reason: "no wal segments".into(),
        })?;
        Ok((Self::open_append(dir, seq, &path)?, rec))
    }

    fn decode_at(data: &[u8], off: usize) -> Result<(u8, &[u8], usize), String> {
        let head = data.get(off..off + 8).ok_or("short record header")?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 {
            return Err("zero-length record".into());
        }
        let body = data
            .get(off + 8..off + 8 + len)
            .ok_or("short record body")?;
        if crc32c::crc32c(body) != crc {
            return Err("checksum mismatch".into());
        }
        Ok((body[0], &body[1..], off + 8 + len))
    }

    fn replay(rec: &mut Recovered, ty: u8, payload: &[u8]) -> Result<(), String> {
        match ty {
            REC_ENTRY => {
                let e = Entry::parse_from_bytes(payload).map_err(|e| e.to_string())?;
                let first = rec.snap.index + 1;
                if e.index < first {
                    return Ok(()); // already covered by the snapshot
                }
                let keep = (e.index - first) as usize;
                if keep > rec.entries.len() {
                    return Err(format!("gap before entry {}", e.index));
                }
                rec.entries.truncate(keep);
                rec.entries.push(e);
            }
            REC_HARD_STATE => {
                rec.hard_state = HardState::parse_from_bytes(payload).map_err(|e| e.to_string())?;
            }
            REC_SNAPSHOT => {
                let s = SnapshotMetadata::parse_from_bytes(payload).map_err(|e| e.to_string())?;
                rec.entries.retain(|e| e.index > s.index);
                if rec.entries.first().is_some_and(|e| e.index != s.index + 1) {
                    rec.entries.clear();
                }
                rec.snap = s;
            }
            other => return Err(format!("unknown record type {other}")),
        }
        Ok(())
    }

    /// Appends entries and the hard state, then fsyncs once.
    pub fn save(&mut self, hs: Option<&HardState>, entries: &[Entry]) -> Result<(), WalError> {
        if hs.is_none() && entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            encode_record(&mut buf, REC_ENTRY, &pb_bytes(e));
        }
        if let Some(hs) = hs {
            encode_record(&mut buf, REC_HARD_STATE, &pb_bytes(hs));
        }
        let path = self.dir.clone();
        self.file.write_all(&buf).map_err(io_err(&path))?;
        crate::metrics::time(&crate::metrics::WAL_FSYNC, || self.file.sync_data())
            .map_err(io_err(&path))?;
        Ok(())
    }

    /// Starts a new segment holding `snap`, `hs` and the entries after the snapshot, then
    /// deletes the older segments: the backend now holds everything up to `snap.index`.
    pub fn rotate(
        &mut self,
        snap: &SnapshotMetadata,
        hs: &HardState,
        tail: &[Entry],
    ) -> Result<(), WalError> {
        let seq = self.seq + 1;
        let path = self.dir.join(segment_name(seq, snap.index + 1));
        let mut buf = Vec::new();
        encode_record(&mut buf, REC_SNAPSHOT, &pb_bytes(snap));
        encode_record(&mut buf, REC_HARD_STATE, &pb_bytes(hs));
        for e in tail {
            encode_record(&mut buf, REC_ENTRY, &pb_bytes(e));
        }
        let mut file = File::create(&path).map_err(io_err(&path))?;
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        drop(file);
        sync_dir(&self.dir)?;
        for (old, old_path) in segments(&self.dir)? {
            if old < seq {
                fs::remove_file(&old_path).map_err(io_err(&old_path))?;
            }
        }
        sync_dir(&self.dir)?;
        *self = Self::open_append(&self.dir, seq, &path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = data.to_vec().into();
        e
    }

    fn hs(term: u64, commit: u64) -> HardState {
        let mut h = HardState::default();
        h.term = term;
        h.commit = commit;
        h
    }

    #[test]
    fn replay_overwrites_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal_dir = dir.path().join("wal");
        {
            let mut w = Wal::create(
                &wal_dir,
                &SnapshotMetadata::default(),
                &HardState::default(),
            )
            .expect("create");
            w.save(
                Some(&hs(1, 2)),
                &[ent(1, 1, b"a"), ent(2, 1, b"b"), ent(3, 1, b"c")],
            )
            .expect("save");
            w.save(Some(&hs(2, 3)), &[ent(3, 2, b"C")]).expect("save");
        }
        // Simulate a torn write: garbage half-record at the end.
        let seg = segments(&wal_dir).expect("segments")[0].1.clone();
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[9, 0, 0, 0, 1, 2]).expect("write");
        drop(f);
        let (_, rec) = Wal::open(&wal_dir).expect("open");
        let got: Vec<_> = rec.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 2)]);
        assert_eq!((rec.hard_state.term, rec.hard_state.commit), (2, 3));
        // The tail was truncated, so the WAL opens cleanly again and appends work.
        let (mut w, _) = Wal::open(&wal_dir).expect("reopen");
        w.save(None, &[ent(4, 2, b"d")]).expect("save");
        let (_, rec) = Wal::open(&wal_dir).expect("reopen");
        assert_eq!(rec.entries.len(), 4);
    }

    #[test]
    fn corruption_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal_dir = dir.path().join("wal");
        let mut w = Wal::create(
            &wal_dir,
            &SnapshotMetadata::default(),
            &HardState::default(),
        )
        .expect("create");
        w.save(None, &[ent(1, 1, b"a")]).expect("save");
        let mut snap = SnapshotMetadata::default();
        snap.index = 1;
        snap.term = 1;
        w.rotate(&snap, &hs(1, 1), &[]).expect("rotate");
        w.save(None, &[ent(2, 1, b"b")]).expect("save");
        drop(w);
        assert_eq!(
            segments(&wal_dir).expect("segments").len(),
            1,
            "old segment deleted"
        );
        // Flip a byte inside the snapshot record of the only (hence last) segment: torn tail
        // handling must not hide it, because valid records follow... but here it is the last
        // segment, so write a second segment to make the damaged one non-final.
        let (mut w, rec) = Wal::open(&wal_dir).expect("open");
        assert_eq!((rec.snap.index, rec.entries.len()), (1, 1));
        let snap2 = {
            let mut s = snap.clone();
            s.index = 2;
            s
        };
        let first = segments(&wal_dir).expect("segments")[0].1.clone();
        w.rotate(&snap2, &hs(1, 2), &[]).expect("rotate");
        w.save(None, &[ent(3, 1, b"c")]).expect("save");
        drop(w);
        assert!(!first.exists());
        let seg = segments(&wal_dir).expect("segments")[0].1.clone();
        let mut data = fs::read(&seg).expect("read");
        data[10] ^= 0xff;
        // Put the damaged copy before a healthy segment.
        fs::write(wal_dir.join(segment_name(0, 1)), &data).expect("write");
        assert!(matches!(Wal::open(&wal_dir), Err(WalError::Corrupt { .. })));
    }
}
