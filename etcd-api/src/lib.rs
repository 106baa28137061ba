//! What etcd-server shares with the operator and the bench without either linking the server.
//!
//! # Layout
//! - [`proto`]: etcd's v3 API (`etcdserverpb`, `mvccpb`, `authpb`, `v3lockpb`,
//!   `v3electionpb`) and our member-to-member `peerpb`, generated at build time from `proto/`
//!   with `protox` (no `protoc`), clients and servers both.
//! - [`flags`]: every flag etcd-server accepts and the kind of value it takes; the operator
//!   validates `extraArgs` against it and a server test proves it matches the real parser.
//! - [`duration`]: Go durations (`1h30m`, `500ms`), as etcd's flags take them.
//! - [`keys`]: key-range helpers clients share (`prefix_end`).
//!
//! Nothing here depends on anything else in the workspace; arrows only point in.

pub mod duration;
pub mod flags;
pub mod keys;
pub mod proto;
