//! Attaching keys; revoke deletes them in one revision.

use super::*;

pub(super) async fn attach_and_revoke(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0xa, 30).await;
    grant(&mut c, 0xb, 30).await;
    let mut w = c
        .watch("l/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    t.push(show(&next(&mut w).await));
    let la = Some(PutOptions::new().with_lease(0xa));
    let lb = Some(PutOptions::new().with_lease(0xb));
    c.put("l/3", "x", la.clone()).await.unwrap(); // 2
    c.put("l/1", "x", la.clone()).await.unwrap(); // 3
    c.put("l/2", "x", la.clone()).await.unwrap(); // 4
    c.put("l/4", "x", lb.clone()).await.unwrap(); // 5
    c.put("l/4", "y", None).await.unwrap(); // 6: lease 0 detaches
    c.put("l/5", "x", lb.clone()).await.unwrap(); // 7
    c.put("l/6", "x", la.clone()).await.unwrap(); // 8
    c.put("l/6", "y", lb.clone()).await.unwrap(); // 9: moves to lease b
    for _ in 0..8 {
        next(&mut w).await;
    }
    let (ga, _, ka) = ttl(&mut c, 0xa).await;
    let (gb, _, kb) = ttl(&mut c, 0xb).await;
    t.push(format!("a: granted={ga} keys={ka:?}"));
    t.push(format!("b: granted={gb} keys={kb:?}"));
    let no_keys = c.lease_time_to_live(0xa, None).await.unwrap();
    t.push(format!("a without keys option: keys={:?}", no_keys.keys()));
    t.push(get_str(&mut c, "l/1").await);
    t.push(get_str(&mut c, "l/4").await);

    let r = c.lease_revoke(0xa).await.unwrap();
    t.push(format!("revoke a: rev={}", r.header().unwrap().revision()));
    t.push(show(&next(&mut w).await));
    let r = c.lease_revoke(0xb).await.unwrap();
    t.push(format!("revoke b: rev={}", r.header().unwrap().revision()));
    t.push(show(&next(&mut w).await));
    quiet(&mut w, Duration::from_millis(300)).await;
    let left: Vec<String> = c
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(kv_str)
        .collect();
    t.push(format!("left: {left:?}"));
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "a: granted=30 keys=[\"l/1\", \"l/2\", \"l/3\"]",
            "b: granted=30 keys=[\"l/5\", \"l/6\"]",
            "a without keys option: keys=[]",
            "l/1=x c3 m3 v1 la",
            "l/4=y c5 m6 v2 l0",
            "revoke a: rev=10",
            "id=0 rev=10 | DELETE l/1= c0 m10 v0 l0 | DELETE l/2= c0 m10 v0 l0 | DELETE l/3= c0 m10 v0 l0",
            "revoke b: rev=11",
            "id=0 rev=11 | DELETE l/5= c0 m11 v0 l0 | DELETE l/6= c0 m11 v0 l0",
            "left: [\"l/4=y c5 m6 v2 l0\"]",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_attach_detach_and_revoke_in_one_revision() {
    side_by_side(attach_and_revoke).await;
}
