//! Scaling under load.

use super::*;

// ---------------------------------------------------------------------------------------------

/// Scales through `sizes` (starting at 1 and ending at 1) under a steady write load and
/// linearizable reads: HashKV agrees at every size, no acknowledged write is lost, reads are
/// answered throughout (retrying through leader changes), the removed members' directories
/// are gone, and a restarted runtime adopts the remaining member with all its data.
pub(super) async fn scale_under_load(base_ip: Ipv4Addr, sizes: &[i32]) {
    let setup = Setup::new(base_ip);
    setup.set_replicas(1);
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let step = Duration::from_secs(30);
    let first = rt.wait("1 member in sync", step, in_sync(1)).await;
    let cluster_id = first.status.cluster_id.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let load = write_load(setup.endpoint(0), stop.clone(), acked_count.clone());
    let reader = read_load(setup.endpoint(0), stop.clone(), acked_count.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let peak = sizes.iter().copied().max().unwrap_or(1);
    for &n in sizes {
        setup.set_replicas(n);
        let r = rt
            .wait(&format!("{n} members in sync"), step, in_sync(n as usize))
            .await;
        assert_eq!(
            r.status.cluster_id, cluster_id,
            "the same cluster throughout"
        );
        assert_hashes_agree(&setup, n).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load task");
    let (reads, longest) = reader.await.expect("reader task");
    assert!(
        acked.len() > 20,
        "the load ran: {} writes acknowledged",
        acked.len()
    );
    assert!(reads > 20, "linearizable reads answered: {reads}");
    assert!(
        longest < Duration::from_secs(10),
        "linearizable reads went unanswered for {longest:?}"
    );
    for i in 1..peak {
        assert!(
            !setup.member_dir(i).exists(),
            "local-{i}'s directory is deleted after its removal"
        );
    }
    let present = assert_no_acked_write_lost(&setup, &acked).await;

    // Restart: the runtime adopts the member and its data, with the same configuration
    // (the same cluster token: nothing to roll out).
    let config = std::fs::read_to_string(setup.member_dir(0).join("etcd.yaml")).expect("config");
    rt.shutdown().await;
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let again = rt.wait("1 adopted member in sync", step, in_sync(1)).await;
    assert_eq!(
        std::fs::read_to_string(setup.member_dir(0).join("etcd.yaml")).expect("config"),
        config,
        "the adopted member keeps its configuration"
    );
    assert_eq!(
        again.status.cluster_id, cluster_id,
        "the same cluster after a restart"
    );
    let count = client(&setup.endpoint(0))
        .await
        .get(
            "load/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count")
        .count();
    assert_eq!(
        count as usize,
        present.len(),
        "every key survives the restart"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_one_two_one_under_load_and_adopts_its_state() {
    scale_under_load(Ipv4Addr::new(127, 0, 0, 40), &[2, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_one_three_five_three_one_under_load_with_linearizable_reads() {
    scale_under_load(Ipv4Addr::new(127, 0, 0, 60), &[3, 5, 3, 1]).await;
}
