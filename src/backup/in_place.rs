//! In-place restore (disaster recovery): what the `etcd.rustops.dev/restore` and
//! `etcd.rustops.dev/restore-confirm` annotations ask for, decided from the object alone.
//!
//! The request names a backup key (or `latest`, the newest verified one); it runs only when
//! the confirmation annotation holds the cluster's name. Each confirmation is used once: on
//! Kubernetes the operator removes it as it acts (so a retry, or the next request, needs a
//! new one); the local runtime, which cannot edit the user's file, remembers the request it
//! carried out until the annotation goes away.
//!
//! A new cluster made from a backup (`spec.bootstrap.fromBackup`) goes the same way on
//! Kubernetes, under the request [`BOOTSTRAP_REQUEST`], chosen by the operator once so that
//! every member restores the same backup.

use crate::crd::{EtcdCluster, RestorePhase, RestoreStatus};

/// The annotation naming the backup to restore in place (a key, or `latest`).
pub const RESTORE_ANNOTATION: &str = "etcd.rustops.dev/restore";
/// The annotation that confirms it: it must hold the cluster's name.
pub const CONFIRM_ANNOTATION: &str = "etcd.rustops.dev/restore-confirm";

/// What the annotations ask for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Nothing (no request, or this one was carried out already).
    None,
    /// A request without the confirmation: recorded, not run.
    Unconfirmed(String),
    /// Run it: the request's value, and the key (`None`: the newest usable backup).
    Run {
        /// The annotation's value.
        request: String,
        /// The backup key.
        key: Option<String>,
    },
}

/// The request under which a new cluster is made from `spec.bootstrap.fromBackup`.
pub const BOOTSTRAP_REQUEST: &str = "spec.bootstrap.fromBackup";

/// Whether `cluster` is a new cluster from `spec.bootstrap.fromBackup` whose backup is not
/// chosen yet: it never formed (no cluster ID in its status), and no bootstrap restore is
/// under way or done. A cluster that formed is never made from the backup again (its
/// StatefulSet deleted and created again keeps its volumes and data).
pub fn backup_to_choose(cluster: &EtcdCluster) -> bool {
    let from_backup = cluster
        .spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.from_backup.is_some());
    let status = cluster.status.as_ref();
    let formed = status.is_some_and(|s| s.cluster_id.is_some());
    let chosen = status.and_then(|s| s.restore.as_ref()).is_some_and(|r| {
        r.request == BOOTSTRAP_REQUEST
            && matches!(r.phase, RestorePhase::Restoring | RestorePhase::Completed)
    });
    from_backup && !formed && !chosen
}

/// What `cluster`'s annotations ask for, given `status.restore`: a confirmed request runs
/// unless the same one is under way.
pub fn requested(cluster: &EtcdCluster) -> Request {
    let annotations = cluster.metadata.annotations.as_ref();
    let get = |k: &str| {
        annotations
            .and_then(|a| a.get(k))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let Some(request) = get(RESTORE_ANNOTATION) else {
        return Request::None;
    };
    // A restore under way finishes first: no request, confirmed or not, replaces it.
    let previous = cluster.status.as_ref().and_then(|s| s.restore.as_ref());
    if previous.is_some_and(|p| p.phase == RestorePhase::Restoring) {
        return Request::None;
    }
    if get(CONFIRM_ANNOTATION).as_deref() != cluster.metadata.name.as_deref() {
        return Request::Unconfirmed(request);
    }
    let key = (request != "latest").then(|| request.clone());
    Request::Run { request, key }
}

/// An in-place restore under way on Kubernetes, from `status.restore` (phase `Restoring`,
/// with its ID and backup key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlace {
    /// The restore's ID.
    pub id: String,
    /// The backup's key.
    pub key: String,
    /// Whether the members' pods were deleted already (a new cluster's never run yet).
    pub members_restarted: bool,
    /// It makes a new cluster from `spec.bootstrap.fromBackup`.
    pub bootstrap: bool,
}

impl InPlace {
    /// The restore under way in `cluster`'s status, if any.
    pub fn of(cluster: &EtcdCluster) -> Option<Self> {
        let r = cluster.status.as_ref()?.restore.as_ref()?;
        if r.phase != RestorePhase::Restoring {
            return None;
        }
        Some(Self {
            id: r.id.clone()?,
            key: r.key.clone()?,
            members_restarted: r.members_restarted,
            bootstrap: r.request == BOOTSTRAP_REQUEST,
        })
    }

    /// The cluster token the restored members form their new cluster under.
    pub fn token(&self, token: &str) -> String {
        format!("{token}-restore-{}", self.id)
    }
}

