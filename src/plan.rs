//! Plan (pure): from the validated spec and the observed state to the next safe step.
//!
//! One step per reconcile, and membership changes one member at a time, each only while every
//! member is healthy:
//!
//! 1. an invalid spec: apply nothing;
//! 2. no StatefulSet: bootstrap every member with `initial-cluster-state: new`;
//! 3. etcd unreachable: wait (or, when no pod is ready at all, apply a changed spec, because
//!    there is no quorum left to protect and a fix must be able to get through);
//! 4. a member beyond the StatefulSet (a scale-up interrupted after `MemberAdd`): start its pod,
//!    or remove it if the scale-up was cancelled;
//! 5. unhealthy members: wait — except that a pending spec change is applied when the unhealthy
//!    members are the highest ordinals, because the StatefulSet replaces pods from the highest
//!    ordinal down and waits for each to be Ready, so it only touches pods that are already down;
//! 6. a started learner: promote it;
//! 7. a spec change: roll it out (the StatefulSet controller gates each pod on `/readyz`), then
//!    wait for the rollout;
//! 8. more replicas wanted: add the next member as a learner, then grow the StatefulSet;
//! 9. fewer wanted: move leadership away from the highest member if it leads, then remove it,
//!    then shrink the StatefulSet; a scale-down that would leave fewer healthy voters than a
//!    quorum is refused (`ScaleInRefused`) until the unhealthy members recover;
//! 10. otherwise in sync.
//!
//! The same planner drives the Kubernetes controller and the local runtime: everything it
//! needs to know about addresses comes from [`crate::names::ClusterNames`].

use std::time::Duration;

use crate::build::spec_hash;
use crate::observe::{ClusterView, EtcdState, MemberView, Observed, StatefulSetState};
use crate::validate::ValidatedCluster;

/// How long to wait before looking again while something is in progress.
pub const REQUEUE_BUSY: Duration = Duration::from_secs(5);
/// How long to wait while blocked on unhealthy members.
pub const REQUEUE_BLOCKED: Duration = Duration::from_secs(10);
/// How often to refresh the status of a cluster that is in sync.
pub const REQUEUE_IN_SYNC: Duration = Duration::from_secs(60);

/// `initial-cluster-state` of a member's configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// Bootstrapping a new cluster together with the other initial members.
    New,
    /// Joining a running cluster after `MemberAdd`.
    Existing,
}

impl InitialState {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }
}

/// How a member starts: what its configuration file says about the cluster it joins. Only
/// read by etcd-server when the member's data directory is empty, so it is kept unchanged
/// once written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberBootstrap {
    /// Member (pod) name.
    pub name: String,
    /// `initial-cluster-state`.
    pub state: InitialState,
    /// `initial-cluster`: `(name, peer URL)` pairs.
    pub initial_cluster: Vec<(String, String)>,
}

impl MemberBootstrap {
    /// The `initial-cluster` value.
    pub fn initial_cluster_value(&self) -> String {
        let pairs: Vec<String> = self
            .initial_cluster
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect();
        pairs.join(",")
    }
}

/// The objects to apply: the StatefulSet's size and every member's bootstrap configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// StatefulSet replicas.
    pub replicas: i32,
    /// One entry per ordinal `0..replicas`.
    pub members: Vec<MemberBootstrap>,
}

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
    /// The member to remove leads the cluster: hand leadership to another voter first.
    MoveLeader {
        /// The leading member (to be removed).
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
    /// Apply a changed spec.
    RollOut,
    /// The StatefulSet is replacing pods.
    WaitForRollout,
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
}

