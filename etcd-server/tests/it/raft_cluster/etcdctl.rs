//! 7. etcdctl 3.4.23.

use super::*;

/// `endpoint status` simple output: `endpoint, id, version, db size, is leader, is learner,
/// raft term, raft index, raft applied index, errors`.
pub(super) fn parse_status_line(out: &str) -> Vec<String> {
    let line = out
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    line.split(',').map(|f| f.trim().to_owned()).collect()
}

pub(super) fn ctl(ep: &str, args: &[&str]) -> (bool, String, String) {
    etcdctl_run(ep, args, None)
}

pub(super) fn ctl_ok(ep: &str, args: &[&str]) -> String {
    let (ok, out, err) = ctl(ep, args);
    assert!(ok, "etcdctl {args:?} on {ep} failed:\n{out}\n{err}");
    out
}

/// Runs etcdctl until it succeeds, retrying (bounded) while its error output contains one of
/// the `transient` messages. Returns stdout.
pub(super) async fn ctl_retry(ep: &str, args: &[&str], transient: &[&str], c: &Cluster) -> String {
    let deadline = Instant::now() + HEALTH_INTERVAL + STEP;
    loop {
        let (ok, out, err) = blocking(|| ctl(ep, args));
        if ok {
            return out;
        }
        let retryable = transient.iter().any(|t| err.contains(t));
        assert!(
            retryable && Instant::now() < deadline,
            "etcdctl {args:?} on {ep}:\n{out}\n{err}{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `member list` simple output as `id (hex) → fields`.
pub(super) fn ctl_members(ep: &str) -> BTreeMap<String, Vec<String>> {
    ctl_ok(ep, &["member", "list"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<String> = l.split(',').map(|f| f.trim().to_owned()).collect();
            (f[0].clone(), f)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_member_add_promote_remove_list_move_leader_and_endpoint_status() {
    if require(etcdctl(), "etcdctl 3.4").is_none() {
        return;
    }
    let extra = ["--snapshot-count", "50"];
    let mut c = start(3, &extra).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let lep = c.members[leader].endpoint();
    let mut lc = client(&lep).await;
    for i in 0..120 {
        lc.put(format!("ctl/{i:03}"), format!("v{i}"), None)
            .await
            .unwrap();
    }

    // member list: 3 started members with names and URLs.
    let list = blocking(|| ctl_members(&lep));
    assert_eq!(list.len(), 3, "{list:?}");
    for m in &c.members {
        let f = list
            .values()
            .find(|f| f[2] == m.name)
            .unwrap_or_else(|| panic!("{} missing: {list:?}", m.name));
        assert_eq!(f[1], "started");
        assert_eq!(f[3], m.advertise_peer_url);
        assert_eq!(f[4], m.client_url);
        assert_eq!(f[5], "false");
    }

    // member add --learner prints the environment for the new member.
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let peer_flag = format!("--peer-urls={peer_url}");
    let out = ctl_retry(
        &lep,
        &["member", "add", "m3", &peer_flag, "--learner"],
        &[UNHEALTHY],
        &c,
    )
    .await;
    let id_hex = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Member ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no member ID in {out:?}"))
        .to_owned();
    assert!(out.contains(" added to cluster "), "{out}");
    assert!(out.contains("ETCD_NAME=\"m3\""), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .map(|r| r.trim_end_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {out:?}"));
    let want_initial = initial_cluster_with(&c, "m3", &peer_url);
    let sorted = |s: &str| s.split(',').map(str::to_owned).collect::<BTreeSet<_>>();
    assert_eq!(
        sorted(&initial),
        sorted(&want_initial),
        "ETCD_INITIAL_CLUSTER"
    );
    let list = blocking(|| ctl_members(&lep));
    assert_eq!(list[&id_hex][1], "unstarted", "{list:?}");
    assert_eq!(list[&id_hex][5], "true", "{list:?}");

    // Start it with the printed initial cluster; it catches up and serves serializable reads.
    let spec = join_spec(&c, "m3", &peer_url, initial, &extra);
    c.members.push(Proc::launch(Kind::Ours, spec));
    let nep = c.members[3].endpoint();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) = blocking(|| {
            ctl(
                &nep,
                &["get", "ctl/119", "--consistency=s", "--print-value-only"],
            )
        });
        if ok && out.trim() == "v119" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learner never served ctl/119{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, _, err) = blocking(|| ctl(&nep, &["put", "ctl/x", "y"]));
    assert!(
        !ok && err.contains(NOT_LEARNER_RPC),
        "put on a learner: {err}"
    );

    // endpoint status, one endpoint at a time: exactly one leader, the new member a learner.
    let mut leaders = 0;
    for (i, m) in c.members.iter().enumerate() {
        let out = blocking(|| ctl_ok(&m.endpoint(), &["endpoint", "status"]));
        let f = parse_status_line(&out);
        assert_eq!(f.len(), 10, "{out}");
        assert_eq!(f[0], m.endpoint());
        assert_eq!(
            f[5],
            if i == 3 { "true" } else { "false" },
            "isLearner of {}: {out}",
            m.name
        );
        if f[4] == "true" {
            leaders += 1;
            assert_eq!(i, leader, "{out}");
        }
        if i == 3 {
            assert_eq!(f[1], id_hex);
        }
    }
    assert_eq!(leaders, 1);

    // member promote (to the leader), retried while the learner is catching up (and, on our
    // server, while a voter connection is younger than HealthInterval; see
    // `promote_right_after_a_voter_restart_succeeds`).
    let out = ctl_retry(
        &lep,
        &["member", "promote", &id_hex],
        &[LEARNER_NOT_READY, UNHEALTHY],
        &c,
    )
    .await;
    // etcdctl prints IDs with `%16x`: space-padded when the top nibble is zero.
    assert!(
        out.starts_with(&format!("Member {:>16} promoted in cluster ", id_hex)),
        "{out}"
    );
    // Once promoted it publishes its name and client URL.
    let deadline = Instant::now() + STEP;
    loop {
        let list = blocking(|| ctl_members(&lep));
        let f = &list[&id_hex];
        if f[1] == "started" && f[2] == "m3" && f[4] == c.members[3].client_url && f[5] == "false" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "promoted member not listed as started m3: {list:?}{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let f = parse_status_line(&blocking(|| ctl_ok(&nep, &["endpoint", "status"])));
    assert_eq!(f[5], "false", "promoted member still a learner: {f:?}");

    // endpoint health --cluster: all four healthy.
    let (ok, out, err) = blocking(|| ctl(&lep, &["endpoint", "health", "--cluster"]));
    assert!(ok, "endpoint health --cluster:\n{out}\n{err}");
    assert_eq!(
        format!("{out}{err}").matches("is healthy").count(),
        4,
        "{out}\n{err}"
    );

    // move-leader to the new member, given every endpoint so etcdctl finds the leader.
    let all = c.endpoints().join(",");
    let out = blocking(|| ctl_ok(&all, &["move-leader", &id_hex]));
    assert!(
        out.contains("Leadership transferred from ") && out.contains(&format!(" to {id_hex}")),
        "{out}"
    );
    let f = parse_status_line(&blocking(|| ctl_ok(&nep, &["endpoint", "status"])));
    assert_eq!(
        f[4], "true",
        "new member is not leader after move-leader: {f:?}"
    );
    // move-leader sent only to a follower: etcdctl finds no leader among its endpoints.
    let (ok, out, _) = blocking(|| ctl(&lep, &["move-leader", &id_hex]));
    assert!(!ok, "move-leader via a follower succeeded: {out}");

    // member remove one of the original followers (not the old leader).
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_hex = format!("{:x}", member_id(&c.members[victim].endpoint()).await);
    let out = ctl_retry(
        &nep,
        &["member", "remove", &victim_hex],
        &[UNHEALTHY, NOT_ENOUGH_STARTED],
        &c,
    )
    .await;
    assert!(
        // `%16x` again: an ID whose top nibble is zero prints space-padded.
        out.starts_with(&format!("Member {victim_hex:>16} removed from cluster ")),
        "{out}"
    );
    let list = blocking(|| ctl_members(&nep));
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(!list.contains_key(&victim_hex));
    assert!(
        list.values().all(|f| f[1] == "started" && f[5] == "false"),
        "{list:?}"
    );
    assert!(
        wait_exit(&mut c.members[victim], Duration::from_secs(10)).await,
        "removed member still running{}",
        logs(&c)
    );
    let (ok, out, err) = blocking(|| ctl(&nep, &["member", "remove", &victim_hex]));
    assert!(
        !ok && err.contains(MEMBER_NOT_FOUND),
        "removing it again: {out}\n{err}"
    );
    let remaining: Vec<String> = (0..4)
        .filter(|i| *i != victim)
        .map(|i| c.members[i].endpoint())
        .collect();
    for ep in &remaining {
        blocking(|| ctl_ok(ep, &["put", &format!("ctl/after/{ep}"), "z"]));
    }
    assert_converged(&remaining, "after etcdctl member remove").await;
}
