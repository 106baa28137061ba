//! etcd's client-visible errors, with the exact gRPC codes and message strings clients match on.

use tonic::{Code, Status};

/// Errors a client can observe. Each variant maps to one of etcd's `rpctypes` errors; the
/// `Display` text is etcd's exact message, because clients compare strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// `ErrGRPCEmptyKey`.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ErrGRPCKeyNotFound`.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ErrGRPCValueProvided`.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ErrGRPCLeaseProvided`.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// `ErrGRPCTooManyOps`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// `ErrGRPCInvalidSortOption`.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// `ErrGRPCDuplicateKey`.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// `ErrGRPCCompacted`.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// `ErrGRPCFutureRev`.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// `ErrGRPCNoSpace`.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// `ErrGRPCLeaseNotFound`.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// `ErrGRPCLeaseExist`.
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    /// `ErrGRPCLeaseTTLTooLarge`.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// `ErrGRPCMemberExist`.
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    /// `ErrGRPCPeerURLExist`.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    /// `ErrGRPCMemberBadURLs`.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// `ErrGRPCMemberNotLearner`.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// `ErrGRPCLearnerNotReady`.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// `ErrGRPCTooManyLearners`.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// `ErrGRPCUnhealthy`.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// `ErrGRPCMemberNotEnoughStarted`.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// `ErrGRPCTimeoutLeaderTransfer`.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TimeoutLeaderTransfer,
    /// `ErrGRPCMemberNotFound`.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// `ErrGRPCRequestTooLarge`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// `ErrGRPCRequestTooManyRequests`.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// `ErrGRPCNoLeader`.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// `ErrGRPCNotLeader`.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// `ErrGRPCStopped`.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// `ErrGRPCTimeout`.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// `ErrGRPCNotCapable`.
    #[error("etcdserver: not capable")]
    NotCapable,
    /// `ErrGRPCBadLeaderTransferee`.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// `ErrGRPCNotSupportedForLearner`.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// `ErrGRPCCorrupt`.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// A request etcd would reject for a reason with no dedicated error (the text is ours).
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    /// A local failure (disk, encoding) that etcd would surface as `Unknown`.
    #[error("{0}")]
    Internal(String),
}

impl EtcdError {
    /// The gRPC status code etcd uses for this error.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | RequestTooLarge | InvalidArgument(_) => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | NotLeader
            | BadLeaderTransferee
            | MemberExist
            | PeerUrlExist
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotEnoughStartedMembers => Code::FailedPrecondition,
            MemberBadUrls => Code::InvalidArgument,
            NoLeader
            | Stopped
            | Timeout
            | NotCapable
            | NotSupportedForLearner
            | Unhealthy
            | TimeoutLeaderTransfer => Code::Unavailable,
            Corrupt => Code::DataLoss,
            Internal(_) => Code::Unknown,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_strings_match_etcd() {
        let table = [
            (
                EtcdError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::FutureRev,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                EtcdError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                EtcdError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                EtcdError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                EtcdError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                EtcdError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                EtcdError::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                EtcdError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                EtcdError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
        ];
        for (err, code, msg) in table {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), msg);
        }
    }
}
