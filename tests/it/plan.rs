//! Planner tables: each row is an observed state and the step (and objects) the planner must
//! choose for it.

use etcd_operator::observe::{EtcdState, MemberHealth, Observed, StatefulSetState};
use etcd_operator::plan::{InitialState, Step, plan};

use crate::fixtures::*;

struct Row {
    name: &'static str,
    spec: &'static str,
    observed: Box<dyn Fn(&etcd_operator::validate::ValidatedCluster) -> Observed>,
    step: Step,
    /// Replicas of the objects to apply; `None`: apply nothing.
    apply: Option<i32>,
}

fn rows() -> Vec<Row> {
    let n = names();
    vec![
        Row {
            name: "fresh bootstrap",
            spec: "  replicas: 3\n",
            observed: Box::new(|_| Observed::default()),
            step: Step::Bootstrap,
            apply: Some(3),
        },
        Row {
            name: "all members healthy",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| settled(c, 3, all_healthy(3))),
            step: Step::InSync,
            apply: Some(3),
        },
        Row {
            name: "a member has not published its client URLs: not in sync yet",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut members = all_healthy(3);
                members[2].client_tls = None;
                settled(c, 3, members)
            }),
            step: Step::Wait {
                reason: format!(
                    "members {} have not published their client URLs yet",
                    n.member(2)
                ),
            },
            apply: Some(3),
        },
        Row {
            name: "a spec change is pending",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = settled(c, 3, all_healthy(3));
                o.statefulset.as_mut().expect("sts").spec_hash = Some("older".into());
                o
            }),
            step: Step::RollOut,
            apply: Some(3),
        },
        Row {
            name: "rolling update: restart the lowest stale follower first",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                with_stale(settled(c, 3, led_by(all_healthy(3), 1)), &[0, 1, 2])
            }),
            step: Step::RestartMembers {
                names: vec![n.member(0)],
            },
            apply: Some(3),
        },
        Row {
            name: "rolling update: only the leader left: move leadership to an updated member",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| with_stale(settled(c, 3, led_by(all_healthy(3), 1)), &[1])),
            step: Step::MoveLeader {
                name: n.member(1),
                to_name: n.member(0),
                to_id: member_id(0),
            },
            apply: Some(3),
        },
        Row {
            name: "rolling update: the leader moved away: restart the old leader",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| with_stale(settled(c, 3, all_healthy(3)), &[1])),
            step: Step::RestartMembers {
                names: vec![n.member(1)],
            },
            apply: Some(3),
        },
        Row {
            name: "rolling update: a restarted member is still terminating: wait",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = with_stale(settled(c, 3, all_healthy(3)), &[1, 2]);
                o.pods.get_mut(&1).expect("pod").terminating = true;
                o
            }),
            step: Step::Wait {
                reason: "main-1 is restarting".into(),
            },
            apply: Some(3),
        },
        Row {
            name: "rolling update: a member lags behind the leader: wait for it",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let members = vec![at_index(0, 50_000), at_index(1, 10), at_index(2, 50_000)];
                with_stale(settled(c, 3, members), &[2])
            }),
            step: Step::Wait {
                reason: "members main-1 are catching up with the leader".into(),
            },
            apply: Some(3),
        },
        Row {
            name: "rolling update of a single member: restart it (no one to hand over to)",
            spec: "  replicas: 1\n",
            observed: Box::new(|c| with_stale(settled(c, 1, all_healthy(1)), &[0])),
            step: Step::RestartMembers {
                names: vec![n.member(0)],
            },
            apply: Some(1),
        },
        Row {
            name: "a down member on an older template: restart it onto the current one",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                with_stale(
                    settled(c, 3, vec![healthy(0), healthy(1), unhealthy(2)]),
                    &[0, 1, 2],
                )
            }),
            step: Step::RestartMembers {
                names: vec![n.member(2)],
            },
            apply: Some(3),
        },
        Row {
            name: "unreachable, no pod ready, stale pods: restart them all (no quorum to keep)",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = with_stale(settled(c, 3, vec![]), &[0, 1, 2]);
                o.etcd = EtcdState::Unreachable {
                    error: "timeout".into(),
                };
                o.statefulset.as_mut().expect("sts").ready_replicas = 0;
                o
            }),
            step: Step::RestartMembers {
                names: vec![n.member(0), n.member(1), n.member(2)],
            },
            apply: Some(3),
        },
        Row {
            name: "a started member lost its data: remove it first",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                with_lost(settled(c, 3, vec![healthy(0), unhealthy(1), healthy(2)]), 1)
            }),
            step: Step::RemoveLostMember {
                name: n.member(1),
                id: member_id(1),
            },
            apply: Some(3),
        },
        Row {
            name: "a lost member with another member down: the quorum is lost, wait (recovery \
                   starts the clock)",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                with_lost(
                    settled(c, 3, vec![unhealthy(0), unhealthy(1), healthy(2)]),
                    1,
                )
            }),
            step: Step::Wait {
                reason: "the quorum is lost: 1 of 3 voting members healthy as the operator sees \
                         them, but main-2 follows a leader (a quorum exists): no recovery"
                    .into(),
            },
            apply: Some(3),
        },
        Row {
            name: "a lost member was removed: add it again as a learner and wipe it",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| with_lost(settled(c, 3, vec![healthy(0), healthy(2)]), 1)),
            step: Step::ReAddMember {
                name: n.member(1),
                peer_url: n.peer_url(1),
            },
            apply: Some(3),
        },
        Row {
            name: "a member missing from etcd (removed, then the operator stopped): add it again",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| settled(c, 3, vec![healthy(0), healthy(2)])),
            step: Step::ReAddMember {
                name: n.member(1),
                peer_url: n.peer_url(1),
            },
            apply: Some(3),
        },
        Row {
            name: "re-added but its pod still has the old data: wipe it",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let readded = etcd_operator::observe::MemberView {
                    is_learner: true,
                    name: String::new(),
                    id: 0x999,
                    ..unhealthy(1)
                };
                with_lost(settled(c, 3, vec![healthy(0), readded, healthy(2)]), 1)
            }),
            step: Step::WipeMember { name: n.member(1) },
            apply: Some(3),
        },
        Row {
            name: "a lagging learner is not promoted yet",
            spec: "  replicas: 4\n",
            observed: Box::new(|c| {
                let mut members = vec![
                    at_index(0, 50_000),
                    at_index(1, 50_000),
                    at_index(2, 50_000),
                    at_index(3, 5),
                ];
                members[3].is_learner = true;
                settled(c, 4, members)
            }),
            step: Step::Wait {
                reason: "members main-3 are catching up with the leader".into(),
            },
            apply: Some(4),
        },
        Row {
            name: "members unreachable, nothing pending: wait, repairing drift only",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| Observed {
                etcd: EtcdState::Unreachable {
                    error: "connection refused".into(),
                },
                ..settled(c, 3, vec![])
            }),
            step: Step::Wait {
                reason: "no member is reachable: connection refused".into(),
            },
            apply: Some(3),
        },
        Row {
            name: "members unreachable with a change pending: apply it (nothing restarts)",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = Observed {
                    etcd: EtcdState::Unreachable {
                        error: "timeout".into(),
                    },
                    ..settled(c, 3, vec![])
                };
                o.statefulset = Some(StatefulSetState {
                    replicas: 3,
                    ready_replicas: 2,
                    spec_hash: Some("older".into()),
                    tls_built: None,
                });
                o
            }),
            step: Step::RollOut,
            apply: Some(3),
        },
        Row {
            name: "no pod ready at all and a change pending: let the fix through",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = Observed {
                    etcd: EtcdState::Unreachable {
                        error: "timeout".into(),
                    },
                    ..settled(c, 3, vec![])
                };
                o.statefulset = Some(StatefulSetState {
                    replicas: 3,
                    ready_replicas: 0,
                    spec_hash: Some("older".into()),
                    tls_built: None,
                });
                o
            }),
            step: Step::RollOut,
            apply: Some(3),
        },
        Row {
            name: "lowest member unhealthy with a change pending: apply it (OnDelete restarts nothing)",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = settled(c, 3, vec![unhealthy(0), healthy(1), healthy(2)]);
                o.statefulset.as_mut().expect("sts").spec_hash = Some("older".into());
                o
            }),
            step: Step::RollOut,
            apply: Some(3),
        },
        Row {
            name: "highest member unhealthy with a change pending: apply it",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = settled(c, 3, vec![healthy(0), healthy(1), unhealthy(2)]);
                o.statefulset.as_mut().expect("sts").spec_hash = Some("older".into());
                o
            }),
            step: Step::RollOut,
            apply: Some(3),
        },
        Row {
            name: "scale up with all healthy: add the next member as a learner",
            spec: "  replicas: 5\n",
            observed: Box::new(|c| settled(c, 3, all_healthy(3))),
            step: Step::AddLearner {
                name: n.member(3),
                peer_url: n.peer_url(3),
            },
            apply: Some(4),
        },
        Row {
            name: "scale up while a member is down: wait",
            spec: "  replicas: 5\n",
            observed: Box::new(|c| settled(c, 3, vec![healthy(0), unhealthy(1), healthy(2)])),
            step: Step::Wait {
                reason: "members main-1 are not healthy".into(),
            },
            apply: Some(3),
        },
        Row {
            name: "a learner that started: promote it",
            spec: "  replicas: 4\n",
            observed: Box::new(|c| {
                let mut members = all_healthy(4);
                members[3].is_learner = true;
                settled(c, 4, members)
            }),
            step: Step::PromoteLearner {
                name: n.member(3),
                id: member_id(3),
            },
            apply: Some(4),
        },
        Row {
            name: "a member added but its pod never created: start it",
            spec: "  replicas: 4\n",
            observed: Box::new(|c| {
                let mut members = all_healthy(3);
                members.push(etcd_operator::observe::MemberView {
                    is_learner: true,
                    name: String::new(),
                    ..unhealthy(3)
                });
                settled(c, 3, members)
            }),
            step: Step::StartMember { name: n.member(3) },
            apply: Some(4),
        },
        Row {
            name: "scale down: remove the highest member, then shrink",
            spec: "  replicas: 1\n",
            observed: Box::new(|c| settled(c, 3, all_healthy(3))),
            step: Step::RemoveMember {
                name: n.member(2),
                id: Some(member_id(2)),
            },
            apply: Some(2),
        },
        Row {
            name: "scale down interrupted after the member was removed: just shrink",
            spec: "  replicas: 1\n",
            observed: Box::new(|c| settled(c, 2, all_healthy(1))),
            step: Step::RemoveMember {
                name: n.member(1),
                id: None,
            },
            apply: Some(1),
        },
        Row {
            name: "scale down while a lower member is down: refused, quorum is at risk",
            spec: "  replicas: 2\n",
            observed: Box::new(|c| settled(c, 3, vec![healthy(0), unhealthy(1), healthy(2)])),
            step: Step::ScaleInRefused {
                name: n.member(2),
                reason: "removing member 2 would leave 1 of 2 voting members healthy, \
                         fewer than a quorum of 2"
                    .into(),
            },
            apply: Some(3),
        },
        Row {
            name: "scale down, the highest member leads: move leadership away first",
            spec: "  replicas: 2\n",
            observed: Box::new(|c| {
                let members = all_healthy(3)
                    .into_iter()
                    .map(|mut m| {
                        m.health = MemberHealth::Healthy {
                            leader: member_id(2),
                            version: "3.5.17".into(),
                            raft_index: 10,
                        };
                        m
                    })
                    .collect();
                settled(c, 3, members)
            }),
            step: Step::MoveLeader {
                name: n.member(2),
                to_name: n.member(0),
                to_id: member_id(0),
            },
            apply: Some(3),
        },
    ]
}

