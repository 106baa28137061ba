//! `--force-new-cluster`: rewrites a member's log so that it restarts alone, keeping its data
//! and every committed entry, as etcd's standalone restart does. Entries that were never
//! committed are dropped (no quorum ever acknowledged them), and the removal of every other
//! member is appended as committed configuration changes, so the member applies them like any
//! other membership change: its membership, its Raft configuration and its peers all follow.

use std::collections::BTreeSet;
use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};

use super::RaftError;
use super::wal::Wal;

/// What the rewrite did, for the log line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedRestart {
    /// The members whose removal was committed.
    pub removed: Vec<u64>,
    /// Entries dropped because they were never committed.
    pub discarded: u64,
    /// The commit index after the rewrite.
    pub commit: u64,
}

/// Rewrites the WAL in `wal_dir` for member `id`, whose backend applied up to `applied`.
/// `context` encodes each removal's context (the apply loop's `ConfChangeContext`).
pub fn force_new_cluster(
    wal_dir: &Path,
    id: u64,
    applied: u64,
    context: &dyn Fn(u64) -> Vec<u8>,
) -> Result<ForcedRestart, RaftError> {
    let (mut wal, rec) = Wal::open(wal_dir)?;
    let last = rec.snap.index + rec.entries.len() as u64;
    // What the backend applied was committed, even where the saved commit index lags.
    let commit = rec.hard_state.commit.max(applied.min(last));
    let discarded = last.saturating_sub(commit);

    // The configuration as of the commit index: the snapshot's, then each committed change.
    let cs = rec.snap.get_conf_state();
    let mut voters: BTreeSet<u64> = cs.voters.iter().copied().collect();
    let mut learners: BTreeSet<u64> = cs.learners.iter().copied().collect();
    for e in rec.entries.iter().filter(|e| e.index <= commit) {
        if e.get_entry_type() != EntryType::EntryConfChange {
            continue;
        }
        let cc = super::decode::conf_change(&e.data).map_err(|err| {
            RaftError::Snapshot(format!("undecodable conf change at {}: {err}", e.index))
        })?;
        match cc.get_change_type() {
            ConfChangeType::AddNode => {
                learners.remove(&cc.node_id);
                voters.insert(cc.node_id);
            }
            ConfChangeType::AddLearnerNode => {
                voters.remove(&cc.node_id);
                learners.insert(cc.node_id);
            }
            ConfChangeType::RemoveNode => {
                voters.remove(&cc.node_id);
                learners.remove(&cc.node_id);
            }
        }
    }
    if !voters.contains(&id) {
        return Err(RaftError::ForceNewCluster(format!(
            "member {id:x} is not a voting member in its own log (voters {}); only a voting \
             member's data can start a new cluster",
            voters
                .iter()
                .map(|v| format!("{v:x}"))
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    let removed: Vec<u64> = voters
        .iter()
        .chain(&learners)
        .copied()
        .filter(|m| *m != id)
        .collect();

    let mut hs = rec.hard_state.clone();
    let term = hs.term;
    let entries: Vec<Entry> = removed
        .iter()
        .enumerate()
        .map(|(k, member)| {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::RemoveNode);
            cc.node_id = *member;
            cc.context = context(*member).into();
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = term;
            e.index = commit + 1 + k as u64;
            e.data = cc.write_to_bytes().unwrap_or_default().into();
            e
        })
        .collect();
    hs.commit = commit + entries.len() as u64;
    // Written at commit + 1, the entries replace the uncommitted tail when the WAL is read.
    if entries.is_empty() && discarded > 0 {
        // Nothing to append, but the uncommitted tail must still go: rewrite the entry at the
        // commit index itself (unchanged), which truncates what follows on replay.
        if let Some(e) = rec.entries.iter().find(|e| e.index == commit) {
            wal.save(Some(&hs), std::slice::from_ref(e))?;
        } else {
            wal.save(Some(&hs), &[])?;
        }
    } else {
        wal.save(Some(&hs), &entries)?;
    }
    Ok(ForcedRestart {
        removed,
        discarded,
        commit: hs.commit,
    })
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};

    use super::*;

    fn entry(index: u64, term: u64, change: Option<(ConfChangeType, u64)>) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        if let Some((ty, node)) = change {
            let mut cc = ConfChange::default();
            cc.set_change_type(ty);
            cc.node_id = node;
            e.set_entry_type(EntryType::EntryConfChange);
            e.data = cc.write_to_bytes().expect("encode").into();
        } else {
            e.data = format!("put {index}").into_bytes().into();
        }
        e
    }

    /// A WAL whose snapshot (index 1) has voters 1, 2, 3, with `entries` after it and the
    /// hard state committing `commit`.
    fn wal(entries: &[Entry], commit: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut snap = SnapshotMetadata::default();
        snap.index = 1;
        snap.term = 1;
        snap.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        let mut hs = HardState::default();
        hs.term = 2;
        hs.commit = commit;
        let mut w = Wal::create(&dir.path().join("wal"), &snap, &hs).expect("create");
        w.save(Some(&hs), entries).expect("save");
        dir
    }

    #[test]
    fn the_member_restarts_alone_with_its_committed_entries() {
        use ConfChangeType::*;
        // (log after the snapshot, saved commit, backend applied, member) →
        // (removed, discarded, commit after, kept entries)
        let plain = |n: u64| (2..=n).map(|i| entry(i, 2, None)).collect::<Vec<_>>();
        let with_learner = {
            let mut v = plain(4);
            v.push(entry(5, 2, Some((AddLearnerNode, 4))));
            v
        };
        let removed_3 = {
            let mut v = plain(3);
            v.push(entry(4, 2, Some((RemoveNode, 3))));
            v
        };
        /// (what, log, saved commit, applied, member, Ok((removed, discarded, commit)) or
        /// refused)
        type Case = (
            &'static str,
            Vec<Entry>,
            u64,
            u64,
            u64,
            Option<(Vec<u64>, u64, u64)>,
        );
        let cases: Vec<Case> = vec![
            // Uncommitted entries 9 and 10 go; 2 and 3 are removed at 9 and 10.
            (
                "uncommitted tail",
                plain(10),
                8,
                8,
                1,
                Some((vec![2, 3], 2, 10)),
            ),
            // Applied beyond the saved commit index: applied entries were committed.
            (
                "applied beyond commit",
                plain(10),
                6,
                9,
                2,
                Some((vec![1, 3], 1, 11)),
            ),
            (
                "a learner is removed too",
                with_learner,
                5,
                5,
                1,
                Some((vec![2, 3, 4], 0, 8)),
            ),
            (
                "a member removed before",
                removed_3,
                4,
                4,
                1,
                Some((vec![2], 0, 5)),
            ),
            // Not a voter: refused, nothing written.
            ("a learner cannot", plain(3), 3, 3, 7, None),
        ];
        for (what, entries, commit, applied, id, want) in cases {
            let dir = wal(&entries, commit);
            let wal_dir = dir.path().join("wal");
            let got = force_new_cluster(&wal_dir, id, applied, &|m| vec![m as u8]);
            let (_, rec) = Wal::open(&wal_dir).expect("reopen");
            match want {
                None => {
                    assert!(got.is_err(), "{what}: {got:?}");
                    assert_eq!(rec.hard_state.commit, commit, "{what}: unchanged");
                    assert_eq!(rec.entries.len(), entries.len(), "{what}: unchanged");
                }
                Some((removed, discarded, new_commit)) => {
                    let got = got.expect(what);
                    assert_eq!(
                        got,
                        ForcedRestart {
                            removed: removed.clone(),
                            discarded,
                            commit: new_commit
                        },
                        "{what}"
                    );
                    assert_eq!(rec.hard_state.commit, new_commit, "{what}");
                    let last = rec.entries.last().expect("entries").index;
                    assert_eq!(last, new_commit, "{what}: nothing beyond the commit index");
                    let tail: Vec<(u64, u64)> = rec
                        .entries
                        .iter()
                        .filter(|e| e.get_entry_type() == EntryType::EntryConfChange)
                        .filter_map(|e| ConfChange::parse_from_bytes(&e.data).ok())
                        .filter(|cc| cc.get_change_type() == RemoveNode)
                        .map(|cc| (cc.node_id, cc.context.first().copied().unwrap_or(0) as u64))
                        .collect();
                    let want_tail: Vec<(u64, u64)> = removed.iter().map(|m| (*m, *m)).collect();
                    assert!(tail.ends_with(&want_tail), "{what}: {tail:?}");
                    // The entries before the removals are the committed ones, unchanged.
                    let kept = new_commit - removed.len() as u64;
                    for e in rec.entries.iter().filter(|e| e.index <= kept) {
                        assert_eq!(e, &entries[(e.index - 2) as usize], "{what}");
                    }
                }
            }
        }
    }
}
