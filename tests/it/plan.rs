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
            name: "the rollout is still running",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = settled(c, 3, all_healthy(3));
                o.statefulset.as_mut().expect("sts").rollout_complete = false;
                o
            }),
            step: Step::WaitForRollout,
            apply: Some(3),
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
            name: "members unreachable with a change pending and pods still ready: wait",
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
                    rollout_complete: true,
                });
                o
            }),
            step: Step::Wait {
                reason: "no member is reachable: timeout".into(),
            },
            apply: None,
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
                    rollout_complete: true,
                });
                o
            }),
            step: Step::RollOut,
            apply: Some(3),
        },
        Row {
            name: "lowest member unhealthy with a change pending: wait (a rollout would take a healthy one down)",
            spec: "  replicas: 3\n",
            observed: Box::new(|c| {
                let mut o = settled(c, 3, vec![unhealthy(0), healthy(1), healthy(2)]);
                o.statefulset.as_mut().expect("sts").spec_hash = Some("older".into());
                o
            }),
            step: Step::Wait {
                reason: "members main-0 are not healthy".into(),
            },
            apply: None,
        },
        Row {
            name: "highest member unhealthy with a change pending: roll out (it replaces the broken pod first)",
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
