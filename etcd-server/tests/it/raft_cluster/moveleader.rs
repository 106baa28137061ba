//! 6. MoveLeader.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn move_leader_transfers_to_the_chosen_follower() {
    let c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let target = (leader + 2) % 3;
    let target_id = member_id(&c.members[target].endpoint()).await;
    let mut lc = client(&c.members[leader].endpoint()).await;
    lc.put("ml/before", "1", None).await.unwrap();

    lc.move_leader(target_id)
        .await
        .unwrap_or_else(|e| panic!("MoveLeader: {e}{}", logs(&c)));
    // The response comes once the transfer is done: the target leads, everyone agrees.
    let (_, lead, _) = status(&c.members[target].endpoint()).await.unwrap();
    assert_eq!(
        lead, target_id,
        "target does not lead right after MoveLeader returned"
    );
    assert_eq!(wait_agreed_leader(&c, &[0, 1, 2], STEP).await, target);

    // The old leader is now a follower.
    expect_err(
        lc.move_leader(target_id).await,
        NOT_LEADER,
        "MoveLeader sent to a follower",
    );
    let mut tc = client(&c.members[target].endpoint()).await;
    expect_err(
        tc.move_leader(0xdead_beef).await,
        BAD_TRANSFEREE,
        "MoveLeader to an unknown member",
    );
    // Transferring to itself is a no-op.
    tc.move_leader(target_id).await.unwrap();
    assert_eq!(wait_agreed_leader(&c, &[0, 1, 2], STEP).await, target);

    for ep in c.endpoints() {
        client(&ep)
            .await
            .put(format!("ml/after/{ep}"), "x", None)
            .await
            .unwrap();
    }
    assert_converged(&c.endpoints(), "after MoveLeader").await;
}
