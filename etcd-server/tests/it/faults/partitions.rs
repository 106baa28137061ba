//! Partitions.

use super::*;

/// Isolating the leader from the other two: the majority elects a new leader and keeps
/// committing; the old leader acknowledges no write and serves no stale read; after healing,
/// every acknowledged write is present, no failed minority write is, and HashKV agrees.
#[tokio::test(flavor = "multi_thread")]
async fn isolated_leader_gives_no_false_success() {
    let mut c = tokio::task::spawn_blocking(|| ProxiedCluster::start(3, FAST))
        .await
        .unwrap();
    let all = [0, 1, 2];
    let old = c.wait_leader(&all, Duration::from_secs(15)).await;
    let old_status = c.status(old).await.expect("leader status");
    let majority: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    {
        let mut cl = c.client(old, Duration::from_secs(5)).await;
        cl.put("shared", "base", None).await.expect("baseline put");
    }
    eprintln!(
        "leader m{old} ({:x}) term {}; isolating it",
        c.ids[old], old_status.term
    );

    c.proxy.isolate(old);
    let isolated_at = Instant::now();
    // Let bytes already in flight drain, so nothing the old leader proposes from now on can
    // reach the others.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The minority side: writers on the isolated old leader, with a long client timeout so the
    // server's own errors show.
    let minority_window = Duration::from_secs(3);
    let ep = c.endpoint(old);
    let mut writers = Vec::new();
    for t in 0..4 {
        let ep = ep.clone();
        writers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut cl = connect(&ep, Duration::from_secs(8))
                .await
                .expect("connect minority");
            let until = Instant::now() + minority_window;
            for n in 0..200 {
                if Instant::now() > until {
                    break;
                }
                let key = format!("minority/{t}/{n}");
                let r = timed_put(&mut cl, &key, "x", Duration::from_secs(9)).await;
                out.push((key, r));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out
        }));
    }

    // The majority side elects a new leader and keeps committing.
    let new = c.wait_leader(&majority, Duration::from_secs(15)).await;
    assert_ne!(new, old, "the majority must elect a new leader");
    let new_status = c.status(new).await.expect("new leader status");
    assert!(
        new_status.term > old_status.term,
        "new leader's term {} must exceed {}",
        new_status.term,
        old_status.term
    );
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut maj = c.client(new, Duration::from_secs(5)).await;
    for n in 0..20 {
        let (key, value) = (format!("majority/{n}"), format!("v{n}"));
        let mut ok = false;
        for _ in 0..3 {
            if let Res::Ok(_) = timed_put(&mut maj, &key, &value, Duration::from_secs(6)).await {
                ok = true;
                break;
            }
        }
        assert!(ok, "the majority failed to commit {key}");
        acked.push((key, value));
    }
    assert!(
        matches!(
            timed_put(&mut maj, "shared", "maj-1", Duration::from_secs(6)).await,
            Res::Ok(_)
        ),
        "majority put of shared"
    );
    acked.push(("shared".into(), "maj-1".into()));

    // CheckQuorum: the isolated old leader steps down (within a few election timeouts; the
    // bound is loose for busy machines).
    let mut old_now = None;
    for _ in 0..50 {
        old_now = c.status(old).await;
        if old_now.is_some_and(|s| s.leader != c.ids[old]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = isolated_at.elapsed();
    assert!(
        old_now.is_some_and(|s| s.leader != c.ids[old]),
        "the isolated old leader still claims leadership {since:?} after isolation (CheckQuorum): {old_now:?}\n{}",
        c.log_tails(60)
    );
    eprintln!("old leader stepped down; checked {since:?} after isolation: {old_now:?}");

    // Now that it knows no leader: more writes, and linearizable reads of `shared` (which the
    // majority overwrote): all must fail, and a read must never return the stale "base".
    let mut readers = Vec::new();
    for t in 0..3 {
        let wep = ep.clone();
        writers.push(tokio::spawn(async move {
            let mut cl = connect(&wep, Duration::from_secs(8))
                .await
                .expect("connect minority");
            let key = format!("minority/late/{t}");
            let r = timed_put(&mut cl, &key, "x", Duration::from_secs(9)).await;
            vec![(key, r)]
        }));
        let ep = ep.clone();
        readers.push(tokio::spawn(async move {
            let mut cl = connect(&ep, Duration::from_secs(8))
                .await
                .expect("connect minority");
            timed_get(&mut cl, "shared", Duration::from_secs(9)).await
        }));
    }
    let mut stale_reads = Vec::new();
    let mut read_errors = Vec::new();
    for r in readers {
        match r.await.unwrap() {
            Res::Ok(v) => stale_reads.push(v),
            Res::Err(e) => read_errors.push(e),
        }
    }

    let mut minority = Vec::new();
    for w in writers {
        minority.extend(w.await.unwrap());
    }
    let stats = c.proxy.stats();
    eprintln!("proxy while partitioned: {stats:?}");

    c.proxy.heal();
    c.wait_leader(&all, Duration::from_secs(15)).await;
    let (rev, hash) = c.wait_converged(Duration::from_secs(20)).await;

    // Which minority writes were acknowledged, and how the others failed.
    let false_successes: Vec<&String> = minority
        .iter()
        .filter_map(|(k, r)| matches!(r, Res::Ok(_)).then_some(k))
        .collect();
    let mut errors: HashMap<String, usize> = HashMap::new();
    for (_, r) in &minority {
        if let Res::Err(e) = r {
            *errors.entry(e.clone()).or_default() += 1;
        }
    }
    for e in &read_errors {
        *errors.entry(format!("(get) {e}")).or_default() += 1;
    }
    eprintln!("minority writes: {}, errors: {errors:?}", minority.len());
    assert!(!minority.is_empty());

    // An acknowledged minority write (already a failure) must at least not be lost.
    acked.extend(
        false_successes
            .iter()
            .map(|k| ((*k).clone(), "x".to_owned())),
    );
    let mut present_unacked = Vec::new();
    let mut missing_acked = Vec::new();
    for i in all {
        let mut cl = c.client(i, Duration::from_secs(5)).await;
        for (k, v) in &acked {
            let r = cl.get(k.as_str(), None).await.expect("get after heal");
            let got = r
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            if got.as_deref() != Some(v.as_str()) {
                missing_acked.push(format!("m{i}: {k} = {got:?}, acknowledged {v:?}"));
            }
        }
        let r = cl
            .get(
                "minority/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("get after heal");
        for kv in r.kvs() {
            let k = String::from_utf8_lossy(kv.key()).into_owned();
            if !false_successes.contains(&&k) {
                present_unacked.push(format!("m{i}: {k}"));
            }
        }
    }
    let logs = if false_successes.is_empty()
        && stale_reads.is_empty()
        && missing_acked.is_empty()
        && present_unacked.is_empty()
    {
        String::new()
    } else {
        c.log_tails(60)
    };
    assert!(
        false_successes.is_empty(),
        "isolated old leader acknowledged writes: {false_successes:?}\n{logs}"
    );
    assert!(
        stale_reads.is_empty(),
        "isolated old leader served reads (stale: {stale_reads:?})\n{logs}"
    );
    assert!(
        missing_acked.is_empty(),
        "acknowledged writes lost: {missing_acked:?}\n{logs}"
    );
    assert!(
        present_unacked.is_empty(),
        "failed minority writes present after healing: {present_unacked:?}\n{logs}"
    );
    let bad: Vec<&String> = errors
        .keys()
        .filter(|e| !acceptable_minority_error(e))
        .collect();
    assert!(
        bad.is_empty(),
        "unexpected errors on the minority side: {bad:?}"
    );
    eprintln!("converged at revision {rev}, HashKV {hash:#x}");
}

/// A follower cut off for several election timeouts and then returned does not disrupt the
/// healthy leader (PreVote + CheckQuorum): its term does not grow while isolated, and after
/// healing the leader and term are unchanged everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn returning_member_does_not_disrupt_leader() {
    // Default timing (100 ms / 1 s): less sensitive to a busy machine than FAST.
    let mut c = tokio::task::spawn_blocking(|| ProxiedCluster::start(3, &[]))
        .await
        .unwrap();
    let all = [0, 1, 2];
    let leader = c.wait_leader(&all, Duration::from_secs(15)).await;
    // Let the cluster settle, then take the reference term.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = {
        let again = c.wait_leader(&all, Duration::from_secs(15)).await;
        assert_eq!(again, leader, "leadership changed on a healthy cluster");
        again
    };
    let term = c.status(leader).await.expect("status").term;
    let follower = (leader + 1) % 3;
    let leader_id = c.ids[leader];
    eprintln!("leader m{leader} term {term}; isolating follower m{follower}");

    let mut cl = c.client(leader, Duration::from_secs(5)).await;
    c.proxy.isolate(follower);
    let isolated_for = Duration::from_secs(4);
    let until = Instant::now() + isolated_for;
    let mut n = 0u32;
    let mut follower_terms = Vec::new();
    while Instant::now() < until {
        cl.put(format!("k{n}"), format!("v{n}"), None)
            .await
            .expect("the majority keeps committing");
        n += 1;
        if n.is_multiple_of(5)
            && let Some(st) = c.status(follower).await
        {
            follower_terms.push(st.term);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !follower_terms.is_empty(),
        "the isolated follower answered no status request"
    );
    assert!(
        follower_terms.iter().all(|&t| t == term),
        "the isolated follower's term moved (no PreVote?): {follower_terms:?}, leader's {term}"
    );

    c.proxy.heal();
    let until = Instant::now() + Duration::from_secs(3);
    let mut observed = Vec::new();
    while Instant::now() < until {
        cl.put(format!("k{n}"), format!("v{n}"), None)
            .await
            .expect("writes after healing");
        n += 1;
        for i in all {
            if let Some(st) = c.status(i).await {
                observed.push((i, st.leader, st.term));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let disrupted: Vec<&(usize, u64, u64)> = observed
        .iter()
        .filter(|(_, l, t)| (*l != leader_id && *l != 0) || *t != term)
        .collect();
    let logs = if disrupted.is_empty() {
        String::new()
    } else {
        c.log_tails(60)
    };
    assert!(
        disrupted.is_empty(),
        "leader {leader_id:x} / term {term} changed after healing: {disrupted:?}\n{logs}"
    );
    // Leader unknown (0) is only acceptable transiently on the returning follower.
    assert!(
        observed
            .iter()
            .filter(|(i, l, _)| *l == 0 && *i != follower)
            .count()
            == 0,
        "{observed:?}"
    );
    let after = c.wait_leader(&all, Duration::from_secs(5)).await;
    assert_eq!(after, leader, "leader changed");
    for i in all {
        let st = c.status(i).await.expect("status");
        assert_eq!(
            (st.leader, st.term),
            (leader_id, term),
            "m{i} after healing"
        );
    }
    // The returned follower caught up.
    let mut fc = c.client(follower, Duration::from_secs(5)).await;
    let last = format!("k{}", n - 1);
    let r = fc
        .get(last.as_str(), None)
        .await
        .expect("read on the returned follower");
    assert_eq!(
        r.kvs().first().map(|kv| kv.value().to_vec()),
        Some(format!("v{}", n - 1).into_bytes())
    );
    c.wait_converged(Duration::from_secs(10)).await;
}

/// A member removed while it was cut off never saw its removal committed: when the network
/// heals, the others refuse its Raft streams as a removed member's, and it stops, as etcd's
/// removed members do, instead of campaigning forever.
#[tokio::test(flavor = "multi_thread")]
async fn member_removed_while_partitioned_is_told_and_stops() {
    let mut c = tokio::task::spawn_blocking(|| ProxiedCluster::start(3, FAST))
        .await
        .unwrap();
    let all = [0, 1, 2];
    let leader = c.wait_leader(&all, Duration::from_secs(15)).await;
    let victim = (leader + 1) % 3;
    let victim_id = c.ids[victim];
    c.proxy.isolate(victim);
    let mut cl = c.client(leader, Duration::from_secs(5)).await;
    // Removing a member that is down is allowed; wait until the leader sees it down.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cl.member_remove(victim_id).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "could not remove the isolated member: {e}\n{}",
                c.log_tails(40)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cl.put("after-removal", "x", None)
        .await
        .expect("the rest commit");
    assert!(
        c.members[victim].is_running(),
        "the victim stopped while still cut off"
    );
    c.proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.members[victim].is_running() {
        assert!(
            Instant::now() < deadline,
            "the removed member kept running after the network healed\n{}",
            c.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        c.full_log(victim)
            .contains("the member has been permanently removed from the cluster"),
        "{}",
        c.log_tails(40)
    );
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    c.wait_leader(&rest, Duration::from_secs(10)).await;
}
