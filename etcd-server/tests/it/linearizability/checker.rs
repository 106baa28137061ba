//! Checker.

use super::*;

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; the text explains the longest partial linearization found.
    Violation(String),
    /// The search hit its step budget.
    Inconclusive(String),
}

/// The checker's result for one key.
#[derive(Debug, Clone)]
pub struct KeyReport {
    /// Key.
    pub key: String,
    /// Operations considered (errored gets are dropped).
    pub ops: usize,
    /// Of which indeterminate.
    pub unknown: usize,
    /// Search steps used.
    pub steps: u64,
    /// Verdict.
    pub verdict: Verdict,
}

/// State id of an absent key.
pub(super) const ABSENT: u32 = 0;
/// State id shared by every value that no operation observes (no get returns it, no CAS
/// compares against it): such values are indistinguishable to every operation.
pub(super) const UNOBSERVED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub(super) enum M {
    Put(u32),
    Get(u32),
    Cas {
        old: u32,
        new: u32,
        ok: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct E {
    pub(super) invoke: u64,
    /// `u64::MAX` for indeterminate operations.
    pub(super) complete: u64,
    pub(super) m: M,
    pub(super) definite: bool,
    /// An indeterminate put of an unobserved value: all of these are interchangeable.
    pub(super) free_put: bool,
    /// Index into the caller's ops.
    pub(super) src: usize,
}

/// The register: one step of `m` from `state`, or `None` if `m`'s result contradicts it.
pub(super) fn step(state: u32, m: M) -> Option<u32> {
    match m {
        M::Put(v) => Some(v),
        M::Get(v) => (state == v).then_some(state),
        M::Cas { old, new, ok } => {
            let matches = state == old && state != ABSENT;
            match ok {
                Some(true) => matches.then_some(new),
                Some(false) => (!matches).then_some(state),
                None => Some(if matches { new } else { state }),
            }
        }
    }
}

/// Checks every key of `history` separately (a register per key is P-compositional), with at
/// most `budget` search steps per key.
pub fn check_history(history: &[Op], budget: u64) -> Vec<KeyReport> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(k, ops)| check_key(k, &ops, budget))
        .collect()
}

/// Checks the operations on one key, which starts absent.
pub fn check_key(key: &str, ops: &[&Op], budget: u64) -> KeyReport {
    // Values some operation can tell apart from others.
    let mut observed: HashSet<&str> = HashSet::new();
    for op in ops {
        match (&op.call, &op.ret) {
            (Call::Get, Ret::Get(Some(v))) => {
                observed.insert(v.as_str());
            }
            (Call::Cas { old, .. }, _) => {
                observed.insert(old.as_str());
            }
            _ => {}
        }
    }
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut intern = |v: &str| -> u32 {
        if !observed.contains(v) {
            return UNOBSERVED;
        }
        let next = ids.len() as u32 + 1;
        *ids.entry(v.to_owned()).or_insert(next)
    };
    let mut es: Vec<E> = Vec::new();
    for (src, op) in ops.iter().enumerate() {
        let definite = !matches!(op.ret, Ret::Unknown(_));
        let m = match (&op.call, &op.ret) {
            (Call::Get, Ret::Unknown(_)) => continue, // no effect
            (Call::Get, Ret::Get(v)) => M::Get(v.as_deref().map_or(ABSENT, &mut intern)),
            (Call::Put(v), Ret::Put | Ret::Unknown(_)) => M::Put(intern(v)),
            (Call::Cas { old, new }, Ret::Cas(_) | Ret::Unknown(_)) => M::Cas {
                old: intern(old),
                new: intern(new),
                ok: match op.ret {
                    Ret::Cas(b) => Some(b),
                    _ => None,
                },
            },
            (call, ret) => panic!("malformed op: {call:?} returned {ret:?}"),
        };
        let free_put = !definite && matches!(m, M::Put(UNOBSERVED));
        es.push(E {
            invoke: op.invoke,
            complete: if definite { op.complete } else { u64::MAX },
            m,
            definite,
            free_put,
            src,
        });
    }
    es.sort_by_key(|e| (e.invoke, e.complete));
    let unknown = es.iter().filter(|e| !e.definite).count();
    let (verdict, steps) = match search(&es, budget) {
        Search::Linearizable(steps) => (Verdict::Linearizable, steps),
        Search::Inconclusive(steps) => (
            Verdict::Inconclusive(format!(
                "key {key}: no verdict within {budget} steps ({} ops, {unknown} indeterminate)",
                es.len()
            )),
            steps,
        ),
        Search::Stuck { steps, best } => (Verdict::Violation(explain(key, ops, &es, &best)), steps),
    };
    KeyReport {
        key: key.to_owned(),
        ops: es.len(),
        unknown,
        steps,
        verdict,
    }
}

