//! Right after startup.

use super::*;

pub(super) async fn right_after_startup(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    // As soon as the server serves, every lease call works...
    let r = c.lease_time_to_live(0x999, None).await;
    t.push(format!(
        "ttl unknown: {}",
        r.map_or_else(|e| err_str(&e), |r| format!("ttl={}", r.ttl()))
    ));
    let granted = Instant::now();
    t.push(format!("grant: ttl={}", grant(&mut c, 0x1, 5).await));
    grant(&mut c, 0x2, 30).await;
    let r = c.lease_keep_alive(0x2).await;
    t.push(format!(
        "keep-alive: {}",
        r.map_or_else(|e| e.to_string(), |(k, _)| format!("id={:x}", k.id()))
    ));
    let r = c.lease_time_to_live(0x2, None).await;
    t.push(format!(
        "ttl: {}",
        r.map_or_else(|e| err_str(&e), |r| format!("granted={}", r.granted_ttl()))
    ));
    // ...and a lease's clock starts at its grant: 5 s later it is gone (etcd checks for expired
    // leases every 500 ms).
    loop {
        let (_, left, _) = ttl(&mut c, 0x1).await;
        if left == -1 {
            break;
        }
        let since = granted.elapsed();
        assert!(
            since < Duration::from_millis(5800),
            "{kind:?}: a 5 s lease granted right after startup still has {left} s left after {since:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = granted.elapsed();
    assert!(
        since > Duration::from_millis(4900),
        "{kind:?}: a 5 s lease expired after {since:?}"
    );
    t.push("expired on time".to_owned());
    assert_eq!(
        t,
        v(&[
            "ttl unknown: ttl=-1",
            "grant: ttl=5",
            "keep-alive: id=2",
            "ttl: granted=30",
            "expired on time"
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_clock_right_after_startup() {
    side_by_side(right_after_startup).await;
}
