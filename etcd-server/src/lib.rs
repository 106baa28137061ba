//! An etcd v3 compatible server: etcd's gRPC API over an MVCC store replicated by Raft.
//!
//! # Layout
//! - [`api`]: one module per etcd gRPC service; validates requests at the edge and converts
//!   errors to etcd's exact gRPC statuses.
//! - [`server`]: the member itself: proposes writes to Raft, waits for them to apply, serves
//!   linearizable reads through ReadIndex.
//! - [`apply`]: etcd's applier, executing KV requests on MVCC transactions.
//! - [`mvcc`]: the multi-version store (key index in memory, revisions in the backend).
//! - [`backend`]: the embedded transactional store (redb) and its table layout.
//! - [`raft`]: the consensus core (raft-rs), its write-ahead log and its I/O driver thread.
//! - [`membership`]: member and cluster identity, derived as etcd derives it.
//! - [`config`]: etcd's command-line flags and `ETCD_*` environment variables.
//! - [`error`]: etcd's client-visible errors.
//! - [`proto`]: generated API types.

pub mod apply;
pub mod backend;
pub mod error;
pub mod mvcc;
pub mod proto;
