//! Chaos test.

use super::*;

pub(super) const CLIENTS: usize = 5;
pub(super) const KEYS_PER_EPOCH: u64 = 4;
/// Clients move to fresh keys every epoch, which keeps each key's history small.
pub(super) const EPOCH: Duration = Duration::from_secs(8);
pub(super) const OP_TIMEOUT: Duration = Duration::from_millis(1500);
pub(super) const CHECK_BUDGET: u64 = 3_000_000;

pub(super) fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

pub(super) async fn run_op(
    c: &mut etcd_client::Client,
    key: &str,
    call: &Call,
) -> Result<Ret, String> {
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
pub(super) async fn client_loop(
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
pub(super) fn plant_stale_read(ops: &[Op]) -> Option<Op> {
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

pub(super) async fn sleep_until_at_most(d: Duration, deadline: Instant) {
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
