//! The Kubernetes side of [`MemberRuntime`]: members are a StatefulSet's pods. Applying builds
//! every object and applies it with server-side apply; restarting deletes a pod; wiping
//! deletes a member's claim, then its pod.

use futures::future::BoxFuture;
use kube::Client;

use crate::model::Desired;
use crate::runtime::MemberRuntime;
use crate::validate::ValidatedCluster;
use crate::{apply, build, etcd};

/// Why a step on the StatefulSet's members failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The membership change in etcd failed.
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// Building the objects failed.
    #[error(transparent)]
    Build(#[from] build::Error),
    /// Applying or deleting objects failed.
    #[error(transparent)]
    Apply(#[from] apply::Error),
}

/// Members as a StatefulSet: applying builds every object and applies them in order.
pub struct StatefulSetRuntime {
    /// Kubernetes client.
    pub client: Client,
    /// Whether the PodDisruptionBudget exists (the apply stage deletes it when not wanted).
    pub pdb_exists: bool,
}

impl MemberRuntime for StatefulSetRuntime {
    type Error = Error;

    fn apply<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let objects = build::build(cluster, desired)?;
            apply::apply(
                &self.client,
                &cluster.names.namespace,
                &objects,
                self.pdb_exists,
            )
            .await?;
            Ok(())
        })
    }

    fn restart<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let names = &cluster.names;
            apply::delete_pod(&self.client, &names.namespace, &names.member(ordinal)).await?;
            Ok(())
        })
    }

    fn wipe<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let names = &cluster.names;
            let pod = names.member(ordinal);
            // The claim first: it stays (protected) until the pod is gone, and the
            // StatefulSet then recreates the pod with a new, empty claim. An emptyDir volume
            // goes with the pod.
            if !cluster.spec.storage.empty_dir {
                let claim = format!("{}-{pod}", crate::names::DATA_VOLUME);
                apply::delete_claim(&self.client, &names.namespace, &claim).await?;
            }
            apply::delete_pod(&self.client, &names.namespace, &pod).await?;
            Ok(())
        })
    }
}
