//! Status: computes the `EtcdCluster` status from what was observed and planned (pure), and
//! writes it with server-side apply to the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::crd::{EtcdCluster, EtcdClusterStatus, GROUP, MemberStatus, VERSION};
use crate::names::{ClusterNames, FIELD_MANAGER};
use crate::observe::{ClusterView, EtcdState, MemberHealth, Observed};
use crate::plan::{Plan, Step};
use crate::validate::SpecWarning;

/// Condition: a majority of voting members is healthy and there is a leader.
pub const AVAILABLE: &str = "Available";
/// Condition: the operator is moving the cluster towards its spec.
pub const PROGRESSING: &str = "Progressing";
/// Condition: something is wrong that the operator cannot fix by itself.
pub const DEGRADED: &str = "Degraded";
/// Condition: data lives in emptyDir volumes (a warning, present only then).
pub const EPHEMERAL_STORAGE: &str = "EphemeralStorage";
/// Condition: with `spec.tls` on, valid certificates are in use (reasons `Ready`,
/// `RotationInProgress`, `CertificateExpiringSoon`, `RotationStuck`, `Expired`, `NotIssued`).
pub const CERTIFICATES_READY: &str = "CertificatesReady";

fn p_message_of(step: &Step) -> String {
    match step {
        Step::ForceNewCluster { name } => {
            format!("restarting {name} alone with its data (--force-new-cluster)")
        }
        _ => String::new(),
    }
}

/// How long the `QuorumLost` condition of `status` has been true, at `now`.
pub fn quorum_lost_for(
    status: Option<&EtcdClusterStatus>,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let c = status?
        .conditions
        .iter()
        .find(|c| c.type_ == crate::recovery::QUORUM_LOST && c.status == "True")?;
    let since = c.last_transition_time.0;
    let secs = (now.as_second() - since.as_second()).max(0);
    Some(std::time::Duration::from_secs(secs as u64))
}

/// The Warning Event to record when the quorum has just been found lost: `(reason,
/// message)`, once per transition.
pub fn quorum_lost_event(
    old: Option<&EtcdClusterStatus>,
    new: &EtcdClusterStatus,
) -> Option<(&'static str, String)> {
    let is_true = |s: &EtcdClusterStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == crate::recovery::QUORUM_LOST && c.status == "True")
            .map(|c| c.message.clone())
    };
    let message = is_true(new)?;
    old.and_then(is_true)
        .is_none()
        .then_some(("QuorumLost", message))
}

