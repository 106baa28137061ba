//! Linearizability: a Wing & Gong style checker (with Lowe's memoization) for a per-key register
//! with put / get / compare-and-set, its unit tests, and a chaos test that records a concurrent
//! client history against a 3-member cluster while killing leaders and partitioning members.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::faults::{FAST, ProxiedCluster, connect};

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

/// What a client asked for, on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Put(value).
    Put(String),
    /// Linearizable get.
    Get,
    /// Txn: if value == old then put new.
    Cas {
        /// Expected value.
        old: String,
        /// Value to write.
        new: String,
    },
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// The put was acknowledged.
    Put,
    /// The get returned this value (`None`: key absent).
    Get(Option<String>),
    /// The txn's `succeeded`.
    Cas(bool),
    /// Error or timeout: a write may have taken effect at any time after invocation, or never.
    Unknown(String),
}

/// One client operation with its invocation and completion times (nanoseconds on one
/// monotonic clock). For `Ret::Unknown`, `complete` is when the client gave up; the checker
/// treats it as never.
#[derive(Debug, Clone)]
pub struct Op {
    /// Client number.
    pub client: usize,
    /// Key.
    pub key: String,
    /// Request.
    pub call: Call,
    /// Response.
    pub ret: Ret,
    /// Invocation time (ns).
    pub invoke: u64,
    /// Completion time (ns).
    pub complete: u64,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match &self.call {
            Call::Put(v) => format!("put({v})"),
            Call::Get => "get()".into(),
            Call::Cas { old, new } => format!("cas({old} -> {new})"),
        };
        let ret = match &self.ret {
            Ret::Put => "ok".into(),
            Ret::Get(v) => format!("{v:?}"),
            Ret::Cas(b) => format!("{b}"),
            Ret::Unknown(e) => format!("UNKNOWN ({e})"),
        };
        write!(
            f,
            "c{} {} {call} -> {ret} [{:.3} ms .. {:.3} ms]",
            self.client,
            self.key,
            self.invoke as f64 / 1e6,
            self.complete as f64 / 1e6
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Checker
// ---------------------------------------------------------------------------------------------

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
const ABSENT: u32 = 0;
/// State id shared by every value that no operation observes (no get returns it, no CAS
/// compares against it): such values are indistinguishable to every operation.
const UNOBSERVED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
enum M {
    Put(u32),
    Get(u32),
    Cas {
        old: u32,
        new: u32,
        ok: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy)]
struct E {
    invoke: u64,
    /// `u64::MAX` for indeterminate operations.
    complete: u64,
    m: M,
    definite: bool,
    /// An indeterminate put of an unobserved value: all of these are interchangeable.
    free_put: bool,
    /// Index into the caller's ops.
    src: usize,
}

/// The register: one step of `m` from `state`, or `None` if `m`'s result contradicts it.
fn step(state: u32, m: M) -> Option<u32> {
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
struct Best {
    /// Definite ops linearized.
    done: usize,
    /// The linearized ops, in order (indices into `es`).
    seq: Vec<usize>,
    /// The register then.
    state: u32,
    /// Ops that could go next.
    cands: Vec<usize>,
}

enum Search {
    Linearizable(u64),
    Inconclusive(u64),
    Stuck { steps: u64, best: Best },
}

fn bit(set: &[u64], i: usize) -> bool {
    set[i / 64] & (1 << (i % 64)) != 0
}

fn flip(set: &mut [u64], i: usize) {
    set[i / 64] ^= 1 << (i % 64);
}

/// Ops that may be linearized next: not yet linearized, and invoked no later than the
/// earliest completion among the ones not yet linearized. Definite ones first, then the
/// indeterminate ones; of the interchangeable indeterminate unobserved puts, only the first.
fn candidates(es: &[E], lin: &[u64]) -> Vec<usize> {
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

struct Frame {
    cands: Vec<usize>,
    next: usize,
    /// The op linearized to get here, and the state before it.
    entered: Option<(usize, u32)>,
}

/// A configuration's definite linearized ops and the register's state.
type Config = (Box<[u64]>, u32);

/// The definite and the indeterminate parts of a set of linearized ops.
fn split(lin: &[u64], definite: &[u64]) -> (Box<[u64]>, Box<[u64]>) {
    let d: Box<[u64]> = lin.iter().zip(definite).map(|(l, m)| l & m).collect();
    let u: Box<[u64]> = lin.iter().zip(definite).map(|(l, m)| l & !m).collect();
    (d, u)
}

fn subset(a: &[u64], b: &[u64]) -> bool {
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
fn search(es: &[E], budget: u64) -> Search {
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

fn explain(key: &str, ops: &[&Op], es: &[E], best: &Best) -> String {
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

// ---------------------------------------------------------------------------------------------
// Checker unit tests
// ---------------------------------------------------------------------------------------------

fn op(client: usize, call: Call, ret: Ret, invoke: u64, complete: u64) -> Op {
    Op {
        client,
        key: "k".into(),
        call,
        ret,
        invoke,
        complete,
    }
}
fn put(c: usize, v: &str, t0: u64, t1: u64) -> Op {
    op(c, Call::Put(v.into()), Ret::Put, t0, t1)
}
fn put_unknown(c: usize, v: &str, t0: u64, t1: u64) -> Op {
    op(
        c,
        Call::Put(v.into()),
        Ret::Unknown("timeout".into()),
        t0,
        t1,
    )
}
fn get(c: usize, v: Option<&str>, t0: u64, t1: u64) -> Op {
    op(c, Call::Get, Ret::Get(v.map(str::to_owned)), t0, t1)
}
fn cas(c: usize, old: &str, new: &str, ok: bool, t0: u64, t1: u64) -> Op {
    op(
        c,
        Call::Cas {
            old: old.into(),
            new: new.into(),
        },
        Ret::Cas(ok),
        t0,
        t1,
    )
}
fn cas_unknown(c: usize, old: &str, new: &str, t0: u64, t1: u64) -> Op {
    op(
        c,
        Call::Cas {
            old: old.into(),
            new: new.into(),
        },
        Ret::Unknown("timeout".into()),
        t0,
        t1,
    )
}
fn verdict(h: &[Op]) -> Verdict {
    let r = check_history(h, 1_000_000);
    assert_eq!(r.len(), 1);
    r.into_iter().next().map(|r| r.verdict).unwrap()
}
fn is_ok(h: &[Op]) -> bool {
    verdict(h) == Verdict::Linearizable
}
fn is_violation(h: &[Op]) -> bool {
    matches!(verdict(h), Verdict::Violation(_))
}

#[test]
fn checker_accepts_valid_concurrent_history() {
    let h = vec![
        get(0, None, 0, 3),
        put(1, "a", 1, 10),
        put(2, "b", 5, 15),
        get(3, Some("a"), 6, 8), // a is in, b not yet
        get(0, Some("b"), 16, 20),
        get(3, Some("b"), 17, 25),
        cas(1, "b", "c", true, 21, 30),
        cas(2, "b", "d", false, 22, 31), // lost the race to c
        get(0, Some("c"), 32, 35),
        cas(3, "zzz", "e", false, 36, 40),
        get(0, Some("c"), 41, 42),
    ];
    assert!(is_ok(&h), "{:?}", verdict(&h));
    // The same ops given in any order.
    let mut r = h.clone();
    r.reverse();
    assert!(is_ok(&r));
}

#[test]
fn checker_rejects_stale_read() {
    let h = vec![
        put(0, "a", 0, 5),
        put(1, "b", 10, 15),
        get(2, Some("a"), 20, 25),
    ];
    match verdict(&h) {
        Verdict::Violation(why) => assert!(why.contains("get()"), "{why}"),
        v => panic!("stale read accepted: {v:?}"),
    }
    // Concurrent with the overwrite, the same read is fine.
    let h = vec![
        put(0, "a", 0, 5),
        put(1, "b", 10, 15),
        get(2, Some("a"), 12, 25),
    ];
    assert!(is_ok(&h));
    // Two reads: once b is seen, a must never come back.
    let h = vec![
        put(0, "a", 0, 5),
        put(1, "b", 10, 40),
        get(2, Some("b"), 12, 20),
        get(3, Some("a"), 25, 30),
    ];
    assert!(is_violation(&h));
}

#[test]
fn checker_rejects_lost_acknowledged_write() {
    assert!(is_violation(&[put(0, "x", 0, 5), get(1, None, 10, 12)]));
    assert!(is_violation(&[
        put(0, "a", 0, 5),
        put(1, "b", 6, 9),
        cas(2, "b", "c", true, 10, 11),
        get(3, Some("b"), 12, 14)
    ]));
    // A CAS that should have matched reports failure.
    assert!(is_violation(&[
        put(0, "a", 0, 5),
        cas(1, "a", "b", false, 6, 8)
    ]));
    // A CAS succeeding on a value that is not there.
    assert!(is_violation(&[
        put(0, "a", 0, 5),
        cas(1, "q", "b", true, 6, 8)
    ]));
    // A read of a value nobody wrote.
    assert!(is_violation(&[
        put(0, "a", 0, 5),
        get(1, Some("ghost"), 6, 8)
    ]));
}

#[test]
fn checker_handles_indeterminate_ops() {
    // A timed-out put may have been applied (seen later)...
    assert!(is_ok(&[
        put(0, "a", 0, 1),
        put_unknown(1, "b", 2, 3),
        get(2, Some("b"), 10, 11)
    ]));
    // ... even long after it timed out...
    assert!(is_ok(&[
        put(0, "a", 0, 1),
        put_unknown(1, "b", 2, 3),
        get(2, Some("a"), 10, 11),
        get(2, Some("b"), 20, 21)
    ]));
    // ... or never.
    assert!(is_ok(&[
        put(0, "a", 0, 1),
        put_unknown(1, "b", 2, 3),
        get(2, Some("a"), 10, 11)
    ]));
    // But not before it was invoked.
    assert!(is_violation(&[
        put(0, "a", 0, 1),
        get(2, Some("b"), 2, 3),
        put_unknown(1, "b", 5, 6)
    ]));
    // And once seen, it cannot be undone.
    assert!(is_violation(&[
        put(0, "a", 0, 1),
        put_unknown(1, "b", 2, 3),
        get(2, Some("b"), 4, 5),
        get(2, Some("a"), 6, 7)
    ]));
    // An indeterminate CAS applies only if its comparison holds then.
    assert!(is_ok(&[
        put(0, "a", 0, 1),
        cas_unknown(1, "a", "b", 2, 3),
        get(2, Some("b"), 4, 5)
    ]));
    assert!(is_violation(&[
        put(0, "a", 0, 1),
        cas_unknown(1, "z", "b", 2, 3),
        get(2, Some("b"), 4, 5)
    ]));
    // A failed CAS is explained by an indeterminate put of a value nobody read.
    assert!(is_ok(&[
        put(0, "a", 0, 1),
        put_unknown(1, "x", 2, 3),
        cas(2, "a", "c", false, 4, 5)
    ]));
    assert!(is_violation(&[
        put(0, "a", 0, 1),
        cas(2, "a", "c", false, 4, 5)
    ]));
    // Errored gets say nothing.
    assert!(is_ok(&[
        put(0, "a", 0, 1),
        op(1, Call::Get, Ret::Unknown("no leader".into()), 2, 3)
    ]));
}

#[test]
fn checker_is_bounded() {
    // 60 overlapping indeterminate puts of values that are read, and an impossible read: the
    // search must stop (violation or inconclusive), not hang.
    let mut h: Vec<Op> = (0..60)
        .map(|i| put_unknown(i, &format!("v{i}"), i as u64, i as u64 + 1))
        .collect();
    for i in 0..60 {
        h.push(get(
            100 + i,
            Some(&format!("v{i}")),
            1000 + 10 * i as u64,
            1001 + 10 * i as u64,
        ));
    }
    h.push(get(999, Some("v0"), 5000, 5001));
    let t = Instant::now();
    let r = check_history(&h, 200_000);
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_ne!(r[0].verdict, Verdict::Linearizable);
}

/// A random history of a real (sequential) register: `n` ops by `clients` clients with
/// overlapping intervals, a fraction `p_unknown` of them reported indeterminate (but applied),
/// plus a few indeterminate writes that never took effect. Returns it and the final value.
fn random_history(
    rng: &mut StdRng,
    tag: &str,
    n: usize,
    clients: usize,
    p_unknown: f64,
) -> (Vec<Op>, Option<String>) {
    let mut state: Option<String> = None;
    let mut h = Vec::new();
    let mut free_at = vec![0u64; clients];
    let mut t = 0u64;
    for n in 0..n {
        t += rng.random_range(1..20);
        let c = rng.random_range(0..clients);
        let invoke = free_at[c].max(t.saturating_sub(rng.random_range(0..30)));
        // Linearization points increase with the order the register applies ops in.
        let lin_point = t.max(invoke);
        t = lin_point;
        let complete = lin_point + rng.random_range(0..30);
        free_at[c] = complete + 1;
        let (call, mut ret) = match rng.random_range(0..3) {
            0 => {
                let v = format!("v{tag}-{n}");
                state = Some(v.clone());
                (Call::Put(v), Ret::Put)
            }
            1 => (Call::Get, Ret::Get(state.clone())),
            _ => {
                let old = if rng.random_bool(0.7) {
                    state.clone().unwrap_or_else(|| "nope".into())
                } else {
                    "nope".into()
                };
                let ok = state.as_deref() == Some(old.as_str());
                let new = format!("v{tag}-{n}");
                if ok {
                    state = Some(new.clone());
                }
                (Call::Cas { old, new }, Ret::Cas(ok))
            }
        };
        if rng.random_bool(p_unknown) {
            ret = Ret::Unknown("timeout".into());
        }
        h.push(op(c, call, ret, invoke, complete));
    }
    for n in 0..rng.random_range(0..4) {
        let at = rng.random_range(0..t + 1);
        h.push(op(
            9,
            Call::Put(format!("never{tag}-{n}")),
            Ret::Unknown("timeout".into()),
            at,
            at + 5,
        ));
    }
    (h, state)
}

/// Random valid histories, including indeterminate ops, always pass; a final read of a wrong
/// value, or a planted stale read, always fails.
#[test]
fn checker_accepts_random_valid_histories() {
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..200 {
        let (clients, n) = (rng.random_range(1..6usize), rng.random_range(5..80));
        let (h, state) = random_history(&mut rng, &round.to_string(), n, clients, 0.1);
        let r = check_history(&h, 2_000_000);
        assert_eq!(r[0].verdict, Verdict::Linearizable, "round {round}: {h:#?}");
        // A read after everything that returns something else.
        let end = h.iter().map(|o| o.complete).max().unwrap_or(0) + 10;
        let mut bad = h.clone();
        let wrong = match &state {
            Some(v) if v.starts_with('v') => None,
            _ => Some("v-never-written".to_owned()),
        };
        bad.push(op(8, Call::Get, Ret::Get(wrong), end, end + 1));
        let has_unknown_writes = h
            .iter()
            .any(|o| matches!(o.ret, Ret::Unknown(_)) && !matches!(o.call, Call::Get));
        if !has_unknown_writes {
            assert!(
                matches!(
                    check_history(&bad, 2_000_000)[0].verdict,
                    Verdict::Violation(_)
                ),
                "round {round}"
            );
        }
        if let Some(stale) = plant_stale_read(&h) {
            let mut bad = h.clone();
            bad.push(stale);
            assert!(
                matches!(
                    check_history(&bad, 2_000_000)[0].verdict,
                    Verdict::Violation(_)
                ),
                "round {round}"
            );
        }
    }
}

/// Histories the size of the chaos test's keys (hundreds of ops, 5 clients, some
/// indeterminate): valid ones pass and a planted stale read is found, within the budget.
#[test]
fn checker_handles_large_histories() {
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..6 {
        let (h, _) = random_history(&mut rng, &round.to_string(), 600, 5, 0.03);
        let r = check_history(&h, CHECK_BUDGET);
        assert_eq!(r[0].verdict, Verdict::Linearizable, "round {round}");
        let stale = plant_stale_read(&h).expect("two differing reads");
        let mut bad = h.clone();
        bad.push(stale);
        let r = check_history(&bad, CHECK_BUDGET);
        assert!(
            matches!(r[0].verdict, Verdict::Violation(_)),
            "round {round}: {} steps: {:?}",
            r[0].steps,
            r[0].verdict
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Chaos test
// ---------------------------------------------------------------------------------------------

const CLIENTS: usize = 5;
const KEYS_PER_EPOCH: u64 = 4;
/// Clients move to fresh keys every epoch, which keeps each key's history small.
const EPOCH: Duration = Duration::from_secs(8);
const OP_TIMEOUT: Duration = Duration::from_millis(1500);
const CHECK_BUDGET: u64 = 3_000_000;

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

async fn run_op(c: &mut etcd_client::Client, key: &str, call: &Call) -> Result<Ret, String> {
    let r = match call {
        Call::Put(v) => c.put(key, v.as_str(), None).await.map(|_| Ret::Put),
        Call::Get => c.get(key, None).await.map(|r| {
            Ret::Get(
                r.kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            )
        }),
        Call::Cas { old, new } => {
            let txn = Txn::new()
                .when([Compare::value(key, CompareOp::Equal, old.as_str())])
                .and_then([TxnOp::put(key, new.as_str(), None)]);
            c.txn(txn).await.map(|r| Ret::Cas(r.succeeded()))
        }
    };
    r.map_err(|e| e.to_string())
}

/// One client: random puts, gets and CASes on the current epoch's keys until `deadline`,
/// moving to another member after an error.
async fn client_loop(
    id: usize,
    endpoints: Vec<String>,
    start: Instant,
    deadline: Instant,
    seed: u64,
    out: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut ep = id % endpoints.len();
    let mut client: Option<etcd_client::Client> = None;
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut seq = 0u64;
    let mut local = Vec::new();
    while Instant::now() < deadline {
        let epoch = start.elapsed().as_secs() / EPOCH.as_secs();
        let key = format!("lin/e{epoch}/k{}", rng.random_range(0..KEYS_PER_EPOCH));
        if client.is_none() {
            client = connect(&endpoints[ep], OP_TIMEOUT).await.ok();
        }
        let Some(c) = client.as_mut() else {
            ep = (ep + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        seq += 1;
        let fresh = format!("c{id}-{seq}");
        let r: f64 = rng.random();
        let call = if r < 0.4 {
            Call::Get
        } else if r < 0.75 {
            Call::Put(fresh)
        } else {
            let old = match seen.get(&key) {
                Some(v) if rng.random_bool(0.85) => v.clone(),
                _ => format!("c{id}-stale-{seq}"),
            };
            Call::Cas { old, new: fresh }
        };
        let invoke = now_ns(start);
        let res = tokio::time::timeout(
            OP_TIMEOUT + Duration::from_millis(500),
            run_op(c, &key, &call),
        )
        .await;
        let complete = now_ns(start);
        let ret = match res {
            Ok(Ok(ret)) => ret,
            Ok(Err(e)) => Ret::Unknown(e),
            Err(_) => Ret::Unknown("client timeout".into()),
        };
        match (&call, &ret) {
            (Call::Put(v), Ret::Put) | (Call::Cas { new: v, .. }, Ret::Cas(true)) => {
                seen.insert(key.clone(), v.clone());
            }
            (Call::Get, Ret::Get(Some(v))) => {
                seen.insert(key.clone(), v.clone());
            }
            _ => {}
        }
        let failed = matches!(ret, Ret::Unknown(_));
        local.push(Op {
            client: id,
            key,
            call,
            ret,
            invoke,
            complete,
        });
        if failed {
            client = None;
            ep = (ep + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..25))).await;
        }
    }
    out.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
}

/// A get that returns, after two reads saw `a` and then `b` (in real-time order), `a` again.
fn plant_stale_read(ops: &[Op]) -> Option<Op> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops {
        if matches!(o.ret, Ret::Get(Some(_))) {
            by_key.entry(o.key.as_str()).or_default().push(o);
        }
    }
    // Proving a violation means ruling out every order of the indeterminate operations, so
    // plant on the eligible key with the fewest of them (then the fewest operations): the
    // check stays about the checker's power, not about its step budget.
    let cost = |key: &str| {
        let on_key = ops.iter().filter(|o| o.key == key);
        let unknown = on_key
            .clone()
            .filter(|o| matches!(o.ret, Ret::Unknown(_)))
            .count();
        (unknown, on_key.count())
    };
    let mut best: Option<((usize, usize), Op)> = None;
    for gets in by_key.values() {
        let found = gets.iter().find_map(|g1| {
            gets.iter()
                .any(|g2| g1.complete < g2.invoke && g1.ret != g2.ret)
                .then_some(*g1)
        });
        let Some(g1) = found else { continue };
        let c = cost(&g1.key);
        if best.as_ref().is_some_and(|(b, _)| *b <= c) {
            continue;
        }
        let end = ops.iter().map(|o| o.complete).max().unwrap_or(0);
        let planted = Op {
            client: 999,
            key: g1.key.clone(),
            call: Call::Get,
            ret: g1.ret.clone(),
            invoke: end + 1,
            complete: end + 2,
        };
        best = Some((c, planted));
    }
    best.map(|(_, op)| op)
}

async fn sleep_until_at_most(d: Duration, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(d.min(left)).await;
}

/// Several clients run puts, gets and CAS txns against a 3-member cluster while the leader is
/// SIGKILLed and restarted and members are partitioned and healed; the recorded history must
/// be linearizable. `LIN_SECS` sets the chaos duration (default 90 s), `LIN_SEED` the seed.
#[tokio::test(flavor = "multi_thread")]
async fn linearizable_under_leader_kills_and_partitions() {
    let secs: u64 = std::env::var("LIN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let seed: u64 = std::env::var("LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("linearizability chaos: LIN_SECS={secs} LIN_SEED={seed}");
    let mut cluster = tokio::task::spawn_blocking(|| ProxiedCluster::start(3, FAST))
        .await
        .unwrap();
    let all = [0, 1, 2];
    cluster.wait_leader(&all, Duration::from_secs(15)).await;

    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let history = Arc::new(Mutex::new(Vec::new()));
    let endpoints = cluster.endpoints();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                endpoints.clone(),
                start,
                deadline,
                seed,
                history.clone(),
            ))
        })
        .collect();

    // The nemesis.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events: Vec<(u64, String)> = Vec::new();
    let ev = |events: &mut Vec<(u64, String)>, s: String| {
        eprintln!("[{:>8.3} s] {s}", start.elapsed().as_secs_f64());
        events.push((now_ns(start), s));
    };
    sleep_until_at_most(Duration::from_secs(1), deadline).await;
    for _round in 0..1000 {
        if Instant::now() + Duration::from_secs(2) >= deadline {
            break;
        }
        let leader = cluster.claimed_leader().await;
        let leader_or_any = leader.unwrap_or_else(|| rng.random_range(0..3));
        match rng.random_range(0..6) {
            5 => {
                // Power failure: every member at once.
                for i in all {
                    cluster.kill(i);
                }
                ev(&mut events, "SIGKILL all members".into());
                sleep_until_at_most(Duration::from_millis(rng.random_range(200..1000)), deadline)
                    .await;
                for i in all {
                    cluster.restart(i);
                }
                ev(&mut events, "restart all members".into());
            }
            0 | 1 => {
                cluster.kill(leader_or_any);
                ev(
                    &mut events,
                    format!("SIGKILL m{leader_or_any} (leader: {leader:?})"),
                );
                sleep_until_at_most(Duration::from_millis(rng.random_range(300..2500)), deadline)
                    .await;
                cluster.restart(leader_or_any);
                ev(&mut events, format!("restart m{leader_or_any}"));
            }
            2 => {
                cluster.proxy.isolate(leader_or_any);
                ev(
                    &mut events,
                    format!("isolate m{leader_or_any} (leader: {leader:?})"),
                );
                sleep_until_at_most(
                    Duration::from_millis(rng.random_range(1000..4000)),
                    deadline,
                )
                .await;
                cluster.proxy.heal();
                ev(&mut events, "heal".into());
            }
            3 => {
                let i = rng.random_range(0..3);
                let j = (i + 1 + rng.random_range(0..2)) % 3;
                cluster.proxy.isolate(i);
                ev(&mut events, format!("isolate m{i}"));
                sleep_until_at_most(Duration::from_millis(rng.random_range(300..1500)), deadline)
                    .await;
                cluster.kill(j);
                ev(&mut events, format!("SIGKILL m{j} while m{i} is isolated"));
                sleep_until_at_most(Duration::from_millis(rng.random_range(300..1500)), deadline)
                    .await;
                cluster.restart(j);
                ev(&mut events, format!("restart m{j}"));
                sleep_until_at_most(Duration::from_millis(rng.random_range(300..1500)), deadline)
                    .await;
                cluster.proxy.heal();
                ev(&mut events, "heal".into());
            }
            _ => {
                // Asymmetric: the leader cannot reach one follower, which still reaches it.
                let f = (leader_or_any + 1 + rng.random_range(0..2)) % 3;
                cluster.proxy.cut(leader_or_any, f);
                ev(
                    &mut events,
                    format!("cut m{leader_or_any} -> m{f} (one way)"),
                );
                sleep_until_at_most(
                    Duration::from_millis(rng.random_range(1000..3000)),
                    deadline,
                )
                .await;
                cluster.proxy.heal();
                ev(&mut events, "heal".into());
            }
        }
        sleep_until_at_most(Duration::from_millis(rng.random_range(500..2000)), deadline).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    cluster.proxy.heal();
    for i in all {
        cluster.restart(i);
    }
    ev(&mut events, "chaos over: healed, everyone restarted".into());
    let leader = cluster.wait_leader(&all, Duration::from_secs(30)).await;

    // Final reads of every key, recorded too (they catch lost writes at the end).
    let mut ops = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    let keys: Vec<String> = ops
        .iter()
        .map(|o| o.key.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Bounded: a member that does not answer is skipped for the next one.
    let reads_until = Instant::now() + Duration::from_secs(30);
    let mut final_failures = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        for attempt in 0..6 {
            if Instant::now() > reads_until {
                break;
            }
            let member = (leader + n + attempt) % 3;
            let Ok(mut c) = connect(&cluster.endpoint(member), Duration::from_secs(2)).await else {
                continue;
            };
            let invoke = now_ns(start);
            let r =
                tokio::time::timeout(Duration::from_secs(3), run_op(&mut c, key, &Call::Get)).await;
            let complete = now_ns(start);
            match r {
                Ok(Ok(ret)) => {
                    ops.push(Op {
                        client: 100,
                        key: key.clone(),
                        call: Call::Get,
                        ret,
                        invoke,
                        complete,
                    });
                    break;
                }
                Ok(Err(e)) => final_failures.push(format!("m{member} {key}: {e}")),
                Err(_) => final_failures.push(format!("m{member} {key}: client timeout")),
            }
        }
    }
    if !final_failures.is_empty() {
        eprintln!("final reads that failed after the chaos ended: {final_failures:#?}");
    }

    // Stats.
    let total = ops.len();
    let unknown = ops
        .iter()
        .filter(|o| matches!(o.ret, Ret::Unknown(_)))
        .count();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for o in &ops {
        if let Ret::Unknown(e) = &o.ret {
            let short: String = e.chars().take(90).collect();
            *errors.entry(short).or_default() += 1;
        }
    }
    let cas_ok = ops.iter().filter(|o| o.ret == Ret::Cas(true)).count();
    let cas_failed = ops.iter().filter(|o| o.ret == Ret::Cas(false)).count();
    let gets = ops.iter().filter(|o| matches!(o.ret, Ret::Get(_))).count();
    let puts = ops.iter().filter(|o| o.ret == Ret::Put).count();
    eprintln!(
        "history: {total} ops on {} keys: {puts} puts ok, {gets} gets ok, {cas_ok} cas ok, {cas_failed} cas failed, {unknown} indeterminate",
        keys.len()
    );
    eprintln!("errors: {errors:#?}");

    let t = Instant::now();
    let ops_for_check = ops.clone();
    let reports = tokio::task::spawn_blocking(move || check_history(&ops_for_check, CHECK_BUDGET))
        .await
        .unwrap();
    let max_ops = reports.iter().map(|r| r.ops).max().unwrap_or(0);
    let max_steps = reports.iter().map(|r| r.steps).max().unwrap_or(0);
    eprintln!(
        "checked {} keys in {:?} (largest key: {max_ops} ops; most steps: {max_steps})",
        reports.len(),
        t.elapsed()
    );
    assert!(
        puts + cas_ok > 50 && gets > 50,
        "too few successful ops for a meaningful check"
    );

    // The checker is not vacuous on this history: a read that brings back an older value after
    // a newer one was seen (values are unique) must be flagged.
    if let Some(planted) = plant_stale_read(&ops) {
        let key = planted.key.clone();
        let mut mutated: Vec<Op> = ops.iter().filter(|o| o.key == key).cloned().collect();
        mutated.push(planted);
        let r = tokio::task::spawn_blocking(move || check_history(&mutated, CHECK_BUDGET))
            .await
            .unwrap();
        assert!(
            matches!(r[0].verdict, Verdict::Violation(_)),
            "planted stale read not detected ({} ops, {} indeterminate, {} steps): {:?}",
            r[0].ops,
            r[0].unknown,
            r[0].steps,
            r[0].verdict
        );
    }

    let bad: Vec<&KeyReport> = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Linearizable)
        .collect();
    if !bad.is_empty() {
        let mut msg = format!(
            "LIN_SEED={seed} LIN_SECS={secs}: {} of {} keys fail:\n",
            bad.len(),
            reports.len()
        );
        for r in &bad {
            match &r.verdict {
                Verdict::Violation(s) | Verdict::Inconclusive(s) => msg.push_str(&format!("{s}\n")),
                Verdict::Linearizable => {}
            }
        }
        msg.push_str("nemesis events:\n");
        for (t, e) in &events {
            msg.push_str(&format!("  [{:>8.3} s] {e}\n", *t as f64 / 1e9));
        }
        if let Some(dir) = cluster.save_logs("lin") {
            let dump: String = ops.iter().map(|o| format!("{o}\n")).collect();
            let _ = std::fs::write(format!("{dir}/lin-history.txt"), dump);
            msg.push_str(&format!("full logs and history in {dir}\n"));
        }
        msg.push_str(&cluster.log_tails(80));
        panic!("{msg}");
    }

    // Liveness after the faults end: every member serves, and all agree.
    let (rev, hash) = cluster.wait_converged(Duration::from_secs(30)).await;
    eprintln!("converged at revision {rev}, HashKV {hash:#x}");
}