/// Moves a restore under way on: after `step` ran (the members' pods deleted), it records
/// that; once every member of the restored cluster is healthy under a new cluster ID, it is
/// `Completed`. Returns the Event to announce, if any.
pub fn advance(
    restore: &mut RestoreStatus,
    step: &crate::plan::Step,
    observed: &crate::observe::Observed,
    replicas: i32,
    now: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> Option<crate::runtime::Change> {
    use crate::observe::EtcdState;
    if restore.phase != RestorePhase::Restoring {
        return None;
    }
    if let crate::plan::Step::RestoreMembers { .. } = step {
        restore.members_restarted = true;
        restore.message = Some(format!(
            "every member restarts and restores from {}",
            restore.key.as_deref().unwrap_or("the backup")
        ));
        return None;
    }
    // A member that cannot restore says why (its init container's last words); the
    // restore stays under way: the pod retries, and the old data is safe aside.
    let failed: Vec<String> = observed
        .pods
        .iter()
        .filter_map(|(i, p)| {
            p.restore_failed
                .as_ref()
                .map(|m| format!("member {i}: {m}"))
        })
        .collect();
    if !failed.is_empty() {
        restore.message = Some(format!(
            "members could not restore from {}: {}",
            restore.key.as_deref().unwrap_or("the backup"),
            failed.join("; ")
        ));
    }
    let EtcdState::Reachable(view) = &observed.etcd else {
        return None;
    };
    let cluster_id = format!("{:x}", view.cluster_id);
    // Every pod came back restored by this restore (its init container says so), and every
    // member answers as a voter.
    let id = restore.id.clone().unwrap_or_default();
    let pods_back = observed.pods.len() == replicas as usize
        && observed
            .pods
            .values()
            .all(|p| !p.terminating && p.restored.as_deref() == Some(id.as_str()));
    let all_healthy = pods_back
        && view.members.len() == replicas as usize
        && view.members.iter().all(|m| m.healthy() && !m.is_learner);
    if !restore.members_restarted
        || !all_healthy
        || restore.previous_cluster_id.as_deref() == Some(cluster_id.as_str())
    {
        return None;
    }
    restore.phase = RestorePhase::Completed;
    restore.cluster_id = Some(cluster_id.clone());
    restore.finished = now;
    restore.message = Some(format!(
        "restored every member from {} (revision {}); the cluster ID changed from {} to {cluster_id}; each member's old data is kept on its volume in data.pre-restore-{}",
        restore.key.as_deref().unwrap_or("the backup"),
        restore.revision.unwrap_or_default(),
        restore.previous_cluster_id.as_deref().unwrap_or("unknown"),
        restore.id.as_deref().unwrap_or_default(),
    ));
    Some(event(restore, "RestoreCompleted"))
}

/// Whether restores steer this cluster (a backup to bootstrap from, a restore asked for, or
/// one recorded): its reconcile then reads the object fresh, not from the watch cache, since
/// `status.restore` decides what the pods restore.
pub fn involved(cluster: &EtcdCluster) -> bool {
    cluster
        .spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.from_backup.is_some())
        || cluster
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(RESTORE_ANNOTATION))
        || cluster.status.as_ref().is_some_and(|s| s.restore.is_some())
}

/// Whether the confirmation annotation on `cluster` has been used by `restore` (the
/// request it confirms ran, or was refused) and is to be removed.
pub fn confirmation_used(cluster: &EtcdCluster, restore: Option<&RestoreStatus>) -> bool {
    let annotations = cluster.metadata.annotations.as_ref();
    let confirmed = annotations.is_some_and(|a| a.contains_key(CONFIRM_ANNOTATION));
    let request = annotations
        .and_then(|a| a.get(RESTORE_ANNOTATION))
        .map(|r| r.trim());
    confirmed
        && restore.is_some_and(|r| {
            r.request != BOOTSTRAP_REQUEST
                && Some(r.request.as_str()) == request
                && matches!(r.phase, RestorePhase::Restoring | RestorePhase::Failed)
        })
}

/// What the restore init container says when it is done (its termination message): the data
/// is that of restore `id`.
pub fn done_message(id: &str) -> String {
    format!("restore-id: {id}")
}

/// The restore ID in an init container's termination message: empty when it finished
/// without restoring anything.
pub fn restored_id(message: &str) -> String {
    message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("restore-id:"))
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Where the members' init containers read an in-place restore from (a key of the
/// ConfigMap, present only while a restore is under way).
pub const SOURCE_FILE: &str = "restore.json";

/// A request without its confirmation: `status.restore` saying what is missing, and the
/// Event, once per request (`None` when the status says so already).
pub fn unconfirmed(
    cluster: &EtcdCluster,
    request: &str,
) -> Option<(RestoreStatus, Vec<crate::runtime::Change>)> {
    let previous = cluster.status.as_ref().and_then(|s| s.restore.as_ref());
    if previous.is_some_and(|p| p.request == request) {
        return None;
    }
    let status = waiting(
        request,
        cluster.metadata.name.as_deref().unwrap_or_default(),
    );
    let change = event(&status, "RestoreNotConfirmed");
    Some((status, vec![change]))
}

