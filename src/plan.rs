//! Plan (pure): from the validated spec and the observed state to the next safe step.
//!
//! One step per reconcile; membership changes one member at a time, each only while a quorum
//! of the voting members is healthy and caught up with the leader (within [`MAX_LAG`] Raft
//! entries):
//!
//! 1. an invalid spec: apply nothing;
//! 2. no StatefulSet: bootstrap every member with `initial-cluster-state: new`;
//! 3. a changed spec: apply it. The StatefulSet's update strategy is `OnDelete`, so this
//!    restarts nothing; the operator restarts members itself (7, 10);
//! 4. etcd unreachable: wait, except that members on an older template are restarted when no
//!    pod is ready at all (there is no quorum left to protect, and the new template may be the
//!    fix);
//! 5. a member beyond the StatefulSet (a scale-up interrupted after `MemberAdd`): start its
//!    pod, or remove it if the scale-up was cancelled;
//! 6. a lost member (its pod says its data is gone or belongs to a removed member): remove it
//!    from etcd; once it is missing from the member list, add it again as a learner under the
//!    same name and peer URL and wipe its volume; a re-added learner whose pod still has old
//!    data is wiped again. All of it only with a quorum;
//! 7. unhealthy members: restart those on an older template (they are down anyway); finish a
//!    scale-down past the one unhealthy highest member; refuse a scale-down that would leave
//!    fewer healthy voters than a quorum (`ScaleInRefused`); otherwise wait;
//! 8. members trailing the leader: wait for them;
//! 9. a started learner: promote it;
//! 10. a rolling update: restart one member on an older template at a time, followers first
//!     (lowest ordinal first), the leader last after `MoveLeader` to an updated member;
//! 11. more replicas wanted: add the next member as a learner, then grow the StatefulSet;
//! 12. fewer wanted: move leadership away from the highest member if it leads, then remove
//!     it, then shrink the StatefulSet;
//! 13. otherwise in sync.
//!
//! Everything the planner decides from is observed (etcd's member list and statuses, the
//! StatefulSet, the pods), never remembered, so an operator restarted at any point continues
//! from what it finds. The same planner drives the Kubernetes controller and the local
//! runtime: everything it needs to know about addresses comes from
//! [`crate::names::ClusterNames`].

use std::time::Duration;

use crate::model::spec_hash;
use crate::observe::{ClusterView, EtcdState, MemberHealth, MemberView, Observed};
use crate::validate::ValidatedCluster;

pub use crate::model::{Desired, InitialState, MemberBootstrap};

