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
