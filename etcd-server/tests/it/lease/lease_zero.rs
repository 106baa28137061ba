//! Lock and Campaign without a lease.

use super::*;

/// The lease behind a lock or leader key, as a transcript line: its granted TTL (lease IDs
/// are generated and differ between servers).
pub(super) async fn lease_line(c: &mut Client, what: &str, lease: i64) -> String {
    let r = c.lease_time_to_live(lease, None).await.unwrap();
    format!(
        "{what}: lease {} granted ttl {}",
        if lease == 0 { "none" } else { "own" },
        r.granted_ttl()
    )
}

/// `lease: 0` is "no lease given": each caller gets its own session lease (60 s, as
/// clientv3's `concurrency.NewSession`) and its own key, so a second caller waits for the
/// first instead of both holding the lock or the leadership at once.
pub(super) async fn lease_zero(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let lock = |c: &Client| {
        let mut c = c.clone();
        tokio::spawn(async move { c.lock("Z", None).await.unwrap().key().to_vec() })
    };
    let a = tokio::time::timeout(STEP, lock(&c)).await.unwrap().unwrap();
    let a_lease = c.get(a.clone(), None).await.unwrap().kvs()[0].lease();
    t.push(lease_line(&mut c, "a locked", a_lease).await);
    let b = lock(&c);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("b waiting: {}", !b.is_finished()));
    c.unlock(a.clone()).await.unwrap();
    let b = tokio::time::timeout(STEP, b).await.unwrap().unwrap();
    t.push(format!("b locked: own key {}", a != b));
    let b_lease = c.get(b.clone(), None).await.unwrap().kvs()[0].lease();
    t.push(lease_line(&mut c, "b locked", b_lease).await);
    t.push(format!("a and b leases differ: {}", a_lease != b_lease));
    c.unlock(b).await.unwrap();

    let campaign = |c: &Client, value: &'static str| {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.campaign("Y", value, 0)
                .await
                .unwrap()
                .leader()
                .unwrap()
                .clone()
        })
    };
    let x = tokio::time::timeout(STEP, campaign(&c, "x"))
        .await
        .unwrap()
        .unwrap();
    t.push(lease_line(&mut c, "x leads", x.lease()).await);
    let y = campaign(&c, "y");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("y waiting: {}", !y.is_finished()));
    c.resign(Some(ResignOptions::new().with_leader(x.clone())))
        .await
        .unwrap();
    let y = tokio::time::timeout(STEP, y).await.unwrap().unwrap();
    t.push(format!(
        "y leads: own key {}, own lease {}",
        y.key() != x.key(),
        y.lease() != x.lease()
    ));
    assert_eq!(
        t,
        v(&[
            "a locked: lease own granted ttl 60",
            "b waiting: true",
            "b locked: own key true",
            "b locked: lease own granted ttl 60",
            "a and b leases differ: true",
            "x leads: lease own granted ttl 60",
            "y waiting: true",
            "y leads: own key true, own lease true",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_campaign_without_a_lease_get_a_session_each() {
    side_by_side(lease_zero).await;
}