/// The deepest point the search reached.
#[derive(Debug, Default, Clone)]
pub(super) struct Best {
    /// Definite ops linearized.
    pub(super) done: usize,
    /// The linearized ops, in order (indices into `es`).
    pub(super) seq: Vec<usize>,
    /// The register then.
    pub(super) state: u32,
    /// Ops that could go next.
    pub(super) cands: Vec<usize>,
}

pub(super) enum Search {
    Linearizable(u64),
    Inconclusive(u64),
    Stuck { steps: u64, best: Best },
}

pub(super) fn bit(set: &[u64], i: usize) -> bool {
    set[i / 64] & (1 << (i % 64)) != 0
}

pub(super) fn flip(set: &mut [u64], i: usize) {
    set[i / 64] ^= 1 << (i % 64);
}

/// Ops that may be linearized next: not yet linearized, and invoked no later than the
/// earliest completion among the ones not yet linearized. Definite ones first, then the
/// indeterminate ones; of the interchangeable indeterminate unobserved puts, only the first.
pub(super) fn candidates(es: &[E], lin: &[u64]) -> Vec<usize> {
    let mut min_complete = u64::MAX;
    for (i, e) in es.iter().enumerate() {
        if !bit(lin, i) && e.complete < min_complete {
            min_complete = e.complete;
        }
    }
    let mut definite = Vec::new();
    let mut other = Vec::new();
    let mut free_seen = false;
    for (i, e) in es.iter().enumerate() {
        if e.invoke > min_complete {
            break;
        }
        if bit(lin, i) {
            continue;
        }
        if e.definite {
            definite.push(i);
        } else if e.free_put {
            if !free_seen {
                free_seen = true;
                other.push(i);
            }
        } else {
            other.push(i);
        }
    }
    definite.extend(other);
    definite
}

pub(super) struct Frame {
    pub(super) cands: Vec<usize>,
    pub(super) next: usize,
    /// The op linearized to get here, and the state before it.
    pub(super) entered: Option<(usize, u32)>,
}

/// A configuration's definite linearized ops and the register's state.
pub(super) type Config = (Box<[u64]>, u32);

/// The definite and the indeterminate parts of a set of linearized ops.
pub(super) fn split(lin: &[u64], definite: &[u64]) -> (Box<[u64]>, Box<[u64]>) {
    let d: Box<[u64]> = lin.iter().zip(definite).map(|(l, m)| l & m).collect();
    let u: Box<[u64]> = lin.iter().zip(definite).map(|(l, m)| l & !m).collect();
    (d, u)
}

