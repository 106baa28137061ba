//! In-place restore (disaster recovery): what the `etcd.rustops.dev/restore` and
//! `etcd.rustops.dev/restore-confirm` annotations ask for, decided from the object alone.
//!
//! The request names a backup key (or `latest`, the newest verified one); it runs only when
//! the confirmation annotation holds the cluster's name, and only once per request value: a
//! finished one (completed or failed) is recorded in `status.restore` under that value.

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

/// What `cluster`'s annotations ask for, given `status.restore`.
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
    let previous = cluster.status.as_ref().and_then(|s| s.restore.as_ref());
    if previous.is_some_and(|p| {
        p.request == request && !matches!(p.phase, RestorePhase::WaitingForConfirmation)
    }) {
        return Request::None;
    }
    if get(CONFIRM_ANNOTATION).as_deref() != cluster.metadata.name.as_deref() {
        return Request::Unconfirmed(request);
    }
    let key = (request != "latest").then(|| request.clone());
    Request::Run { request, key }
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
    fn a_restore_runs_once_per_request_and_only_when_confirmed() {
        use RestorePhase::*;
        let key = "etcd/db/prod/prod-20261207T000000Z-r9.snap.zst";
        let run = |k: Option<&str>, r: &str| Request::Run {
            request: r.into(),
            key: k.map(Into::into),
        };
        let table: &[(&[(&str, &str)], Option<(&str, RestorePhase)>, Request)] = &[
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
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Completed)),
                Request::None,
            ),
            (
                &[(RESTORE_ANNOTATION, key), (CONFIRM_ANNOTATION, "prod")],
                Some((key, Failed)),
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
            assert_eq!(
                &requested(&cluster(annotations, done.clone())),
                want,
                "row {i}"
            );
        }
    }
}
