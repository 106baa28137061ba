//! 4. Membership changes.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn learner_joins_by_snapshot_is_promoted_and_another_member_is_removed() {
    let extra = ["--snapshot-count", "50"];
    let mut c = start(3, &extra).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let leader_ep = c.members[leader].endpoint();
    let mut lc = client(&leader_ep).await;

    // Enough writes that every member compacts its Raft log.
    for i in 0..300 {
        lc.put(format!("mc/{:03}", i % 200), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + STEP;
    while !c.members[leader].log().contains("compacted raft log") {
        assert!(
            Instant::now() < deadline,
            "leader never compacted its raft log{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = dump(&leader_ep, "mc/", false).await.unwrap();
    assert_eq!(before.len(), 200);

    // Errors first: promote a voter, remove an unknown member.
    let voter_id = member_id(&c.members[(leader + 1) % 3].endpoint()).await;
    expect_err(
        lc.member_promote(voter_id).await,
        NOT_A_LEARNER,
        "promote a voter",
    );
    expect_err(
        lc.member_remove(0x1234_5678).await,
        MEMBER_NOT_FOUND,
        "remove an unknown member",
    );

    // Add a learner. etcd 3.4.23 refuses any MemberAdd (learners included) with "unhealthy
    // cluster" until this member has been connected to every voter for HealthInterval
    // (observed), so retry that.
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], "add learner", || {
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
    let new = added.member().unwrap();
    let new_id = new.id();
    assert!(new.is_learner());
    assert_eq!(new.peer_urls(), std::slice::from_ref(&peer_url));
    assert!(
        new.name().is_empty() && new.client_urls().is_empty(),
        "an unstarted member has no name or client URLs"
    );
    assert_eq!(added.member_list().len(), 4);
    // The cluster keeps working with an unstarted learner.
    lc.put("mc/after-add", "1", None).await.unwrap();

    let spec = join_spec(
        &c,
        "m3",
        &peer_url,
        initial_cluster_with(&c, "m3", &peer_url),
        &extra,
    );
    c.members.push(Proc::launch(Kind::Ours, spec));
    let learner_ep = c.members[3].endpoint();
    wait_serializable(&learner_ep, "mc/after-add", "1", &c).await;
    // The data is readable as soon as the backend is swapped in; the log line follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.members[3]
        .log()
        .contains("installed snapshot from leader")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        c.members[3]
            .log()
            .contains("installed snapshot from leader"),
        "learner did not catch up by snapshot{}",
        logs(&c)
    );
    let on_learner = dump(&learner_ep, "mc/", true).await.unwrap();
    let on_leader = dump(&leader_ep, "mc/", false).await.unwrap();
    assert_eq!(
        on_learner, on_leader,
        "learner's data differs from the leader's"
    );
    let (lid, _, is_learner) = status(&learner_ep).await.unwrap();
    assert_eq!(lid, new_id);
    assert!(is_learner, "Status on the learner must say is_learner");

    // A learner refuses writes and linearizable reads.
    let mut learner = client(&learner_ep).await;
    expect_err(
        learner.get("mc/000", None).await,
        NOT_LEARNER_RPC,
        "linearizable read on a learner",
    );
    expect_err(
        learner.put("mc/x", "x", None).await,
        NOT_LEARNER_RPC,
        "write on a learner",
    );

    // Promote it through the leader (retrying while it is still catching up). Our server also
    // refuses with "unhealthy cluster" while a voter connection is younger than HealthInterval,
    // which etcd does not do; `promote_right_after_a_voter_restart_succeeds` covers that.
    let promoted = retry(
        HEALTH_INTERVAL + STEP,
        &[LEARNER_NOT_READY, UNHEALTHY],
        "promote",
        || {
            let mut lc = lc.clone();
            async move { lc.member_promote(new_id).await }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("promote: {e}{}", logs(&c)));
    assert!(
        promoted.members().iter().all(|m| !m.is_learner()),
        "{:?}",
        promoted.members()
    );
    // Now a voter: serves linearizable reads and writes; publishes its name and client URL.
    let deadline = Instant::now() + STEP;
    loop {
        match learner.put("mc/via-new", "n", None).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "write on the promoted member: {e}{}",
                logs(&c)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        learner.get("mc/via-new", None).await.unwrap().kvs()[0].value(),
        b"n"
    );
    let want = expected_members(&mut c).await;
    assert_eq!(want.len(), 4);
    for ep in c.endpoints() {
        wait_members(&ep, &want, &c).await;
    }
    assert_converged(&c.endpoints(), "after promotion").await;

    // Remove another member (a follower from the original three).
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_id = member_id(&c.members[victim].endpoint()).await;
    // The promoted member's connection may be younger than HealthInterval.
    let removed = retry(
        HEALTH_INTERVAL + STEP,
        &[UNHEALTHY, NOT_ENOUGH_STARTED],
        "remove",
        || {
            let mut lc = lc.clone();
            async move { lc.member_remove(victim_id).await }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("remove m{victim}: {e}{}", logs(&c)));
    assert_eq!(removed.members().len(), 3);
    assert!(removed.members().iter().all(|m| m.id() != victim_id));
    assert!(
        wait_exit(&mut c.members[victim], Duration::from_secs(10)).await,
        "removed member m{victim} is still running{}",
        logs(&c)
    );
    let remaining: Vec<String> = (0..4)
        .filter(|i| *i != victim)
        .map(|i| c.members[i].endpoint())
        .collect();
    lc.put("mc/after-remove", "r", None).await.unwrap();
    for ep in &remaining {
        client(ep)
            .await
            .put(format!("mc/after-remove/{ep}"), "r", None)
            .await
            .unwrap_or_else(|e| panic!("write on {ep}: {e}"));
    }
    let want = expected_members(&mut c).await;
    assert_eq!(want.len(), 3);
    for ep in &remaining {
        wait_members(ep, &want, &c).await;
    }
    assert_converged(&remaining, "after removal").await;
}

/// A learner publishes its name and client URLs like any member, and serves only Status and
/// serializable reads: etcd 3.4.23's gRPC interceptor rejects every other RPC on a learner
/// (observed: HashKV, MemberList, Alarm, LeaseGrant, MemberPromote, linearizable Range and Put
/// all fail with "etcdserver: rpc not supported for learner"). MoveLeader to a learner is a bad
/// transferee (observed).
#[tokio::test(flavor = "multi_thread")]
async fn learner_publishes_its_attributes_and_serves_only_status_and_serializable_reads() {
    let mut c = start(1, &[]).await;
    let ep0 = c.members[0].endpoint();
    let mut lc = client(&ep0).await;
    lc.put("ln/k", "v", None).await.unwrap();
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let added = lc
        .member_add(
            [peer_url.as_str()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let new_id = added.member().unwrap().id();
    let spec = join_spec(
        &c,
        "ln1",
        &peer_url,
        initial_cluster_with(&c, "ln1", &peer_url),
        &[],
    );
    c.members.push(Proc::launch(Kind::Ours, spec));
    let learner_ep = c.members[1].endpoint();
    wait_serializable(&learner_ep, "ln/k", "v", &c).await;

    expect_err(
        lc.move_leader(new_id).await,
        BAD_TRANSFEREE,
        "MoveLeader to a learner",
    );

    // etcd 3.4.23 (observed): `member list` on the leader shows the running learner as
    // "started, ln1, <peer>, <client>, true".
    let want = vec![
        (
            member_id(&ep0).await,
            "m0".to_owned(),
            vec![c.members[0].client_url.clone()],
            false,
        ),
        (
            new_id,
            "ln1".to_owned(),
            vec![c.members[1].client_url.clone()],
            true,
        ),
    ];
    wait_members(&ep0, &want, &c).await;

    let mut l = client(&learner_ep).await;
    assert!(l.status().await.unwrap().is_learner());
    let r = l
        .get("ln/k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"v");
    let mut wrong = Vec::new();
    check_err(
        &mut wrong,
        l.get("ln/k", None).await,
        NOT_LEARNER_RPC,
        "linearizable Range on a learner",
    );
    check_err(
        &mut wrong,
        l.put("ln/k", "w", None).await,
        NOT_LEARNER_RPC,
        "Put on a learner",
    );
    check_err(
        &mut wrong,
        l.lease_grant(10, None).await,
        NOT_LEARNER_RPC,
        "LeaseGrant on a learner",
    );
    check_err(
        &mut wrong,
        l.member_promote(new_id).await,
        NOT_LEARNER_RPC,
        "MemberPromote sent to the learner",
    );
    check_err(
        &mut wrong,
        l.hash_kv(0).await,
        NOT_LEARNER_RPC,
        "HashKV on a learner",
    );
    check_err(
        &mut wrong,
        l.member_list().await,
        NOT_LEARNER_RPC,
        "MemberList on a learner",
    );
    check_err(
        &mut wrong,
        l.alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await,
        NOT_LEARNER_RPC,
        "Alarm on a learner",
    );
    assert!(
        wrong.is_empty(),
        "learner RPC gating differs from etcd 3.4.23:\n  {}",
        wrong.join("\n  ")
    );
}

/// etcd checks a promotion against *started* members (those that published their attributes),
/// not against connection age, so a learner can be promoted right after a voter restarts
/// (observed on etcd 3.4.23: `member promote` succeeds 1.5 s after SIGKILL + restart of a
/// follower). Its strict check fails with "not enough started members", never "unhealthy".
#[tokio::test(flavor = "multi_thread")]
async fn promote_right_after_a_voter_restart_succeeds() {
    let started = Instant::now();
    let mut c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    lc.put("pr/k", "v", None).await.unwrap();
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], "add learner", || {
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
    .unwrap();
    let new_id = added.member().unwrap().id();
    let spec = join_spec(
        &c,
        "m3",
        &peer_url,
        initial_cluster_with(&c, "m3", &peer_url),
        &[],
    );
    c.members.push(Proc::launch(Kind::Ours, spec));
    wait_serializable(&c.members[3].endpoint(), "pr/k", "v", &c).await;

    // Restart a follower voter once every connection is older than HealthInterval; it is back
    // (serving linearizable reads) before the promotion.
    let ready = started + HEALTH_INTERVAL + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;
    let follower = (leader + 1) % 3;
    c.members[follower].kill();
    blocking(|| c.members[follower].spawn());
    let r = retry(STEP, &[LEARNER_NOT_READY], "promote", || {
        let mut lc = lc.clone();
        async move { lc.member_promote(new_id).await }
    })
    .await;
    match r {
        Ok(r) => assert!(r.members().iter().all(|m| !m.is_learner())),
        Err(e) => panic!(
            "promote right after a voter restart: {e} (etcd 3.4.23 promotes here){}",
            logs(&c)
        ),
    }
}