/// The Event announcing `restore` as it now stands (its message).
pub fn event(restore: &RestoreStatus, reason: &'static str) -> crate::runtime::Change {
    crate::runtime::Change::Backup {
        reason,
        message: restore.message.clone().unwrap_or_default(),
    }
}

/// `status.restore` for a request that waits for its confirmation.
pub fn waiting(request: &str, cluster: &str) -> RestoreStatus {
    RestoreStatus {
        request: request.to_owned(),
        phase: RestorePhase::WaitingForConfirmation,
        message: Some(format!(
            "a restore replaces every member's data: set the annotation {CONFIRM_ANNOTATION}: {cluster} to go ahead"
        )),
        ..RestoreStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(annotations: &[(&str, &str)], done: Option<(&str, RestorePhase)>) -> EtcdCluster {
        let mut c: EtcdCluster = serde_yaml_ng::from_str(
            "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: prod, namespace: db}\nspec: {replicas: 3}\n",
        )
        .expect("cluster");
        c.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c.status = done.map(|(request, phase)| crate::crd::EtcdClusterStatus {
            restore: Some(RestoreStatus {
                request: request.into(),
                phase,
                ..RestoreStatus::default()
            }),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_restore_runs_when_confirmed_and_not_while_the_same_one_runs() {
        use RestorePhase::*;
        let key = "etcd/db/prod/prod-20261207T000000Z-r9.snap.zst";
        let run = |k: Option<&str>, r: &str| Request::Run {
            request: r.into(),
            key: k.map(Into::into),
        };
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            Option<(&'a str, RestorePhase)>,
            Request,
        );
        let table: &[Row] = &[
            (&[], None, Request::None),
            (&[(CONFIRM_ANNOTATION, "prod")], None, Request::None),
            (
                &[(RESTORE_ANNOTATION, key)],
                None,
                Request::Unconfirmed(key.into()),
            ),
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "other")],
                None,
                Request::Unconfirmed(key.into()),
            ),
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                None,
                run(Some(key), key),
            ),
            (
                &[(RESTORE_ANNOTATION, "latest"), (CONFIRM_ANNOTATION, "prod")],
                None,
                run(None, "latest"),
            ),
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                Some((key, WaitingForConfirmation)),
                run(Some(key), key),
            ),
            // Confirmed again after it finished: a deliberate retry (on Kubernetes each
            // confirmation is removed as it is used).
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Completed)),
                run(Some(key), key),
            ),
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Failed)),
                run(Some(key), key),
            ),
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Restoring)),
                Request::None,
            ),
            // Another request, confirmed or not, waits for the one under way.
            (
                &[(RESTORE_ANNOTATION, "latest"), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Restoring)),
                Request::None,
            ),
            (
                &[(RESTORE_ANNOTATION, "latest")],
                Some((BOOTSTRAP_REQUEST, Restoring)),
                Request::None,
            ),
            (
                &[(RESTORE_ANNOTATION, "latest"), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Completed)),
                run(None, "latest"),
            ),
            (
                &[(RESTORE_ANNOTATION, " "), (CONFIRM_ANNOTATION, "prod")],
                None,
                Request::None,
            ),
        ];
        for (i, (annotations, done, want)) in table.iter().enumerate() {
            assert_eq!(&requested(&cluster(annotations, *done)), want, "row {i}");
        }
    }

    #[test]
    fn the_init_containers_word_and_the_confirmation_used() {
        assert_eq!(
            restored_id("moving aside\nrestore-id: 1800000000\n"),
            "1800000000"
        );
        assert_eq!(restored_id("nothing to restore"), "");
        use RestorePhase::*;
        let key = "etcd/db/prod/x.snap.zst";
        let confirmed = [(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")];
        let record = |request: &str, phase| RestoreStatus {
            request: request.into(),
            phase,
            ..RestoreStatus::default()
        };
        let c = cluster(&confirmed, None);
        assert!(confirmation_used(&c, Some(&record(key, Restoring))));
        assert!(confirmation_used(&c, Some(&record(key, Failed))));
        assert!(!confirmation_used(
            &c,
            Some(&record(key, WaitingForConfirmation))
        ));
        assert!(!confirmation_used(&c, Some(&record("latest", Restoring))));
        assert!(!confirmation_used(
            &c,
            Some(&record(BOOTSTRAP_REQUEST, Restoring))
        ));
        assert!(!confirmation_used(&c, None));
        let unconfirmed = cluster(&[(RESTORE_ANNOTATION, key)], None);
        assert!(!confirmation_used(
            &unconfirmed,
            Some(&record(key, Restoring))
        ));
    }
}
