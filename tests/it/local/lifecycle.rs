//! Lost members, rolling updates, quorum and Ctrl-C.

use super::*;

// ---------------------------------------------------------------------------------------------

pub(super) fn pid_of(setup: &Setup, i: i32) -> i32 {
    std::fs::read_to_string(setup.member_dir(i).join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

pub(super) fn signal(pid: i32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

pub(super) async fn member_id(endpoint: &str) -> u64 {
    client(endpoint)
        .await
        .status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .member_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_a_member_whose_data_was_lost() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 90));
    setup.set_replicas(3);
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let step = Duration::from_secs(30);
    rt.wait("3 members in sync", step, in_sync(3)).await;
    let mut c = client(&setup.endpoint(0)).await;
    for i in 0..100 {
        c.put(format!("keep/{i:03}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let old_id = member_id(&setup.endpoint(1)).await;

    // The disk of local-1 is gone: kill it and empty its data directory.
    signal(pid_of(&setup, 1), rustix::process::Signal::KILL);
    std::fs::remove_dir_all(setup.member_dir(1).join("data")).expect("wipe");
    let r = rt
        // Generous: on 2 busy cores (beside S3 servers and other clusters) the restart
        // backoff, removal, re-add and catch-up once took over a minute.
        .wait("local-1 replaced", Duration::from_secs(150), |r| {
            in_sync(3)(r)
                && r.changes
                    .iter()
                    .any(|c| matches!(c, Change::Readded { name, .. } if name == "local-1"))
        })
        .await;
    let order: Vec<&str> = r
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::LostRemoved { name, .. } => Some(("removed", name)),
            Change::Readded { name, .. } => Some(("added", name)),
            Change::Promoted { name, .. } => Some(("promoted", name)),
            _ => None,
        })
        .filter(|(_, name)| name.as_str() == "local-1")
        .map(|(what, _)| what)
        .collect();
    assert_eq!(order, ["removed", "added", "promoted"], "{:?}", r.changes);
    let new_id = member_id(&setup.endpoint(1)).await;
    assert_ne!(new_id, old_id, "the replacement is a new member");
    assert_hashes_agree(&setup, 3).await;
    let got = client(&setup.endpoint(1))
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
        .expect("serializable get on the replacement")
        .count();
    assert_eq!(got, 100, "the replacement has every key");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_restarts_followers_first_and_the_leader_last() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 110));
    setup.set_replicas(3);
    let mut rt = Runtime::start(setup.options(Duration::from_secs(1)));
    let step = Duration::from_secs(30);
    let before = rt.wait("3 members in sync", step, in_sync(3)).await;
    let leader = before
        .status
        .members
        .iter()
        .find(|m| m.is_leader)
        .expect("a leader")
        .name
        .clone();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let load = write_load(setup.endpoint(0), stop.clone(), acked_count.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before = acked_count.load(Ordering::SeqCst);

    // A server flag changes for every member.
    setup.write_spec(3, "    snapshotCount: 5000\n");
    let mut most_down = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let r = rt.report.borrow_and_update().clone().expect("report");
        let down = r.status.members.iter().filter(|m| !m.healthy).count()
            + (3 - r.status.members.len().min(3));
        most_down = most_down.max(down);
        let restarted = r
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Restarted { .. }))
            .count();
        if restarted == 3 && in_sync(3)(&r) {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rolling update did not finish: {:?}\n{}",
            r.changes,
            rt.logs()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rt.report.changed()).await;
    };
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load");

    let seq: Vec<String> = done
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Restarted { names } => Some(format!("restart {}", names.join(","))),
            Change::LeaderMoved { from, .. } => Some(format!("move-leader from {from}")),
            _ => None,
        })
        .collect();
    assert_eq!(seq.len(), 4, "{seq:?}");
    assert_eq!(seq[2], format!("move-leader from {leader}"), "{seq:?}");
    assert_eq!(seq[3], format!("restart {leader}"), "{seq:?}");
    assert!(
        !seq[..2].contains(&format!("restart {leader}")),
        "the leader was restarted before the followers: {seq:?}"
    );
    assert!(most_down <= 1, "{most_down} members were down at once");
    for i in 0..3 {
        let config =
            std::fs::read_to_string(setup.member_dir(i).join("etcd.yaml")).expect("config");
        assert!(config.contains("snapshot-count: 5000"), "{config}");
    }
    assert!(
        acked.len() as u64 > acked_before + 10,
        "the write load continued through the update: {} acknowledged, {acked_before} before",
        acked.len()
    );
    assert_no_acked_write_lost(&setup, &acked).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_scale_in_that_would_break_quorum() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 50));
    setup.set_replicas(3);
    // A long restart backoff keeps the killed member down for the whole test.
    let mut rt = Runtime::start(setup.options(Duration::from_secs(120)));
    rt.wait("3 members in sync", Duration::from_secs(20), in_sync(3))
        .await;

    let pid: i32 = std::fs::read_to_string(setup.member_dir(1).join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill local-1");
    rt.wait("local-1 unhealthy", Duration::from_secs(10), |r| {
        r.status
            .members
            .iter()
            .any(|m| m.name == "local-1" && !m.healthy)
    })
    .await;

    // Removing local-2 (healthy) would leave local-0 as the only healthy one of 2 voters.
    setup.set_replicas(2);
    let r = rt
        .wait(
            "the scale-in refused",
            Duration::from_secs(10),
            |r| matches!(&r.step, Step::ScaleInRefused { name, .. } if name == "local-2"),
        )
        .await;
    assert_eq!(
        condition(&r.status, status::DEGRADED),
        ("True", "QuorumAtRisk")
    );
    assert_eq!(
        condition(&r.status, status::PROGRESSING),
        ("False", "ScaleInRefused")
    );

    // And it stays refused: nothing is removed while local-1 is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = rt.report.borrow().clone().expect("report");
    assert!(
        matches!(r.step, Step::ScaleInRefused { .. }),
        "{:?}",
        r.step
    );
    assert_eq!(r.replicas, 3);
    let members = client(&setup.endpoint(0))
        .await
        .member_list()
        .await
        .expect("member list");
    assert_eq!(members.members().len(), 3, "no member was removed");
    assert!(
        setup.member_dir(2).join("data").exists(),
        "local-2 keeps its data"
    );

    // 2 of 3 down: nothing is removed, whatever the spec asks.
    signal(pid_of(&setup, 2), rustix::process::Signal::KILL);
    setup.set_replicas(1);
    rt.wait("local-2 down too", Duration::from_secs(10), |r| {
        r.status
            .members
            .iter()
            .any(|m| m.name == "local-2" && !m.healthy)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let r = rt.report.borrow_and_update().clone().expect("report");
        assert!(
            !matches!(
                r.step,
                Step::RemoveMember { .. } | Step::RemoveLostMember { .. } | Step::MoveLeader { .. }
            ),
            "a membership change with 2 of 3 down: {:?}",
            r.step
        );
        assert_eq!(r.replicas, 3, "nothing shrinks with 2 of 3 down");
        assert!(
            !r.changes
                .iter()
                .any(|c| matches!(c, Change::Removed { .. })),
            "{:?}",
            r.changes
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rt.report.changed()).await;
    }
    for i in 0..3 {
        assert!(
            setup.member_dir(i).join("data").exists(),
            "local-{i} keeps its data"
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_every_member() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 80));
    setup.set_replicas(1);
    let out = setup.dir.path().join("out.txt");
    let a = setup.addressing;
    let operator = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .arg("local")
        .arg("-f")
        .arg(&setup.spec)
        .arg("--state-dir")
        .arg(setup.dir.path().join("state"))
        .args(["--base-ip", &a.base_ip.to_string()])
        .args(["--client-port", &a.client_port.to_string()])
        .args(["--peer-port", &a.peer_port.to_string()])
        .arg("--etcd-server")
        .arg(server_binary())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd-operator local");
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = operator.id();
    let mut guard = Guard(operator);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        if let Ok(mut c) = etcd_client::Client::connect([setup.endpoint(0)], Some(options)).await
            && c.put("ctrl-c", "before", None).await.is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member never served; output:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let member: i32 = std::fs::read_to_string(setup.member_dir(0).join("etcd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::INT,
    )
    .expect("SIGINT");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd-operator local did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(status.success(), "exit {status}; output:\n{output}");
    assert!(output.contains("stopped local-0"), "{output}");
    assert!(
        rustix::process::test_kill_process(rustix::process::Pid::from_raw(member).expect("pid"))
            .is_err(),
        "the member process is gone"
    );
    assert!(
        !setup.member_dir(0).join("etcd.pid").exists(),
        "the pid file is removed"
    );
}