/// How long to wait before looking again while something is in progress.
pub const REQUEUE_BUSY: Duration = Duration::from_secs(5);
/// How long to wait while blocked on unhealthy members.
pub const REQUEUE_BLOCKED: Duration = Duration::from_secs(10);
/// How often to refresh the status of a cluster that is in sync.
pub const REQUEUE_IN_SYNC: Duration = Duration::from_secs(60);

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The spec is invalid: report it, apply nothing, wait for a change.
    Invalid {
        /// The problems.
        problems: Vec<String>,
    },
    /// Create a new cluster.
    Bootstrap,
    /// Add the member for the next ordinal as a learner, then start its pod.
    AddLearner {
        /// Member name.
        name: String,
        /// Its peer URL.
        peer_url: String,
    },
    /// The member was added to etcd already; start its pod.
    StartMember {
        /// Member name.
        name: String,
    },
    /// Promote a started learner to a voting member.
    PromoteLearner {
        /// Member name.
        name: String,
        /// Member ID.
        id: u64,
    },
    /// Remove a member from etcd (if it is still listed), then shrink the StatefulSet.
    RemoveMember {
        /// Member name.
        name: String,
        /// Member ID, `None` when it was already removed.
        id: Option<u64>,
    },
    /// Hand leadership from `name` to another voter: before removing `name`, or before
    /// restarting it in a rolling update.
    MoveLeader {
        /// The leading member.
        name: String,
        /// The member that takes over.
        to_name: String,
        /// Its member ID.
        to_id: u64,
    },
    /// A scale-down is wanted but removing the next member would leave fewer healthy voting
    /// members than a quorum: nothing changes until the unhealthy members recover.
    ScaleInRefused {
        /// The member that would be removed.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// Apply a changed spec. The StatefulSet updates pods only when they are deleted
    /// (`OnDelete`), so this restarts nothing; [`Step::RestartMembers`] does, in order.
    RollOut,
    /// Restart members onto the current template: one healthy follower at a time in a rolling
    /// update, or every member that is down anyway.
    RestartMembers {
        /// Member names.
        names: Vec<String>,
    },
    /// First half of replacing a member whose data is lost: remove it from etcd. Its pod
    /// stays; the next steps wipe its volume and add it again.
    RemoveLostMember {
        /// Member name.
        name: String,
        /// Member ID.
        id: u64,
    },
    /// Second half of replacing a lost member: add it again as a learner under the same name
    /// and peer URL, then wipe its volume so it joins from scratch.
    ReAddMember {
        /// Member name.
        name: String,
        /// Its peer URL.
        peer_url: String,
    },
    /// A learner that has not started yet runs on data that cannot join (left from before
    /// it was removed): wipe its volume.
    WipeMember {
        /// Member name.
        name: String,
    },
    /// Moving between plain and TLS: every member serves both schemes now; move this
    /// member's peer URL to the wanted scheme (`MemberUpdate`).
    UpdatePeerUrl {
        /// Member name.
        name: String,
        /// Member ID.
        id: u64,
        /// Its new peer URL.
        peer_url: String,
    },
    /// An in-place restore: every member's pod restarts at once, and its init container
    /// makes its data from the backup (see [`crate::backup::in_place`]).
    RestoreMembers {
        /// Member names.
        names: Vec<String>,
    },
    /// The quorum is lost and recovery is allowed: restart this member (the survivor that
    /// applied the most) alone with its data, its configuration file carrying
    /// `force-new-cluster` (see [`crate::recovery`]).
    ForceNewCluster {
        /// Member name.
        name: String,
    },
    /// The member restarted alone runs alone: remove `force-new-cluster` from its file
    /// before any other member is added again.
    ClearForceNewCluster {
        /// Member name.
        name: String,
    },
    /// Blocked: nothing may safely change now.
    Wait {
        /// Why.
        reason: String,
    },
    /// Nothing to do.
    InSync,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to do.
    pub step: Step,
    /// The objects to apply afterwards; `None` applies nothing.
    pub desired: Option<Desired>,
    /// When to look again.
    pub requeue_after: Duration,
    /// The cluster moves between plain and TLS: build it with
    /// [`ValidatedCluster::tls_moving`].
    pub tls_moving: bool,
}

impl Plan {
    fn new(step: Step, desired: Option<Desired>, requeue_after: Duration) -> Self {
        Self {
            step,
            desired,
            requeue_after,
            tls_moving: false,
        }
    }
}

/// How far (in Raft entries) a member may trail the leader and still count as caught up. Status
/// answers are gathered concurrently under load, so a little skew is normal.
pub const MAX_LAG: u64 = 1000;

/// Decides the next step for `cluster` (or its validation problems) given `observed`.
pub fn plan(cluster: Result<&ValidatedCluster, &[String]>, observed: &Observed) -> Plan {
    let cluster = match cluster {
        Ok(c) => c,
        Err(problems) => {
            return Plan::new(
                Step::Invalid {
                    problems: problems.to_vec(),
                },
                None,
                REQUEUE_BLOCKED,
            );
        }
    };
    let Some(sts) = &observed.statefulset else {
        if cluster.backup_to_choose {
            return Plan::new(
                Step::Wait {
                    reason: "choosing the backup to create the cluster from (status.restore says what is missing)".to_owned(),
                },
                None,
                REQUEUE_BLOCKED,
            );
        }
        return Plan::new(Step::Bootstrap, Some(bootstrap(cluster)), REQUEUE_BUSY);
    };
    // TLS turned on or off while the cluster runs: members serve both schemes until every
    // one advertises the wanted one (see `tls_moving`).
    let moving = tls_moving(cluster, observed, sts);
    let moved = cluster.tls_moving(moving);
    let mut plan = steps(&moved, observed, sts);
    plan.tls_moving = moving;
    plan
}