pub(super) fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// Depth-first search for a linearization.
///
/// Memoization (Lowe's improvement of Wing & Gong) with dominance: a configuration is the set
/// of linearized ops and the register's state. Once a configuration has failed (no
/// continuation linearizes the rest), so does every configuration with the same definite ops
/// linearized, the same state and a superset of indeterminate ops linearized: those are
/// optional and never constrain the order, so leaving one unapplied is never worse. This keeps
/// the indeterminate ops from multiplying the search space once a later write overwrote them.
pub(super) fn search(es: &[E], budget: u64) -> Search {
    let words = es.len().div_ceil(64).max(1);
    let total = es.iter().filter(|e| e.definite).count();
    let mut definite_mask = vec![0u64; words];
    for (i, e) in es.iter().enumerate() {
        if e.definite {
            flip(&mut definite_mask, i);
        }
    }
    let mut lin = vec![0u64; words];
    let mut state = ABSENT;
    let mut done = 0usize;
    // (definite part, state) -> indeterminate parts of configurations known to fail.
    let mut failed: HashMap<Config, Vec<Box<[u64]>>> = HashMap::new();
    let mut stack = vec![Frame {
        cands: candidates(es, &lin),
        next: 0,
        entered: None,
    }];
    let mut best = Best {
        cands: stack[0].cands.clone(),
        ..Best::default()
    };
    let mut steps = 0u64;
    loop {
        if done == total {
            return Search::Linearizable(steps);
        }
        let Some(top) = stack.last_mut() else {
            unreachable!()
        };
        if top.next < top.cands.len() {
            let o = top.cands[top.next];
            top.next += 1;
            steps += 1;
            if steps > budget {
                return Search::Inconclusive(steps);
            }
            let Some(next_state) = step(state, es[o].m) else {
                continue;
            };
            flip(&mut lin, o);
            let (d, u) = split(&lin, &definite_mask);
            if failed
                .get(&(d, next_state))
                .is_some_and(|fs| fs.iter().any(|f| subset(f, &u)))
            {
                flip(&mut lin, o);
                continue;
            }
            let prev = state;
            state = next_state;
            if es[o].definite {
                done += 1;
            }
            let cands = candidates(es, &lin);
            if done > best.done {
                best = Best {
                    done,
                    seq: stack
                        .iter()
                        .filter_map(|f| f.entered.map(|(op, _)| op))
                        .chain([o])
                        .collect(),
                    state,
                    cands: cands.clone(),
                };
            }
            stack.push(Frame {
                cands,
                next: 0,
                entered: Some((o, prev)),
            });
        } else {
            let Some(frame) = stack.pop() else {
                unreachable!()
            };
            match frame.entered {
                None => return Search::Stuck { steps, best },
                Some((o, prev)) => {
                    // Every continuation of this configuration failed.
                    let (d, u) = split(&lin, &definite_mask);
                    let fs = failed.entry((d, state)).or_default();
                    fs.retain(|f| !subset(&u, f));
                    fs.push(u);
                    flip(&mut lin, o);
                    state = prev;
                    if es[o].definite {
                        done -= 1;
                    }
                }
            }
        }
    }
}

pub(super) fn explain(key: &str, ops: &[&Op], es: &[E], best: &Best) -> String {
    let state = |s: u32| -> String {
        match s {
            ABSENT => "absent".into(),
            UNOBSERVED => "<a value nobody read>".into(),
            _ => format!("<value #{s}>"),
        }
    };
    let total = es.iter().filter(|e| e.definite).count();
    let mut out = format!(
        "key {key} is not linearizable: at most {} of {total} completed ops linearize.\nLast linearized ops (oldest first):\n",
        best.done
    );
    let from = best.seq.len().saturating_sub(12);
    for &i in &best.seq[from..] {
        out.push_str(&format!("  {}\n", ops[es[i].src]));
    }
    // Replay the partial linearization to name the write that set the register.
    let mut st = ABSENT;
    let mut last_write = None;
    for &i in &best.seq {
        if let Some(next) = step(st, es[i].m) {
            if matches!(es[i].m, M::Put(_))
                || next != st
                || matches!(es[i].m, M::Cas { ok: Some(true), .. })
            {
                last_write = Some(i);
            }
            st = next;
        }
    }
    out.push_str(&format!("Register then: {}", state(best.state)));
    match last_write {
        Some(i) => out.push_str(&format!(", written by\n  {}\n", ops[es[i].src])),
        None => out.push('\n'),
    }
    out.push_str("None of these can go next:\n");
    for &i in best.cands.iter().take(16) {
        out.push_str(&format!("  {}\n", ops[es[i].src]));
    }
    if let Some(i) = (0..es.len())
        .filter(|&i| es[i].definite && !best.seq.contains(&i))
        .min_by_key(|&i| es[i].complete)
    {
        out.push_str(&format!(
            "The earliest-completing op not linearized:\n  {}\n",
            ops[es[i].src]
        ));
    }
    out
}
