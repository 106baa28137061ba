//! The etcd operator: reconciles `EtcdCluster` resources into etcd-server clusters.
//!
//! # Layout
//! The operator is built in later milestones; this crate currently only hosts the binary
//! entry point so that the workspace has its planned shape.
