//! The write-ahead log: Raft entries, hard states and snapshot markers in checksummed records.
//!
//! A WAL is a directory of segments `<seq>-<first index>.wal`. Each record is
//! `len: u32 LE | crc32c: u32 LE | type: u8 | payload`, where `len` and `crc32c` cover
//! `type | payload`. A `save` with entries, a new term or a vote ends with one fsync, so a whole
//! Raft batch (many client writes) shares it; a hard state whose commit index alone moved is
//! written without one (etcd's `MustSync`), and the segment is synced before the writer leaves
//! it. A torn record at the tail of the last segment (a crash mid-write) is
//! truncated on open; damage anywhere else is reported, never silently skipped.
//!
//! Segments are written in place, not appended to: once a member has written its first
//! `PREPARE_AFTER` bytes, a background thread prepares a spare segment of `SEGMENT_BYTES`
//! physically written zeros, and the writer switches to it when the current segment is full.
//! Overwriting blocks that already exist changes no file metadata, so each `fdatasync` flushes
//! only the data (on ext4 about half the latency of an appending write, which must also commit
//! the new size and block allocation to the journal). A zero length field marks the end of a
//! segment's records.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

const REC_ENTRY: u8 = 1;
const REC_HARD_STATE: u8 = 2;
const REC_SNAPSHOT: u8 = 3;

/// Size of a preallocated segment (etcd's `SegmentSizeBytes`).
const SEGMENT_BYTES: u64 = 64 << 20;
/// A WAL prepares its first spare segment only after this many bytes were written since it
/// was opened, so idle and short-lived members never write 64 MiB of zeros.
const PREPARE_AFTER: u64 = 1 << 20;
/// Name of the spare segment while it is prepared (not a `.wal` file, so replay ignores it).
const SPARE_NAME: &str = "spare.tmp";
/// Name of a rewritten segment while it is written, when no spare is ready.
const ROTATE_NAME: &str = "rotate.tmp";

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

