//! 2. Five members.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn five_members_write_through_each_and_read_linearizably_from_each() {
    let mut c = start(5, &[]).await;
    wait_agreed_leader(&c, &[0, 1, 2, 3, 4], STEP).await;
    let eps = c.endpoints();
    // Writes through every member, one after the other; each is visible to a linearizable
    // read on every member right after it is acknowledged.
    for (i, ep) in eps.iter().enumerate() {
        let mut w = client(ep).await;
        let put = w
            .put(format!("five/{i}"), format!("v{i}"), None)
            .await
            .unwrap();
        let rev = put.header().unwrap().revision();
        for (j, ep2) in eps.iter().enumerate() {
            let r = client(ep2)
                .await
                .get(format!("five/{i}"), None)
                .await
                .unwrap();
            assert_eq!(r.kvs().len(), 1, "write {i} not visible on member {j}");
            assert_eq!(r.kvs()[0].value_str().unwrap(), format!("v{i}"));
            assert_eq!(r.kvs()[0].mod_revision(), rev, "member {j}");
            assert!(
                r.header().unwrap().revision() >= rev,
                "member {j} read is stale"
            );
        }
    }
    // Concurrent writes through all members.
    let mut tasks = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = client(&ep).await;
            for j in 0..20 {
                w.put(format!("five/c/{i}/{j}"), "x", None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for ep in &eps {
        let r = client(ep)
            .await
            .get(
                "five/c/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!(r.count(), 100, "linearizable count on {ep}");
    }
    let want = expected_members(&mut c).await;
    assert!(want.iter().all(|m| !m.3));
    for ep in &eps {
        wait_members(ep, &want, &c).await;
    }
    assert_converged(&eps, "five members").await;
}
