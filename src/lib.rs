//! The etcd operator: reconciles `EtcdCluster` resources into clusters of `etcd-server` pods.
//!
//! # Layout
//!
//! The reconcile pipeline, one module per stage; only observe, apply and status do I/O:
//!
//! 1. [`observe`]: reads the owned objects and etcd's member list and member health.
//! 2. [`validate`]: checks the spec beyond the CRD schema (the etcd-server flag allow-list for
//!    `extraArgs`, Raft timing) into a [`validate::ValidatedCluster`] (pure).
//! 3. [`plan`]: from the validated spec and the observed state to the next safe step (pure).
//! 4. [`build`]: one builder per object — StatefulSet, Services, PodDisruptionBudget,
//!    ConfigMap (pure).
//! 5. [`apply`]: server-side apply under one field manager, in a documented order.
//! 6. [`status`]: conditions, members and the status patch.
//!
//! Around it:
//!
//! - [`controller`]: `reconcile`, the per-object backoff `error_policy` and the controller
//!   loop.
//! - [`kube_runtime`]: the StatefulSet [`runtime::MemberRuntime`] (pods, claims, applied
//!   objects).
//! - [`runtime`]: carrying out a plan — the etcd membership change (shared) and the
//!   [`runtime::MemberRuntime`] that runs members.
//! - [`local`]: the local runtime, the same planner driving `etcd-server` processes on
//!   loopback addresses (`etcd-operator local`).
//! - [`certs`]: the certificate lifecycle of `spec.tls` (the operator as the cluster's CA):
//!   issuing with rcgen, and the gated planner of renewals and CA rotations (pure).
//! - [`recovery`]: quorum-loss recovery (`spec.recovery`): when and from which member a
//!   cluster that lost its quorum restarts alone (pure).
//! - [`backup`]: `spec.backup`, scheduled snapshots streamed to S3-compatible storage with
//!   metadata and retention (schedule and retention are pure).
//! - [`crd`]: the `EtcdCluster` resource (spec, status, CRD schema and CEL rules).
//! - [`model`]: the stages' shared vocabulary (a member's bootstrap configuration, the desired
//!   state, spec hashes); it depends on no stage, so imports only point down the pipeline.
//! - [`names`]: object names, labels, ports and paths shared by every stage.
//! - [`etcd`]: the etcd Cluster/Maintenance calls the operator makes, behind a trait.
//! - [`leader`]: Lease-based leader election.
//! - [`metrics`] and [`http`]: `etcd_operator_*` metrics, `/metrics` and `/healthz`.
//!
//! The binary (`main.rs`) only wires these together: `etcd-operator run`,
//! `etcd-operator local` and `etcd-operator crd`.

pub mod apply;
pub mod backup;
pub mod build;
pub mod certs;
pub mod controller;
pub mod crd;
pub mod etcd;
pub mod http;
pub mod kube_runtime;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod model;
pub mod names;
pub mod observe;
pub mod plan;
pub mod recovery;
pub mod runtime;
pub mod status;
pub mod validate;
