//! Keep-alive and remaining TTL.

use super::*;

pub(super) async fn keep_alive(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0xc, 3).await;
    c.put("ka", "1", Some(PutOptions::new().with_lease(0xc)))
        .await
        .unwrap();
    // etcd reports the remaining TTL in whole seconds, rounded down.
    t.push(format!("just granted: {:?}", ttl(&mut c, 0xc).await));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    t.push(format!("after 1.3 s: {:?}", ttl(&mut c, 0xc).await));

    let (mut keeper, mut stream) = c.lease_keep_alive(0xc).await.unwrap();
    assert_eq!(keeper.id(), 0xc);
    // Renew every second for 4 s, longer than the TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(STEP, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        t.push(format!("keep-alive: id={:x} ttl={}", r.id(), r.ttl()));
    }
    t.push(format!("just renewed: {:?}", ttl(&mut c, 0xc).await));
    t.push(get_str(&mut c, "ka").await);
    // Keep-alive of a revoked lease: TTL 0 on the same stream.
    c.lease_revoke(0xc).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = tokio::time::timeout(STEP, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    t.push(format!(
        "keep-alive after revoke: id={:x} ttl={}",
        r.id(),
        r.ttl()
    ));
    assert_eq!(
        t,
        v(&[
            "just granted: (3, 2, [\"ka\"])",
            "after 1.3 s: (3, 1, [\"ka\"])",
            "keep-alive: id=c ttl=3",
            "keep-alive: id=c ttl=3",
            "keep-alive: id=c ttl=3",
            "keep-alive: id=c ttl=3",
            "just renewed: (3, 2, [\"ka\"])",
            "ka=1 c2 m2 v1 lc",
            "keep-alive after revoke: id=c ttl=0",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_keep_alive_renews_and_ttl() {
    side_by_side(keep_alive).await;
}
