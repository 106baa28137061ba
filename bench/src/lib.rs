//! `etcd-bench`: a load generator for etcd v3 servers in the spirit of etcd's `tools/benchmark`,
//! and a side-by-side comparison of our `etcd-server` with the reference etcd.
//!
//! # Layout
//!
//! - [`options`]: the workloads and their options (shared by the CLI and library callers).
//! - [`pool`]: `--conns` connections shared by `--clients` clients, leader discovery.
//! - [`workload`]: [`run`], the entry point, and the request/response workloads (`put`,
//!   `range`, `txn-put`, `lease-keepalive`); `watch` lives in its own module.
//! - `runner`: the closed-loop driver (one task per client, shared request counter, progress).
//! - [`tls`]: client TLS files for `https://` endpoints, and `compare --tls`'s certificates.
//! - [`report`]: HDR latency histograms, errors by kind, the [`Report`] as text or JSON.
//! - [`compare`]: starts etcd and etcd-server clusters, alternates runs of a fixed suite against
//!   them, measures RSS, CPU, disk and restart time, and prints ratios (ours ÷ etcd).
//! - [`backup`]: the operator's backups against a real S3 server, beside a raw upload.

pub mod backup;
pub mod compare;
pub mod error;
pub mod grpc;
pub mod options;
pub mod pool;
pub mod report;
mod runner;
pub mod tls;
mod watch;
pub mod workload;

pub use error::{Error, Result};
pub use options::{Common, Workload};
pub use report::Report;
pub use workload::run;
