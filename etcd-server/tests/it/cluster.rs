//! Multi-member basics: a 3-member cluster takes writes on every member and serves
//! linearizable reads from every member.

use std::time::Duration;

use crate::harness::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn three_members_write_and_read_everywhere() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start(3, &[]))
        .await
        .unwrap();
    cluster.wait_leader(Duration::from_secs(10)).await;
    let eps = cluster.endpoints();
    for (i, ep) in eps.iter().enumerate() {
        let mut c = etcd_client::Client::connect([ep.clone()], None)
            .await
            .unwrap();
        c.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
    }
    for ep in &eps {
        let mut c = etcd_client::Client::connect([ep.clone()], None)
            .await
            .unwrap();
        for i in 0..eps.len() {
            let r = c.get(format!("k{i}"), None).await.unwrap();
            assert_eq!(
                r.kvs()[0].value_str().unwrap(),
                format!("v{i}"),
                "linearizable read on {ep}"
            );
        }
        let members = c.member_list().await.unwrap();
        assert_eq!(members.members().len(), 3);
    }
    let mut hashes = Vec::new();
    for ep in &eps {
        let mut c = etcd_client::Client::connect([ep.clone()], None)
            .await
            .unwrap();
        hashes.push(c.hash_kv(0).await.unwrap().hash());
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV differs: {hashes:?}"
    );
}
