//! Carrying out a plan, shared by the Kubernetes controller and the local runtime: the
//! etcd-facing part of a step (MemberAdd as a learner, MemberPromote, MoveLeader,
//! MemberRemove) is the same everywhere; only "apply, restart or wipe member N" differs,
//! behind [`MemberRuntime`] (a StatefulSet and its pods, or local `etcd-server` processes).
//!
//! Order within one step: the etcd change first, then the members. A new member is added
//! to etcd before its process starts (so it joins with `existing`), and a removed member is
//! removed from etcd before its process stops (so the cluster never counts a stopped voter).

use futures::future::BoxFuture;

use crate::etcd::{self, EtcdAdmin};
use crate::names::ClusterNames;
use crate::plan::{Desired, Plan, Step};
use crate::validate::ValidatedCluster;

/// Runs members: the only part that differs between Kubernetes and the local runtime.
pub trait MemberRuntime: Send {
    /// The runtime's error.
    type Error: From<etcd::Error> + Send;

    /// Makes the members match `desired`: members `0..desired.replicas` exist with their
    /// bootstrap configuration (a member that is not running is started); members beyond are
    /// stopped and their data deleted (after the planner removed them from etcd). Running
    /// members are not restarted, even when their configuration changed.
    fn apply<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<(), Self::Error>>;

    /// Restarts member `ordinal` on its current configuration (Kubernetes: deletes its pod).
    fn restart<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<(), Self::Error>>;

    /// Deletes member `ordinal`'s data and starts it again on an empty data directory
    /// (Kubernetes: deletes its PersistentVolumeClaim, then its pod).
    fn wipe<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        ordinal: i32,
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
    /// A member whose data is lost was removed, to be added again.
    LostRemoved {
        /// Member name.
        name: String,
        /// Its old ID.
        id: u64,
    },
    /// A lost member was added again as a learner and its volume wiped.
    Readded {
        /// Member name.
        name: String,
        /// Its new ID.
        id: u64,
    },
    /// Members were restarted onto the current template.
    Restarted {
        /// Member names.
        names: Vec<String>,
    },
    /// A member's volume was wiped.
    Wiped {
        /// Member name.
        name: String,
    },
    /// A member's peer URL moved to the other scheme (TLS turned on or off).
    PeerUrlMoved {
        /// Member name.
        name: String,
        /// Its new peer URL.
        peer_url: String,
    },
    /// A backup was taken, failed or deleted (`spec.backup`).
    Backup {
        /// Event reason (`BackupTaken`, `BackupFailed`, `BackupDeleted`).
        reason: &'static str,
        /// What happened.
        message: String,
    },
    /// Quorum-loss recovery took a step (`spec.recovery`).
    QuorumRecovery {
        /// What was done.
        message: String,
    },
    /// The certificate lifecycle took a step (`spec.tls`).
    Certificates {
        /// Event reason (`CertificatesIssued`, `CertificatesRenewed`, `CARotation`,
        /// `CertificatesRecovered`).
        reason: &'static str,
        /// What was done.
        message: String,
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
            Self::LostRemoved { .. } => "LostMemberRemoved",
            Self::Readded { .. } => "MemberReadded",
            Self::Restarted { .. } => "MemberRestarted",
            Self::Wiped { .. } => "MemberWiped",
            Self::PeerUrlMoved { .. } => "PeerUrlMoved",
            Self::QuorumRecovery { .. } => "QuorumRecovery",
            Self::Certificates { reason, .. } | Self::Backup { reason, .. } => reason,
        }
    }

    /// Event action.
    pub fn action(&self) -> &'static str {
        match self {
            Self::LearnerAdded { .. } | Self::Promoted { .. } => "ScaleUp",
            // Before removing the leader, and during a rolling update: name what was done.
            Self::LeaderMoved { .. } => "MoveLeader",
            Self::Removed { .. } => "ScaleDown",
            Self::LostRemoved { .. } | Self::Readded { .. } | Self::Wiped { .. } => "Replace",
            Self::Restarted { .. } => "RollingUpdate",
            Self::PeerUrlMoved { .. } => "MoveTls",
            Self::QuorumRecovery { .. } => "Recover",
            Self::Certificates { .. } => "Certificates",
            Self::Backup { .. } => "Backup",
        }
    }

    /// Human-readable description.
    pub fn message(&self) -> String {
        match self {
            Self::LearnerAdded { name, id } => format!("added {name} ({id:x}) as a learner"),
            Self::Promoted { name, id } => format!("promoted {name} ({id:x}) to a voting member"),
            Self::LeaderMoved { from, to, .. } => format!("moved leadership from {from} to {to}"),
            Self::Removed { name, id } => format!("removed {name} ({id:x})"),
            Self::LostRemoved { name, id } => {
                format!("removed {name} ({id:x}): its data is lost; it will be added again")
            }
            Self::Readded { name, id } => {
                format!("added {name} again as a learner ({id:x}) and wiped its volume")
            }
            Self::Restarted { names } => format!("restarted {}", names.join(", ")),
            Self::Wiped { name } => format!("wiped the volume of {name}"),
            Self::PeerUrlMoved { name, peer_url } => {
                format!("moved {name}'s peer URL to {peer_url}")
            }
            Self::Certificates { message, .. }
            | Self::Backup { message, .. }
            | Self::QuorumRecovery { message } => message.clone(),
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
        Step::RemoveLostMember { name, id } => {
            etcd.remove(&endpoints, *id).await?;
            Some(Change::LostRemoved {
                name: name.clone(),
                id: *id,
            })
        }
        Step::ReAddMember { name, peer_url } => {
            let id = etcd.add_learner(&endpoints, peer_url).await?;
            Some(Change::Readded {
                name: name.clone(),
                id,
            })
        }
        Step::UpdatePeerUrl { name, id, peer_url } => {
            etcd.update_peer_url(&endpoints, *id, peer_url).await?;
            Some(Change::PeerUrlMoved {
                name: name.clone(),
                peer_url: peer_url.clone(),
            })
        }
        _ => None,
    })
}

