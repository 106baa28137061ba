//! Quorum-loss recovery (pure): when a majority of the voting members has been down longer
//! than `spec.recovery.quorumLossAfter`, and the user allows it (the approval annotation, or
//! `mode: Automatic`), the surviving member that applied the most restarts alone with its data
//! (`--force-new-cluster`); once it runs alone the flag is cleared, and the planner's ordinary
//! lost-member steps add the others again from empty data directories, one at a time.
//!
//! It never acts while a quorum may exist: no voter may follow a leader, fewer than a quorum of
//! pods may be Ready, and a member that cannot be reached but whose data may be newer (it is
//! not known to be lost) blocks an automatic recovery; only an approval takes that risk. An
//! approval is used once (the controller removes the annotation as the recovery starts).

use std::time::Duration;

use crate::crd::{EtcdCluster, RecoveryMode};
use crate::observe::{ClusterView, MemberHealth, MemberView, Observed};
use crate::validate::ValidatedCluster;

/// The annotation that approves a recovery in `Manual` mode: its value must be the cluster's
/// UID (locally, where a cluster file has no UID, its name), so that an approval copied from
/// another cluster, or left from an earlier incarnation, approves nothing.
pub const APPROVE_ANNOTATION: &str = "etcd.rustops.dev/approve-recovery";
/// `spec.recovery.quorumLossAfter` by default.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(300);
/// The condition type that says the quorum is lost.
pub const QUORUM_LOST: &str = "QuorumLost";

/// `spec.recovery` resolved, with the approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// `mode: Automatic`.
    pub automatic: bool,
    /// How long a majority must be down before the quorum counts as lost.
    pub after: Duration,
    /// The approval annotation names this cluster.
    pub approved: bool,
    /// The value that approves: the cluster's UID, or its name where it has none.
    pub approval_value: String,
}

impl Recovery {
    /// Reads `spec.recovery` and the approval annotation of `cluster`.
    pub fn of(cluster: &EtcdCluster) -> Result<Self, String> {
        let spec = cluster.spec.recovery.clone().unwrap_or_default();
        let after = match &spec.quorum_loss_after {
            None => DEFAULT_AFTER,
            Some(s) => etcd_api::duration::parse_interval(s)
                .map_err(|e| format!("recovery.quorumLossAfter: {e}"))?,
        };
        if after.is_zero() {
            return Err("recovery.quorumLossAfter must be positive".to_owned());
        }
        let id = cluster
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| cluster.metadata.name.clone())
            .unwrap_or_default();
        let approved = cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPROVE_ANNOTATION))
            .is_some_and(|v| !id.is_empty() && v.trim() == id);
        Ok(Self {
            automatic: spec.mode == RecoveryMode::Automatic,
            after,
            approved,
            approval_value: id,
        })
    }
}

/// What the planner should do about the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The quorum is there (or recovery is none of this module's business).
    Fine,
    /// Nothing may change: why.
    Wait(String),
    /// Restart `ordinal` alone with its data.
    Force {
        /// The member that applied the most.
        ordinal: i32,
    },
    /// The member restarted alone runs alone now: clear its flag.
    Clear {
        /// Its ordinal.
        ordinal: i32,
    },
}

/// Whether fewer than a quorum of the voting members are healthy.
pub fn quorum_lost(view: &ClusterView) -> bool {
    let voters: Vec<&MemberView> = view.members.iter().filter(|m| !m.is_learner).collect();
    let healthy = voters.iter().filter(|m| m.healthy()).count();
    !voters.is_empty() && healthy <= voters.len() / 2
}

/// The Raft index a member reports, healthy or not.
fn index_of(m: &MemberView) -> Option<u64> {
    match m.health {
        MemberHealth::Healthy { raft_index, .. } | MemberHealth::Leaderless { raft_index } => {
            Some(raft_index)
        }
        MemberHealth::Unhealthy { .. } => None,
    }
}

