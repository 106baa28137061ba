//! 9. `--force-new-cluster`: recovering a cluster whose quorum is lost for good, beside etcd
//!    3.4.23 doing the same.

use super::*;
use crate::harness::reference_etcd;

/// Three members take writes; two are killed and their data dirs deleted, so the quorum is
/// gone for good. The survivor, restarted with `--force-new-cluster`, is a one-member cluster
/// of the same cluster ID with every acknowledged write at its revision, and takes writes; the
/// rewrite is durable (restarted without the flag it is still alone); the other two come back
/// from empty data dirs as learners through MemberAdd, are promoted, and all three converge.
/// Our server and etcd 3.4.23 go through the same steps with the same outcome.
#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_recovers_a_cluster_that_lost_its_quorum() {
    let mut kinds = vec![Kind::Ours];
    if require(reference_etcd(), "etcd 3.4.23").is_some() {
        kinds.push(Kind::Reference);
    }
    for kind in kinds {
        let what = format!("{kind:?}");
        let mut c = blocking(move || Cluster::start_kind(kind, 3, FAST));
        let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
        let cluster_id = {
            let mut lc = client(&c.members[leader].endpoint()).await;
            lc.member_list()
                .await
                .expect("member list")
                .header()
                .expect("header")
                .cluster_id()
        };
        let mut lc = client(&c.members[leader].endpoint()).await;
        let mut acked = Vec::new();
        for i in 0..50 {
            let (k, v) = (format!("fnc/{i:02}"), format!("v{i}"));
            let r = lc.put(k.as_str(), v.as_str(), None).await.expect("put");
            acked.push((k, v, r.header().expect("header").revision()));
        }
        // The quorum is lost for good: two members and their data are gone. The survivor is
        // a follower that has applied every acknowledged write: what a member never learned
        // was committed, --force-new-cluster drops (in etcd too), which is why a recovery
        // starts from the member that applied the most.
        let survivor = (leader + 1) % 3;
        let last = acked.last().expect("writes").clone();
        wait_serializable(&c.members[survivor].endpoint(), &last.0, &last.1, &c).await;
        for i in (0..3).filter(|i| *i != survivor) {
            c.members[i].kill();
            std::fs::remove_dir_all(&c.members[i].data_dir).expect("wipe");
        }
        c.members[survivor].kill();
        c.members[survivor]
            .extra
            .push("--force-new-cluster".to_owned());
        blocking(|| c.members[survivor].spawn());
        let ep = c.members[survivor].endpoint();
        let alone = members(&ep).await;
        assert_eq!(alone.len(), 1, "{what}: {alone:?}{}", logs(&c));
        assert_eq!(alone[0].1, c.members[survivor].name, "{what}");
        let mut sc = client(&ep).await;
        let header_cluster = sc
            .member_list()
            .await
            .expect("member list")
            .header()
            .expect("header")
            .cluster_id();
        assert_eq!(
            header_cluster, cluster_id,
            "{what}: the cluster keeps its ID"
        );
        // Ours keeps every write the survivor applied. etcd 3.4.23 may not: its WAL writes a
        // follower's new commit index without flushing it (only entries and votes force a
        // sync), and its backend commits in batches, so after SIGKILL it can come back with
        // an older commit index, and --force-new-cluster drops what lies beyond it, applied
        // and served or not. For etcd the test only requires that what is lost is the newest
        // writes (a suffix), never a hole.
        let mut lost = Vec::new();
        for (k, v, rev) in &acked {
            let r = sc.get(k.as_str(), None).await.expect("get");
            match r.kvs().first() {
                Some(kv) => {
                    assert!(
                        lost.is_empty(),
                        "{what}: {lost:?} lost but the later {k} kept"
                    );
                    assert_eq!(kv.value_str().expect("utf-8"), v, "{what}: {k}");
                    assert_eq!(kv.mod_revision(), *rev, "{what}: {k}'s revision");
                }
                None if kind == Kind::Ours => panic!("{what}: {k} lost{}", logs(&c)),
                None => lost.push(k.clone()),
            }
        }
        if !lost.is_empty() {
            eprintln!("{what}: --force-new-cluster dropped applied writes {lost:?}");
        }
        sc.put("fnc/after", "alone", None)
            .await
            .unwrap_or_else(|e| panic!("{what}: a write after the forced restart: {e}"));

        // Durable: restarted without the flag it is still the only member, with its data.
        c.members[survivor].stop();
        c.members[survivor]
            .extra
            .retain(|a| a != "--force-new-cluster");
        blocking(|| c.members[survivor].spawn());
        assert_eq!(members(&ep).await.len(), 1, "{what}: still alone");

        // The others come back from empty data dirs, one at a time, as learners.
        for i in (0..3).filter(|i| *i != survivor) {
            let peer_url = c.members[i].advertise_peer_url.clone();
            let mut sc = client(&ep).await;
            let added = retry(HEALTH_INTERVAL + STEP, &[UNHEALTHY], &what, || {
                let mut sc = sc.clone();
                let url = peer_url.clone();
                async move {
                    sc.member_add(
                        [url.as_str()],
                        Some(MemberAddOptions::new().with_is_learner()),
                    )
                    .await
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: MemberAdd: {e}{}", logs(&c)));
            let id = added.member().expect("the added member").id();
            let listed = sc.member_list().await.expect("member list");
            let initial = listed
                .members()
                .iter()
                .map(|m| {
                    let name = if m.id() == id {
                        c.members[i].name.as_str()
                    } else {
                        m.name()
                    };
                    format!("{name}={}", m.peer_urls()[0])
                })
                .collect::<Vec<_>>()
                .join(",");
            c.members[i].initial_cluster = initial;
            c.members[i].initial_cluster_state = "existing".into();
            blocking(|| c.members[i].spawn_no_wait());
            retry(
                HEALTH_INTERVAL + STEP * 2,
                &[LEARNER_NOT_READY, NOT_ENOUGH_STARTED],
                &what,
                || {
                    let mut sc = sc.clone();
                    async move { sc.member_promote(id).await }
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: promote: {e}{}", logs(&c)));
        }
        let eps = c.endpoints();
        if kind == Kind::Ours {
            assert_converged(&eps, &what).await;
        } else {
            // etcd 3.4.23 can diverge here, and that is what this branch records rather than
            // requires: when its survivor's backend already held writes beyond the commit
            // index its WAL kept (the same cause as above), --force-new-cluster drops them
            // from the log but not from the backend, so the survivor serves them and members
            // added back from the log never get them (seen: "fnc/49" missing on a re-added
            // member for a minute). Its HashKV differs between such members too.
            let want = dump(&eps[survivor], "fnc/", false).await.expect("dump");
            for ep in &eps {
                let deadline = Instant::now() + STEP;
                loop {
                    let got = dump(ep, "fnc/", true).await;
                    if got.as_ref().ok() == Some(&want) {
                        break;
                    }
                    if Instant::now() >= deadline {
                        eprintln!(
                            "{what}: {ep} serves other data than the survivor: {:?}",
                            got.map(|g| want
                                .keys()
                                .filter(|k| !g.contains_key(*k))
                                .cloned()
                                .collect::<Vec<_>>())
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let all = members(&ep).await;
        assert_eq!(all.len(), 3, "{what}: {all:?}");
        assert!(all.iter().all(|m| !m.3), "{what}: no learner left: {all:?}");
        let mut any = client(&eps[(survivor + 1) % 3]).await;
        let got = any.get("fnc/after", None).await.expect("get");
        assert_eq!(got.kvs()[0].value_str().expect("utf-8"), "alone", "{what}");
    }
}