impl Plan {
    fn new(step: Step, desired: Option<Desired>, requeue_after: Duration) -> Self {
        Self {
            step,
            desired,
            requeue_after,
        }
    }
}

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
        return Plan::new(Step::Bootstrap, Some(bootstrap(cluster)), REQUEUE_BUSY);
    };
    let current = sts.replicas;
    let keep = desired(cluster, observed, current);
    let changed = sts.spec_hash.as_deref() != Some(spec_hash(cluster).as_str());
    let view = match &observed.etcd {
        EtcdState::Reachable(view) => view,
        EtcdState::NotChecked | EtcdState::Unreachable { .. } => {
            let error = match &observed.etcd {
                EtcdState::Unreachable { error } => error.as_str(),
                _ => "not checked",
            };
            if changed && sts.ready_replicas == 0 {
                return Plan::new(Step::RollOut, Some(keep), REQUEUE_BUSY);
            }
            return wait(format!("no member is reachable: {error}"), changed, keep);
        }
    };

    // 4. A member beyond the StatefulSet: a scale-up interrupted between MemberAdd and growing
    // the StatefulSet.
    if let Some(extra) = view
        .members
        .iter()
        .find(|m| m.ordinal.is_some_and(|i| i >= current))
    {
        let name = cluster.names.member(extra.ordinal.unwrap_or(current));
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

    // 5. Unhealthy or missing members.
    let unhealthy = unhealthy_ordinals(view, current);
    if !unhealthy.is_empty() {
        let names: Vec<String> = unhealthy.iter().map(|i| cluster.names.member(*i)).collect();
        let highest_only = unhealthy
            .iter()
            .enumerate()
            .all(|(k, i)| *i == current - unhealthy.len() as i32 + k as i32);
        // Scaling down past the one unhealthy member: removing it only helps quorum. This also
        // finishes a scale-down interrupted between MemberRemove and shrinking the StatefulSet.
        if cluster.spec.replicas < current && unhealthy == [current - 1] && view.has_quorum() {
            let last = current - 1;
            let id = view.by_ordinal(last).map(|m| m.id);
            let shrunk = desired(cluster, observed, last);
            return Plan::new(
                Step::RemoveMember {
                    name: cluster.names.member(last),
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
                    name: cluster.names.member(current - 1),
                    reason,
                },
                (!changed).then_some(keep),
                REQUEUE_BLOCKED,
            );
        }
        if changed && highest_only && view.has_quorum() {
            return Plan::new(Step::RollOut, Some(keep), REQUEUE_BUSY);
        }
        return wait(
            format!("members {} are not healthy", names.join(", ")),
            changed,
            keep,
        );
    }

    // 6. A started learner.
    if let Some(learner) = view.members.iter().find(|m| m.is_learner) {
        let name = learner
            .ordinal
            .map(|i| cluster.names.member(i))
            .unwrap_or_else(|| learner.name.clone());
        return Plan::new(
            Step::PromoteLearner {
                name,
                id: learner.id,
            },
            Some(keep),
            REQUEUE_BUSY,
        );
    }

    // 7. A spec change, then its rollout.
    if changed {
        return Plan::new(Step::RollOut, Some(keep), REQUEUE_BUSY);
    }
    if !sts.rollout_complete {
        return Plan::new(Step::WaitForRollout, Some(keep), REQUEUE_BUSY);
    }

    // 8, 9. Scaling, one member at a time.
    if cluster.spec.replicas > current {
        return Plan::new(
            Step::AddLearner {
                name: cluster.names.member(current),
                peer_url: cluster.names.peer_url(current),
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
                        name: cluster.names.member(last),
                        to_name: to
                            .ordinal
                            .map(|i| cluster.names.member(i))
                            .unwrap_or_else(|| to.name.clone()),
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
                name: cluster.names.member(last),
                id,
            },
            Some(shrunk),
            REQUEUE_BUSY,
        );
    }
    Plan::new(Step::InSync, Some(keep), REQUEUE_IN_SYNC)
}

/// Waiting still re-applies the objects when the spec is unchanged: that repairs drift (a
/// deleted Service) without touching pods. A changed spec waits.
fn wait(reason: String, changed: bool, keep: Desired) -> Plan {
    Plan::new(
        Step::Wait { reason },
        (!changed).then_some(keep),
        REQUEUE_BLOCKED,
    )
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
    let healthy = remaining.filter(|m| m.healthy()).count();
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

fn bootstrap(cluster: &ValidatedCluster) -> Desired {
    let n = cluster.spec.replicas;
    let initial: Vec<(String, String)> = (0..n)
        .map(|i| (cluster.names.member(i), cluster.names.peer_url(i)))
        .collect();
    let members = (0..n)
        .map(|i| MemberBootstrap {
            name: cluster.names.member(i),
            state: InitialState::New,
            initial_cluster: initial.clone(),
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
                .unwrap_or_else(|| joining(cluster, i))
        })
        .collect();
    Desired { replicas, members }
}

/// Grows the StatefulSet by one: the new member joins the members below it.
fn grow(cluster: &ValidatedCluster, observed: &Observed, current: i32) -> Desired {
    let mut d = desired(cluster, observed, current);
    d.members.push(joining(cluster, current));
    d.replicas = current + 1;
    d
}

fn joining(cluster: &ValidatedCluster, ordinal: i32) -> MemberBootstrap {
    MemberBootstrap {
        name: cluster.names.member(ordinal),
        state: InitialState::Existing,
        initial_cluster: (0..=ordinal)
            .map(|i| (cluster.names.member(i), cluster.names.peer_url(i)))
            .collect(),
    }
}

/// Whether the StatefulSet exists but the spec hash differs (exposed for status).
pub fn spec_changed(cluster: &ValidatedCluster, sts: &StatefulSetState) -> bool {
    sts.spec_hash.as_deref() != Some(spec_hash(cluster).as_str())
}
