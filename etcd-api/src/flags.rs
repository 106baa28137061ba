//! Every flag etcd-server accepts (on the command line, as `ETCD_*` variables and as config
//! file keys) and the kind of value it takes. The server's parser is the truth; a server test
//! fails when this table and the parser disagree, and the operator validates `extraArgs`
//! against it, so the two cannot drift apart.

use crate::duration;

/// The kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Free text (a name, a path, a token).
    Text,
    /// A comma-separated list of URLs.
    Urls,
    /// `name=url,...`.
    InitialCluster,
    /// `new` or `existing`.
    ClusterState,
    /// A non-negative integer (bytes, counts, milliseconds).
    Count,
    /// One of etcd's log levels.
    LogLevel,
    /// A Go duration above zero, such as `10m` or `500ms`.
    Duration,
    /// `true` or `false` (a bare flag means `true`).
    Bool,
    /// `periodic` or `revision`.
    CompactionMode,
    /// Auto-compaction retention: a duration or bare hours (periodic), a count (revision).
    Retention,
}

/// One flag: its name without dashes and the kind of value it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// The name, as in `--name`.
    pub name: &'static str,
    /// Its value.
    pub kind: ValueKind,
    /// Not an etcd flag: accepted for tests only, and hidden from `--help`.
    pub test_only: bool,
}

const fn flag(name: &'static str, kind: ValueKind) -> Flag {
    Flag {
        name,
        kind,
        test_only: false,
    }
}

/// Every flag etcd-server accepts.
pub const SERVER_FLAGS: &[Flag] = &[
    flag("name", ValueKind::Text),
    flag("data-dir", ValueKind::Text),
    flag("listen-client-urls", ValueKind::Urls),
    flag("advertise-client-urls", ValueKind::Urls),
    flag("listen-peer-urls", ValueKind::Urls),
    flag("initial-advertise-peer-urls", ValueKind::Urls),
    flag("initial-cluster", ValueKind::InitialCluster),
    flag("initial-cluster-state", ValueKind::ClusterState),
    flag("initial-cluster-token", ValueKind::Text),
    flag("force-new-cluster", ValueKind::Bool),
    flag("quota-backend-bytes", ValueKind::Count),
    flag("max-request-bytes", ValueKind::Count),
    flag("max-txn-ops", ValueKind::Count),
    flag("auto-compaction-mode", ValueKind::CompactionMode),
    flag("auto-compaction-retention", ValueKind::Retention),
    flag("snapshot-count", ValueKind::Count),
    flag("heartbeat-interval", ValueKind::Count),
    flag("election-timeout", ValueKind::Count),
    flag("log-level", ValueKind::LogLevel),
    flag(
        "experimental-watch-progress-notify-interval",
        ValueKind::Duration,
    ),
    flag(
        "experimental-lease-checkpoint-interval",
        ValueKind::Duration,
    ),
    flag("experimental-enable-lease-checkpoint", ValueKind::Bool),
    Flag {
        name: "auto-compaction-check-interval-ms",
        kind: ValueKind::Count,
        test_only: true,
    },
    flag("listen-metrics-urls", ValueKind::Urls),
    flag("cert-file", ValueKind::Text),
    flag("key-file", ValueKind::Text),
    flag("trusted-ca-file", ValueKind::Text),
    flag("client-cert-auth", ValueKind::Bool),
    flag("auto-tls", ValueKind::Bool),
    flag("client-crl-file", ValueKind::Text),
    flag("client-cert-allowed-hostname", ValueKind::Text),
    flag("peer-cert-file", ValueKind::Text),
    flag("peer-key-file", ValueKind::Text),
    flag("peer-trusted-ca-file", ValueKind::Text),
    flag("peer-client-cert-auth", ValueKind::Bool),
    flag("peer-auto-tls", ValueKind::Bool),
    flag("peer-crl-file", ValueKind::Text),
    flag("peer-cert-allowed-cn", ValueKind::Text),
    flag("peer-cert-allowed-hostname", ValueKind::Text),
    flag(
        "experimental-peer-skip-client-san-verification",
        ValueKind::Bool,
    ),
    flag("cipher-suites", ValueKind::Text),
    flag("tls-min-version", ValueKind::Text),
    flag("tls-max-version", ValueKind::Text),
    flag("config-file", ValueKind::Text),
];

/// etcd's log levels.
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error", "panic", "fatal"];

/// The flag called `name` (without dashes), if the server has it.
pub fn find(name: &str) -> Option<&'static Flag> {
    SERVER_FLAGS.iter().find(|f| f.name == name)
}

impl ValueKind {
    /// Whether the server would accept `value` for a flag of this kind. Only the kinds whose
    /// check needs no other flag are decided here; the others accept any non-empty text.
    pub fn accepts(self, value: &str) -> bool {
        let value = value.trim();
        match self {
            Self::Count => value.parse::<u64>().is_ok(),
            Self::LogLevel => LOG_LEVELS.contains(&value),
            Self::Duration => duration::parse_interval(value).is_ok(),
            Self::Bool => matches!(value, "true" | "false"),
            Self::ClusterState => matches!(value, "new" | "existing"),
            Self::CompactionMode => matches!(value, "periodic" | "revision"),
            Self::Retention => value.parse::<u64>().is_ok() || duration::parse(value).is_some(),
            Self::Text | Self::Urls | Self::InitialCluster => !value.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dashed() {
        for (i, f) in SERVER_FLAGS.iter().enumerate() {
            assert!(
                !f.name.starts_with('-') && !f.name.contains('_'),
                "{}",
                f.name
            );
            assert!(
                SERVER_FLAGS[i + 1..].iter().all(|g| g.name != f.name),
                "{} twice",
                f.name
            );
        }
    }

    #[test]
    fn values_by_kind() {
        assert!(ValueKind::Duration.accepts("5m"));
        assert!(!ValueKind::Duration.accepts("0s"));
        assert!(ValueKind::Count.accepts("0"));
        assert!(!ValueKind::Count.accepts("-1"));
        assert!(ValueKind::LogLevel.accepts("warn"));
        assert!(!ValueKind::LogLevel.accepts("verbose"));
        assert!(ValueKind::Retention.accepts("1h"));
        assert!(ValueKind::Retention.accepts("5"));
        assert!(!ValueKind::Retention.accepts("often"));
    }
}