/// Sets `status.tls` and the `CertificatesReady` condition (keeping its transition time when
/// its status did not change); `None` removes both (TLS off).
///
/// Returns the Warning Event to record when the condition has just turned to `RotationStuck`
/// (`CertificateRotationStuck`) or `Expired` (`CertificatesExpired`): once per transition, as
/// `(reason, message)`.
pub fn set_tls(
    status: &mut EtcdClusterStatus,
    old: Option<&EtcdClusterStatus>,
    tls: Option<(crate::crd::TlsStatus, crate::certs::status::Readiness)>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<(&'static str, String)> {
    status.conditions.retain(|c| c.type_ != CERTIFICATES_READY);
    let Some((tls, ready)) = tls else {
        status.tls = None;
        return None;
    };
    status.tls = Some(tls);
    let old = old.cloned().unwrap_or_default();
    let was = old
        .conditions
        .iter()
        .find(|c| c.type_ == CERTIFICATES_READY)
        .map(|c| c.reason.as_str());
    let warning = match ready.reason {
        "RotationStuck" if was != Some("RotationStuck") => Some("CertificateRotationStuck"),
        "Expired" if was != Some("Expired") => Some("CertificatesExpired"),
        _ => None,
    }
    .map(|reason| (reason, ready.message.clone()));
    status.conditions.push(condition(
        &old,
        CERTIFICATES_READY,
        ready.ready,
        ready.reason,
        ready.message,
        generation,
        now,
    ));
    warning
}

/// Sets `status.backup` and its conditions (`BackupReady`, `BackupOverdue`) from a backup
/// pass.
pub fn set_backup(
    status: &mut EtcdClusterStatus,
    old: Option<&EtcdClusterStatus>,
    outcome: crate::backup::Outcome,
    generation: Option<i64>,
    now: Timestamp,
) {
    let old = old.cloned().unwrap_or_default();
    status.backup = Some(outcome.status);
    for (type_, value, reason, message) in outcome.conditions {
        status.conditions.retain(|c| c.type_ != type_);
        status.conditions.push(condition(
            &old, type_, value, reason, message, generation, now,
        ));
    }
}

/// Why writing the status failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused the status patch.
    #[error("failed to patch the status of {name}: {source}")]
    Patch {
        /// Cluster name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Computes the new status. `now` stamps conditions whose status changed; others keep their
/// transition time.
pub fn compute(
    cluster: &EtcdCluster,
    names: &ClusterNames,
    observed: &Observed,
    plan: &Plan,
    now: Timestamp,
) -> EtcdClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let view = match &observed.etcd {
        EtcdState::Reachable(view) => Some(view),
        _ => None,
    };
    let cluster_id = view
        .map(|v| format!("{:016x}", v.cluster_id))
        .or(old.cluster_id.clone());
    let formed = cluster_id.is_some();
    let leader_id = view.and_then(ClusterView::leader);
    let members: Vec<MemberStatus> = view
        .map(|v| {
            v.members
                .iter()
                .map(|m| MemberStatus {
                    name: m
                        .ordinal
                        .map(|i| names.member(i))
                        .unwrap_or_else(|| m.name.clone()),
                    id: format!("{:016x}", m.id),
                    is_learner: m.is_learner,
                    is_leader: Some(m.id) == leader_id,
                    healthy: m.healthy(),
                    version: match &m.health {
                        MemberHealth::Healthy { version, .. } => Some(version.clone()),
                        MemberHealth::Unhealthy { .. } | MemberHealth::Leaderless { .. } => None,
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let leader = members.iter().find(|m| m.is_leader);
    let current_version = leader
        .and_then(|m| m.version.clone())
        .or_else(|| members.iter().find_map(|m| m.version.clone()));
    let unhealthy: Vec<&str> = members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.as_str())
        .collect();

    let (available, a_reason, a_message) = match (&observed.etcd, view) {
        (_, Some(v)) if v.has_quorum() && leader.is_some() => {
            let voters = v.members.iter().filter(|m| !m.is_learner).count();
            let healthy = v
                .members
                .iter()
                .filter(|m| !m.is_learner && m.healthy())
                .count();
            (
                true,
                "QuorumAvailable",
                format!("{healthy} of {voters} voting members healthy"),
            )
        }
        (_, Some(_)) => (
            false,
            "QuorumLost",
            "a majority of voting members is unhealthy".to_owned(),
        ),
        (EtcdState::Unreachable { error }, _) if formed => (false, "Unreachable", error.clone()),
        _ if matches!(plan.step, Step::Invalid { .. }) && observed.statefulset.is_none() => (
            false,
            "InvalidSpec",
            "no member was created: the spec is invalid".to_owned(),
        ),
        _ => (
            false,
            "Bootstrapping",
            "waiting for the initial members to form the cluster".to_owned(),
        ),
    };

    let (progressing, p_reason, p_message) = match &plan.step {
        Step::Invalid { problems } => (false, "InvalidSpec", problems.join("; ")),
        Step::Bootstrap => (
            true,
            "Bootstrapping",
            "creating the initial members".to_owned(),
        ),
        Step::AddLearner { name, .. } => (true, "ScalingUp", format!("adding {name} as a learner")),
        Step::StartMember { name } => (true, "ScalingUp", format!("starting {name}")),
        Step::PromoteLearner { name, .. } => (
            true,
            "PromotingLearner",
            format!("promoting {name} to a voting member"),
        ),
        Step::RemoveMember { name, .. } => (true, "ScalingDown", format!("removing {name}")),
        Step::MoveLeader { name, to_name, .. } => (
            true,
            "MovingLeader",
            format!("moving leadership from {name} to {to_name}"),
        ),
        Step::ScaleInRefused { reason, .. } => (false, "ScaleInRefused", reason.clone()),
        Step::RollOut => (
            true,
            "RollingOut",
            "applying the current spec; members restart one at a time".to_owned(),
        ),
        Step::RestartMembers { names } => (
            true,
            "RollingOut",
            format!("restarting {} with the current spec", names.join(", ")),
        ),
        Step::RestoreMembers { names } => (
            true,
            "Restoring",
            format!(
                "restarting {} to restore them in place from a backup",
                names.join(", ")
            ),
        ),
        Step::RemoveLostMember { name, .. } => (
            true,
            "ReplacingMember",
            format!("removing {name}, whose data is lost, to add it again"),
        ),
        Step::ReAddMember { name, .. } => (
            true,
            "ReplacingMember",
            format!("adding {name} again as a learner on an empty volume"),
        ),
        Step::WipeMember { name } => (
            true,
            "ReplacingMember",
            format!("wiping the volume of {name}, whose data cannot join"),
        ),
        Step::UpdatePeerUrl { name, peer_url, .. } => (
            true,
            "MovingTls",
            format!("moving {name}'s peer URL to {peer_url}"),
        ),
        Step::ForceNewCluster { name } => (
            true,
            "RecoveringQuorum",
            format!("the quorum is lost: restarting {name} alone with its data"),
        ),
        Step::ClearForceNewCluster { name } => (
            true,
            "RecoveringQuorum",
            format!("{name} runs alone; the other members are added again next"),
        ),
        Step::Wait { reason } if !formed => (true, "Bootstrapping", reason.clone()),
        Step::Wait { reason } => (false, "Blocked", reason.clone()),
        Step::InSync => (false, "InSync", "the cluster matches its spec".to_owned()),
    };

    let (degraded, d_reason, d_message) = match (&plan.step, &observed.etcd) {
        (Step::Invalid { problems }, _) => (true, "InvalidSpec", problems.join("; ")),
        (Step::ScaleInRefused { reason, .. }, _) => (true, "QuorumAtRisk", reason.clone()),
        (Step::ForceNewCluster { name } | Step::ClearForceNewCluster { name }, _) => (
            true,
            "QuorumLost",
            format!("recovering the quorum from {name}"),
        ),
        (Step::RemoveLostMember { name, .. } | Step::ReAddMember { name, .. }, _) => (
            true,
            "MemberLost",
            format!("{name} lost its data and is being replaced"),
        ),
        (_, EtcdState::Reachable(_)) if !unhealthy.is_empty() => (
            true,
            "MembersUnhealthy",
            format!("unhealthy members: {}", unhealthy.join(", ")),
        ),
        (_, EtcdState::Unreachable { error }) if formed => (true, "Unreachable", error.clone()),
        _ => (false, "Healthy", "no problem found".to_owned()),
    };

    let mut conditions = vec![
        condition(
            &old, AVAILABLE, available, a_reason, a_message, generation, now,
        ),
        condition(
            &old,
            PROGRESSING,
            progressing,
            p_reason,
            p_message,
            generation,
            now,
        ),
        condition(
            &old, DEGRADED, degraded, d_reason, d_message, generation, now,
        ),
    ];
    // QuorumLost: present while the quorum is lost, and False once it is back.
    // No member answering at all is a lost quorum too, once the cluster had formed.
    let lost = view.is_some_and(crate::recovery::quorum_lost)
        || (view.is_none()
            && matches!(observed.etcd, EtcdState::Unreachable { .. })
            && old.cluster_id.is_some());
    let had = old
        .conditions
        .iter()
        .any(|c| c.type_ == crate::recovery::QUORUM_LOST);
    if lost || had {
        let (reason, message) = match (&plan.step, lost) {
            (_, false) => (
                "QuorumPresent",
                "a quorum of the voting members is healthy".to_owned(),
            ),
            (Step::ForceNewCluster { .. }, _) => ("Recovering", p_message_of(&plan.step)),
            (Step::Wait { reason }, _) if reason.contains("approve") => {
                ("AwaitingApproval", reason.clone())
            }
            (Step::Wait { reason }, _) => ("QuorumLost", reason.clone()),
            _ => (
                "QuorumLost",
                "a majority of the voting members is down".to_owned(),
            ),
        };
        conditions.push(condition(
            &old,
            crate::recovery::QUORUM_LOST,
            lost,
            reason,
            message,
            generation,
            now,
        ));
    }
    if cluster.spec.storage.empty_dir {
        conditions.push(condition(
            &old,
            EPHEMERAL_STORAGE,
            true,
            "EmptyDir",
            SpecWarning::EmptyDir.message(),
            generation,
            now,
        ));
    }

    EtcdClusterStatus {
        observed_generation: generation,
        conditions,
        ready_replicas: members.iter().filter(|m| m.healthy).count() as i32,
        cluster_id,
        current_version,
        leader: leader.map(|m| m.name.clone()),
        members,
        // Set by `set_tls` where certificates are managed.
        tls: None,
        // Kept until a backup pass replaces it (`set_backup`).
        backup: old.backup.clone().filter(|_| cluster.spec.backup.is_some()),
        // Only a restore pass changes it.
        restore: old.restore.clone(),
    }
}

fn condition(
    old: &EtcdClusterStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = old
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Writes `status` with server-side apply (the operator owns every status field).
pub async fn patch(
    client: &Client,
    cluster: &EtcdCluster,
    status: &EtcdClusterStatus,
) -> Result<(), Error> {
    let name = cluster.name_any();
    let api: Api<EtcdCluster> =
        Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "EtcdCluster",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Patch { name, source })?;
    Ok(())
}

/// Writes `status.restore` alone (a merge patch under the operator's field manager), at
/// once: a restore is recorded before anything acts on it.
pub async fn patch_restore(
    client: &Client,
    cluster: &EtcdCluster,
    restore: &crate::crd::RestoreStatus,
) -> Result<(), Error> {
    let name = cluster.name_any();
    let api: Api<EtcdCluster> =
        Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    // Every field named, absent ones as null: a merge patch would keep an older restore's.
    let mut record = serde_json::to_value(restore).unwrap_or_default();
    if let Some(fields) = record.as_object_mut() {
        for key in [
            "key",
            "revision",
            "message",
            "id",
            "previousClusterId",
            "clusterId",
            "started",
            "finished",
        ] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let body = serde_json::json!({"status": {"restore": record}});
    api.patch_status(
        &name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&body),
    )
    .await
    .map_err(|source| Error::Patch { name, source })?;
    Ok(())
}

/// A condition of `status` by type.
pub fn find<'a>(status: &'a EtcdClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::status::Readiness;
    use crate::crd::TlsStatus;

    fn ready(reason: &'static str) -> Option<(TlsStatus, Readiness)> {
        Some((
            TlsStatus::default(),
            Readiness {
                ready: reason != "Expired",
                reason,
                message: format!("because {reason}"),
            },
        ))
    }

    #[test]
    fn a_stuck_rotation_or_expiry_is_a_warning_once_per_transition() {
        let now = Timestamp::now();
        // (condition reason before, now) → the Event's reason.
        let cases = [
            (None, "Ready", None),
            (Some("Ready"), "RotationInProgress", None),
            (
                Some("RotationInProgress"),
                "RotationStuck",
                Some("CertificateRotationStuck"),
            ),
            (Some("RotationStuck"), "RotationStuck", None),
            (Some("RotationStuck"), "Ready", None),
            (Some("Ready"), "Expired", Some("CertificatesExpired")),
            (None, "Expired", Some("CertificatesExpired")),
            (Some("Expired"), "Expired", None),
        ];
        for (before, after, want) in cases {
            let mut old = EtcdClusterStatus::default();
            if let Some(before) = before {
                set_tls(&mut old, None, ready(before), Some(1), now);
            }
            let mut status = EtcdClusterStatus::default();
            let got = set_tls(&mut status, Some(&old), ready(after), Some(1), now);
            assert_eq!(got.as_ref().map(|(r, _)| *r), want, "{before:?} → {after}");
            if let Some((_, message)) = got {
                assert_eq!(message, format!("because {after}"));
            }
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == CERTIFICATES_READY)
                .expect("the condition");
            assert_eq!(condition.reason, after);
        }
    }
}
