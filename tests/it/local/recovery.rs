//! Quorum-loss recovery in the local runtime: a member paused (its quorum intact) changes
//! nothing; two of three members killed with their data deleted is a lost quorum, which waits
//! for the approval, then comes back at three members with every acknowledged write.

use super::lifecycle::{pid_of, signal};
use super::*;

/// The cluster file with `spec.recovery` and, when given, the approval annotation.
fn write_recovery_spec(setup: &Setup, recovery: &str, approve: Option<&str>) {
    let annotations = approve
        .map(|uid| format!("  annotations:\n    etcd.rustops.dev/approve-recovery: \"{uid}\"\n"))
        .unwrap_or_default();
    let yaml = format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: local\n\
         {annotations}spec:\n  replicas: 3\n  server:\n    heartbeatIntervalMs: 50\n    \
         electionTimeoutMs: 500\n  recovery:\n{recovery}"
    );
    let tmp = setup.spec.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write spec");
    std::fs::rename(&tmp, &setup.spec).expect("rename spec");
}

fn recoveries(r: &Report) -> usize {
    r.changes
        .iter()
        .filter(|c| matches!(c, Change::QuorumRecovery { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_waits_for_approval_then_comes_back_with_every_write() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 110));
    write_recovery_spec(&setup, "    quorumLossAfter: 2s\n", None);
    let mut rt = Runtime::start(setup.options(Duration::from_millis(500)));
    rt.wait("3 members in sync", Duration::from_secs(30), in_sync(3))
        .await;

    // One member paused: a quorum is still there, nothing is recovered.
    let paused = pid_of(&setup, 2);
    signal(paused, rustix::process::Signal::STOP);
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(paused, rustix::process::Signal::CONT);
    let r = rt
        .wait(
            "3 members in sync again",
            Duration::from_secs(30),
            in_sync(3),
        )
        .await;
    assert_eq!(recoveries(&r), 0, "{:?}", r.changes);
    assert!(
        status::find(&r.status, "QuorumLost").is_none_or(|c| c.status == "False"),
        "{:?}",
        r.status.conditions
    );

    // Writes, all applied by member 0.
    let mut c = client(&setup.endpoint(0)).await;
    for i in 0..100 {
        c.put(format!("keep/{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let survivor = client(&setup.endpoint(0)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = survivor
            .clone()
            .get(
                "keep/099",
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await
            .expect("get");
        if got.count() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "member 0 lags");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two members and their data are gone for good: the quorum is lost. Manual mode waits.
    for i in [1, 2] {
        signal(pid_of(&setup, i), rustix::process::Signal::KILL);
        std::fs::remove_dir_all(setup.member_dir(i).join("data")).expect("wipe");
    }
    let r = rt
        .wait("waiting for approval", Duration::from_secs(60), |r| {
            status::find(&r.status, "QuorumLost")
                .is_some_and(|c| c.status == "True" && c.reason == "AwaitingApproval")
        })
        .await;
    let message = status::find(&r.status, "QuorumLost")
        .expect("condition")
        .message
        .clone();
    let uid = message
        .split("etcd.rustops.dev/approve-recovery=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the message says how to approve")
        .to_owned();
    assert!(message.contains("local-0"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = rt.wait("a report", Duration::from_secs(10), |_| true).await;
    assert_eq!(recoveries(&r), 0, "nothing happens without the approval");

    // Approved: local-0 restarts alone with its data, then the others are added again.
    write_recovery_spec(&setup, "    quorumLossAfter: 2s\n", Some(&uid));
    let r = rt
        .wait(
            "3 members in sync after recovery",
            Duration::from_secs(150),
            |r| {
                in_sync(3)(r)
                    && ["local-1", "local-2"].iter().all(|n| {
                        r.changes
                            .iter()
                            .any(|c| matches!(c, Change::Readded { name, .. } if name == n))
                    })
            },
        )
        .await;
    assert_eq!(recoveries(&r), 2, "forced, then cleared: {:?}", r.changes);
    assert_eq!(
        status::find(&r.status, "QuorumLost").map(|c| c.status.as_str()),
        Some("False")
    );
    assert_hashes_agree(&setup, 3).await;
    for i in 0..3 {
        let got = client(&setup.endpoint(i))
            .await
            .get(
                "keep/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only()
                        .with_serializable(),
                ),
            )
            .await
            .expect("get")
            .count();
        assert_eq!(got, 100, "member {i} has every acknowledged write");
    }
    // The file no longer forces anything.
    let file = std::fs::read_to_string(setup.member_dir(0).join("etcd.yaml")).expect("file");
    assert!(!file.contains("force-new-cluster"), "{file}");

    // The approval was used: losing the quorum again waits for a new one, although the old
    // annotation is still in the file.
    for i in [1, 2] {
        signal(pid_of(&setup, i), rustix::process::Signal::KILL);
        std::fs::remove_dir_all(setup.member_dir(i).join("data")).expect("wipe");
    }
    rt.wait("waiting for a new approval", Duration::from_secs(60), |r| {
        status::find(&r.status, "QuorumLost")
            .is_some_and(|c| c.status == "True" && c.reason == "AwaitingApproval")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = rt.wait("a report", Duration::from_secs(10), |_| true).await;
    assert_eq!(recoveries(&r), 2, "no second recovery on the used approval");
    rt.shutdown().await;
}