#[test]
fn planner_table() {
    for row in rows() {
        let c = validated(&cluster(row.spec));
        let observed = (row.observed)(&c);
        let p = plan(Ok(&c), &observed);
        assert_eq!(p.step, row.step, "{}", row.name);
        assert_eq!(
            p.desired.as_ref().map(|d| d.replicas),
            row.apply,
            "{}",
            row.name
        );
        if let Some(d) = &p.desired {
            assert_eq!(
                d.members.len() as i32,
                d.replicas,
                "{}: one config per member",
                row.name
            );
        }
    }
}

#[test]
fn an_invalid_spec_applies_nothing_whatever_was_observed() {
    let problems = vec!["server.extraArgs: etcd-server has no flag --bogus".to_owned()];
    let c = validated(&cluster("  replicas: 3\n"));
    for observed in [Observed::default(), settled(&c, 3, all_healthy(3))] {
        let p = plan(Err(&problems), &observed);
        assert_eq!(
            p.step,
            Step::Invalid {
                problems: problems.clone()
            }
        );
        assert_eq!(p.desired, None);
    }
}

/// TLS turned on for a running plain cluster, then off again: every member first restarts
/// onto files that serve both schemes on each port (with the TLS material), then each peer URL
/// moves by `MemberUpdate`, one member at a time, then the members restart onto the wanted
/// scheme alone. What the planner sees of the members (their advertised URLs) is all it
/// decides from; without etcd it keeps whatever the StatefulSet was built as.
#[test]
fn tls_is_turned_on_and_off_for_a_running_cluster_through_both_schemes() {
    use etcd_operator::build::configmap;
    use etcd_operator::model::{TlsBuilt, spec_hash};
    let plain = validated(&cluster("  replicas: 3\n"));
    let tls = validated(&cluster("  replicas: 3\n  tls:\n    enabled: true\n"));
    let urls = |peer: bool, client: bool| {
        let mut members = all_healthy(3);
        for m in &mut members {
            (m.peer_tls, m.client_tls) = (peer, Some(client));
        }
        members
    };
    let hashed = |o: &mut Observed, hash: String| {
        o.statefulset.as_mut().expect("sts").spec_hash = Some(hash);
    };
    for (from, to, old, new) in [(&plain, &tls, false, true), (&tls, &plain, true, false)] {
        let moving_hash = spec_hash(&to.tls_moving(true));
        // The spec changed: the template that serves both is applied first.
        let o = settled(from, 3, urls(old, old));
        let p = plan(Ok(to), &o);
        assert_eq!(
            (&p.step, p.tls_moving),
            (&Step::RollOut, true),
            "{old}→{new}"
        );
        let both = to.tls_moving(true);
        let file =
            configmap::render(&both, 0, &o.member_configs["main-0"], "/tls").expect("render");
        assert!(
            file.contains("listen-client-urls: http://0.0.0.0:2379,https://0.0.0.0:2379")
                && file.contains("listen-peer-urls: http://0.0.0.0:2380,https://0.0.0.0:2380")
                && file.contains("peer-transport-security")
                && file.contains("client-transport-security"),
            "{file}"
        );
        // Members restart onto it one at a time.
        let mut o = with_stale(settled(from, 3, urls(old, old)), &[0, 1, 2]);
        hashed(&mut o, moving_hash.clone());
        assert_eq!(
            plan(Ok(to), &o).step,
            Step::RestartMembers {
                names: vec!["main-1".into()]
            }
        );
        // All restarted (advertising the new client scheme): peer URLs move one by one.
        let mut o = settled(from, 3, urls(old, new));
        hashed(&mut o, moving_hash.clone());
        let n = &to.names;
        assert_eq!(
            plan(Ok(to), &o).step,
            Step::UpdatePeerUrl {
                name: "main-0".into(),
                id: member_id(0),
                peer_url: n.peer_url(0)
            }
        );
        assert!(
            n.peer_url(0)
                .starts_with(if new { "https://" } else { "http://" })
        );
        let mut members = urls(old, new);
        members[0].peer_tls = new;
        let mut o = settled(from, 3, members);
        hashed(&mut o, moving_hash.clone());
        assert!(matches!(
            plan(Ok(to), &o).step,
            Step::UpdatePeerUrl { ref name, .. } if name == "main-1"
        ));
        // Moving is never a time for membership changes.
        let grown = validated(&cluster(if new {
            "  replicas: 5\n  tls:\n    enabled: true\n"
        } else {
            "  replicas: 5\n"
        }));
        let mut o = settled(from, 3, urls(old, new));
        hashed(&mut o, spec_hash(&grown.tls_moving(true)));
        assert!(matches!(
            plan(Ok(&grown), &o).step,
            Step::UpdatePeerUrl { .. }
        ));
        // Without etcd the planner never switches the scheme members serve: a StatefulSet
        // built as moving, or for the other schemes (the spec was just changed), is built to
        // serve both; one built for the wanted schemes stays as it is.
        let unreachable = |built: TlsBuilt| {
            let mut o = settled(from, 3, urls(old, new));
            o.statefulset.as_mut().expect("sts").tls_built = Some(built);
            o.etcd = EtcdState::Unreachable {
                error: "refused".into(),
            };
            plan(Ok(to), &o).tls_moving
        };
        let wanted = TlsBuilt::of(to);
        assert!(unreachable(TlsBuilt::of(&to.tls_moving(true))));
        assert!(unreachable(TlsBuilt::of(from)));
        assert!(!unreachable(wanted));
        // Every member advertises the new scheme: the template with it alone rolls out.
        let mut o = settled(from, 3, urls(new, new));
        hashed(&mut o, moving_hash);
        let p = plan(Ok(to), &o);
        assert_eq!((&p.step, p.tls_moving), (&Step::RollOut, false));
        assert_eq!(
            plan(Ok(to), &settled(to, 3, urls(new, new))).step,
            Step::InSync
        );
    }
}

