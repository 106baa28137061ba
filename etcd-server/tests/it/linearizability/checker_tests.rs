//! Checker unit tests.

use super::*;

pub(super) fn op(client: usize, call: Call, ret: Ret, invoke: u64, complete: u64) -> Op {
    Op {
        client,
        key: "k".into(),
        call,
        ret,
        invoke,
        complete,
    }
}
pub(super) fn put(c: usize, v: &str, t0: u64, t1: u64) -> Op {
    op(c, Call::Put(v.into()), Ret::Put, t0, t1)
}
pub(super) fn put_unknown(c: usize, v: &str, t0: u64, t1: u64) -> Op {
    op(
        c,
        Call::Put(v.into()),
        Ret::Unknown("timeout".into()),
        t0,
        t1,
    )
}
pub(super) fn get(c: usize, v: Option<&str>, t0: u64, t1: u64) -> Op {
    op(c, Call::Get, Ret::Get(v.map(str::to_owned)), t0, t1)
}
pub(super) fn cas(c: usize, old: &str, new: &str, ok: bool, t0: u64, t1: u64) -> Op {
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
pub(super) fn cas_unknown(c: usize, old: &str, new: &str, t0: u64, t1: u64) -> Op {
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
pub(super) fn verdict(h: &[Op]) -> Verdict {
    let r = check_history(h, 1_000_000);
    assert_eq!(r.len(), 1);
    r.into_iter().next().map(|r| r.verdict).unwrap()
}
pub(super) fn is_ok(h: &[Op]) -> bool {
    verdict(h) == Verdict::Linearizable
}
pub(super) fn is_violation(h: &[Op]) -> bool {
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
pub(super) fn random_history(
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