/// Whether the cluster moves between plain and TLS: some member advertises a peer or client
/// URL of the other scheme than `spec.tls` wants. Without etcd to ask, members never switch
/// scheme: a StatefulSet built as moving, or for other schemes than wanted, is built to serve
/// both (a superset of what any member serves now).
fn tls_moving(
    cluster: &ValidatedCluster,
    observed: &Observed,
    sts: &crate::observe::StatefulSetState,
) -> bool {
    let names = &cluster.names;
    match &observed.etcd {
        EtcdState::Reachable(view) => view.members.iter().any(|m| {
            m.peer_tls != names.peer_tls || m.client_tls.is_some_and(|c| c != names.client_tls)
        }),
        _ => match sts.tls_built {
            Some(b) => b.moving || b.client != names.client_tls || b.peer != names.peer_tls,
            // Built by an older operator: moving only if its hash says so.
            None => sts.spec_hash.as_deref() == Some(spec_hash(&cluster.tls_moving(true)).as_str()),
        },
    }
}

/// [`plan`] for a cluster with a StatefulSet.
fn steps(
    cluster: &ValidatedCluster,
    observed: &Observed,
    sts: &crate::observe::StatefulSetState,
) -> Plan {
    let names = &cluster.names;
    let current = sts.replicas;
    let keep = desired(cluster, observed, current);
    let changed = sts.spec_hash.as_deref() != Some(spec_hash(cluster).as_str());
    let pod = |i: i32| observed.pods.get(&i).cloned().unwrap_or_default();
    // An in-place restore runs alone: the restore's source goes into the ConfigMap (with the
    // objects applied first), then every member restarts at once onto it; nothing else
    // changes until the restored cluster is up (the controller then records it done).
    if let Some(restore) = &cluster.restore {
        // A restore replaces every member's data: a quorum recovery under way ends with it
        // (a member forced alone beside the restored ones would split the cluster).
        let mut keep = keep;
        for m in &mut keep.members {
            m.force_new_cluster = false;
        }
        if !restore.members_restarted {
            let all = (0..current).map(|i| names.member(i)).collect();
            return Plan::new(
                Step::RestoreMembers { names: all },
                Some(keep),
                REQUEUE_BUSY,
            );
        }
        // A pod whose init container finished without this restore (it started before the
        // ConfigMap carried it, say) restarts onto it.
        let missed: Vec<String> = (0..current)
            .filter(|i| {
                let p = pod(*i);
                !p.terminating && p.restored.as_ref().is_some_and(|id| *id != restore.id)
            })
            .map(|i| names.member(i))
            .collect();
        if !missed.is_empty() {
            return Plan::new(
                Step::RestoreMembers { names: missed },
                Some(keep),
                REQUEUE_BUSY,
            );
        }
        return wait(
            format!(
                "restoring in place from {}: waiting for the restored members",
                restore.key
            ),
            keep,
        );
    }
    // Applying a changed spec restarts nothing (OnDelete), so it is safe in any state.
    if changed {
        return Plan::new(Step::RollOut, Some(keep), REQUEUE_BUSY);
    }
    let view = match &observed.etcd {
        EtcdState::Reachable(view) => view,
        EtcdState::NotChecked | EtcdState::Unreachable { .. } => {
            let error = match &observed.etcd {
                EtcdState::Unreachable { error } => error.as_str(),
                _ => "not checked",
            };
            // No quorum to protect: every stale member is down; let the new template (a
            // fix) reach all of them at once.
            let stale: Vec<String> = (0..current)
                .filter(|i| pod(*i).stale && !pod(*i).terminating)
                .map(|i| names.member(i))
                .collect();
            if sts.ready_replicas == 0 && !stale.is_empty() {
                return Plan::new(
                    Step::RestartMembers { names: stale },
                    Some(keep),
                    REQUEUE_BUSY,
                );
            }
            return wait(format!("no member is reachable: {error}"), keep);
        }
    };

    // The quorum: recovering it when it is lost for good and the user allows it.
    match crate::recovery::decide(cluster, observed, view, sts.ready_replicas) {
        crate::recovery::Decision::Fine => {}
        crate::recovery::Decision::Wait(reason) => return wait(reason, keep),
        crate::recovery::Decision::Force { ordinal } => {
            let mut d = keep;
            for (i, m) in d.members.iter_mut().enumerate() {
                if i as i32 == ordinal {
                    m.force_new_cluster = true;
                } else {
                    // A lost member restarting on an empty volume must not bootstrap a new
                    // cluster while the survivor restarts (nobody would answer it): it joins.
                    *m = joining(cluster, i as i32, current);
                }
            }
            return Plan::new(
                Step::ForceNewCluster {
                    name: names.member(ordinal),
                },
                Some(d),
                REQUEUE_BUSY,
            );
        }
        crate::recovery::Decision::Clear { ordinal } => {
            let mut d = keep;
            if let Some(m) = d.members.get_mut(ordinal as usize) {
                m.force_new_cluster = false;
            }
            return Plan::new(
                Step::ClearForceNewCluster {
                    name: names.member(ordinal),
                },
                Some(d),
                REQUEUE_BUSY,
            );
        }
    }

    // A member beyond the StatefulSet: a scale-up interrupted between MemberAdd and growing
    // the StatefulSet.
    if let Some(extra) = view
        .members
        .iter()
        .find(|m| m.ordinal.is_some_and(|i| i >= current))
    {
        let name = names.member(extra.ordinal.unwrap_or(current));
        if extra.ordinal == Some(current) && cluster.spec.replicas > current {
            return Plan::new(
                Step::StartMember { name },
                Some(grow(cluster, observed, current)),
                REQUEUE_BUSY,
            );
        }
        return Plan::new(
            Step::RemoveMember {
                name,
                id: Some(extra.id),
            },
            Some(keep),
            REQUEUE_BUSY,
        );
    }

    // Lost members (wanted ordinals only; a scale-in removes the others): remove, then add
    // again as a learner and wipe, while the rest keeps a quorum.
    for i in 0..current.min(cluster.spec.replicas) {
        let name = names.member(i);
        let lost = pod(i).data_lost.is_some();
        match view.by_ordinal(i) {
            Some(m) if m.healthy() || !lost => {}
            Some(m) if m.is_learner && m.name.is_empty() => {
                return Plan::new(Step::WipeMember { name }, Some(keep), REQUEUE_BUSY);
            }
            Some(m) => {
                // etcd commits a removal only with a quorum of the current voters.
                if !ready_quorum(view) {
                    return wait(
                        format!("{name} lost its data, but the cluster has no quorum to remove it"),
                        keep,
                    );
                }
                if let Some(reason) = removal_breaks_quorum(view, i) {
                    return wait(format!("{name} lost its data, but {reason}"), keep);
                }
                return Plan::new(
                    Step::RemoveLostMember { name, id: m.id },
                    Some(keep),
                    REQUEUE_BUSY,
                );
            }
            None if ready_quorum(view) && !view.members.iter().any(|m| m.is_learner) => {
                let mut d = keep;
                d.members[i as usize] = joining(cluster, i, current);
                return Plan::new(
                    Step::ReAddMember {
                        name,
                        peer_url: names.peer_url(i),
                    },
                    Some(d),
                    REQUEUE_BUSY,
                );
            }
            None => {}
        }
    }

    // Unhealthy or missing members.
    let unhealthy = unhealthy_ordinals(view, current);
    if !unhealthy.is_empty() {
        let member_names: Vec<String> = unhealthy.iter().map(|i| names.member(*i)).collect();
        // Down already: moving them to the current template costs nothing and may be the fix.
        let stale_down: Vec<String> = unhealthy
            .iter()
            .filter(|i| pod(**i).stale && !pod(**i).terminating)
            .map(|i| names.member(*i))
            .collect();
        if !stale_down.is_empty() {
            return Plan::new(
                Step::RestartMembers { names: stale_down },
                Some(keep),
                REQUEUE_BUSY,
            );
        }
        // Scaling down past the one unhealthy member: removing it only helps quorum. This also
        // finishes a scale-down interrupted between MemberRemove and shrinking the StatefulSet.
        if cluster.spec.replicas < current && unhealthy == [current - 1] && ready_quorum(view) {
            let last = current - 1;
            let id = view.by_ordinal(last).map(|m| m.id);
            let shrunk = desired(cluster, observed, last);
            return Plan::new(
                Step::RemoveMember {
                    name: names.member(last),
                    id,
                },
                Some(shrunk),
                REQUEUE_BUSY,
            );
        }
        if cluster.spec.replicas < current
            && let Some(reason) = removal_breaks_quorum(view, current - 1)
        {
            return Plan::new(
                Step::ScaleInRefused {
                    name: names.member(current - 1),
                    reason,
                },
                Some(keep),
                REQUEUE_BLOCKED,
            );
        }
        // Members missing from the member list (lost ones, or all but one after a quorum
        // recovery) are added again one at a time: a re-added learner that has caught up is
        // promoted before the next is added.
        if unhealthy.iter().all(|i| view.by_ordinal(*i).is_none())
            && ready_quorum(view)
            && let Some(learner) = view
                .members
                .iter()
                .find(|m| m.is_learner && m.ordinal.is_some() && m.healthy() && caught_up(view, m))
        {
            return promote(cluster, learner, keep);
        }
        return wait(
            format!("members {} are not healthy", member_names.join(", ")),
            keep,
        );
    }

    // Every member is healthy; each must also have caught up before anything else changes.
    let lagging: Vec<String> = view
        .members
        .iter()
        .filter(|m| !caught_up(view, m))
        .map(|m| display_name(cluster, m))
        .collect();
    if !lagging.is_empty() {
        return wait(
            format!(
                "members {} are catching up with the leader",
                lagging.join(", ")
            ),
            keep,
        );
    }

    // A started learner.
    if let Some(learner) = view.members.iter().find(|m| m.is_learner) {
        return promote(cluster, learner, keep);
    }

    // A rolling update: one member at a time, followers first (lowest ordinal first), the
    // leader last after handing leadership to an updated follower.
    if let Some(i) = (0..current).find(|i| pod(*i).terminating) {
        return wait(format!("{} is restarting", names.member(i)), keep);
    }
    let stale: Vec<i32> = (0..current).filter(|i| pod(*i).stale).collect();
    if !stale.is_empty() {
        let leader = view.leader();
        let is_leader = |i: i32| view.by_ordinal(i).map(|m| m.id) == leader && leader.is_some();
        if let Some(follower) = stale.iter().copied().find(|i| !is_leader(*i)) {
            return Plan::new(
                Step::RestartMembers {
                    names: vec![names.member(follower)],
                },
                Some(keep),
                REQUEUE_BUSY,
            );
        }
        let old_leader = stale[0];
        let successor = view
            .members
            .iter()
            .filter(|m| !m.is_learner && m.ordinal.is_some_and(|o| !pod(o).stale))
            .min_by_key(|m| m.ordinal.unwrap_or(i32::MAX));
        return match successor {
            Some(to) => Plan::new(
                Step::MoveLeader {
                    name: names.member(old_leader),
                    to_name: display_name(cluster, to),
                    to_id: to.id,
                },
                Some(keep),
                REQUEUE_BUSY,
            ),
            // A single member: no one to hand over to.
            None => Plan::new(
                Step::RestartMembers {
                    names: vec![names.member(old_leader)],
                },
                Some(keep),
                REQUEUE_BUSY,
            ),
        };
    }

    // Moving between plain and TLS, every member on the template that serves both: each
    // member's peer URL to the wanted scheme, one at a time. Client URLs follow by themselves
    // (members advertise the wanted scheme once restarted). Membership waits until done.
    if names.tls_moving {
        let scheme = if names.peer_tls { "https" } else { "http" };
        if let Some(m) = view
            .members
            .iter()
            .find(|m| m.ordinal.is_some() && m.peer_tls != names.peer_tls)
        {
            let i = m.ordinal.unwrap_or_default();
            return Plan::new(
                Step::UpdatePeerUrl {
                    name: names.member(i),
                    id: m.id,
                    peer_url: names.peer_url(i),
                },
                Some(keep),
                REQUEUE_BUSY,
            );
        }
        let others: Vec<String> = view
            .members
            .iter()
            .filter(|m| {
                m.ordinal.is_none()
                    && (m.peer_tls != names.peer_tls
                        || m.client_tls.is_some_and(|c| c != names.client_tls))
            })
            .map(|m| display_name(cluster, m))
            .collect();
        let reason = if others.is_empty() {
            format!("moving to {scheme}: waiting for every member to advertise it")
        } else {
            format!(
                "moving to {scheme}: members {} were not created by the operator and still advertise the other scheme; update their URLs or remove them",
                others.join(", ")
            )
        };
        return wait(reason, keep);
    }

    // Scaling, one member at a time.
    if cluster.spec.replicas > current {
        return Plan::new(
            Step::AddLearner {
                name: names.member(current),
                peer_url: names.peer_url(current),
            },
            Some(grow(cluster, observed, current)),
            REQUEUE_BUSY,
        );
    }
    if cluster.spec.replicas < current {
        let last = current - 1;
        let id = view.by_ordinal(last).map(|m| m.id);
        if id.is_some() && id == view.leader() {
            let successor = view
                .members
                .iter()
                .filter(|m| !m.is_learner && m.healthy() && Some(m.id) != id)
                .min_by_key(|m| m.ordinal.unwrap_or(i32::MAX));
            if let Some(to) = successor {
                return Plan::new(
                    Step::MoveLeader {
                        name: names.member(last),
                        to_name: display_name(cluster, to),
                        to_id: to.id,
                    },
                    Some(keep),
                    REQUEUE_BUSY,
                );
            }
        }
        let shrunk = desired(cluster, observed, last);
        return Plan::new(
            Step::RemoveMember {
                name: names.member(last),
                id,
            },
            Some(shrunk),
            REQUEUE_BUSY,
        );
    }
    // A member that has not published its client URLs has not finished starting, and until
    // it has, its peers cannot tell that it ran: a restart of it from an empty volume would
    // be let in with an empty log. The cluster is not reported in sync until every member has
    // published (etcd-server retries the publication quickly; this only keeps the operator
    // from calling the cluster settled in that window).
    let unpublished: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.client_tls.is_none())
        .map(|m| display_name(cluster, m))
        .collect();
    if !unpublished.is_empty() {
        return wait(
            format!(
                "members {} have not published their client URLs yet",
                unpublished.join(", ")
            ),
            keep,
        );
    }
    Plan::new(Step::InSync, Some(keep), REQUEUE_IN_SYNC)
}

