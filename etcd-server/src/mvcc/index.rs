//! The in-memory key index: for every key, the revisions at which it changed, grouped into
//! generations (one generation per life of the key, each closed by a tombstone).

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use super::Revision;

/// One life of a key: from its creation to (optionally) its tombstone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// Revisions of this life, ascending. When `tombstoned`, the last one is the deletion.
    revs: Vec<Revision>,
    tombstoned: bool,
    /// Main revision that created this life (kept when compaction drops `revs[0]`).
    created: i64,
    /// Number of puts in this life (the key's `version`), kept across compaction.
    ver: i64,
}

/// The history of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// Ascending generations; only the last may be open (not tombstoned).
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// The revision holding this key's value as of `at` (a main revision), if the key was live.
    pub fn get(&self, at: i64) -> Option<Revision> {
        // Newest generation first: most reads are at or near the current revision.
        for g in self.generations.iter().rev() {
            let first = g.revs.first()?;
            if first.main > at {
                continue;
            }
            if g.tombstoned {
                let tomb = g
                    .revs
                    .last()
                    .expect("a tombstoned generation is never empty");
                if tomb.main <= at {
                    return None;
                }
            }
            return g.revs.iter().rev().find(|r| r.main <= at).copied();
        }
        None
    }

    /// `(create_revision, version)` of the live key as of `at`.
    pub fn live(&self, at: i64) -> Option<(i64, i64)> {
        self.get(at)?;
        let g = self
            .generations
            .iter()
            .rev()
            .find(|g| g.revs.first().is_some_and(|r| r.main <= at))?;
        // Count the puts of this life at or below `at` (the tombstone, if any, is above `at`).
        let newer = g.revs.iter().filter(|r| r.main > at).count() as i64;
        let newer_puts = if g.tombstoned { newer - 1 } else { newer };
        Some((g.created, g.ver - newer_puts))
    }

    fn put(&mut self, rev: Revision, created: i64, ver: i64) {
        match self.generations.last_mut() {
            Some(g) if !g.tombstoned => {
                g.revs.push(rev);
                g.ver = ver;
            }
            _ => {
                if self.generations.is_empty() {
                    // Most keys only ever have one generation: don't let the first push reserve
                    // room for four (48 bytes each, for every key in the index).
                    self.generations.reserve_exact(1);
                }
                self.generations.push(Generation {
                    revs: vec![rev],
                    tombstoned: false,
                    created,
                    ver,
                })
            }
        }
    }

    /// Closes the open generation with `rev`. Returns false if the key was not live.
    fn tombstone(&mut self, rev: Revision) -> bool {
        match self.generations.last_mut() {
            Some(g) if !g.tombstoned && !g.revs.is_empty() => {
                g.revs.push(rev);
                g.tombstoned = true;
                true
            }
            _ => false,
        }
    }

    /// Drops history older than `at`, keeping the newest revision at or below `at` of the
    /// generation live at `at` (unless that revision is a tombstone). Revisions at or below `at`
    /// that survive are added to `keep`. Returns true if nothing is left of the key.
    fn compact(&mut self, at: i64, keep: &mut HashSet<Revision>) -> bool {
        // Skip generations that ended at or before `at`: nothing in them is readable any more.
        let mut first_gen = 0;
        while first_gen < self.generations.len() {
            let g = &self.generations[first_gen];
            let ended_before = g.tombstoned && g.revs.last().is_some_and(|t| t.main <= at);
            if !ended_before {
                break;
            }
            first_gen += 1;
        }
        self.generations.drain(..first_gen);
        if let Some(g) = self.generations.first_mut() {
            if let Some(pos) = g.revs.iter().rposition(|r| r.main <= at) {
                g.revs.drain(..pos);
                keep.insert(g.revs[0]);
            }
        }
        self.generations.is_empty()
    }
}

/// The index over all keys, ordered bytewise as etcd orders keys.
#[derive(Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

/// What a range over the index found.
#[derive(Debug, Default)]
pub struct IndexRange {
    /// `(key, revision)` of live keys, in key order, at most `limit` of them.
    pub revs: Vec<(Vec<u8>, Revision)>,
    /// Number of live keys in the whole range, regardless of the limit.
    pub count: usize,
}

/// Converts etcd's `(key, range_end)` convention into a key-range bound pair.
/// An empty `end` means the single key; `end == "\0"` means every key from `key` on.
pub fn range_bounds<'a>(key: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(end))
    }
}

