//! 1. Leader failure.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn leader_failure_elects_new_leader_keeps_acked_writes_and_old_leader_rejoins() {
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // A writer through every member, acknowledged writes recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            spawn_writer(
                c.members[i].endpoint(),
                format!("lf/m{i}/"),
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    wait_acked(&acked, 60, "before the kill").await;

    c.members[leader].kill();
    let killed_at = Instant::now();
    let new_leader = wait_agreed_leader(&c, &survivors, STEP).await;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // Randomized election timeout is in [1, 2) election timeouts, plus a pre-vote round.
    assert!(
        failover < ELECTION * 8,
        "failover took {failover:?}{}",
        logs(&c)
    );

    let n = acked.lock().unwrap().len();
    wait_acked(&acked, n + 60, "after failover").await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<(String, String)> = acked.lock().unwrap().clone();
    for &i in &survivors {
        assert_has_acked(
            &c.members[i].endpoint(),
            "lf/",
            &acked,
            "survivor after leader kill",
        )
        .await;
    }

    // The old leader rejoins and catches up.
    blocking(|| c.members[leader].spawn());
    let mut k = client(&c.members[leader].endpoint()).await;
    k.put("lf/after-rejoin", "x", None).await.unwrap();
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    assert_converged(&c.endpoints(), "after old leader rejoined").await;
    assert_has_acked(
        &c.members[leader].endpoint(),
        "lf/",
        &acked,
        "rejoined old leader",
    )
    .await;
    let on_old = dump(&c.members[leader].endpoint(), "lf/", true)
        .await
        .unwrap();
    let on_new = dump(&c.members[new_leader].endpoint(), "lf/", true)
        .await
        .unwrap();
    assert_eq!(on_old, on_new, "rejoined member's data differs");
}
