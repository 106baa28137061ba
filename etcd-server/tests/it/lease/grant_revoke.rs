//! Grant, revoke and their errors.

use super::*;

pub(super) async fn grant_and_errors(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();

    let r = c
        .lease_grant(10, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap();
    t.push(format!(
        "given id: id={:x} ttl={} error={:?}",
        r.id(),
        r.ttl(),
        r.error()
    ));
    let r = c.lease_grant(10, None).await.unwrap();
    let generated = r.id();
    t.push(format!(
        "generated id: positive={} ttl={}",
        generated > 0,
        r.ttl()
    ));
    // Below the minimum (ceil(1.5 × 1 s election timeout) = 2 s) is raised to it.
    t.push(format!("ttl 1 -> {}", grant(&mut c, 0x1, 1).await));
    t.push(format!("ttl 0 -> {}", grant(&mut c, 0x2, 0).await));
    t.push(format!("ttl -5 -> {}", grant(&mut c, 0x3, -5).await));
    t.push(format!(
        "ttl max -> {}",
        grant(&mut c, 0x4, 9_000_000_000).await
    ));
    let e = c
        .lease_grant(9_000_000_001, Some(LeaseGrantOptions::new().with_id(0x5)))
        .await
        .unwrap_err();
    t.push(format!("ttl max+1: {}", err_str(&e)));
    let e = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap_err();
    t.push(format!("existing id: {}", err_str(&e)));
    let e = c.lease_revoke(0x999).await.unwrap_err();
    t.push(format!("revoke unknown: {}", err_str(&e)));
    let e = c
        .put("x", "1", Some(PutOptions::new().with_lease(0x999)))
        .await
        .unwrap_err();
    t.push(format!("put with unknown lease: {}", err_str(&e)));
    let r = c
        .lease_time_to_live(0x999, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    t.push(format!(
        "ttl unknown: id={:x} ttl={} granted={} keys={:?}",
        r.id(),
        r.ttl(),
        r.granted_ttl(),
        r.keys()
    ));
    // etcd-client turns the keep-alive reply with TTL 0 into an error.
    let e = c.lease_keep_alive(0x999).await.map(|_| ()).unwrap_err();
    t.push(format!("keep-alive unknown: {e}"));
    let ids: Vec<String> = lease_ids(&mut c)
        .await
        .into_iter()
        .map(|id| {
            if id == generated {
                "generated".to_owned()
            } else {
                format!("{id:x}")
            }
        })
        .collect();
    t.push(format!("leases: {ids:?}"));
    // Revoke, then the lease is gone everywhere.
    let rev = c
        .lease_revoke(0x1234)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    t.push(format!("revoke: rev={rev}"));
    let e = c.lease_revoke(0x1234).await.unwrap_err();
    t.push(format!("revoke again: {}", err_str(&e)));
    t.push(format!("ttl after revoke: {:?}", ttl(&mut c, 0x1234).await));
    assert_eq!(
        t,
        v(&[
            "given id: id=1234 ttl=10 error=\"\"",
            "generated id: positive=true ttl=10",
            "ttl 1 -> 2",
            "ttl 0 -> 2",
            "ttl -5 -> 2",
            "ttl max -> 9000000000",
            &format!("ttl max+1: OutOfRange: {TTL_TOO_LARGE}"),
            &format!("existing id: FailedPrecondition: {LEASE_EXISTS}"),
            &format!("revoke unknown: NotFound: {LEASE_NOT_FOUND}"),
            &format!("put with unknown lease: NotFound: {LEASE_NOT_FOUND}"),
            "ttl unknown: id=999 ttl=-1 granted=0 keys=[]",
            "keep-alive unknown: lease keep alive error: lease not found",
            "leases: [\"1\", \"2\", \"3\", \"4\", \"1234\", \"generated\"]",
            "revoke: rev=1",
            &format!("revoke again: NotFound: {LEASE_NOT_FOUND}"),
            "ttl after revoke: (0, -1, [])",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_grant_revoke_and_errors() {
    side_by_side(grant_and_errors).await;
}
