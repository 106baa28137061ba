//! Generated etcd v3 API types and gRPC services (from `proto/`, compiled at build time by
//! `build.rs` with protox).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `mvccpb`: key-values and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
/// `authpb`: users, roles and permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
}
/// `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
/// `v3lockpb`: the Lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
/// `v3electionpb`: the Election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
/// `peerpb`: our member-to-member protocol (Raft messages, snapshots, cluster info).
pub mod peerpb {
    tonic::include_proto!("peerpb");
}
/// `raftwire`: raft-rs's Raft message on the wire, decoded with prost (see
/// `proto/raftwire.proto`).
pub mod raftwire {
    tonic::include_proto!("raftwire");
}