impl TreeIndex {
    /// Number of keys with any retained history (live or not).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the index holds no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The revision of `key` as of `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<Revision> {
        self.keys.get(key).and_then(|ki| ki.get(at))
    }

    /// Live keys in `[key, end)` at `at` (etcd range conventions). `limit == 0` means no limit.
    pub fn range(&self, key: &[u8], end: &[u8], at: i64, limit: usize) -> IndexRange {
        let mut out = IndexRange::default();
        let (lo, hi) = range_bounds(key, end);
        if let (Bound::Included(lo), Bound::Excluded(hi)) = (lo, hi) {
            if lo >= hi {
                return out;
            }
        }
        for (k, ki) in self.keys.range::<[u8], _>((lo, hi)) {
            if let Some(rev) = ki.get(at) {
                out.count += 1;
                if limit == 0 || out.revs.len() < limit {
                    out.revs.push((k.clone(), rev));
                }
            }
        }
        out
    }

    /// `(create_revision, version)` of `key` if it is live at `at`.
    pub fn live(&self, key: &[u8], at: i64) -> Option<(i64, i64)> {
        self.keys.get(key).and_then(|ki| ki.live(at))
    }

    /// Records a put of `key` at `rev`; `created` and `ver` are the new key-value's
    /// `create_revision` and `version`.
    pub fn put(&mut self, key: &[u8], rev: Revision, created: i64, ver: i64) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev, created, ver),
            None => {
                let mut ki = KeyIndex::default();
                ki.put(rev, created, ver);
                self.keys.insert(key.to_vec(), ki);
            }
        }
    }

    /// Records a deletion of a live `key` at `rev`. Returns false if the key was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Compacts every key's history at `at`; returns the revisions `<= at` still needed.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| !ki.compact(at, &mut keep));
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }

    #[test]
    fn get_follows_generations() {
        let mut idx = TreeIndex::default();
        idx.put(b"a", r(2), 2, 1);
        idx.put(b"a", r(4), 2, 2);
        assert!(idx.tombstone(b"a", r(6)));
        idx.put(b"a", r(8), 8, 1);
        let table = [
            (1, None),
            (2, Some(2)),
            (3, Some(2)),
            (4, Some(4)),
            (5, Some(4)),
            (6, None),
            (7, None),
            (8, Some(8)),
            (100, Some(8)),
        ];
        for (at, want) in table {
            assert_eq!(idx.get(b"a", at).map(|r| r.main), want, "at {at}");
        }
        assert_eq!(idx.live(b"a", 3), Some((2, 1)));
        assert_eq!(idx.live(b"a", 5), Some((2, 2)));
        assert_eq!(idx.live(b"a", 6), None);
        assert_eq!(idx.live(b"a", 9), Some((8, 1)));
        assert!(!idx.tombstone(b"b", r(9)));
    }

    #[test]
    fn compact_keeps_what_is_readable() {
        let mut idx = TreeIndex::default();
        idx.put(b"a", r(2), 2, 1);
        idx.put(b"a", r(3), 2, 2);
        idx.tombstone(b"a", r(4));
        idx.put(b"b", r(5), 5, 1);
        idx.put(b"b", r(6), 5, 2);
        idx.put(b"c", r(7), 7, 1);
        let keep = idx.compact(6);
        // a: its only generation ended at 4 <= 6, so it is gone entirely.
        assert_eq!(idx.get(b"a", 6), None);
        assert!(idx.keys.get(b"a".as_slice()).is_none());
        // b: 6 is kept, 5 is not.
        assert!(keep.contains(&r(6)) && !keep.contains(&r(5)));
        assert_eq!(idx.get(b"b", 6).map(|r| r.main), Some(6));
        assert_eq!(idx.live(b"b", 6), Some((5, 2)));
        // c: created after the compaction point, untouched.
        assert_eq!(idx.get(b"c", 7).map(|r| r.main), Some(7));
    }

    #[test]
    fn range_counts_beyond_limit() {
        let mut idx = TreeIndex::default();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            idx.put(*k, r(i as i64 + 2), i as i64 + 2, 1);
        }
        let got = idx.range(b"a", b"d", 10, 2);
        assert_eq!(got.count, 3);
        assert_eq!(got.revs.len(), 2);
        assert_eq!(idx.range(b"b", &[0], 10, 0).count, 3);
        assert_eq!(idx.range(b"c", b"a", 10, 0).count, 0);
        assert_eq!(idx.range(b"c", b"", 10, 0).count, 1);
    }
}
