//! The gRPC edge: one module per etcd service. Requests are validated here, before any work,
//! and every error leaves as etcd's exact gRPC status.

pub mod cluster;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod peer;
pub mod watch;

use tonic::Status;

use crate::error::EtcdError;

/// `Result` for service handlers.
pub type GrpcResult<T> = Result<tonic::Response<T>, Status>;

/// The status for an API etcd has but this server does not serve yet.
pub fn not_supported(what: &str) -> Status {
    Status::unimplemented(format!(
        "etcdserver: {what} is not supported by this server yet"
    ))
}

impl EtcdError {
    /// Convenience for handlers: `Err(EtcdError::X.into())`.
    pub fn status(self) -> Status {
        self.into()
    }
}
