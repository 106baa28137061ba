//! 5. Strict reconfiguration.

use super::*;

/// etcd 3.4.23 (observed): with 2 of 3 members down, MemberAdd of a voter *and of a learner*
/// fails at once with "etcdserver: unhealthy cluster" (the member must have been connected to
/// every voter for HealthInterval).
#[tokio::test(flavor = "multi_thread")]
async fn strict_reconfig_refuses_adding_a_member_without_quorum() {
    let mut c = start(3, &[]).await;
    wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    c.members[1].kill();
    c.members[2].kill();
    // Let the survivor's transport notice both peers are gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut s = client(&c.members[0].endpoint()).await;
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    // The check runs before anything is proposed, so the answer is immediate.
    expect_err(
        s.member_add([url.as_str()], None).await,
        UNHEALTHY,
        "MemberAdd of a voter with 2 of 3 members down",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    let learner_url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let r = s
        .member_add(
            [learner_url.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await;
    let learner_add = match &r {
        Err(e) if msg(e) == UNHEALTHY => None,
        other => Some(format!(
            "MemberAdd of a learner with 2 of 3 members down: expected {UNHEALTHY:?} at once (etcd 3.4.23), got {:?} after {:?}",
            other.as_ref().map(|_| "success").map_err(msg),
            started.elapsed()
        )),
    };

    // Nothing changed: once the others are back there are still 3 members, and with every
    // member started for HealthInterval the same request is accepted.
    blocking(|| {
        c.members[1].spawn_no_wait();
        c.members[2].spawn_no_wait();
        c.members[1].wait_ready(Duration::from_secs(30));
        c.members[2].wait_ready(Duration::from_secs(30));
    });
    let want = expected_members(&mut c).await;
    if learner_add.is_none() {
        assert_eq!(want.len(), 3);
        wait_members(&c.members[0].endpoint(), &want, &c).await;
    }
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let lc = client(&c.members[leader].endpoint()).await;
    let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], "add voter", || {
        let mut lc = lc.clone();
        let url = url.clone();
        async move { lc.member_add([url.as_str()], None).await }
    })
    .await
    .unwrap_or_else(|e| panic!("MemberAdd on a healthy cluster: {e}{}", logs(&c)));
    assert!(!added.member().unwrap().is_learner());
    // 3 of 4 voters started: still a quorum.
    lc.clone().put("sr/after-add", "x", None).await.unwrap();
    if let Some(problem) = learner_add {
        panic!(
            "{problem}; members now: {:?}{}",
            members(&c.members[leader].endpoint()).await,
            logs(&c)
        );
    }
}

/// etcd 3.4.23 (observed): with 1 of 3 members down, removing a healthy member fails with
/// "etcdserver: unhealthy cluster" (mayRemoveMember: the remaining *connected* voters would not
/// be a quorum), adding a voter fails the same way, and removing the dead member is allowed.
/// "not enough started members" is reserved for members that never published (started).
#[tokio::test(flavor = "multi_thread")]
async fn strict_reconfig_refuses_removing_a_healthy_member_but_allows_removing_a_dead_one() {
    let started = Instant::now();
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (dead, healthy) = (followers[0], followers[1]);
    let dead_id = member_id(&c.members[dead].endpoint()).await;
    let healthy_id = member_id(&c.members[healthy].endpoint()).await;
    let leader_id = member_id(&c.members[leader].endpoint()).await;
    // Every peer connection must have been up for HealthInterval, so the refusal below is
    // about the dead member and not about a young connection.
    let ready = started + HEALTH_INTERVAL + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;

    c.members[dead].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    let mut hc = client(&c.members[healthy].endpoint()).await;
    let mut wrong = Vec::new();
    check_err(
        &mut wrong,
        lc.member_remove(healthy_id).await,
        UNHEALTHY,
        "removing a healthy member with 1 of 3 down (via the leader)",
    );
    check_err(
        &mut wrong,
        hc.member_remove(healthy_id).await,
        UNHEALTHY,
        "removing a healthy member with 1 of 3 down (via itself)",
    );
    check_err(
        &mut wrong,
        lc.member_remove(leader_id).await,
        UNHEALTHY,
        "removing the leader with 1 of 3 down",
    );
    let url = format!("http://127.0.0.1:{}", free_port());
    check_err(
        &mut wrong,
        lc.member_add([url.as_str()], None).await,
        UNHEALTHY,
        "adding a voter with 1 of 3 down",
    );
    assert_eq!(
        members(&c.members[leader].endpoint()).await.len(),
        3,
        "a refused change changed the membership"
    );

    let r = lc
        .member_remove(dead_id)
        .await
        .unwrap_or_else(|e| panic!("removing the dead member: {e}{}", logs(&c)));
    assert_eq!(r.members().len(), 2);
    assert!(r.members().iter().all(|m| m.id() != dead_id));
    lc.put("sr/after-remove", "x", None).await.unwrap();
    hc.put("sr/after-remove-2", "y", None).await.unwrap();
    let want = expected_members(&mut c).await;
    assert_eq!(want.len(), 2);
    for i in [leader, healthy] {
        wait_members(&c.members[i].endpoint(), &want, &c).await;
    }
    assert_converged(
        &[c.members[leader].endpoint(), c.members[healthy].endpoint()],
        "after removing the dead member",
    )
    .await;
    assert!(
        wrong.is_empty(),
        "strict reconfiguration differs from etcd 3.4.23:\n  {}",
        wrong.join("\n  ")
    );
}

/// A member whose data dir was wiped must not come back as if nothing happened: it would vote
/// with an empty log. Restarted with `new` or `existing`, it refuses with etcd's "has already
/// been bootstrapped"; once removed, it refuses with the removed message; removed, wiped and
/// added again as a learner under the same name and peer URL, it catches up and is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn member_with_lost_data_refuses_to_start_until_removed_and_added_again() {
    let started = Instant::now();
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let lost = (0..3).find(|i| *i != leader).unwrap();
    let lost_ep = c.members[lost].endpoint();
    let lost_id = member_id(&lost_ep).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    for i in 0..50 {
        lc.put(format!("lost/{i:02}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let ready = started + HEALTH_INTERVAL + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;

    c.members[lost].kill();
    std::fs::remove_dir_all(c.members[lost].data_dir()).unwrap();
    let bootstrapped = format!("member {lost_id:x} has already been bootstrapped");
    for state in ["new", "existing"] {
        c.members[lost].initial_cluster_state = state.into();
        c.members[lost].spawn_no_wait();
        assert!(
            wait_exit(&mut c.members[lost], STEP).await,
            "a member with lost data started with {state}{}",
            logs(&c)
        );
        assert!(
            c.members[lost].log().contains(&bootstrapped),
            "restarted with {state}: no refusal in its log:\n{}",
            c.members[lost].log()
        );
    }
    // The rest of the cluster never noticed.
    lc.put("lost/during", "x", None).await.unwrap();

    // Removed: it refuses with the removed message, whatever its flags say.
    let r = lc
        .member_remove(lost_id)
        .await
        .unwrap_or_else(|e| panic!("removing the lost member: {e}{}", logs(&c)));
    assert_eq!(r.members().len(), 2);
    std::fs::remove_dir_all(c.members[lost].data_dir()).unwrap();
    c.members[lost].initial_cluster_state = "new".into();
    c.members[lost].spawn_no_wait();
    assert!(
        wait_exit(&mut c.members[lost], STEP).await,
        "a removed member started{}",
        logs(&c)
    );
    assert!(
        c.members[lost]
            .log()
            .contains("the member has been permanently removed from the cluster"),
        "{}",
        c.members[lost].log()
    );

    // Wiped and added again as a learner under the same peer URL: it joins and is promoted.
    std::fs::remove_dir_all(c.members[lost].data_dir()).unwrap();
    let peer_url = c.members[lost].advertise_peer_url.clone();
    let added = retry(STEP, &[UNHEALTHY], "add the learner again", || {
        let mut lc = lc.clone();
        let url = peer_url.clone();
        async move {
            lc.member_add(
                [url.as_str()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
        }
    })
    .await
    .unwrap_or_else(|e| panic!("add learner: {e}{}", logs(&c)));
    let new_id = added.member().unwrap().id();
    assert_ne!(new_id, lost_id, "a re-added member gets a new ID");
    c.members[lost].initial_cluster_state = "existing".into();
    c.members[lost].spawn_no_wait();
    wait_serializable(&lost_ep, "lost/during", "x", &c).await;
    retry(STEP, &[LEARNER_NOT_READY, UNHEALTHY], "promote", || {
        let mut lc = lc.clone();
        async move { lc.member_promote(new_id).await }
    })
    .await
    .unwrap_or_else(|e| panic!("promote: {e}{}", logs(&c)));
    assert_eq!(member_id(&lost_ep).await, new_id);
    let n = assert_converged(&c.endpoints(), "after replacing the lost member").await;
    assert!(n > 0);
    assert_eq!(dump(&lost_ep, "lost/", false).await.unwrap().len(), 51);
}