#[test]
fn bootstrap_members_start_new_and_later_members_join_existing() {
    let c = validated(&cluster("  replicas: 3\n"));
    let boot = plan(Ok(&c), &Observed::default()).desired.expect("objects");
    let n = names();
    let all3 = format!(
        "main-0={},main-1={},main-2={}",
        n.peer_url(0),
        n.peer_url(1),
        n.peer_url(2)
    );
    for m in &boot.members {
        assert_eq!(m.state, InitialState::New);
        assert_eq!(m.initial_cluster_value(), all3);
    }

    let c5 = validated(&cluster("  replicas: 5\n"));
    let grow = plan(Ok(&c5), &settled(&c5, 3, all_healthy(3)))
        .desired
        .expect("objects");
    // Existing members keep the configuration they bootstrapped with.
    assert_eq!(grow.members[..3], boot.members[..]);
    let new = &grow.members[3];
    assert_eq!(new.state, InitialState::Existing);
    assert_eq!(
        new.initial_cluster_value(),
        format!("{all3},main-3={}", n.peer_url(3))
    );
}

/// What a member is in the exhaustive enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Healthy,
    Down,
    /// Answers, but trails the leader's Raft index by far more than `MAX_LAG`.
    Lagging,
    /// Down, and its pod says its data is lost.
    Lost,
}

