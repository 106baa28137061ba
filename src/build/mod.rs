//! Build (pure): one builder per Kubernetes object, each from the validated cluster and the
//! planner's [`Desired`](crate::model::Desired) state to a k8s-openapi struct, ready for server-side apply.

pub mod certmanager;
pub mod configmap;
pub mod pdb;
pub mod secret;
pub mod service;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::Desired;
pub use crate::model::{config_hash, spec_hash};
use crate::validate::ValidatedCluster;

/// Why building failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A member's configuration file could not be rendered.
    #[error("failed to render the configuration file of {member}: {source}")]
    Render {
        /// Member name.
        member: String,
        /// The YAML error.
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// Every object of one cluster, in one struct so that the apply stage must place each of them
/// in its order (it destructures this without `..`).
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// Members' configuration files.
    pub config_map: ConfigMap,
    /// Headless Service for peer DNS names.
    pub peer_service: Service,
    /// Service for clients.
    pub client_service: Service,
    /// The disruption budget; `None` for clusters smaller than 3 (see [`pdb::build`]).
    pub pdb: Option<PodDisruptionBudget>,
    /// The members.
    pub statefulset: StatefulSet,
}

/// Builds every object for `desired`.
pub fn build(cluster: &ValidatedCluster, desired: &Desired) -> Result<Objects, Error> {
    Ok(Objects {
        config_map: configmap::build(cluster, desired)?,
        peer_service: service::peer(cluster),
        client_service: service::client(cluster),
        pdb: pdb::build(cluster, desired.replicas),
        statefulset: statefulset::build(cluster, desired),
    })
}

/// Metadata of an owned object: name, namespace, the operator's labels and the controller
/// owner reference (so Kubernetes garbage-collects it with the cluster).
pub fn meta(cluster: &ValidatedCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.names.namespace.clone()),
        labels: Some(cluster.names.labels()),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..ObjectMeta::default()
    }
}
