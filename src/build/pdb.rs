//! The PodDisruptionBudget: at most one member voluntarily disrupted at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use crate::validate::ValidatedCluster;

/// Smallest cluster that gets a budget.
pub const MIN_REPLICAS_FOR_PDB: i32 = 3;

/// `maxUnavailable: 1` for clusters of 3 or more members, which keep quorum with one member
/// down. Smaller clusters get none: with 1 or 2 members any disruption loses quorum, so a budget
/// allowing one would protect nothing, and one allowing none would block node drains forever.
pub fn build(cluster: &ValidatedCluster, replicas: i32) -> Option<PodDisruptionBudget> {
    (replicas >= MIN_REPLICAS_FOR_PDB).then(|| PodDisruptionBudget {
        metadata: meta(cluster, cluster.names.pdb()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(cluster.names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