/// Decides about the quorum of `view`, with the StatefulSet's ready pods (`ready`: a Ready
/// member serves linearizable reads, so a quorum exists somewhere) and how long the quorum
/// has been seen lost (`lost_for`, from the `QuorumLost` condition).
pub fn decide(
    cluster: &ValidatedCluster,
    observed: &Observed,
    view: &ClusterView,
    ready: i32,
) -> Decision {
    let names = &cluster.names;
    // A member restarted alone: wait until it runs alone, then clear its flag before anything
    // else happens (a restart with the flag would drop the members added since).
    if let Some(forced) = observed
        .member_configs
        .values()
        .find(|c| c.force_new_cluster)
    {
        let Some(ordinal) = names.ordinal_of_name(&forced.name) else {
            return Decision::Wait(format!("{} is not a member of this cluster", forced.name));
        };
        let alone = view.members.len() == 1
            && view
                .members
                .first()
                .is_some_and(|m| m.ordinal == Some(ordinal) && m.healthy());
        return if alone {
            Decision::Clear { ordinal }
        } else {
            Decision::Wait(format!(
                "recovering the quorum: {} restarts as a one-member cluster with its data",
                forced.name
            ))
        };
    }
    if !quorum_lost(view) {
        return Decision::Fine;
    }
    let voters: Vec<&MemberView> = view.members.iter().filter(|m| !m.is_learner).collect();
    let healthy = voters.iter().filter(|m| m.healthy()).count();
    let summary = format!(
        "the quorum is lost: {healthy} of {} voting members healthy",
        voters.len()
    );
    // A voter that follows a leader: with CheckQuorum a leader steps down once it cannot
    // reach a quorum, so a quorum exists, whatever the operator can see of it.
    if let Some(m) = voters.iter().find(|m| m.healthy()) {
        return Decision::Wait(format!(
            "{summary} as the operator sees them, but {} follows a leader (a quorum exists): \
             no recovery",
            m.ordinal
                .map(|i| names.member(i))
                .unwrap_or_else(|| m.name.clone())
        ));
    }
    if ready as usize > voters.len() / 2 {
        return Decision::Wait(format!(
            "{summary} as the operator sees them, but {ready} members are Ready (a quorum \
             serves them): no recovery"
        ));
    }
    let Some(lost_for) = observed.quorum_lost_for else {
        return Decision::Wait(summary);
    };
    let r = &cluster.recovery;
    if lost_for < r.after {
        return Decision::Wait(format!(
            "{summary}; recovery is considered after {}s (spec.recovery.quorumLossAfter), \
             {}s so far",
            r.after.as_secs(),
            lost_for.as_secs()
        ));
    }
    let lost_data = |m: &MemberView| {
        m.ordinal
            .and_then(|i| observed.pods.get(&i))
            .is_some_and(|p| p.data_lost.is_some())
    };
    let candidate = voters
        .iter()
        .filter(|m| !lost_data(m))
        .filter_map(|m| Some((index_of(m)?, m.ordinal?)))
        .max_by_key(|(index, ordinal)| (*index, -*ordinal));
    let unknown: Vec<String> = voters
        .iter()
        .filter(|m| index_of(m).is_none() && !lost_data(m))
        .map(|m| {
            m.ordinal
                .map(|i| names.member(i))
                .unwrap_or_else(|| m.name.clone())
        })
        .collect();
    let Some((index, ordinal)) = candidate else {
        return Decision::Wait(format!(
            "{summary}, and no member with its data answers: restore the cluster from a \
             backup (spec.bootstrap.fromBackup in a new cluster, or an in-place restore)"
        ));
    };
    let approval = format!(
        "annotate the cluster with {APPROVE_ANNOTATION}={} to approve",
        r.approval_value
    );
    if !unknown.is_empty() && !r.approved {
        return Decision::Wait(format!(
            "{summary}; {} would restart alone (Raft index {index}), but {} cannot be asked \
             and may hold newer data: bring them back, or {approval}",
            names.member(ordinal),
            unknown.join(", ")
        ));
    }
    if !r.automatic && !r.approved {
        return Decision::Wait(format!(
            "{summary} for {}s; recovery restarts {} (Raft index {index}) alone with its data \
             and adds the others again: {approval} (or set spec.recovery.mode: Automatic)",
            lost_for.as_secs(),
            names.member(ordinal)
        ));
    }
    Decision::Force { ordinal }
}
