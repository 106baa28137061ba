//! The Raft log as raft-rs sees it: an in-memory copy of the entries since the last snapshot,
//! kept in step with the write-ahead log by the driver.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

#[derive(Debug, Default)]
struct Core {
    hard_state: HardState,
    /// Metadata of the newest snapshot: everything up to `snap.index` is in the backend.
    snap: SnapshotMetadata,
    /// Entries after `snap.index`, contiguous.
    entries: Vec<Entry>,
    /// Configurations after each applied conf change, by entry index (for snapshots taken at
    /// an index behind the newest configuration).
    conf_history: Vec<(u64, ConfState)>,
    /// An outgoing snapshot prepared by the apply loop (its backend file is on disk).
    prepared: Option<SnapshotMetadata>,
    /// raft-rs asked for a snapshot that is not prepared yet.
    wanted: bool,
}

/// raft-rs `Storage` over the in-memory log. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct LogStorage {
    core: Arc<RwLock<Core>>,
}

impl LogStorage {
    fn rl(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|p| p.into_inner())
    }

    fn wl(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the storage from what the WAL recovered.
    pub fn recovered(snap: SnapshotMetadata, hard_state: HardState, entries: Vec<Entry>) -> Self {
        let s = Self::default();
        {
            let mut c = s.wl();
            c.snap = snap;
            c.hard_state = hard_state;
            c.entries = entries;
        }
        s
    }

    /// Appends entries, replacing any conflicting suffix.
    pub fn append(&self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let mut c = self.wl();
        let offset = c.snap.index + 1;
        let keep = first.index.saturating_sub(offset) as usize;
        c.entries.truncate(keep);
        c.entries.extend_from_slice(ents);
    }

    /// Records the persisted hard state.
    pub fn set_hard_state(&self, hs: HardState) {
        self.wl().hard_state = hs;
    }

    /// Records the configuration produced by the conf change at `index`.
    pub fn set_conf_state_at(&self, index: u64, cs: ConfState) {
        let mut c = self.wl();
        c.conf_history.retain(|(i, _)| *i < index);
        c.conf_history.push((index, cs));
    }

    /// The newest configuration.
    pub fn conf_state(&self) -> ConfState {
        let c = self.rl();
        c.conf_history
            .last()
            .map(|(_, cs)| cs.clone())
            .unwrap_or_else(|| c.snap.get_conf_state().clone())
    }

    /// The configuration in force at `index`.
    pub fn conf_state_at(&self, index: u64) -> ConfState {
        let c = self.rl();
        c.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, cs)| cs.clone())
            .unwrap_or_else(|| c.snap.get_conf_state().clone())
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub fn apply_snapshot(&self, meta: SnapshotMetadata) {
        let mut c = self.wl();
        let index = meta.index;
        c.entries.retain(|e| e.index > index);
        if c.entries.first().is_some_and(|e| e.index != index + 1) {
            c.entries.clear();
        }
        c.conf_history.retain(|(i, _)| *i > index);
        if c.hard_state.commit < index {
            c.hard_state.commit = index;
        }
        if c.hard_state.term < meta.term {
            c.hard_state.term = meta.term;
        }
        c.snap = meta;
    }

    /// Makes `meta` the snapshot handed to raft-rs for followers that need one.
    pub fn set_prepared(&self, meta: SnapshotMetadata) {
        let mut c = self.wl();
        c.prepared = Some(meta);
        c.wanted = false;
    }

    /// Whether raft-rs asked for a snapshot that is not prepared yet (clears the flag).
    pub fn take_wanted(&self) -> bool {
        std::mem::take(&mut self.wl().wanted)
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state.clone()
    }

    /// Drops entries up to and including `index`, which the backend now holds durably.
    /// Returns the new snapshot metadata, or `None` if nothing was dropped.
    pub fn compact(&self, index: u64) -> Option<SnapshotMetadata> {
        let mut c = self.wl();
        if index <= c.snap.index {
            return None;
        }
        let offset = c.snap.index + 1;
        let pos = (index - offset) as usize;
        let term = c.entries.get(pos)?.term;
        c.entries.drain(..=pos);
        let cs = c
            .conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, cs)| cs.clone())
            .unwrap_or_else(|| c.snap.get_conf_state().clone());
        c.conf_history.retain(|(i, _)| *i > index);
        c.snap.index = index;
        c.snap.term = term;
        c.snap.set_conf_state(cs);
        Some(c.snap.clone())
    }

    /// Entries after the snapshot.
    pub fn entries_after_snapshot(&self) -> Vec<Entry> {
        self.rl().entries.clone()
    }

    /// The snapshot metadata.
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.rl().snap.clone()
    }

    /// Index of the last entry.
    pub fn last(&self) -> u64 {
        let c = self.rl();
        c.snap.index + c.entries.len() as u64
    }
}

impl raft::Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.rl();
        Ok(RaftState {
            hard_state: c.hard_state.clone(),
            conf_state: c.snap.get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let c = self.rl();
        let offset = c.snap.index + 1;
        if low < offset {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let last = c.snap.index + c.entries.len() as u64;
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = c.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.rl();
        if idx == c.snap.index {
            return Ok(c.snap.term);
        }
        if idx < c.snap.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match c.entries.get((idx - c.snap.index - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.rl().snap.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // Snapshots carry the metadata only; the backend file travels beside the message. The
        // apply loop prepares one on request, at its applied index. A prepared snapshot older
        // than the recipient's own membership would be ignored by it (it is not in that
        // configuration), so such a recipient gets a fresh one.
        let mut c = self.wl();
        let names_to = |meta: &SnapshotMetadata| {
            let cs = meta.get_conf_state();
            cs.voters.contains(&to) || cs.learners.contains(&to)
        };
        match &c.prepared {
            Some(meta)
                if meta.index >= request_index && meta.index >= c.snap.index && names_to(meta) =>
            {
                let mut s = Snapshot::default();
                s.set_metadata(meta.clone());
                Ok(s)
            }
            _ => {
                c.wanted = true;
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn ent(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    #[test]
    fn prepared_snapshot_must_name_its_recipient() {
        let s = LogStorage::default();
        let mut meta = SnapshotMetadata::default();
        meta.index = 5;
        meta.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        s.set_prepared(meta);
        assert!(s.snapshot(0, 2).is_ok());
        // Member 4 joined after the snapshot was prepared: it needs a newer one.
        assert!(s.snapshot(0, 4).is_err());
        assert!(s.take_wanted());
    }

    #[test]
    fn append_replaces_conflicting_suffix_and_compacts() {
        let s = LogStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        s.append(&[ent(2, 2)]);
        assert_eq!(s.last_index().unwrap_or(0), 2);
        assert_eq!(s.term(2).unwrap_or(0), 2);
        let meta = s.compact(1).expect("compacted");
        assert_eq!((meta.index, meta.term), (1, 1));
        assert_eq!(s.first_index().unwrap_or(0), 2);
        assert_eq!(s.term(1).unwrap_or(0), 1);
        assert!(s.term(0).is_err());
        assert!(
            s.entries(1, 3, None, GetEntriesContext::empty(false))
                .is_err()
        );
    }
}
