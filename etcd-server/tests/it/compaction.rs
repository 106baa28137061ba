//! Auto-compaction in both modes, observed through the client API.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::harness::{Kind, Proc};

async fn compacted_below(client: &mut etcd_client::Client, rev: i64) -> bool {
    match client
        .get("k", Some(GetOptions::new().with_revision(rev)))
        .await
    {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            assert_eq!(
                s.message(),
                "etcdserver: mvcc: required revision has been compacted"
            );
            true
        }
        Ok(_) => false,
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_modes() {
    let table: [(&[&str], &str); 2] = [
        (
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "5",
                "--auto-compaction-check-interval-ms",
                "100",
            ],
            "revision",
        ),
        (
            &[
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "1s",
            ],
            "periodic",
        ),
    ];
    for (flags, mode) in table {
        let server = tokio::task::spawn_blocking(move || Proc::start(Kind::Ours, flags))
            .await
            .unwrap();
        let mut c = server.client().await;
        for i in 0..20 {
            c.put("k", format!("v{i}"), None).await.unwrap();
        }
        // Revision 21 is current. Wait for the compactor to act.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !compacted_below(&mut c, 2).await {
            assert!(
                Instant::now() < deadline,
                "{mode}: no auto-compaction happened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if mode == "revision" {
            // Retention 5 compacts up to 21 - 5 = 16 (an earlier check may have compacted less
            // while the puts were still running), and never beyond while nothing is written.
            while !compacted_below(&mut c, 15).await {
                assert!(
                    Instant::now() < deadline,
                    "revision mode never compacted up to 16"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let r = c
                .get("k", Some(GetOptions::new().with_revision(16)))
                .await
                .unwrap();
            assert_eq!(r.kvs()[0].value(), b"v14");
        }
    }
}
