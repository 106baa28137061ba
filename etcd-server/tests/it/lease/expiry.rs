//! Expiry.

use super::*;

pub(super) async fn expiry(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut w = c
        .watch("e/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    t.push(show(&next(&mut w).await));
    let granted = Instant::now();
    grant(&mut c, 0xe, 2).await;
    grant(&mut c, 0xf, 2).await;
    let le = Some(PutOptions::new().with_lease(0xe));
    let lf = Some(PutOptions::new().with_lease(0xf));
    c.put("e/2", "x", le.clone()).await.unwrap(); // 2
    c.put("e/1", "x", le).await.unwrap(); // 3
    c.put("e/3", "x", lf.clone()).await.unwrap(); // 4
    c.put("e/4", "x", lf).await.unwrap(); // 5
    c.put("e/5", "x", None).await.unwrap(); // 6
    for _ in 0..5 {
        next(&mut w).await;
    }
    // Each lease's keys go in one revision of their own (7 and 8, in either order).
    let mut expired = vec![next(&mut w).await, next(&mut w).await];
    let took = granted.elapsed();
    expired.sort_by_key(|r| r.events()[0].kv().unwrap().key().to_vec());
    let revs: Vec<i64> = expired
        .iter()
        .map(|r| r.header().unwrap().revision())
        .collect();
    assert!(
        revs == [7, 8] || revs == [8, 7],
        "{kind:?}: revisions {revs:?}"
    );
    for r in &expired {
        let rev = r.header().unwrap().revision();
        let s = show(r)
            .replace(&format!("rev={rev}"), "rev=R")
            .replace(&format!("m{rev}"), "mR");
        t.push(s);
    }
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{kind:?}: leases expired after {took:?}"
    );
    quiet(&mut w, Duration::from_millis(300)).await;
    t.push(format!("e after expiry: {:?}", ttl(&mut c, 0xe).await));
    t.push(format!("leases: {:?}", lease_ids(&mut c).await));
    t.push(get_str(&mut c, "e/5").await);
    let e = c
        .put("e/6", "x", Some(PutOptions::new().with_lease(0xe)))
        .await
        .unwrap_err();
    t.push(format!("put with expired lease: {}", err_str(&e)));
    assert_eq!(
        t,
        v(&[
            "id=0 rev=1 created",
            "id=0 rev=R | DELETE e/1= c0 mR v0 l0 | DELETE e/2= c0 mR v0 l0",
            "id=0 rev=R | DELETE e/3= c0 mR v0 l0 | DELETE e/4= c0 mR v0 l0",
            "e after expiry: (0, -1, [])",
            "leases: []",
            "e/5=x c6 m6 v1 l0",
            &format!("put with expired lease: NotFound: {LEASE_NOT_FOUND}"),
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_expiry_deletes_keys_one_revision_per_lease() {
    side_by_side(expiry).await;
}