/// The environment variable that makes the operator exit right after a membership change
/// whose event reason it names (`MemberAdded`, `MemberReadded`, …), before touching the
/// members: a failpoint for the crash-resumption tests.
pub const EXIT_AFTER_ENV: &str = "ETCD_OPERATOR_EXIT_AFTER";

fn failpoint(change: &Change) {
    if std::env::var(EXIT_AFTER_ENV).is_ok_and(|v| v == change.reason()) {
        eprintln!("{EXIT_AFTER_ENV}={}: exiting", change.reason());
        std::process::exit(86);
    }
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
    let mut change = match change_membership(etcd, &cluster.names, current, &plan.step).await {
        Ok(change) => change,
        // etcd's strict reconfiguration refuses a change until the last one has settled (a
        // promoted member must be connected for a while before the next MemberAdd). That is
        // a wait, not a failure: nothing else of this step may happen before the change (a
        // scale-in must not stop a member etcd still counts), and the next pass tries again.
        Err(e) if e.is_settling() => {
            tracing::info!(error = %e, "membership change deferred while the cluster settles");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(change) = &change {
        failpoint(change);
    }
    if let Some(desired) = &plan.desired {
        runtime.apply(cluster, desired).await?;
    }
    let ordinal = |name: &str| {
        cluster
            .names
            .ordinal_of_name(name)
            .ok_or_else(|| etcd::Error::Rejected {
                op: "find the member",
                message: format!("{name} is not a member the operator created"),
            })
    };
    match &plan.step {
        Step::RestartMembers { names } | Step::RestoreMembers { names } => {
            for name in names {
                runtime.restart(cluster, ordinal(name)?).await?;
            }
            change = Some(Change::Restarted {
                names: names.clone(),
            });
        }
        // Added again first, wiped second: a pod that restarts in between still has its old
        // member ID, which the cluster refuses, so it cannot rejoin on the old data.
        Step::ReAddMember { name, .. } => runtime.wipe(cluster, ordinal(name)?).await?,
        Step::WipeMember { name } => {
            runtime.wipe(cluster, ordinal(name)?).await?;
            change = Some(Change::Wiped { name: name.clone() });
        }
        // Its file now carries force-new-cluster (applied above): restart it onto it.
        Step::ForceNewCluster { name } => {
            runtime.restart(cluster, ordinal(name)?).await?;
            change = Some(Change::QuorumRecovery {
                message: format!(
                    "the quorum was lost: restarted {name} alone with its data (--force-new-cluster); the other members are added again next"
                ),
            });
        }
        // Restarted onto its file without the flag: on Kubernetes the kubelet updates a
        // mounted ConfigMap only after a while, and a restart before then with the flag still
        // in its file would remove the members added since; a new pod reads the file as it is.
        Step::ClearForceNewCluster { name } => {
            runtime.restart(cluster, ordinal(name)?).await?;
            change = Some(Change::QuorumRecovery {
                message: format!(
                    "{name} runs alone with its data; force-new-cluster is cleared from its configuration"
                ),
            });
        }
        _ => {}
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every change has its own Event reason and an action that says what was done.
    #[test]
    fn event_reasons_and_actions() {
        let id = 0x1234;
        let name = || "m1".to_string();
        let cases = [
            (
                Change::LearnerAdded { name: name(), id },
                "MemberAdded",
                "ScaleUp",
            ),
            (
                Change::Promoted { name: name(), id },
                "MemberPromoted",
                "ScaleUp",
            ),
            (
                Change::LeaderMoved {
                    from: "m0".into(),
                    to: name(),
                    to_id: id,
                },
                "LeaderMoved",
                "MoveLeader",
            ),
            (
                Change::Removed { name: name(), id },
                "MemberRemoved",
                "ScaleDown",
            ),
            (
                Change::LostRemoved { name: name(), id },
                "LostMemberRemoved",
                "Replace",
            ),
            (
                Change::Readded { name: name(), id },
                "MemberReadded",
                "Replace",
            ),
            (Change::Wiped { name: name() }, "MemberWiped", "Replace"),
            (
                Change::Restarted {
                    names: vec![name()],
                },
                "MemberRestarted",
                "RollingUpdate",
            ),
        ];
        for (change, reason, action) in cases {
            assert_eq!(change.reason(), reason, "{change:?}");
            assert_eq!(change.action(), action, "{change:?}");
            assert!(change.message().contains("m1"), "{change:?}");
        }
    }
}
