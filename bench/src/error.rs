//! The crate's error type: every failure that stops a benchmark run (as opposed to a failed
//! request, which is counted in the report by kind and does not stop the run).

use std::path::PathBuf;
use std::time::Duration;

/// Why a benchmark or a comparison could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options make no sense together.
    #[error("failed to validate options: {0}")]
    InvalidOptions(String),
    /// No connection could be made to an endpoint.
    #[error("failed to connect to {endpoint}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// No HTTP/2 connection could be made to an endpoint (the bench's own gRPC client).
    #[error("failed to connect to {endpoint}: {reason}")]
    ConnectH2 {
        /// The endpoint as given.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A request needed to set up or tear down a run failed.
    #[error("failed to {action}")]
    Request {
        /// What was being done, e.g. "grant a lease".
        action: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// No endpoint reported itself as the Raft leader.
    #[error("failed to find the leader among {endpoints:?}")]
    NoLeader {
        /// The endpoints that were asked.
        endpoints: Vec<String>,
    },
    /// A local file or process operation failed.
    #[error("failed to {action}: {path}")]
    Io {
        /// What was being done, e.g. "create the data dir".
        action: &'static str,
        /// The file, directory or program involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A server process exited while it was expected to run.
    #[error("failed to keep {member} running: it exited with {status}; log: {log}")]
    Exited {
        /// Server kind and member name.
        member: String,
        /// The exit status.
        status: std::process::ExitStatus,
        /// Where its stderr went.
        log: PathBuf,
    },
    /// A server process did not serve a linearizable read in time.
    #[error("failed to see {member} become ready within {timeout:?}; log: {log}")]
    NotReady {
        /// Server kind and member name.
        member: String,
        /// How long we waited.
        timeout: Duration,
        /// Where its stderr went.
        log: PathBuf,
    },
    /// A spawned task panicked or was cancelled.
    #[error("failed to join a load-generating task")]
    Join(#[source] tokio::task::JoinError),
    /// The JSON output could not be produced.
    #[error("failed to serialize the report as JSON")]
    Json(#[source] serde_json::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