/// Promote `learner` to a voting member.
fn promote(cluster: &ValidatedCluster, learner: &MemberView, keep: Desired) -> Plan {
    Plan::new(
        Step::PromoteLearner {
            name: display_name(cluster, learner),
            id: learner.id,
        },
        Some(keep),
        REQUEUE_BUSY,
    )
}

/// The operator's name for a member: from its ordinal, else the name it reports.
fn display_name(cluster: &ValidatedCluster, m: &MemberView) -> String {
    m.ordinal
        .map(|i| cluster.names.member(i))
        .unwrap_or_else(|| m.name.clone())
}

/// Whether more than half of the voting members are healthy and caught up: what any
/// membership change needs (a lagging member counts as unhealthy until it catches up).
pub fn ready_quorum(view: &ClusterView) -> bool {
    let voters: Vec<&MemberView> = view.members.iter().filter(|m| !m.is_learner).collect();
    let ready = voters
        .iter()
        .filter(|m| m.healthy() && caught_up(view, m))
        .count();
    !voters.is_empty() && ready > voters.len() / 2
}

/// Whether `m` is within [`MAX_LAG`] entries of the leader's Raft index.
pub fn caught_up(view: &ClusterView, m: &MemberView) -> bool {
    let index = |m: &MemberView| match m.health {
        MemberHealth::Healthy { raft_index, .. } => Some(raft_index),
        MemberHealth::Unhealthy { .. } | MemberHealth::Leaderless { .. } => None,
    };
    let leader = view
        .leader()
        .and_then(|id| view.members.iter().find(|m| m.id == id))
        .and_then(index);
    match (leader, index(m)) {
        (Some(l), Some(x)) => l.saturating_sub(x) <= MAX_LAG,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// Waiting still re-applies the objects: that repairs drift (a deleted Service) without
/// touching pods.
fn wait(reason: String, keep: Desired) -> Plan {
    Plan::new(Step::Wait { reason }, Some(keep), REQUEUE_BLOCKED)
}

/// Why removing member `ordinal` would leave fewer healthy voting members than a quorum of
/// the voters that remain; `None` when the removal is safe for quorum.
pub fn removal_breaks_quorum(view: &ClusterView, ordinal: i32) -> Option<String> {
    let removed = view.by_ordinal(ordinal).map(|m| m.id);
    let remaining = view
        .members
        .iter()
        .filter(|m| !m.is_learner && Some(m.id) != removed);
    let voters = remaining.clone().count();
    let healthy = remaining
        .filter(|m| m.healthy() && caught_up(view, m))
        .count();
    (healthy <= voters / 2).then(|| {
        format!(
            "removing member {ordinal} would leave {healthy} of {voters} voting members healthy, \
             fewer than a quorum of {}",
            voters / 2 + 1
        )
    })
}

/// Ordinals below `current` whose member is unhealthy or missing from the member list.
fn unhealthy_ordinals(view: &ClusterView, current: i32) -> Vec<i32> {
    (0..current)
        .filter(|i| !view.by_ordinal(*i).is_some_and(MemberView::healthy))
        .collect()
}

/// The objects of a new cluster: `spec.replicas` members bootstrapping together.
pub fn bootstrap(cluster: &ValidatedCluster) -> Desired {
    let n = cluster.spec.replicas;
    let initial: Vec<(String, String)> = (0..n)
        .map(|i| (cluster.names.member(i), cluster.names.peer_url(i)))
        .collect();
    let members = (0..n)
        .map(|i| MemberBootstrap {
            name: cluster.names.member(i),
            state: InitialState::New,
            initial_cluster: initial.clone(),
            force_new_cluster: false,
        })
        .collect();
    Desired {
        replicas: n,
        members,
    }
}

/// Members `0..replicas`, keeping each configuration file already written. A missing one (the
/// ConfigMap was deleted) is recreated as joining the members below it; etcd-server ignores it
/// anyway while the member's data directory exists.
fn desired(cluster: &ValidatedCluster, observed: &Observed, replicas: i32) -> Desired {
    let members = (0..replicas)
        .map(|i| {
            let name = cluster.names.member(i);
            observed
                .member_configs
                .get(&name)
                .cloned()
                .unwrap_or_else(|| joining(cluster, i, replicas))
        })
        .collect();
    Desired { replicas, members }
}

/// Grows the StatefulSet by one: the new member joins the members below it.
fn grow(cluster: &ValidatedCluster, observed: &Observed, current: i32) -> Desired {
    let mut d = desired(cluster, observed, current);
    d.members.push(joining(cluster, current, current + 1));
    d.replicas = current + 1;
    d
}

/// Member `ordinal` joining a running cluster of `replicas` members: `initial-cluster` names
/// every member (etcd-server asks the others for the member list and finds itself by its
/// peer URL).
fn joining(cluster: &ValidatedCluster, ordinal: i32, replicas: i32) -> MemberBootstrap {
    MemberBootstrap {
        name: cluster.names.member(ordinal),
        state: InitialState::Existing,
        initial_cluster: (0..replicas.max(ordinal + 1))
            .map(|i| (cluster.names.member(i), cluster.names.peer_url(i)))
            .collect(),
        force_new_cluster: false,
    }
}
