//! Apply: server-side apply of the built objects under the operator's one field manager, in a
//! fixed order.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::Objects;
use crate::names::FIELD_MANAGER;

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused an object.
    #[error("failed to apply {kind} {name}: {source}")]
    Apply {
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an object no longer wanted failed.
    #[error("failed to delete {kind} {name}: {source}")]
    Delete {
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Applies `objects` in namespace `ns`. `pdb_exists` says whether a budget exists that must
/// be deleted when the cluster became too small for one.
///
/// Order: the ConfigMap first, because a pod started before its configuration file exists
/// fails to start; then the Services, so members' DNS names resolve when they start; then the
/// budget; the StatefulSet last, since it is what starts pods.
pub async fn apply(
    client: &Client,
    ns: &str,
    objects: &Objects,
    pdb_exists: bool,
) -> Result<(), Error> {
    let Objects {
        config_map,
        peer_service,
        client_service,
        pdb,
        statefulset,
    } = objects;
    apply_one(client, ns, config_map).await?;
    apply_one(client, ns, peer_service).await?;
    apply_one(client, ns, client_service).await?;
    match pdb {
        Some(pdb) => apply_one(client, ns, pdb).await?,
        None if pdb_exists => delete_pdb(client, ns, &statefulset.name_any()).await?,
        None => {}
    }
    apply_one(client, ns, statefulset).await?;
    Ok(())
}

/// Applies the certificate Secrets, in order.
pub async fn apply_secrets(
    client: &Client,
    ns: &str,
    secrets: &[k8s_openapi::api::core::v1::Secret],
) -> Result<(), Error> {
    for s in secrets {
        apply_one(client, ns, s).await?;
    }
    Ok(())
}

/// Applies cert-manager `Certificate` objects.
pub async fn apply_certificates(
    client: &Client,
    ns: &str,
    certificates: &[kube::api::DynamicObject],
) -> Result<(), Error> {
    let ar = crate::build::certmanager::api_resource();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for c in certificates {
        let name = c.name_any();
        api.patch(&name, &params, &Patch::Apply(c))
            .await
            .map_err(|source| Error::Apply {
                kind: "Certificate".into(),
                name,
                source,
            })?;
    }
    Ok(())
}

async fn apply_one<K>(client: &Client, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        })?;
    Ok(())
}

async fn delete_pdb(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    delete::<PodDisruptionBudget>(client, ns, name).await
}

/// Deletes a member's pod, so the StatefulSet recreates it from the current template (the
/// update strategy is `OnDelete`: this is how the operator orders a rolling update). Already
/// gone is fine.
pub async fn delete_pod(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    delete::<Pod>(client, ns, name).await
}

/// Removes the annotation `key` the user set on EtcdCluster `name` (a restore's
/// confirmation, used up as the operator acts on it). The one write that is not a
/// server-side apply: the annotation is the user's field, which the operator's field manager
/// does not own. Already gone is fine.
pub async fn remove_annotation(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let api: Api<crate::crd::EtcdCluster> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({"metadata": {"annotations": {key: null}}});
    match api
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: "EtcdCluster".to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// EtcdCluster `name` as the API holds it now; `None` when it is gone.
pub async fn get_cluster(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<crate::crd::EtcdCluster>, Error> {
    let api: Api<crate::crd::EtcdCluster> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.map_err(|source| Error::Apply {
        kind: "EtcdCluster".to_owned(),
        name: name.to_owned(),
        source,
    })
}

/// Deletes a member's PersistentVolumeClaim (its data). Already gone is fine.
pub async fn delete_claim(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    delete::<PersistentVolumeClaim>(client, ns, name).await
}

async fn delete<K>(client: &Client, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: K::kind(&()).into_owned(),
            name: name.into(),
            source,
        }),
    }
}
