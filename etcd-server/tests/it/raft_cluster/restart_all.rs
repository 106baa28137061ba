//! 3. Restart every member after SIGKILL.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn all_members_sigkilled_and_restarted_lose_no_acknowledged_write() {
    let mut c = start(3, &[]).await;
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            spawn_writer(
                c.members[i].endpoint(),
                format!("ra/m{i}/"),
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    wait_acked(&acked, 150, "before the kill").await;
    // SIGKILL every member while writes are in flight.
    for m in c.members.iter_mut() {
        m.kill();
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<(String, String)> = acked.lock().unwrap().clone();
    blocking(|| {
        for m in c.members.iter_mut() {
            m.spawn_no_wait();
        }
        for m in c.members.iter_mut() {
            m.wait_ready(Duration::from_secs(30));
        }
    });
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    for m in &c.members {
        assert_has_acked(
            &m.endpoint(),
            "ra/",
            &acked,
            "after restarting every member",
        )
        .await;
    }
    client(&c.members[0].endpoint())
        .await
        .put("ra/after", "x", None)
        .await
        .unwrap();
    assert_converged(&c.endpoints(), "after restarting every member").await;
}

/// The in-memory Raft log keeps only the last ~10,000 applied entries (more are durable in
/// the backend), whatever `--snapshot-count` says: a follower that fell further behind catches
/// up by snapshot, and ends with the same data.
#[tokio::test(flavor = "multi_thread")]
async fn follower_behind_the_trimmed_in_memory_log_catches_up_by_snapshot() {
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let behind = (leader + 1) % 3;
    let ep = c.members[leader].endpoint();
    blocking(|| c.members[behind].stop());
    // 25,000 entries: past LOG_KEEP + LOG_TRIM_STEP (20,000), far below --snapshot-count.
    let writers: Vec<_> = (0..50)
        .map(|w| {
            let ep = ep.clone();
            tokio::spawn(async move {
                let mut cl = client(&ep).await;
                for i in 0..500 {
                    cl.put(format!("trim/{w:02}/{i:03}"), "v", None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    blocking(|| {
        c.members[behind].spawn_no_wait();
        c.members[behind].wait_ready(Duration::from_secs(30));
    });
    assert_converged(&c.endpoints(), "after the follower caught up").await;
    assert!(
        c.members[behind]
            .log()
            .contains("installed snapshot from leader"),
        "the follower caught up without a snapshot, so the leader kept the entries in memory{}",
        logs(&c)
    );
    let got = dump(&c.members[behind].endpoint(), "trim/", true)
        .await
        .unwrap();
    assert_eq!(got.len(), 25_000);
}
