//! etcd-server binary.
fn main() {}