/// An open WAL, writing to its newest segment.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    /// Where the next record goes in `file`.
    offset: u64,
    /// Length of `file`; the bytes from `offset` to `len` are zeros written in advance.
    len: u64,
    /// Bytes written since the WAL was opened.
    written: u64,
    /// The spare segment being prepared in the background, if any.
    spare: Option<JoinHandle<std::io::Result<File>>>,
    /// `SEGMENT_BYTES`, smaller in tests.
    segment_bytes: u64,
    /// `PREPARE_AFTER`, smaller in tests.
    prepare_after: u64,
    /// Term and vote of the last hard state written (every change of them is synced).
    term_vote: Option<(u64, u64)>,
    /// `fdatasync` calls made by `save` and by segment switches.
    syncs: u64,
    /// Records written to `file` since its last sync.
    dirty: bool,
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
        Self::open_segment(dir, 0, &dir.join(&name), buf.len() as u64)
    }

    /// Opens segment `path` for writing records at `offset`.
    fn open_segment(dir: &Path, seq: u64, path: &Path, offset: u64) -> Result<Self, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        for name in [SPARE_NAME, ROTATE_NAME] {
            let tmp = dir.join(name);
            if tmp.exists() {
                // Left over from a run that stopped while writing it: it may be incomplete.
                fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            file,
            seq,
            offset,
            len: len.max(offset),
            written: 0,
            spare: None,
            segment_bytes: SEGMENT_BYTES,
            prepare_after: PREPARE_AFTER,
            term_vote: None,
            syncs: 0,
            dirty: false,
        })
    }

    /// Opens an existing WAL and replays it.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), WalError> {
        let segs = segments(dir)?;
        let mut rec = Recovered::default();
        let last = segs.len().saturating_sub(1);
        let mut end = 0usize;
        for (i, (_, path)) in segs.iter().enumerate() {
            let (data, tail_end) = read_segment(path).map_err(io_err(path))?;
            let corrupt = |offset: usize, reason: String| WalError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason,
            };
            let mut off = 0usize;
            while off < data.len() {
                if is_end_marker(&data, off) {
                    // The zeros written in advance: nothing was ever written from here on.
                    if tail_end <= off {
                        break;
                    }
                    if i != last {
                        return Err(corrupt(off, "zero-length record".into()));
                    }
                }
                match Self::decode_at(&data, off) {
                    Ok((ty, payload, next)) => {
                        Self::replay(&mut rec, ty, payload).map_err(|r| corrupt(off, r))?;
                        off = next;
                    }
                    Err(reason) if i == last => {
                        // A torn write at the very end: the record was never acknowledged.
                        // Overwrite it with zeros (keeping the space written in advance).
                        tracing::warn!(path = %path.display(), offset = off, %reason, "clearing torn wal tail");
                        let dirty = tail_end.max(off);
                        let f = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io_err(path))?;
                        f.write_all_at(&vec![0; dirty - off], off as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(io_err(path))?;
                        break;
                    }
                    Err(reason) => return Err(corrupt(off, reason)),
                }
            }
            end = off;
        }
        let (seq, path) = segs.last().cloned().ok_or_else(|| WalError::Corrupt {
            path: dir.to_owned(),
            offset: 0,
            reason: "no wal segments".into(),
        })?;
        Ok((Self::open_segment(dir, seq, &path, end as u64)?, rec))
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
                if e.index == u64::MAX {
                    return Err(format!("an entry at index {}", e.index));
                }
                // A snapshot index at the end of the index space leaves room for nothing.
                let first = rec.snap.index.checked_add(1).ok_or_else(|| {
                    format!(
                        "entry {} after a snapshot at index {}",
                        e.index, rec.snap.index
                    )
                })?;
                if e.index < first {
                    return Ok(()); // already covered by the snapshot
                }
                let keep = usize::try_from(e.index - first).unwrap_or(usize::MAX);
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
                // Raft's storage counts from the index after it: the last index leaves none.
                if s.index == u64::MAX {
                    return Err(format!("a snapshot at index {}", s.index));
                }
                rec.entries.retain(|e| e.index > s.index);
                if rec
                    .entries
                    .first()
                    .is_some_and(|e| Some(e.index) != s.index.checked_add(1))
                {
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
        if self.offset + buf.len() as u64 > self.len
            && let Some(file) = self.take_spare()?
        {
            let next = entries.first().map_or(0, |e| e.index);
            self.install_segment(file, SPARE_NAME, next)?;
        }
        self.write(&buf)?;
        // As etcd's `raft.MustSync`: entries, a new term and a vote must be durable before
        // anyone hears of them; a commit index need not be (a restarted member learns it
        // again from the leader, and `open_log` raises it to what the backend applied).
        let term_vote = hs.map(|hs| (hs.term, hs.vote));
        let must_sync = !entries.is_empty() || (term_vote.is_some() && term_vote != self.term_vote);
        if let Some(tv) = term_vote {
            self.term_vote = Some(tv);
        }
        if must_sync {
            self.sync()?;
        } else {
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes everything written to the current segment durable.
    fn sync(&mut self) -> Result<(), WalError> {
        let path = self.dir.clone();
        crate::metrics::time(&crate::metrics::WAL_FSYNC, || self.file.sync_data())
            .map_err(io_err(&path))?;
        self.syncs += 1;
        self.dirty = false;
        Ok(())
    }

    /// Writes `buf` at the current offset (beyond the zeros written in advance if they do
    /// not suffice: the file then grows), and starts preparing a spare segment when due.
    fn write(&mut self, buf: &[u8]) -> Result<(), WalError> {
        self.file
            .write_all_at(buf, self.offset)
            .map_err(io_err(&self.dir))?;
        self.offset += buf.len() as u64;
        self.len = self.len.max(self.offset);
        self.written += buf.len() as u64;
        let room = self.len - self.offset;
        if self.spare.is_none()
            && self.written >= self.prepare_after
            && room < self.segment_bytes / 2
        {
            let path = self.dir.join(SPARE_NAME);
            let size = self.segment_bytes;
            let spawned = std::thread::Builder::new()
                .name("wal-prepare".into())
                .spawn(move || prepare_spare(&path, size));
            match spawned {
                Ok(h) => self.spare = Some(h),
                Err(e) => tracing::warn!(error = %e, "failed to start preparing a wal segment"),
            }
        }
        Ok(())
    }

    /// The spare segment, if it is ready. A failed preparation is logged and retried later:
    /// the WAL keeps working by growing the current segment.
    fn take_spare(&mut self) -> Result<Option<File>, WalError> {
        if !self.spare.as_ref().is_some_and(|h| h.is_finished()) {
            return Ok(None);
        }
        let handle = self.spare.take().expect("checked above");
        match handle.join() {
            Ok(Ok(file)) => Ok(Some(file)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "failed to prepare a wal segment");
                Ok(None)
            }
            Err(_) => {
                tracing::warn!("the thread preparing a wal segment panicked");
                Ok(None)
            }
        }
    }

    /// Renames the file at `tmp_name` (open as `file`) to the next segment, named for its
    /// first entry `index`, and writes from its start on.
    fn install_segment(&mut self, file: File, tmp_name: &str, index: u64) -> Result<(), WalError> {
        // An unsynced commit-only record must not stay behind in a segment that is no longer
        // the last: a torn record there would read as corruption, not as a torn tail.
        if self.dirty {
            self.sync()?;
        }
        let seq = self.seq + 1;
        let path = self.dir.join(segment_name(seq, index));
        fs::rename(self.dir.join(tmp_name), &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.len = file.metadata().map_err(io_err(&path))?.len();
        self.file = file;
        self.seq = seq;
        self.offset = 0;
        Ok(())
    }

    /// Starts a new segment holding `snap`, `hs` and the entries after the snapshot, then
    /// deletes the older segments: the backend now holds everything up to `snap.index`. The
    /// new segment is written and made durable under a temporary name and only then renamed
    /// into place, so a crash never leaves a partly written snapshot segment behind the older
    /// ones (its torn tail would cut entries the older segments still hold).
    pub fn rotate(
        &mut self,
        snap: &SnapshotMetadata,
        hs: &HardState,
        tail: &[Entry],
    ) -> Result<(), WalError> {
        let mut buf = Vec::new();
        encode_record(&mut buf, REC_SNAPSHOT, &pb_bytes(snap));
        encode_record(&mut buf, REC_HARD_STATE, &pb_bytes(hs));
        for e in tail {
            encode_record(&mut buf, REC_ENTRY, &pb_bytes(e));
        }
        let (file, tmp_name) = match self.take_spare()? {
            Some(file) => (file, SPARE_NAME),
            None => {
                let tmp = self.dir.join(ROTATE_NAME);
                (create_new(&tmp).map_err(io_err(&tmp))?, ROTATE_NAME)
            }
        };
        file.write_all_at(&buf, 0)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&self.dir))?;
        self.install_segment(file, tmp_name, snap.index + 1)?;
        self.offset = buf.len() as u64;
        self.len = self.len.max(self.offset);
        self.written += buf.len() as u64;
        for (old, old_path) in segments(&self.dir)? {
            if old < self.seq {
                fs::remove_file(&old_path).map_err(io_err(&old_path))?;
            }
        }
        sync_dir(&self.dir)
    }

    #[cfg(test)]
    fn set_sizes(&mut self, segment_bytes: u64, prepare_after: u64) {
        self.segment_bytes = segment_bytes;
        self.prepare_after = prepare_after;
    }

    #[cfg(test)]
    fn wait_for_spare(&self) {
        if let Some(h) = &self.spare {
            while !h.is_finished() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// Reads a segment: the file from its start through the first zero length field at a record
/// boundary (the end of what was ever written), without keeping the zeros written in advance
/// after it in memory (up to 64 MiB per segment). Also returns the offset just past the file's
/// last non-zero byte, so a torn tail can be told from the zeros.
fn read_segment(path: &Path) -> std::io::Result<(Vec<u8>, usize)> {
    let mut f = File::open(path)?;
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    // Start of the first record not yet known to be complete.
    let mut boundary = 0usize;
    let mut read = 0usize;
    let mut tail_end = 0usize;
    let mut loading = true;
    loop {
        let n = match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let got = &chunk[..n];
        if let Some(p) = got.iter().rposition(|b| *b != 0) {
            tail_end = read + p + 1;
        }
        if loading {
            data.extend_from_slice(got);
            while let Some(h) = data.get(boundary..boundary + 4) {
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len == 0 {
                    loading = false;
                    break;
                }
                if data.len() < boundary + 8 + len {
                    break;
                }
                boundary += 8 + len;
            }
        }
        read += n;
    }
    Ok((data, tail_end))
}

/// Creates (or empties) the file at `path` for reading and writing at offsets.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Whether a record header at `off` has a zero length (the end of a segment's records).
fn is_end_marker(data: &[u8], off: usize) -> bool {
    data.get(off..off + 4).is_none_or(|h| h == [0; 4])
}

/// Writes a segment of `size` zero bytes at `path` and makes it durable, in 1 MiB steps with
/// an fdatasync each, so the member's own WAL syncs never wait behind a flood of dirty pages.
fn prepare_spare(path: &Path, size: u64) -> std::io::Result<File> {
    let file = create_new(path)?;
    let chunk = vec![0u8; (1 << 20).min(size as usize)];
    let mut at = 0;
    while at < size {
        let n = chunk.len().min((size - at) as usize);
        file.write_all_at(&chunk[..n], at)?;
        file.sync_data()?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// The fuzz tests' segment: when `real`, a snapshot record and an entry first (so replay
/// reaches the records after them with state), then `records` as (type, payload), each with
/// its checksum right so that it reaches the decoder.
#[cfg(test)]
pub(crate) fn fuzz_segment(records: &[(u8, Vec<u8>)], real: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    if real {
        let mut snap = SnapshotMetadata::default();
        (snap.index, snap.term) = (5, 2);
        encode_record(&mut buf, REC_SNAPSHOT, &pb_bytes(&snap));
        let mut e = Entry::default();
        (e.index, e.term) = (6, 2);
        encode_record(&mut buf, REC_ENTRY, &pb_bytes(&e));
    }
    for (ty, payload) in records {
        encode_record(&mut buf, *ty, payload);
    }
    buf
}

/// The fuzz tests' segment file name.
#[cfg(test)]
pub(crate) fn fuzz_segment_name() -> String {
    segment_name(0, 1)
}

#[cfg(test)]
mod tests;
