//! Carrying out a plan, shared by the Kubernetes controller and the local runtime: the
//! etcd-facing part of a step (MemberAdd as a learner, MemberPromote, MoveLeader,
//! MemberRemove) is the same everywhere; only running the members differs, behind
//! [`MemberRuntime`] (a StatefulSet, or local `etcd-server` processes).
//!
//! Order within one step: the etcd change first, then the members. A new member is added
//! to etcd before its process starts (so it joins with `existing`), and a removed member is
//! removed from etcd before its process stops (so the cluster never counts a stopped voter).

use futures::future::BoxFuture;

use crate::etcd::{self, EtcdAdmin};
use crate::names::ClusterNames;
use crate::plan::{Desired, Plan, Step};
use crate::validate::ValidatedCluster;

/// Runs members. Members `0..desired.replicas` run with their bootstrap configuration from
/// `desired`; members beyond are stopped and their data deleted (after the planner removed
/// them from etcd); members whose configuration changed are replaced one at a time.
pub trait MemberRuntime: Send {
    /// The runtime's error.
    type Error: From<etcd::Error> + Send;

    /// Makes the running members match `desired`.
    fn apply<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<(), Self::Error>>;
}

/// A membership change made in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A member was added as a learner.
    LearnerAdded {
        /// Member name.
        name: String,
        /// Its new ID.
        id: u64,
    },
    /// A learner became a voting member.
    Promoted {
        /// Member name.
        name: String,
        /// Member ID.
        id: u64,
    },
    /// Leadership moved to another member.
    LeaderMoved {
        /// The member that led.
        from: String,
        /// The member that leads now.
        to: String,
        /// Its ID.
        to_id: u64,
    },
    /// A member was removed.
    Removed {
        /// Member name.
        name: String,
        /// Member ID.
        id: u64,
    },
}

impl Change {
    /// Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::LearnerAdded { .. } => "MemberAdded",
            Self::Promoted { .. } => "MemberPromoted",
            Self::LeaderMoved { .. } => "LeaderMoved",
            Self::Removed { .. } => "MemberRemoved",
        }
    }

    /// Event action.
    pub fn action(&self) -> &'static str {
        match self {
            Self::LearnerAdded { .. } | Self::Promoted { .. } => "ScaleUp",
            Self::LeaderMoved { .. } | Self::Removed { .. } => "ScaleDown",
        }
    }

    /// Human-readable description.
    pub fn message(&self) -> String {
        match self {
            Self::LearnerAdded { name, id } => format!("added {name} ({id:x}) as a learner"),
            Self::Promoted { name, id } => format!("promoted {name} ({id:x}) to a voting member"),
            Self::LeaderMoved { from, to, .. } => format!("moved leadership from {from} to {to}"),
            Self::Removed { name, id } => format!("removed {name} ({id:x})"),
        }
    }
}

/// Makes the etcd side of `step`, through the members `0..current` that exist now.
pub async fn change_membership(
    etcd: &dyn EtcdAdmin,
    names: &ClusterNames,
    current: i32,
    step: &Step,
) -> Result<Option<Change>, etcd::Error> {
    let endpoints: Vec<String> = (0..current).map(|i| names.client_url(i)).collect();
    Ok(match step {
        Step::AddLearner { name, peer_url } => {
            let id = etcd.add_learner(&endpoints, peer_url).await?;
            Some(Change::LearnerAdded {
                name: name.clone(),
                id,
            })
        }
        Step::PromoteLearner { name, id } => {
            etcd.promote(&endpoints, *id).await?;
            Some(Change::Promoted {
                name: name.clone(),
                id: *id,
            })
        }
        Step::MoveLeader {
            name,
            to_name,
            to_id,
        } => {
            // MoveLeader is only served by the leader.
            let leader = names
                .ordinal_of_name(name)
                .map(|i| names.client_url(i))
                .ok_or_else(|| etcd::Error::Rejected {
                    op: "move the leader",
                    message: format!("{name} is not a member the operator created"),
                })?;
            etcd.move_leader(&leader, *to_id).await?;
            Some(Change::LeaderMoved {
                from: name.clone(),
                to: to_name.clone(),
                to_id: *to_id,
            })
        }
        Step::RemoveMember { name, id: Some(id) } => {
            etcd.remove(&endpoints, *id).await?;
            Some(Change::Removed {
                name: name.clone(),
                id: *id,
            })
        }
        _ => None,
    })
}

/// Carries out `plan`: its membership change in etcd, then the members through `runtime`.
/// `current` is the number of members that exist now (the StatefulSet's replicas).
pub async fn execute<R: MemberRuntime>(
    etcd: &dyn EtcdAdmin,
    runtime: &mut R,
    cluster: &ValidatedCluster,
    current: i32,
    plan: &Plan,
) -> Result<Option<Change>, R::Error> {
    let change = change_membership(etcd, &cluster.names, current, &plan.step).await?;
    if let Some(desired) = &plan.desired {
        runtime.apply(cluster, desired).await?;
    }
    Ok(change)
}
