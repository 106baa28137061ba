//! Lock.

use super::*;

pub(super) async fn lock(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0x100, 30).await;
    grant(&mut c, 0x200, 30).await;
    grant(&mut c, 0x400, 30).await;
    let lock = |c: &Client, lease: i64| {
        let mut c = c.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let r = c
                .lock("L", Some(LockOptions::new().with_lease(lease)))
                .await
                .unwrap();
            (
                esc(r.key()),
                r.header().unwrap().revision(),
                began.elapsed(),
            )
        })
    };

    let (key, rev, _) = lock(&c, 0x100).await.unwrap();
    t.push(format!("a locked: key={key} rev={rev}"));
    t.push(get_str(&mut c, "L/100").await);
    // Locking again with the same lease is a no-op.
    let (key, rev, _) = lock(&c, 0x100).await.unwrap();
    t.push(format!("a again: key={key} rev={rev}"));
    // b waits until a unlocks.
    let b = lock(&c, 0x200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("b waiting: {}", !b.is_finished()));
    let r = c.unlock("L/100").await.unwrap();
    t.push(format!(
        "a unlocked: rev={}",
        r.header().unwrap().revision()
    ));
    let (key, rev, _) = tokio::time::timeout(STEP, b).await.unwrap().unwrap();
    t.push(format!("b locked: key={key} rev={rev}"));
    t.push(get_str(&mut c, "L/100").await);
    c.unlock("L/200").await.unwrap();

    // c holds the lock on a 2 s lease that nobody keeps alive; d gets it when that expires.
    grant(&mut c, 0x300, 2).await;
    let (key, _, _) = lock(&c, 0x300).await.unwrap();
    t.push(format!("c locked: key={key}"));
    let d = lock(&c, 0x400);
    let (key, _, waited) = tokio::time::timeout(STEP, d).await.unwrap().unwrap();
    t.push(format!("d locked: key={key}"));
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{kind:?}: d waited {waited:?}"
    );
    t.push(get_str(&mut c, "L/300").await);
    let held: Vec<String> = c
        .get("L/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(kv_str)
        .collect();
    t.push(format!("held: {held:?}"));
    assert_eq!(
        t,
        v(&[
            "a locked: key=L/100 rev=2",
            "L/100= c2 m2 v1 l100",
            "a again: key=L/100 rev=2",
            "b waiting: true",
            "a unlocked: rev=4",
            "b locked: key=L/200 rev=4",
            "L/100: none",
            "c locked: key=L/300",
            "d locked: key=L/400",
            "L/300: none",
            "held: [\"L/400= c7 m7 v1 l400\"]",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_contention_unlock_and_lease_expiry() {
    side_by_side(lock).await;
}
