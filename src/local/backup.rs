//! `spec.backup` in the local runtime: the same pass as the controller's, with credentials
//! from the AWS environment variables (or the default AWS chain) and the bucket client kept
//! while the spec's `s3` block stays the same.

use super::*;

use crate::backup::{self, Inputs, StaticCredentials, Store};
use crate::crd::BackupStatus;

/// The bucket client, for the `s3` block it was made from.
pub(super) struct LocalBackups {
    credentials: Option<StaticCredentials>,
    server_bin: std::path::PathBuf,
    store: Option<(String, Store)>,
    last_message: Option<String>,
}

impl LocalBackups {
    pub(super) fn new(
        credentials: Option<StaticCredentials>,
        server_bin: std::path::PathBuf,
    ) -> Self {
        Self {
            credentials,
            server_bin,
            store: None,
            last_message: None,
        }
    }

    /// One pass: `None` without `spec.backup`.
    pub(super) async fn pass(
        &mut self,
        etcd: &EtcdClient,
        cluster: &EtcdCluster,
        names: &ClusterNames,
        observed: &Observed,
        previous: Option<&BackupStatus>,
    ) -> Option<backup::Outcome> {
        let spec = cluster.spec.backup.as_ref()?;
        let location = serde_json::to_string(&spec.s3).unwrap_or_default();
        if self.store.as_ref().is_none_or(|(l, _)| *l != location) {
            let store = Store::new(
                &spec.s3,
                &names.namespace,
                &names.cluster,
                self.credentials.clone(),
            )
            .await;
            self.store = Some((location, store));
        }
        let (_, store) = self.store.as_ref()?;
        let now = crate::certs::issue::unix(std::time::SystemTime::now());
        let result = backup::pass(Inputs {
            etcd: etcd as &dyn EtcdAdmin,
            cluster,
            names,
            sources: backup::sources(observed, names),
            members: backup::member_count(observed),
            store,
            previous,
            server_bin: Some(&self.server_bin),
            now,
        })
        .await;
        match result {
            Ok(Some(o)) => {
                for change in &o.changes {
                    println!("{}", change.message());
                }
                self.last_message = None;
                Some(o)
            }
            Ok(None) => None,
            Err(e) => {
                let message = format!("backup: {e}");
                if self.last_message.as_ref() != Some(&message) {
                    warn!(%message);
                    println!("{message}");
                    self.last_message = Some(message);
                }
                None
            }
        }
    }
}

/// The bucket of the cluster in the file at `spec_file`: `spec.backup.s3`, else
/// `spec.bootstrap.fromBackup.s3`.
async fn store_of(
    spec_file: &std::path::Path,
    credentials: Option<StaticCredentials>,
) -> Result<(EtcdCluster, ClusterNames, Store), Error> {
    let cluster = file::load_spec(spec_file, "cli", 1)?;
    let names =
        ClusterNames::of(&cluster).ok_or(Error::Malformed(validate::Error::MissingNamespace))?;
    let location = cluster.spec.backup_bucket().cloned().ok_or_else(|| {
        Error::Backup(backup::Error::Restore(format!(
            "{}: no spec.backup.s3 to find backups in",
            spec_file.display()
        )))
    })?;
    // Backups of another cluster when the location comes from fromBackup.
    let source = match cluster.spec.backup {
        Some(_) => names.cluster.clone(),
        None => cluster
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.from_backup.as_ref())
            .and_then(|f| f.cluster.clone())
            .unwrap_or_else(|| names.cluster.clone()),
    };
    let store = Store::new(&location, &names.namespace, &source, credentials).await;
    Ok((cluster, names, store))
}

/// `etcd-operator backup list`: every backup of the cluster in `spec_file`, newest first.
pub async fn list_backups(
    spec_file: &std::path::Path,
    credentials: Option<StaticCredentials>,
) -> Result<Vec<backup::Metadata>, Error> {
    let (_, _, store) = store_of(spec_file, credentials).await?;
    backup::list(&store).await.map_err(Error::Backup)
}

/// `etcd-operator backup now`: one backup of the running local cluster in `options`, taken,
/// verified and followed by retention exactly as a scheduled one; returns what happened.
pub async fn backup_now(options: &Options) -> Result<Vec<Change>, Error> {
    let (mut cluster, mut names, store) =
        store_of(&options.spec_file, options.s3_credentials.clone()).await?;
    if cluster.spec.backup.is_none() {
        return Err(Error::Backup(backup::Error::Restore(format!(
            "{}: backup now needs spec.backup",
            options.spec_file.display()
        ))));
    }
    names.addressing = Addressing::Local(options.addressing);
    let certs = tls::LocalCerts::new(&options.state_dir);
    let etcd = EtcdClient {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        tls: Some(etcd::ClientTls::Dir(certs.dir().to_owned())),
    };
    let replicas = cluster.spec.replicas;
    let sources: Vec<String> = (0..replicas).map(|i| names.client_url(i)).collect();
    let members = etcd
        .member_list(&sources)
        .await
        .map(|l| l.members.len())
        .unwrap_or_default();
    let now = crate::certs::issue::unix(std::time::SystemTime::now());
    cluster.metadata.annotations.get_or_insert_default().insert(
        backup::BACKUP_NOW_ANNOTATION.to_owned(),
        format!("cli-{now}"),
    );
    let outcome = backup::pass(Inputs {
        etcd: &etcd as &dyn EtcdAdmin,
        cluster: &cluster,
        names: &names,
        sources,
        members,
        store: &store,
        previous: None,
        server_bin: Some(&options.server_bin),
        now,
    })
    .await
    .map_err(Error::Backup)?;
    Ok(outcome.map(|o| o.changes).unwrap_or_default())
}