const HEALTHS: [Health; 4] = [Health::Healthy, Health::Down, Health::Lagging, Health::Lost];

/// Every combination of member states over clusters of 1 to 7 voting members, each with the
/// leader at the lowest or the highest live member, wanting one member fewer, the same or one
/// more, with every pod current or every pod stale: no planned step may take the healthy,
/// caught-up voting members below a quorum of the voters left (a lagging member counts as
/// unhealthy here). Only clusters of fewer than 3 voters may restart a healthy member: they
/// have no fault tolerance, so applying a changed spec to them cannot avoid a brief outage.
/// Without a quorum, nothing but restarts of members that are down anyway may happen. And a
/// lost member is always replaced when the others keep a quorum and nothing else is pending.
#[test]
fn no_planned_step_ever_takes_healthy_voters_below_quorum() {
    let mut checked = 0usize;
    for n in 1..=7i32 {
        let combos = 4usize.pow(n as u32);
        for code in 0..combos {
            let states: Vec<Health> = (0..n)
                .map(|i| HEALTHS[(code / 4usize.pow(i as u32)) % 4])
                .collect();
            // Lagging is relative to a leader that answers: the leader is a healthy member.
            let live: Vec<i32> = (0..n)
                .filter(|i| states[*i as usize] == Health::Healthy)
                .collect();
            if live.is_empty() && states.contains(&Health::Lagging) {
                continue;
            }
            let mut leaders: Vec<Option<i32>> = live
                .iter()
                .take(1)
                .chain(live.iter().rev().take(1))
                .map(|i| Some(*i))
                .collect();
            leaders.dedup();
            if leaders.is_empty() {
                leaders.push(None);
            }
            for leader in leaders {
                for target in [n - 1, n, n + 1] {
                    if !(1..=7).contains(&target) {
                        continue;
                    }
                    for all_stale in [false, true] {
                        check_one(&states, leader, target, all_stale);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 100_000, "enumerated {checked} situations");
}

fn check_one(states: &[Health], leader: Option<i32>, target: i32, all_stale: bool) {
    let n = states.len() as i32;
    let c = validated(&cluster(&format!("  replicas: {target}\n")));
    // A lagging member sits 5000 entries behind; a healthy one (and the leader) at 10000.
    let members: Vec<_> = (0..n)
        .map(|i| {
            let mut m = match states[i as usize] {
                Health::Healthy => at_index(i, 10_000),
                Health::Lagging => at_index(i, 5_000),
                Health::Down | Health::Lost => unhealthy(i),
            };
            if let MemberHealth::Healthy { leader: l, .. } = &mut m.health {
                *l = leader.map(member_id).unwrap_or(0);
            }
            m
        })
        .collect();
    let mut observed = settled(&c, n, members);
    if leader.is_none() {
        observed.statefulset.as_mut().expect("sts").ready_replicas = 0;
    }
    for (i, s) in states.iter().enumerate() {
        if *s == Health::Lost {
            observed = with_lost(observed, i as i32);
        }
    }
    if all_stale {
        observed = with_stale(observed, &(0..n).collect::<Vec<_>>());
    }
    let p = plan(Ok(&c), &observed);
    let what = format!(
        "{states:?} leader {leader:?} want {target} stale {all_stale}: {:?}",
        p.step
    );

    let names = names();
    let ordinal = |name: &str| names.ordinal_of_name(name).expect("a member name");
    let ok = |i: i32| states[i as usize] == Health::Healthy;
    let voters = n;
    let healthy = (0..n).filter(|i| ok(*i)).count() as i32;
    let quorum = |healthy: i32, voters: i32| healthy > voters / 2;
    let (voters_after, healthy_after) = match &p.step {
        Step::RemoveMember { id: Some(id), .. } => {
            let i = (*id - member_id(0)) as i32;
            (voters - 1, healthy - ok(i) as i32)
        }
        Step::RemoveLostMember { name, .. } => {
            let i = ordinal(name);
            assert_eq!(states[i as usize], Health::Lost, "{what}");
            (voters - 1, healthy - ok(i) as i32)
        }
        Step::RestartMembers { names: restarted } => {
            let healthy_restarted = restarted.iter().filter(|m| ok(ordinal(m))).count() as i32;
            if healthy_restarted > 0 {
                assert_eq!(restarted.len(), 1, "{what}: one healthy member at a time");
            }
            if healthy_restarted > 0 && voters < 3 {
                // A 1- or 2-voter cluster: allowed only when everything is healthy.
                assert_eq!(healthy, voters, "{what}");
                return;
            }
            (voters, healthy - healthy_restarted)
        }
        Step::MoveLeader { to_name, .. } => {
            assert!(
                ok(ordinal(to_name)),
                "{what}: leadership moved to an unready member"
            );
            (voters, healthy)
        }
        Step::WipeMember { .. } | Step::ReAddMember { .. } => {
            panic!("{what}: every member is listed, nothing to wipe or add again")
        }
        Step::PromoteLearner { .. } => panic!("{what}: there is no learner"),
        _ => (voters, healthy),
    };
    if quorum(healthy, voters) {
        assert!(
            quorum(healthy_after, voters_after),
            "{what}: {healthy_after} healthy of {voters_after} voters after the step"
        );
    } else {
        assert!(
            !matches!(
                p.step,
                Step::RemoveMember { id: Some(_), .. }
                    | Step::RemoveLostMember { .. }
                    | Step::AddLearner { .. }
                    | Step::MoveLeader { .. }
            ),
            "{what}: a membership change without a quorum"
        );
    }
    // Liveness for lost members: the only trouble is lost members, the rest keeps a quorum
    // after removing one, and the size is right: a replacement starts.
    let lost: Vec<i32> = (0..n)
        .filter(|i| states[*i as usize] == Health::Lost)
        .collect();
    let only_lost = (0..n).all(|i| ok(i) || states[i as usize] == Health::Lost);
    if !lost.is_empty()
        && only_lost
        && target == n
        && !all_stale
        && quorum(healthy, voters)
        && quorum(healthy, voters - 1)
    {
        assert!(
            matches!(&p.step, Step::RemoveLostMember { name, .. } if lost.contains(&ordinal(name))),
            "{what}: a lost member is not being replaced"
        );
    }
}

/// A cluster with an in-place restore under way (`status.restore`, phase `Restoring`).
fn restoring(members_restarted: bool) -> etcd_operator::crd::EtcdCluster {
    use etcd_operator::crd::{EtcdClusterStatus, RestorePhase, RestoreStatus};
    let mut c = cluster(
        "  replicas: 3\n  backup:\n    schedule: '@daily'\n    s3: {bucket: b, credentialsSecretRef: {name: s3}}\n",
    );
    c.status = Some(EtcdClusterStatus {
        restore: Some(RestoreStatus {
            request: "latest".into(),
            phase: RestorePhase::Restoring,
            id: Some("1800000000".into()),
            key: Some("db/main/main-x-r9.snap.zst".into()),
            revision: Some(9),
            previous_cluster_id: Some("c1".into()),
            members_restarted,
            ..RestoreStatus::default()
        }),
        ..EtcdClusterStatus::default()
    });
    c
}

/// An in-place restore runs alone: every member restarts at once (whatever else the
/// observation would ask for: a lost member, a pending rollout), then the planner waits.
#[test]
fn an_in_place_restore_restarts_every_member_at_once_then_waits() {
    let n = names();
    let c = validated(&restoring(false));
    assert!(c.restore.is_some());
    for (what, observed) in [
        ("healthy", settled(&c, 3, all_healthy(3))),
        (
            "a lost member",
            with_lost(settled(&c, 3, all_healthy(3)), 1),
        ),
        (
            "unreachable",
            Observed {
                etcd: EtcdState::Unreachable {
                    error: "no quorum".into(),
                },
                ..settled(&c, 3, all_healthy(3))
            },
        ),
    ] {
        let p = plan(Ok(&c), &observed);
        assert_eq!(
            p.step,
            Step::RestoreMembers {
                names: (0..3).map(|i| n.member(i)).collect()
            },
            "{what}"
        );
        assert_eq!(p.desired.map(|d| d.replicas), Some(3), "{what}");
    }
    let c = validated(&restoring(true));
    let p = plan(Ok(&c), &with_lost(settled(&c, 3, all_healthy(3)), 1));
    assert!(matches!(p.step, Step::Wait { .. }), "{:?}", p.step);
    // A finished restore no longer steers the planner.
    let mut done = restoring(true);
    done.status
        .as_mut()
        .expect("test fixture")
        .restore
        .as_mut()
        .expect("test fixture")
        .phase = etcd_operator::crd::RestorePhase::Completed;
    let c = validated(&done);
    assert!(c.restore.is_none());
    assert_eq!(
        plan(Ok(&c), &settled(&c, 3, all_healthy(3))).step,
        Step::InSync
    );
}

/// While the restore is under way the ConfigMap carries its source for the init containers
/// (the backup, the new token, every member in the new initial cluster); the pods' template
/// does not change, so starting a restore rolls nothing by itself.
#[test]
fn the_configmap_carries_the_in_place_restore_while_it_runs() {
    use etcd_operator::backup::in_place::SOURCE_FILE;
    use etcd_operator::backup::restore::Source;
    let objects = |c: &etcd_operator::crd::EtcdCluster| {
        let v = validated(c);
        let desired = plan(Ok(&v), &settled(&v, 3, all_healthy(3)))
            .desired
            .expect("applies");
        etcd_operator::build::build(&v, &desired).expect("builds")
    };
    let running = objects(&restoring(false));
    let text = running.config_map.data.as_ref().expect("test fixture")[SOURCE_FILE].clone();
    let source: Source = serde_json::from_str(&text).expect("source");
    assert_eq!(source.key.as_deref(), Some("db/main/main-x-r9.snap.zst"));
    assert_eq!(
        (source.namespace.as_str(), source.cluster.as_str()),
        ("db", "main")
    );
    let target = source.in_place.expect("in place");
    assert_eq!(target.id, "1800000000");
    assert!(
        target.token.ends_with("-restore-1800000000"),
        "{}",
        target.token
    );
    let n = names();
    let members: Vec<String> = (0..3)
        .map(|i| format!("{}={}", n.member(i), n.peer_url(i)))
        .collect();
    assert_eq!(target.initial_cluster, members.join(","));

    let mut idle = restoring(false);
    idle.status = None;
    let idle = objects(&idle);
    assert!(
        !idle
            .config_map
            .data
            .as_ref()
            .expect("test fixture")
            .contains_key(SOURCE_FILE)
    );
    assert_eq!(
        serde_json::to_value(&idle.statefulset.spec).expect("test fixture"),
        serde_json::to_value(&running.statefulset.spec).expect("test fixture"),
        "the template is the same with and without a restore"
    );
    let pod = idle
        .statefulset
        .spec
        .expect("test fixture")
        .template
        .spec
        .expect("test fixture");
    let init = &pod
        .init_containers
        .expect("the restore init container, with spec.backup")[0];
    assert!(
        init.args
            .as_ref()
            .expect("test fixture")
            .contains(&format!("--in-place=/etc/etcd/{SOURCE_FILE}")),
        "{:?}",
        init.args
    );
    let env: Vec<&str> = init
        .env
        .as_ref()
        .expect("test fixture")
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"AWS_ACCESS_KEY_ID") && !env.contains(&"ETCD_OPERATOR_RESTORE_SOURCE"),
        "{env:?}"
    );
}

/// The restore moves on: the members' pods deleted, then done once every pod is back and
/// every member is a healthy voter under a new cluster ID; a member whose restore failed
/// says why.
#[test]
fn an_in_place_restore_completes_under_a_new_cluster_id() {
    use etcd_operator::backup::in_place::advance;
    use etcd_operator::crd::RestorePhase;
    let c = restoring(false);
    let v = validated(&c);
    let mut r = c
        .status
        .as_ref()
        .expect("test fixture")
        .restore
        .clone()
        .expect("test fixture");
    let restart = Step::RestoreMembers { names: vec![] };
    assert!(
        advance(
            &mut r,
            &restart,
            &back(settled(&v, 3, all_healthy(3))),
            3,
            None
        )
        .is_none()
    );
    assert!(r.members_restarted);
    let wait = Step::Wait {
        reason: String::new(),
    };
    let with_id = |id: u64, o: Observed| Observed {
        etcd: match o.etcd {
            EtcdState::Reachable(mut view) => {
                view.cluster_id = id;
                EtcdState::Reachable(view)
            }
            e => e,
        },
        ..o
    };
    // The old cluster still answers (its pods terminating): not done.
    let mut old = back(settled(&v, 3, all_healthy(3)));
    old.pods.get_mut(&0).expect("test fixture").terminating = true;
    assert!(advance(&mut r, &wait, &with_id(0xd2, old), 3, None).is_none());
    // Same cluster ID as before: not done.
    assert!(
        advance(
            &mut r,
            &wait,
            &with_id(0xc1, back(settled(&v, 3, all_healthy(3)))),
            3,
            None
        )
        .is_none()
    );
    // One member not back yet.
    let mut missing = back(settled(&v, 3, all_healthy(3)));
    missing.pods.remove(&2);
    assert!(advance(&mut r, &wait, &with_id(0xd2, missing), 3, None).is_none());
    // A failed init container is reported, and the restore stays under way.
    let mut failed = back(settled(&v, 3, all_healthy(2)));
    failed
        .pods
        .get_mut(&2)
        .expect("test fixture")
        .restore_failed = Some("NoSuchKey: the key does not exist".into());
    assert!(advance(&mut r, &wait, &with_id(0xd2, failed), 3, None).is_none());
    assert!(
        r.message
            .as_deref()
            .expect("test fixture")
            .contains("member 2: NoSuchKey"),
        "{:?}",
        r.message
    );
    assert_eq!(r.phase, RestorePhase::Restoring);
    // Done.
    let change = advance(
        &mut r,
        &wait,
        &with_id(0xd2, back(settled(&v, 3, all_healthy(3)))),
        3,
        None,
    )
    .expect("completed");
    assert_eq!(change.reason(), "RestoreCompleted");
    assert_eq!(r.phase, RestorePhase::Completed);
    assert_eq!(r.cluster_id.as_deref(), Some("d2"));
    assert!(r.message.expect("test fixture").contains("from c1 to d2"));

    // Without a previous cluster ID (the cluster was down when asked): the pods' own word
    // that they restored is what counts.
    let mut r = c
        .status
        .as_ref()
        .and_then(|s| s.restore.clone())
        .expect("restore");
    r.members_restarted = true;
    r.previous_cluster_id = None;
    let mut one_missed = back(settled(&v, 3, all_healthy(3)));
    one_missed.pods.get_mut(&1).expect("pod").restored = Some(String::new());
    assert!(advance(&mut r, &wait, &one_missed, 3, None).is_none());
    assert!(
        advance(
            &mut r,
            &wait,
            &back(settled(&v, 3, all_healthy(3))),
            3,
            None
        )
        .is_some()
    );
}

/// Every pod as restored by the fixture's restore.
fn back(mut o: Observed) -> Observed {
    for p in o.pods.values_mut() {
        p.restored = Some("1800000000".into());
    }
    o
}

/// A pod whose init container finished without the restore (it started before the ConfigMap
/// carried it) restarts onto it; one still restoring is waited for.
#[test]
fn a_member_that_missed_the_restore_restarts_onto_it() {
    let c = validated(&restoring(true));
    let mut o = back(settled(&c, 3, all_healthy(3)));
    o.pods.get_mut(&2).expect("pod").restored = Some(String::new());
    o.pods.get_mut(&1).expect("pod").restored = None;
    assert_eq!(
        plan(Ok(&c), &o).step,
        Step::RestoreMembers {
            names: vec![names().member(2)]
        }
    );
    o.pods.get_mut(&2).expect("pod").restored = Some("1800000000".into());
    assert!(matches!(plan(Ok(&c), &o).step, Step::Wait { .. }));
}

/// Member `i` answering without a leader, its log at `raft_index`.
fn leaderless(i: i32, raft_index: u64) -> etcd_operator::observe::MemberView {
    let mut m = healthy(i);
    m.health = MemberHealth::Leaderless { raft_index };
    m
}

#[test]
fn a_lost_quorum_is_recovered_only_when_allowed_and_from_the_member_that_applied_most() {
    use std::time::Duration;
    const MANUAL: &str = "  replicas: 3\n";
    const AUTO: &str = "  replicas: 3\n  recovery:\n    mode: Automatic\n";
    const APPROVE: &str = "etcd.rustops.dev/approve-recovery: 11111111-2222-3333-4444-555555555555";
    let n = names();
    let minutes = |m: u64| Some(Duration::from_secs(60 * m));
    // members 1 and 2 lost their data; member 0 answers without a leader at index 100.
    let two_lost = |c: &etcd_operator::validate::ValidatedCluster, lost_for| {
        let mut o = with_lost(
            with_lost(
                settled(c, 3, vec![leaderless(0, 100), unhealthy(1), unhealthy(2)]),
                1,
            ),
            2,
        );
        o.statefulset.as_mut().expect("sts").ready_replicas = 0;
        o.quorum_lost_for = lost_for;
        o
    };
    type Observe = Box<dyn Fn(&etcd_operator::validate::ValidatedCluster) -> Observed>;
    enum Want {
        Step(Step),
        /// A wait whose reason says this.
        Wait(&'static str),
    }
    let rows: Vec<(&str, &str, Option<&str>, Observe, Want)> = vec![
        (
            "manual: waits for the approval, and says how to give it",
            MANUAL,
            None,
            Box::new(move |c| two_lost(c, minutes(10))),
            Want::Wait("etcd.rustops.dev/approve-recovery=11111111-2222-3333-4444-555555555555"),
        ),
        (
            "manual, approved: the survivor restarts alone",
            MANUAL,
            Some(APPROVE),
            Box::new(move |c| two_lost(c, minutes(10))),
            Want::Step(Step::ForceNewCluster { name: n.member(0) }),
        ),
        (
            "an approval for another cluster approves nothing",
            MANUAL,
            Some("etcd.rustops.dev/approve-recovery: some-other-uid"),
            Box::new(move |c| two_lost(c, minutes(10))),
            Want::Wait("to approve"),
        ),
        (
            "automatic: no approval needed",
            AUTO,
            None,
            Box::new(move |c| two_lost(c, minutes(10))),
            Want::Step(Step::ForceNewCluster { name: n.member(0) }),
        ),
        (
            "not lost for long enough yet",
            AUTO,
            None,
            Box::new(move |c| two_lost(c, minutes(1))),
            Want::Wait("considered after 300s"),
        ),
        (
            "just found lost: the condition starts the clock",
            AUTO,
            None,
            Box::new(move |c| two_lost(c, None)),
            Want::Wait("the quorum is lost: 0 of 3"),
        ),
        (
            "the member that applied the most is chosen",
            AUTO,
            None,
            Box::new(move |c| {
                let mut o = with_lost(
                    settled(
                        c,
                        3,
                        vec![leaderless(0, 100), leaderless(1, 120), unhealthy(2)],
                    ),
                    2,
                );
                o.statefulset.as_mut().expect("sts").ready_replicas = 0;
                o.quorum_lost_for = minutes(10);
                o
            }),
            Want::Step(Step::ForceNewCluster { name: n.member(1) }),
        ),
        (
            "a member that cannot be asked may be newer: automatic waits",
            AUTO,
            None,
            Box::new(move |c| {
                let mut o = with_lost(
                    settled(c, 3, vec![leaderless(0, 100), unhealthy(1), unhealthy(2)]),
                    2,
                );
                o.quorum_lost_for = minutes(10);
                o
            }),
            Want::Wait("main-1 cannot be asked"),
        ),
        (
            "... and an approval takes that risk",
            AUTO,
            Some(APPROVE),
            Box::new(move |c| {
                let mut o = with_lost(
                    settled(c, 3, vec![leaderless(0, 100), unhealthy(1), unhealthy(2)]),
                    2,
                );
                o.quorum_lost_for = minutes(10);
                o
            }),
            Want::Step(Step::ForceNewCluster { name: n.member(0) }),
        ),
        (
            "a voter that follows a leader means a quorum exists: no recovery",
            AUTO,
            Some(APPROVE),
            Box::new(move |c| {
                let mut o = settled(c, 3, vec![healthy(0), unhealthy(1), unhealthy(2)]);
                o.statefulset.as_mut().expect("sts").ready_replicas = 0;
                o.quorum_lost_for = minutes(10);
                o
            }),
            Want::Wait("main-0 follows a leader"),
        ),
        (
            "Ready pods mean a quorum serves them somewhere: no recovery",
            AUTO,
            Some(APPROVE),
            Box::new(move |c| {
                let mut o = two_lost(c, minutes(10));
                o.statefulset.as_mut().expect("sts").ready_replicas = 2;
                o
            }),
            Want::Wait("no recovery"),
        ),
        (
            "no member with its data answers: a backup is the way back",
            AUTO,
            Some(APPROVE),
            Box::new(move |c| {
                let mut o = two_lost(c, minutes(10));
                if let EtcdState::Reachable(v) = &mut o.etcd {
                    v.members[0] = unhealthy(0);
                }
                o = with_lost(o, 0);
                o
            }),
            Want::Wait("restore the cluster from a backup"),
        ),
        (
            "one member down is no loss of quorum",
            AUTO,
            Some(APPROVE),
            Box::new(move |c| {
                let mut o = settled(c, 3, vec![healthy(0), healthy(1), unhealthy(2)]);
                o.quorum_lost_for = minutes(10);
                o
            }),
            Want::Wait("main-2"),
        ),
        (
            "restarting alone: wait until it runs alone",
            AUTO,
            None,
            Box::new(move |c| {
                let mut o = two_lost(c, minutes(10));
                o.member_configs
                    .get_mut(&names().member(0))
                    .expect("config")
                    .force_new_cluster = true;
                o
            }),
            Want::Wait("restarts as a one-member cluster"),
        ),
        (
            "running alone: the flag is cleared before anything else",
            AUTO,
            None,
            Box::new(move |c| {
                let mut o = with_lost(with_lost(settled(c, 3, vec![healthy(0)]), 1), 2);
                o.member_configs
                    .get_mut(&names().member(0))
                    .expect("config")
                    .force_new_cluster = true;
                o
            }),
            Want::Step(Step::ClearForceNewCluster { name: n.member(0) }),
        ),
        (
            "a re-added learner is promoted before the next lost member is added",
            AUTO,
            None,
            Box::new(move |c| {
                let mut learner = healthy(1);
                learner.is_learner = true;
                with_lost(settled(c, 3, vec![healthy(0), learner]), 2)
            }),
            Want::Step(Step::PromoteLearner {
                name: n.member(1),
                id: member_id(1),
            }),
        ),
        (
            "then the others are added again, one at a time",
            AUTO,
            None,
            Box::new(move |c| with_lost(with_lost(settled(c, 3, vec![healthy(0)]), 1), 2)),
            Want::Step(Step::ReAddMember {
                name: n.member(1),
                peer_url: n.peer_url(1),
            }),
        ),
    ];
    for (what, spec, annotation, observe, want) in rows {
        let mut ec = cluster(spec);
        if let Some(a) = annotation {
            let (k, v) = a.split_once(": ").expect("key: value");
            ec.metadata
                .annotations
                .get_or_insert_default()
                .insert(k.to_owned(), v.to_owned());
        }
        let c = validated(&ec);
        let o = observe(&c);
        let p = plan(Ok(&c), &o);
        match want {
            Want::Step(step) => {
                assert_eq!(p.step, step, "{what}");
                let desired = p.desired.as_ref().expect("objects to apply");
                let forced: Vec<&str> = desired
                    .members
                    .iter()
                    .filter(|m| m.force_new_cluster)
                    .map(|m| m.name.as_str())
                    .collect();
                match &step {
                    Step::ForceNewCluster { name } => {
                        assert_eq!(forced, [name.as_str()], "{what}: only it is forced");
                        let cm =
                            etcd_operator::build::configmap::build(&c, desired).expect("builds");
                        let file = &cm.data.as_ref().expect("data")[&format!("{name}.yaml")];
                        assert!(file.contains("force-new-cluster: true"), "{what}: {file}");
                        let back =
                            etcd_operator::build::configmap::parse_member(file).expect("parses");
                        assert!(back.force_new_cluster, "{what}: read back");
                        // The others join when they start on an empty volume: none of them
                        // can bootstrap a cluster of its own meanwhile.
                        for m in desired.members.iter().filter(|m| &m.name != name) {
                            assert_eq!(m.state, InitialState::Existing, "{what}: {}", m.name);
                        }
                    }
                    _ => assert!(forced.is_empty(), "{what}: nothing forced: {forced:?}"),
                }
            }
            Want::Wait(text) => match &p.step {
                Step::Wait { reason } => assert!(reason.contains(text), "{what}: {reason}"),
                other => panic!("{what}: expected a wait saying {text:?}, got {other:?}"),
            },
        }
    }
}

#[test]
fn recovery_settings_are_checked() {
    for (spec, problem) in [
        (
            "  recovery:\n    quorumLossAfter: soon\n",
            "recovery.quorumLossAfter",
        ),
        (
            "  recovery:\n    quorumLossAfter: 0s\n",
            "recovery.quorumLossAfter",
        ),
        (
            "  server:\n    extraArgs:\n      force-new-cluster: \"true\"\n",
            "--force-new-cluster is set by the operator's quorum-loss recovery",
        ),
    ] {
        match etcd_operator::validate::validate(&cluster(spec)) {
            Err(etcd_operator::validate::Error::InvalidSpec(problems)) => assert!(
                problems.iter().any(|p| p.contains(problem)),
                "{spec}: {problems:?}"
            ),
            other => panic!("{spec}: expected {problem:?}, got {other:?}"),
        }
    }
    let ok = validated(&cluster(
        "  recovery:\n    mode: Automatic\n    quorumLossAfter: 90s\n",
    ));
    assert!(ok.recovery.automatic && !ok.recovery.approved);
    assert_eq!(ok.recovery.after, std::time::Duration::from_secs(90));
}

/// A restore replaces every member's data: a quorum recovery under way ends with it, or the
/// member forced alone would split the restored cluster.
#[test]
fn an_in_place_restore_clears_a_recovery_under_way() {
    let c = validated(&restoring(false));
    let mut o = settled(&c, 3, vec![healthy(0)]);
    o.member_configs
        .get_mut(&names().member(0))
        .expect("config")
        .force_new_cluster = true;
    let p = plan(Ok(&c), &o);
    assert!(
        matches!(p.step, Step::RestoreMembers { .. }),
        "{:?}",
        p.step
    );
    let desired = p.desired.expect("objects");
    assert!(desired.members.iter().all(|m| !m.force_new_cluster));
}
