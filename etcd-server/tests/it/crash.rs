//! Durability: every acknowledged write survives SIGKILL and restart, with its revision, and
//! the revision history has no gaps or repeats, also while the WAL writes into a segment of
//! zeros prepared in advance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;

use crate::harness::{Kind, Proc};

const WRITERS: usize = 16;
/// The size of a prepared WAL segment (`raft::wal::SEGMENT_BYTES`).
const SEGMENT_BYTES: u64 = 64 << 20;

/// Whether the member's WAL is writing into a prepared segment (one of full size).
fn writes_prepared_segment(server: &Proc) -> bool {
    let dir = server.data_dir().join("member").join("wal");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().ends_with(".wal")
                && e.metadata().is_ok_and(|m| m.len() == SEGMENT_BYTES)
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let mut server = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[]))
        .await
        .unwrap();
    // key -> revision the server acknowledged.
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    for round in 0..3 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let mut client = server.client().await;
            let acked = acked.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                    let key = format!("r{round}/w{w:02}/{i:06}");
                    // 4 KiB values: the WAL passes its first MiB quickly, so a segment is
                    // prepared and later rounds are killed while writing into it.
                    let value = format!("v{i}-{}", "x".repeat(4096));
                    match client.put(key.clone(), value, None).await {
                        Ok(resp) => {
                            let rev = resp.header().unwrap().revision();
                            acked.lock().unwrap().insert(key, rev);
                        }
                        Err(_) => break, // the server died under us
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Round 0 runs until the WAL has moved into a prepared segment (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while round == 0
            && !writes_prepared_segment(&server)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            writes_prepared_segment(&server),
            "round {round}: the WAL never moved into a prepared segment"
        );
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        server = tokio::task::spawn_blocking(move || {
            server.spawn();
            server
        })
        .await
        .unwrap();
        let mut client = server.client().await;
        let all = client
            .get("r", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .unwrap();
        let current = all.header().unwrap().revision();
        let stored: BTreeMap<String, i64> = all
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_owned(), kv.mod_revision()))
            .collect();
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() > WRITERS,
            "round {round}: too few writes acknowledged ({})",
            acked.len()
        );
        for (k, rev) in &acked {
            assert_eq!(
                stored.get(k),
                Some(rev),
                "round {round}: acknowledged write {k}@{rev} lost or changed"
            );
        }
        // Each key was put once, so the revisions 2..=current are exactly the stored keys'.
        let mut revs: Vec<i64> = stored.values().copied().collect();
        revs.sort_unstable();
        let expected: Vec<i64> = (2..=current).collect();
        assert_eq!(
            revs, expected,
            "round {round}: revision history has gaps or repeats"
        );
    }
}
