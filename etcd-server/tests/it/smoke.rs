//! Smoke test: the harness starts our server and the reference etcd, and both answer.

use crate::harness::{Kind, Proc, reference_etcd, require};

#[tokio::test(flavor = "multi_thread")]
async fn both_servers_start_and_answer() {
    let ours = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[]))
        .await
        .unwrap();
    let mut c = ours.client().await;
    c.put("k", "v", None).await.unwrap();
    let r = c.get("k", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"v");
    if require(reference_etcd(), "reference etcd").is_some() {
        let theirs = tokio::task::spawn_blocking(|| Proc::start(Kind::Reference, &[]))
            .await
            .unwrap();
        let mut c = theirs.client().await;
        c.put("k", "v", None).await.unwrap();
        assert_eq!(
            c.get("k", None).await.unwrap().header().unwrap().revision(),
            2
        );
    }
}
