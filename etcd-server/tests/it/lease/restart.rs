//! Restart.

use super::*;

pub(super) async fn restart(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    // Stay clear of the first moments after startup (see lease_clock_right_after_startup).
    tokio::time::sleep(Duration::from_secs(1)).await;
    grant(&mut c, 0x10, 10).await;
    grant(&mut c, 0x11, 2).await;
    c.put("r/1", "x", Some(PutOptions::new().with_lease(0x10)))
        .await
        .unwrap(); // 2
    c.put("r/2", "x", Some(PutOptions::new().with_lease(0x11)))
        .await
        .unwrap(); // 3
    // Run lease 0x10 down to about 7 s left (0x11 expires meanwhile), then restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, before, _) = ttl(&mut c, 0x10).await;
    assert!(
        (6..=7).contains(&before),
        "{kind:?}: remaining before restart {before}"
    );
    t.push(format!(
        "before restart: leases {:?}, {}",
        lease_ids(&mut c).await,
        get_str(&mut c, "r/2").await
    ));
    drop(c);
    let p = tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.stop();
        p.spawn();
        p
    })
    .await
    .unwrap();
    let mut c = p.client().await;
    // The remaining TTL is refreshed: a full TTL again (etcd also adds the election timeout).
    let (granted, left, keys) = ttl(&mut c, 0x10).await;
    eprintln!("{kind:?}: remaining TTL {before} s before the restart, {left} s after");
    assert!(
        (9..=11).contains(&left),
        "{kind:?}: remaining after restart {left}, expected about 10"
    );
    t.push(format!("after restart: granted={granted} keys={keys:?}"));
    t.push(format!("leases {:?}", lease_ids(&mut c).await));
    t.push(get_str(&mut c, "r/1").await);
    // It still works as a lease: keep-alive, then revoke deletes its key.
    let (keeper, _stream) = c.lease_keep_alive(0x10).await.unwrap();
    assert_eq!(keeper.id(), 0x10);
    let rev = c
        .lease_revoke(0x10)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    t.push(format!(
        "revoke: rev={rev} {}",
        get_str(&mut c, "r/1").await
    ));
    assert_eq!(
        t,
        v(&[
            "before restart: leases [16], r/2: none",
            "after restart: granted=10 keys=[\"r/1\"]",
            "leases [16]",
            "r/1=x c2 m2 v1 l10",
            "revoke: rev=5 r/1: none",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_survives_restart_with_refreshed_ttl() {
    side_by_side(restart).await;
}
