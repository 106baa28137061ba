//! `etcd-bench`: a load generator for etcd v3 servers in the spirit of etcd's `tools/benchmark`.
