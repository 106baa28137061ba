//! Integration tests of the operator crate: planner tables, builders, reconciles against a mock
//! apiserver, the generated CRD, the rendered Helm chart, the built objects forming a cluster
//! of real etcd-server processes, the local runtime, and (ignored) the container image and a real
//! cluster.

mod build;
mod chart;
mod crd;
mod e2e;
mod fixtures;
mod formation;
mod fuzz;
mod image;
mod local;
mod plan;
mod reconcile;
