//! The Kubernetes side of backups and restores: S3 credentials from the Secret
//! `credentialsSecretRef` names, and an in-place restore request turned into
//! `status.restore` (the backup chosen and checked in the bucket before any member stops).

use kube::ResourceExt;

use super::in_place::{self, Request};
use super::restore::choose;
use super::{Error, StaticCredentials, Store, time};
use crate::crd::{EtcdCluster, FromBackup, RestorePhase, RestoreStatus, S3Location};
use crate::observe::{EtcdState, Observed};
use crate::runtime::Change;

/// The credentials `s3` names in `namespace` (`None`: the default AWS chain).
pub async fn s3_credentials(
    client: &kube::Client,
    namespace: &str,
    s3: &S3Location,
) -> Result<Option<StaticCredentials>, Error> {
    let Some(r) = &s3.credentials_secret_ref else {
        return Ok(None);
    };
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&r.name)
        .await
        .map_err(|e| Error::Credentials(format!("failed to read Secret {}: {e}", r.name)))?
        .ok_or_else(|| Error::Credentials(format!("Secret {} does not exist", r.name)))?;
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let missing = |k: &str| Error::Credentials(format!("Secret {} has no {k}", r.name));
    Ok(Some(StaticCredentials {
        access_key_id: get("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
        secret_access_key: get("AWS_SECRET_ACCESS_KEY")
            .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        session_token: get("AWS_SESSION_TOKEN"),
    }))
}

/// What the restore annotations ask for now, as the new `status.restore` and its Events;
/// `None` when nothing changes. A confirmed request is checked against the bucket first (the
/// backup exists, has not failed verification) and only then becomes `Restoring`, which makes
/// the planner restart every member onto it.
pub async fn restore_request(
    client: &kube::Client,
    cluster: &EtcdCluster,
    observed: &Observed,
    now: i64,
) -> Option<(RestoreStatus, Vec<Change>)> {
    let name = cluster.name_any();
    let (request, key) = match in_place::requested(cluster) {
        Request::None => return None,
        Request::Unconfirmed(r) => return in_place::unconfirmed(cluster, &r),
        Request::Run { request, key } => (request, key),
    };
    let mut status = RestoreStatus {
        request,
        started: time(now),
        ..RestoreStatus::default()
    };
    let chosen = async {
        let s3 = &cluster
            .spec
            .backup
            .as_ref()
            .ok_or_else(|| Error::Restore("an in-place restore needs spec.backup.s3".into()))?
            .s3;
        let namespace = cluster.namespace().unwrap_or_default();
        let credentials = s3_credentials(client, &namespace, s3).await?;
        let store = Store::new(s3, &namespace, &name, credentials).await;
        let from = FromBackup {
            s3: None,
            cluster: None,
            key,
        };
        let meta = choose(&store, &from).await?;
        if meta.verified == Some(false) {
            return Err(Error::Restore(format!(
                "backup {} failed its verification: {}",
                meta.key,
                meta.verify_error.as_deref().unwrap_or("no reason recorded")
            )));
        }
        Ok(meta)
    }
    .await;
    match chosen {
        Ok(meta) => {
            status.phase = RestorePhase::Restoring;
            status.id = Some(now.to_string());
            status.key = Some(meta.key.clone());
            status.revision = Some(meta.revision);
            if let EtcdState::Reachable(view) = &observed.etcd {
                status.previous_cluster_id = Some(format!("{:x}", view.cluster_id));
            }
            status.message = Some(format!(
                "restarting every member to restore it from {} (revision {})",
                meta.key, meta.revision
            ));
            let change = in_place::event(&status, "RestoreStarted");
            Some((status, vec![change]))
        }
        Err(e) => {
            status.phase = RestorePhase::Failed;
            status.finished = time(now);
            status.message = Some(format!("in-place restore refused: {e}"));
            let change = in_place::event(&status, "RestoreFailed");
            Some((status, vec![change]))
        }
    }
}

/// A new cluster with `spec.bootstrap.fromBackup` on Kubernetes: before its StatefulSet
/// exists, the operator chooses the backup once (so every member restores the same one)
/// and records it as a restore under way ([`in_place::BOOTSTRAP_REQUEST`]); the members'
/// init containers restore it from the ConfigMap. `None` when there is nothing to choose:
/// no `fromBackup`, the StatefulSet exists, or the choice was made.
pub async fn bootstrap_request(
    client: &kube::Client,
    cluster: &EtcdCluster,
    observed: &Observed,
    now: i64,
) -> Option<(RestoreStatus, Vec<Change>)> {
    let from = cluster.spec.bootstrap.as_ref()?.from_backup.as_ref()?;
    if observed.statefulset.is_some() {
        return None;
    }
    if !in_place::backup_to_choose(cluster) {
        return None;
    }
    let previous = cluster.status.as_ref().and_then(|s| s.restore.as_ref());
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let chosen = async {
        let s3 = from
            .s3
            .as_ref()
            .or_else(|| cluster.spec.backup.as_ref().map(|b| &b.s3))
            .ok_or_else(|| {
                Error::Restore("spec.bootstrap.fromBackup needs s3, or spec.backup.s3".into())
            })?;
        let credentials = s3_credentials(client, &namespace, s3).await?;
        let source = from.cluster.as_deref().unwrap_or(&name);
        let store = Store::new(s3, &namespace, source, credentials).await;
        choose(&store, from).await
    }
    .await;
    let mut status = RestoreStatus {
        request: in_place::BOOTSTRAP_REQUEST.to_owned(),
        started: time(now),
        ..RestoreStatus::default()
    };
    match chosen {
        Ok(meta) => {
            status.phase = RestorePhase::Restoring;
            status.id = Some(now.to_string());
            status.key = Some(meta.key.clone());
            status.revision = Some(meta.revision);
            // No pod runs yet: each starts by restoring.
            status.members_restarted = true;
            status.message = Some(format!(
                "creating the cluster from {} (revision {})",
                meta.key, meta.revision
            ));
            let change = in_place::event(&status, "RestoreStarted");
            Some((status, vec![change]))
        }
        Err(e) => {
            status.phase = RestorePhase::Failed;
            status.message = Some(format!(
                "waiting for a backup to create the cluster from: {e}"
            ));
            // Tried again every pass: the record changes only when the reason does.
            if let Some(p) = previous.filter(|p| {
                p.request == in_place::BOOTSTRAP_REQUEST && p.phase == RestorePhase::Failed
            }) {
                status.started = p.started.clone();
            }
            // Said once per reason: the choice is tried again every pass.
            let repeated = previous.is_some_and(|p| p.message == status.message);
            let changes = if repeated {
                Vec::new()
            } else {
                vec![in_place::event(&status, "RestoreFailed")]
            };
            Some((status, changes))
        }
    }
}
