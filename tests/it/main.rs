//! Integration tests of the operator crate: planner tables, builders, reconciles against a mock
//! apiserver, the generated CRD, the rendered Helm chart and (ignored) a real cluster.

mod build;
mod chart;
mod crd;
mod e2e;
mod fixtures;
mod formation;
mod plan;
mod reconcile;
