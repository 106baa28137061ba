//! Integration tests for etcd-server: real server processes on 127.0.0.1, driven through the
//! `etcd-client` crate, etcdctl 3.4.23 and side by side with the reference etcd 3.4.23.
#![allow(missing_docs, clippy::unwrap_used)]

mod cluster;
mod compaction;
mod crash;
mod crash_soak;
mod differential;
mod etcdctl;
mod faults;
mod fuzz;
mod harness;
mod kv;
mod lease;
mod linearizability;
mod ops;
mod raft_cluster;
mod smoke;
mod tls;
mod watch;
