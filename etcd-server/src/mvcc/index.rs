//! The in-memory key index: for every key, the revisions at which it changed, grouped into
//! generations (one generation per life of the key, each closed by a tombstone).

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroI64;
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
///
/// Most keys are written once and never deleted, so that case is stored inline, without any heap
/// allocation; everything else uses the general list of generations. The representation is
/// canonical (inline exactly when it can be), so the derived equality compares histories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIndex(Repr);

/// Invariant: `Single` is used exactly when the key has one open (not tombstoned) generation
/// holding exactly one revision, with a non-zero version; `General` holds every other history
/// (including the empty one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    /// One open generation with the single revision `rev`, created at main revision `created`,
    /// with version `ver`. `ver` is `NonZeroI64` so that its niche holds the enum's tag, keeping
    /// `KeyIndex` at 32 bytes.
    Single {
        rev: Revision,
        created: i64,
        ver: NonZeroI64,
    },
    /// Ascending generations; only the last may be open (not tombstoned).
    General(Vec<Generation>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::General(Vec::new())
    }
}

impl KeyIndex {
    /// The revision holding this key's value as of `at` (a main revision), if the key was live.
    pub fn get(&self, at: i64) -> Option<Revision> {
        let generations = match &self.0 {
            Repr::Single { rev, .. } => return (rev.main <= at).then_some(*rev),
            Repr::General(generations) => generations,
        };
        // Newest generation first: most reads are at or near the current revision.
        for g in generations.iter().rev() {
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
        let generations = match &self.0 {
            Repr::Single { created, ver, .. } => return Some((*created, ver.get())),
            Repr::General(generations) => generations,
        };
        let g = generations
            .iter()
            .rev()
            .find(|g| g.revs.first().is_some_and(|r| r.main <= at))?;
        // Count the puts of this life at or below `at` (the tombstone, if any, is above `at`).
        let newer = g.revs.iter().filter(|r| r.main > at).count() as i64;
        let newer_puts = if g.tombstoned { newer - 1 } else { newer };
        Some((g.created, g.ver - newer_puts))
    }

    /// The single open generation of a `Single` key, as a general generation ending in `next`.
    fn single_to_generation(rev: Revision, created: i64, ver: i64, next: Revision) -> Generation {
        Generation {
            revs: vec![rev, next],
            tombstoned: false,
            created,
            ver,
        }
    }

    fn put(&mut self, rev: Revision, created: i64, ver: i64) {
        let generations = match &mut self.0 {
            Repr::Single {
                rev: first,
                created: first_created,
                ..
            } => {
                // Second put of the same life: its creation revision is kept, its version updated.
                let g = Self::single_to_generation(*first, *first_created, ver, rev);
                self.0 = Repr::General(vec![g]);
                return;
            }
            Repr::General(generations) => generations,
        };
        match generations.last_mut() {
            Some(g) if !g.tombstoned => {
                g.revs.push(rev);
                g.ver = ver;
            }
            _ => {
                if generations.is_empty()
                    && let Some(ver) = NonZeroI64::new(ver)
                {
                    self.0 = Repr::Single { rev, created, ver };
                    return;
                }
                generations.push(Generation {
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
        let generations = match &mut self.0 {
            Repr::Single {
                rev: first,
                created,
                ver,
            } => {
                let mut g = Self::single_to_generation(*first, *created, ver.get(), rev);
                g.tombstoned = true;
                self.0 = Repr::General(vec![g]);
                return true;
            }
            Repr::General(generations) => generations,
        };
        match generations.last_mut() {
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
        let generations = match &mut self.0 {
            Repr::Single { rev, .. } => {
                // An open generation with one revision: nothing to drop.
                if rev.main <= at {
                    keep.insert(*rev);
                }
                return false;
            }
            Repr::General(generations) => generations,
        };
        // Skip generations that ended at or before `at`: nothing in them is readable any more.
        let mut first_gen = 0;
        while first_gen < generations.len() {
            let g = &generations[first_gen];
            let ended_before = g.tombstoned && g.revs.last().is_some_and(|t| t.main <= at);
            if !ended_before {
                break;
            }
            first_gen += 1;
        }
        generations.drain(..first_gen);
        if let Some(g) = generations.first_mut()
            && let Some(pos) = g.revs.iter().rposition(|r| r.main <= at)
        {
            g.revs.drain(..pos);
            keep.insert(g.revs[0]);
        }
        // Back to the inline form if only one open generation with one revision is left.
        if let [g] = generations.as_slice()
            && let ([rev], false, Some(ver)) =
                (g.revs.as_slice(), g.tombstoned, NonZeroI64::new(g.ver))
        {
            self.0 = Repr::Single {
                rev: *rev,
                created: g.created,
                ver,
            };
            return false;
        }
        generations.is_empty()
    }
}

/// The index over all keys, ordered bytewise as etcd orders keys.
#[derive(Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Box<[u8]>, KeyIndex>,
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

    #[cfg(test)]
    /// The revision of `key` as of `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<Revision> {
        self.keys.get(key).and_then(|ki| ki.get(at))
    }

    /// Live keys in `[key, end)` at `at` (etcd range conventions). `limit == 0` means no limit.
    pub fn range(&self, key: &[u8], end: &[u8], at: i64, limit: usize) -> IndexRange {
        let mut out = IndexRange::default();
        let (lo, hi) = range_bounds(key, end);
        if let (Bound::Included(lo), Bound::Excluded(hi)) = (lo, hi)
            && lo >= hi
        {
            return out;
        }
        for (k, ki) in self.keys.range::<[u8], _>((lo, hi)) {
            if let Some(rev) = ki.get(at) {
                out.count += 1;
                if limit == 0 || out.revs.len() < limit {
                    out.revs.push((k.to_vec(), rev));
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
                self.keys.insert(key.into(), ki);
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
        assert!(!idx.keys.contains_key(b"a".as_slice()));
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

    /// Whether `key`'s history is stored inline; `None` if the key is not in the index.
    fn inline(idx: &TreeIndex, key: &[u8]) -> Option<bool> {
        idx.keys
            .get(key)
            .map(|ki| matches!(ki.0, Repr::Single { .. }))
    }

    #[test]
    fn key_index_is_small() {
        assert!(
            std::mem::size_of::<KeyIndex>() <= 40,
            "KeyIndex is {} bytes",
            std::mem::size_of::<KeyIndex>()
        );
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// `put(main, created, ver)`.
        Put(i64, i64, i64),
        /// `tombstone(main)` and whether it should report the key as live.
        Tomb(i64, bool),
        /// `compact(at)`.
        Compact(i64),
    }

    struct Case {
        name: &'static str,
        ops: &'static [Op],
        /// Form after the ops: inline or not, `None` if the key was compacted away.
        inline: Option<bool>,
        /// Main revisions of the key that the compactions said to keep.
        keep: &'static [i64],
        /// `(at, get(at).main)`.
        gets: &'static [(i64, Option<i64>)],
        /// `(at, live(at))`.
        lives: &'static [(i64, Option<(i64, i64)>)],
    }

    #[test]
    fn inline_and_general_forms_agree() {
        use Op::*;
        let cases = [
            Case {
                name: "one put",
                ops: &[Put(5, 5, 1)],
                inline: Some(true),
                keep: &[],
                gets: &[
                    (0, None),
                    (4, None),
                    (5, Some(5)),
                    (6, Some(5)),
                    (100, Some(5)),
                ],
                lives: &[(4, None), (5, Some((5, 1))), (100, Some((5, 1)))],
            },
            Case {
                name: "one put, compacted below and at it",
                ops: &[Put(5, 5, 1), Compact(4), Compact(5), Compact(9)],
                inline: Some(true),
                keep: &[5],
                gets: &[(4, None), (5, Some(5)), (9, Some(5))],
                lives: &[(5, Some((5, 1))), (9, Some((5, 1)))],
            },
            Case {
                name: "put twice",
                ops: &[Put(5, 5, 1), Put(7, 5, 2)],
                inline: Some(false),
                keep: &[],
                gets: &[
                    (4, None),
                    (5, Some(5)),
                    (6, Some(5)),
                    (7, Some(7)),
                    (50, Some(7)),
                ],
                lives: &[
                    (4, None),
                    (6, Some((5, 1))),
                    (7, Some((5, 2))),
                    (50, Some((5, 2))),
                ],
            },
            Case {
                name: "put then tombstone",
                ops: &[Put(2, 2, 1), Tomb(4, true), Tomb(5, false)],
                inline: Some(false),
                keep: &[],
                gets: &[(1, None), (2, Some(2)), (3, Some(2)), (4, None), (9, None)],
                lives: &[(3, Some((2, 1))), (4, None), (9, None)],
            },
            Case {
                name: "put, tombstone, put",
                ops: &[Put(2, 2, 1), Tomb(4, true), Put(6, 6, 1)],
                inline: Some(false),
                keep: &[],
                gets: &[
                    (1, None),
                    (2, Some(2)),
                    (3, Some(2)),
                    (4, None),
                    (5, None),
                    (6, Some(6)),
                    (9, Some(6)),
                ],
                lives: &[(3, Some((2, 1))), (5, None), (6, Some((6, 1)))],
            },
            Case {
                name: "compaction of an updated key drops back to inline",
                ops: &[Put(2, 2, 1), Put(3, 2, 2), Compact(3)],
                inline: Some(true),
                keep: &[3],
                gets: &[(3, Some(3)), (9, Some(3))],
                lives: &[(3, Some((2, 2))), (9, Some((2, 2)))],
            },
            Case {
                name: "inline after compaction, then put again",
                ops: &[Put(2, 2, 1), Put(3, 2, 2), Compact(3), Put(4, 2, 3)],
                inline: Some(false),
                keep: &[3],
                gets: &[(3, Some(3)), (4, Some(4))],
                lives: &[(3, Some((2, 2))), (4, Some((2, 3)))],
            },
            Case {
                name: "inline after compaction, then tombstone",
                ops: &[Put(2, 2, 1), Put(3, 2, 2), Compact(3), Tomb(5, true)],
                inline: Some(false),
                keep: &[3],
                gets: &[(3, Some(3)), (4, Some(3)), (5, None)],
                lives: &[(4, Some((2, 2))), (5, None)],
            },
            Case {
                name: "compaction between two puts stays general",
                ops: &[Put(2, 2, 1), Put(4, 2, 2), Compact(3)],
                inline: Some(false),
                keep: &[2],
                gets: &[(3, Some(2)), (4, Some(4))],
                lives: &[(3, Some((2, 1))), (4, Some((2, 2)))],
            },
            Case {
                name: "compaction drops a dead generation, leaving one inline",
                ops: &[Put(2, 2, 1), Tomb(4, true), Put(6, 6, 1), Compact(5)],
                inline: Some(true),
                keep: &[],
                gets: &[(5, None), (6, Some(6))],
                lives: &[(5, None), (6, Some((6, 1)))],
            },
            Case {
                name: "compaction before the tombstone keeps the key",
                ops: &[Put(2, 2, 1), Put(3, 2, 2), Tomb(5, true), Compact(4)],
                inline: Some(false),
                keep: &[3],
                gets: &[(4, Some(3)), (5, None)],
                lives: &[(4, Some((2, 2))), (5, None)],
            },
            Case {
                name: "compaction at the tombstone removes the key",
                ops: &[Put(2, 2, 1), Tomb(4, true), Compact(4)],
                inline: None,
                keep: &[],
                gets: &[(4, None), (9, None)],
                lives: &[(9, None)],
            },
            Case {
                name: "version zero is never inline",
                ops: &[Put(5, 5, 0), Compact(6)],
                inline: Some(false),
                keep: &[5],
                gets: &[(4, None), (5, Some(5))],
                lives: &[(5, Some((5, 0)))],
            },
        ];
        for case in &cases {
            let name = case.name;
            let mut idx = TreeIndex::default();
            let mut keep = Vec::new();
            for op in case.ops {
                match *op {
                    Op::Put(main, created, ver) => idx.put(b"k", r(main), created, ver),
                    Op::Tomb(main, live) => {
                        assert_eq!(idx.tombstone(b"k", r(main)), live, "{name}: {op:?}")
                    }
                    Op::Compact(at) => keep.extend(idx.compact(at).into_iter().map(|r| r.main)),
                }
            }
            keep.sort();
            keep.dedup();
            assert_eq!(inline(&idx, b"k"), case.inline, "{name}: form");
            assert_eq!(keep, case.keep, "{name}: keep");
            for &(at, want) in case.gets {
                assert_eq!(
                    idx.get(b"k", at).map(|r| r.main),
                    want,
                    "{name}: get at {at}"
                );
            }
            for &(at, want) in case.lives {
                assert_eq!(idx.live(b"k", at), want, "{name}: live at {at}");
            }
        }
    }

    #[test]
    fn same_history_same_key_index() {
        // Reached through compaction or directly, the same history has the same representation.
        let mut compacted = TreeIndex::default();
        compacted.put(b"k", r(2), 2, 1);
        compacted.put(b"k", r(3), 2, 2);
        compacted.compact(3);
        let mut direct = TreeIndex::default();
        direct.put(b"k", r(3), 2, 2);
        assert_eq!(
            compacted.keys.get(b"k".as_slice()),
            direct.keys.get(b"k".as_slice())
        );
        assert_eq!(inline(&direct, b"k"), Some(true));
    }

    #[test]
    fn range_over_inline_and_general_keys() {
        let mut idx = TreeIndex::default();
        idx.put(b"a", r(2), 2, 1); // inline
        idx.put(b"b", r(3), 3, 1);
        idx.put(b"b", r(4), 3, 2); // general, live
        idx.put(b"c", r(5), 5, 1);
        idx.tombstone(b"c", r(6)); // general, dead from 6
        idx.put(b"d", r(7), 7, 1);
        idx.tombstone(b"d", r(8));
        idx.put(b"d", r(9), 9, 1); // general, live again from 9
        idx.put(b"e", r(10), 10, 1); // inline
        let forms: Vec<_> = [b"a", b"b", b"c", b"d", b"e"]
            .iter()
            .map(|k| inline(&idx, *k))
            .collect();
        let (y, n) = (Some(true), Some(false));
        assert_eq!(forms, [y, n, n, n, y]);
        let keys = |got: &IndexRange| -> Vec<(String, i64)> {
            got.revs
                .iter()
                .map(|(k, r)| (String::from_utf8_lossy(k).into_owned(), r.main))
                .collect()
        };
        let s = |k: &str, m: i64| (k.to_string(), m);
        // (at, limit, expected revs, expected count), all over every key.
        let table = [
            (10, 0, vec![s("a", 2), s("b", 4), s("d", 9), s("e", 10)], 4),
            (10, 3, vec![s("a", 2), s("b", 4), s("d", 9)], 4),
            (10, 1, vec![s("a", 2)], 4),
            (9, 0, vec![s("a", 2), s("b", 4), s("d", 9)], 3),
            (7, 2, vec![s("a", 2), s("b", 4)], 3),
            (5, 0, vec![s("a", 2), s("b", 4), s("c", 5)], 3),
            (3, 5, vec![s("a", 2), s("b", 3)], 2),
            (1, 0, vec![], 0),
        ];
        for (at, limit, want, count) in table {
            let got = idx.range(b"a", &[0], at, limit);
            assert_eq!(keys(&got), want, "at {at} limit {limit}");
            assert_eq!(got.count, count, "at {at} limit {limit}");
        }
        // Compaction turns b back into an inline key; the range is unchanged.
        idx.compact(9);
        assert_eq!(inline(&idx, b"b"), y);
        assert_eq!(inline(&idx, b"c"), None);
        assert_eq!(inline(&idx, b"d"), y);
        let got = idx.range(b"b", b"e", 10, 1);
        assert_eq!(keys(&got), vec![s("b", 4)]);
        assert_eq!(got.count, 2);
    }

    /// Resident set size of this process, in bytes.
    fn rss_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .expect("statm has a resident field")
            .parse()
            .expect("statm resident is a number");
        pages * 4096
    }

    /// Prints the RSS growth per key of an index of 1,000,000 distinct 8-byte keys, each put once.
    /// Run with `cargo test --release -p etcd-server --lib index_memory_per_key -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn index_memory_per_key() {
        const N: usize = 1_000_000;
        let keys: Vec<[u8; 8]> = (0..N)
            .map(|i| {
                let mut k = [0u8; 8];
                k.copy_from_slice(format!("{i:08}").as_bytes());
                k
            })
            .collect();
        let before = rss_bytes();
        let mut idx = TreeIndex::default();
        for (i, k) in keys.iter().enumerate() {
            let main = i as i64 + 2;
            idx.put(k, r(main), main, 1);
        }
        let after = rss_bytes();
        let idx = std::hint::black_box(idx);
        assert_eq!(idx.len(), N);
        println!(
            "index_memory_per_key: {} bytes/key (RSS {} -> {} bytes, {N} keys)",
            (after.saturating_sub(before)) as f64 / N as f64,
            before,
            after
        );
    }
}