/// An in-place restore asked for with the `etcd.rustops.dev/restore` annotation (see
/// [`backup::in_place`]): `status.restore` and the Events, or `None` when nothing is asked.
pub(super) async fn restore_pass(
    etcd: &EtcdClient,
    members: &mut LocalMembers,
    cluster: &EtcdCluster,
) -> Option<(crate::crd::RestoreStatus, Vec<Change>)> {
    use crate::backup::in_place::{self, Request};
    use crate::crd::{RestorePhase, RestoreStatus};
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let annotated = cluster
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(in_place::RESTORE_ANNOTATION));
    // The request carried out is remembered (across restarts of the runtime) until its
    // annotation goes away: only then may the same value run again.
    if !annotated && members.restored().is_some() {
        let _ = members.set_restored(None);
    }
    let (request, key) = match in_place::requested(cluster) {
        Request::None => return None,
        Request::Run { request, .. } if members.restored() == Some(request.as_str()) => {
            return None;
        }
        Request::Unconfirmed(r) => return in_place::unconfirmed(cluster, &r),
        Request::Run { request, key } => (request, key),
    };
    let now = || crate::backup::time(crate::certs::issue::unix(SystemTime::now()));
    let mut status = RestoreStatus {
        request: request.clone(),
        phase: RestorePhase::Restoring,
        started: now(),
        ..RestoreStatus::default()
    };
    let validated = match validate::validate(cluster) {
        Ok(mut v) => {
            v.names.addressing = Addressing::Local(members.options.addressing);
            v
        }
        Err(e) => {
            status.phase = RestorePhase::Failed;
            status.message = Some(format!("the spec is not valid: {e}"));
            status.finished = now();
            let change = in_place::event(&status, "RestoreFailed");
            return Some((status, vec![change]));
        }
    };
    let urls: Vec<String> = (0..cluster.spec.replicas)
        .map(|i| validated.names.client_url(i))
        .collect();
    let cluster_id = async |etcd: &EtcdClient| {
        etcd.member_list(&urls)
            .await
            .ok()
            .map(|l| format!("{:x}", l.cluster_id))
    };
    status.previous_cluster_id = cluster_id(etcd).await;
    let mut changes = vec![Change::Backup {
        reason: "RestoreStarted",
        message: format!(
            "restoring every member of {name} in place from {}",
            key.as_deref().unwrap_or("the newest usable backup")
        ),
    }];
    match members.restore_in_place(&validated, key).await {
        Ok((meta, aside)) => {
            // The restored cluster answers with its new ID once a leader is elected.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                status.cluster_id = cluster_id(etcd).await;
                if status.cluster_id.is_some() && status.cluster_id != status.previous_cluster_id {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            status.phase = RestorePhase::Completed;
            if status.cluster_id.is_none() || status.cluster_id == status.previous_cluster_id {
                status.cluster_id = None;
            }
            status.key = Some(meta.key.clone());
            status.revision = Some(meta.revision);
            status.message = Some(format!(
                "restored every member from {} (revision {}); the cluster ID changed from {} to {}; each member's old data is kept in <member>/{aside}",
                meta.key,
                meta.revision,
                status.previous_cluster_id.as_deref().unwrap_or("unknown"),
                status
                    .cluster_id
                    .as_deref()
                    .unwrap_or("one not known yet (no member answered within a minute)"),
            ));
            changes.push(in_place::event(&status, "RestoreCompleted"));
        }
        Err(e) => {
            status.phase = RestorePhase::Failed;
            status.message = Some(format!("in-place restore failed: {e}"));
            changes.push(in_place::event(&status, "RestoreFailed"));
        }
    }
    status.finished = now();
    if let Err(e) = members.set_restored(Some(request)) {
        changes.push(Change::Backup {
            reason: "RestoreFailed",
            message: format!("recording the restore failed, so it may run again: {e}"),
        });
    }
    Some((status, changes))
}

/// `etcd-operator backup upload-raw` (for the backup benchmark): uploads `file` as it is, in
/// the parts a backup uses, to the bucket of the cluster in `spec_file`, then deletes it;
/// returns the bytes sent. The ceiling a backup's throughput is measured against.
pub async fn upload_raw(
    spec_file: &std::path::Path,
    credentials: Option<StaticCredentials>,
    file: &std::path::Path,
) -> Result<u64, Error> {
    use tokio::io::AsyncReadExt;
    let (_, _, store) = store_of(spec_file, credentials).await?;
    let key = format!("{}bench/raw-upload", store.prefix);
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(io("open", file))?;
    let mut upload = store.start_upload(&key).await.map_err(Error::Backup)?;
    let mut sent = 0u64;
    loop {
        let mut part = Vec::with_capacity(crate::backup::store::PART_SIZE);
        while part.len() < crate::backup::store::PART_SIZE {
            let n = (&mut f)
                .take((crate::backup::store::PART_SIZE - part.len()) as u64)
                .read_to_end(&mut part)
                .await
                .map_err(io("read", file))?;
            if n == 0 {
                break;
            }
        }
        if part.is_empty() && sent > 0 {
            break;
        }
        let last = part.len() < crate::backup::store::PART_SIZE;
        sent += part.len() as u64;
        if let Err(e) = upload.part(part).await {
            upload.abort().await;
            return Err(Error::Backup(e));
        }
        if last {
            break;
        }
    }
    upload.finish().await.map_err(Error::Backup)?;
    store.delete(&key).await.map_err(Error::Backup)?;
    Ok(sent)
}
