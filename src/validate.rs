//! Validation of a spec beyond what the CRD schema can express (pure): the etcd-server flag
//! allow-list for `extraArgs`, Raft timing, retention formats and reserved labels.
//!
//! A spec that fails here passes the apiserver's schema but would make members fail to start,
//! so the operator reports it and applies nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use etcd_api::flags::ValueKind;

use crate::crd::{AutoCompactionMode, EtcdCluster, EtcdClusterSpec, MAX_REPLICAS};
use crate::names::{CONFIG_HASH_ANNOTATION, ClusterNames, RESERVED_LABELS};

/// How the operator treats one etcd-server flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagRule {
    /// Set by the operator; the string says where (or that users cannot set it).
    Managed(&'static str),
    /// Accepted in `extraArgs`, with a value of this kind.
    Extra(ValueKind),
}

/// The etcd-server flags the operator sets itself, and from where. Every other flag in
/// `etcd_api::flags::SERVER_FLAGS` (the server's own list, which a server test keeps in step
/// with its parser) may be given in `extraArgs`.
pub const MANAGED_FLAGS: &[(&str, &str)] = &[
    ("name", "the operator (the pod name)"),
    ("data-dir", "the operator"),
    ("config-file", "the operator"),
    ("listen-client-urls", "the operator"),
    ("advertise-client-urls", "the operator"),
    ("listen-peer-urls", "the operator"),
    ("initial-advertise-peer-urls", "the operator"),
    ("initial-cluster", "the operator"),
    ("initial-cluster-state", "the operator"),
    ("initial-cluster-token", "the operator"),
    (
        "force-new-cluster",
        "the operator's quorum-loss recovery (spec.recovery)",
    ),
    (
        "listen-metrics-urls",
        "the operator (metrics are on the client port)",
    ),
    ("quota-backend-bytes", "spec.server.quotaBackendBytes"),
    ("auto-compaction-mode", "spec.server.autoCompactionMode"),
    (
        "auto-compaction-retention",
        "spec.server.autoCompactionRetention",
    ),
    ("snapshot-count", "spec.server.snapshotCount"),
    ("heartbeat-interval", "spec.server.heartbeatIntervalMs"),
    ("election-timeout", "spec.server.electionTimeoutMs"),
    // TLS follows the certificates the operator issues (spec.tls).
    ("cert-file", "the operator (spec.tls)"),
    ("key-file", "the operator (spec.tls)"),
    ("trusted-ca-file", "the operator (spec.tls)"),
    ("client-cert-auth", "the operator (spec.tls)"),
    ("auto-tls", "the operator (spec.tls)"),
    ("peer-cert-file", "the operator (spec.tls)"),
    ("peer-key-file", "the operator (spec.tls)"),
    ("peer-trusted-ca-file", "the operator (spec.tls)"),
    (
        "peer-client-cert-auth",
        "the operator (spec.tls, not built yet)",
    ),
    ("peer-auto-tls", "the operator (spec.tls, not built yet)"),
];

/// etcd's default `--heartbeat-interval`, in milliseconds.
pub const DEFAULT_HEARTBEAT_MS: i64 = 100;
/// etcd's default `--election-timeout`, in milliseconds.
pub const DEFAULT_ELECTION_MS: i64 = 1000;

/// A spec that is valid but unwise; reported as a warning Event (and, for emptyDir, a
/// condition), never blocking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecWarning {
    /// An even number of members tolerates no more failures than one fewer.
    EvenReplicas(i32),
    /// Data lives in emptyDir volumes.
    EmptyDir,
}

impl SpecWarning {
    /// Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::EvenReplicas(_) => "EvenClusterSize",
            Self::EmptyDir => "EphemeralStorage",
        }
    }

    /// Human-readable explanation.
    pub fn message(&self) -> String {
        match self {
            Self::EvenReplicas(n) => format!(
                "{n} members tolerate {} failures, no more than {}: prefer an odd size",
                (n - 1) / 2,
                n - 1
            ),
            Self::EmptyDir => "members keep their data in emptyDir volumes: a member whose pod is \
                deleted or rescheduled loses its data and cannot rejoin without manual repair"
                .to_owned(),
        }
    }
}

/// An `EtcdCluster` whose spec passed every check, with what the builders need from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    /// Names of the cluster's objects.
    pub names: ClusterNames,
    /// The spec.
    pub spec: EtcdClusterSpec,
    /// Owner reference every owned object carries.
    pub owner: OwnerReference,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `--initial-cluster-token`: unique to this incarnation of the cluster, so members of a
    /// deleted and recreated cluster never mistake each other for peers.
    pub token: String,
    /// `extraArgs` as configuration-file keys with typed values, sorted by key.
    pub extra_args: Vec<(String, serde_yaml_ng::Value)>,
    /// Warnings about the spec.
    pub warnings: Vec<SpecWarning>,
    /// An in-place restore under way (from `status.restore`).
    pub restore: Option<crate::backup::in_place::InPlace>,
    /// A new cluster from `spec.bootstrap.fromBackup` whose backup the operator has not
    /// chosen yet: nothing is created until it has (the local runtime restores on its own
    /// and clears it).
    pub backup_to_choose: bool,
    /// `spec.recovery` resolved, with the approval annotation.
    pub recovery: crate::recovery::Recovery,
}

impl ValidatedCluster {
    /// The same cluster while it moves between plain and TLS (see
    /// [`ClusterNames::tls_moving`]).
    pub fn tls_moving(&self, moving: bool) -> Self {
        let mut c = self.clone();
        c.names.tls_moving = moving;
        c
    }
}

/// Why validation failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// The object has no namespace.
    #[error("failed to validate the cluster: it has no namespace")]
    MissingNamespace,
    /// The object has no UID (it was never stored by an apiserver).
    #[error("failed to validate the cluster: it has no uid")]
    MissingUid,
    /// The spec is invalid; each string is one problem.
    #[error("failed to validate the spec: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),
}

/// `spec.backup`: the schedule and its time zone, and the bucket.
fn check_backup(spec: &crate::crd::EtcdClusterSpec, problems: &mut Vec<String>) {
    if let Some(from) = spec.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref()) {
        match from.s3.as_ref() {
            None if spec.backup.is_none() => problems.push(
                "spec.bootstrap.fromBackup needs s3 (or spec.backup.s3) to find the backup in"
                    .to_owned(),
            ),
            Some(s3) if s3.bucket.trim().is_empty() => {
                problems.push("spec.bootstrap.fromBackup.s3.bucket must not be empty".to_owned())
            }
            _ => {}
        }
    }
    let Some(b) = spec.backup.as_ref() else {
        return;
    };
    if let Err(e) = crate::backup::Schedule::parse(&b.schedule, b.time_zone.as_deref()) {
        problems.push(e.to_string());
    }
    if b.s3.bucket.trim().is_empty() {
        problems.push("spec.backup.s3.bucket must not be empty".to_owned());
    }
    if let Some(endpoint) = &b.s3.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        problems.push(format!(
            "spec.backup.s3.endpoint {endpoint:?} must be an http:// or https:// URL"
        ));
    }
}

/// `spec.tls`: its durations, and what is built so far (the `Auto` provider).
fn check_tls(spec: &crate::crd::EtcdClusterSpec, problems: &mut Vec<String>) {
    let Some(tls) = spec.tls.as_ref().filter(|t| t.enabled) else {
        return;
    };
    if let Err(e) = crate::certs::Settings::of(tls) {
        problems.push(e.to_string());
    }
    match tls.provider {
        crate::crd::TlsProvider::Auto => {}
        crate::crd::TlsProvider::CertManager if tls.cert_manager.is_none() => {
            problems.push("spec.tls.provider CertManager needs spec.tls.certManager".to_owned())
        }
        crate::crd::TlsProvider::CertManager => {}
        crate::crd::TlsProvider::Secrets => match &tls.secrets {
            None => problems.push("spec.tls.provider Secrets needs spec.tls.secrets".to_owned()),
            Some(s) if tls.client && tls.client_cert_auth && s.client_secret.is_none() => {
                problems.push(
                    "spec.tls.secrets.clientSecret is needed with clientCertAuth: the operator presents it to the members"
                        .to_owned(),
                )
            }
            Some(_) => {}
        },
    }
    if !tls.client && !tls.peer {
        problems.push("spec.tls: enabled, but neither client nor peer is on".to_owned());
    }
}

/// Validates `cluster`.
pub fn validate(cluster: &EtcdCluster) -> Result<ValidatedCluster, Error> {
    let names = ClusterNames::of(cluster).ok_or(Error::MissingNamespace)?;
    let owner = cluster.controller_owner_ref(&()).ok_or(Error::MissingUid)?;
    let spec = &cluster.spec;
    let mut problems = Vec::new();
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        problems.push(format!(
            "replicas must be between 1 and {MAX_REPLICAS}, not {}",
            spec.replicas
        ));
    }
    if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        problems.push("image must not be empty".to_owned());
    }
    check_server(spec, &mut problems);
    check_tls(spec, &mut problems);
    check_backup(spec, &mut problems);
    for key in spec.pod.labels.keys() {
        if RESERVED_LABELS.contains(&key.as_str()) {
            problems.push(format!("pod.labels: {key} is set by the operator"));
        }
    }
    if spec.pod.annotations.contains_key(CONFIG_HASH_ANNOTATION) {
        problems.push(format!(
            "pod.annotations: {CONFIG_HASH_ANNOTATION} is set by the operator"
        ));
    }
    let extra_args = match extra_args(spec) {
        Ok(args) => args,
        Err(mut p) => {
            problems.append(&mut p);
            Vec::new()
        }
    };
    let recovery = crate::recovery::Recovery::of(cluster).unwrap_or_else(|problem| {
        problems.push(problem);
        crate::recovery::Recovery {
            automatic: false,
            after: crate::recovery::DEFAULT_AFTER,
            approved: false,
            approval_value: String::new(),
        }
    });
    if !problems.is_empty() {
        return Err(Error::InvalidSpec(problems));
    }
    let mut warnings = Vec::new();
    if spec.replicas % 2 == 0 {
        warnings.push(SpecWarning::EvenReplicas(spec.replicas));
    }
    if spec.storage.empty_dir {
        warnings.push(SpecWarning::EmptyDir);
    }
    let token = match &owner.uid {
        uid if !uid.is_empty() => format!("{}-{uid}", names.cluster),
        _ => names.cluster.clone(),
    };
    Ok(ValidatedCluster {
        names,
        spec: spec.clone(),
        owner,
        generation: cluster.metadata.generation,
        token,
        extra_args,
        warnings,
        restore: crate::backup::in_place::InPlace::of(cluster),
        backup_to_choose: crate::backup::in_place::backup_to_choose(cluster),
        recovery,
    })
}

fn check_server(spec: &EtcdClusterSpec, problems: &mut Vec<String>) {
    let s = &spec.server;
    let heartbeat = s.heartbeat_interval_ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
    let election = s.election_timeout_ms.unwrap_or(DEFAULT_ELECTION_MS);
    if heartbeat <= 0 {
        problems.push("server.heartbeatIntervalMs must be positive".to_owned());
    } else if election < heartbeat.saturating_mul(5) {
        problems.push(format!(
            "server.electionTimeoutMs ({election}) must be at least 5 times server.heartbeatIntervalMs ({heartbeat})"
        ));
    }
    if election > 50_000 {
        problems.push("server.electionTimeoutMs must be at most 50000".to_owned());
    }
    if s.quota_backend_bytes.is_some_and(|q| q < 0) {
        problems.push("server.quotaBackendBytes must not be negative".to_owned());
    }
    if s.snapshot_count.is_some_and(|c| c < 1) {
        problems.push("server.snapshotCount must be positive".to_owned());
    }
    if let Some(retention) = &s.auto_compaction_retention {
        let mode = s
            .auto_compaction_mode
            .unwrap_or(AutoCompactionMode::Periodic);
        let ok = match mode {
            AutoCompactionMode::Revision => retention.parse::<u64>().is_ok(),
            AutoCompactionMode::Periodic => ValueKind::Retention.accepts(retention),
        };
        if !ok {
            problems.push(format!(
                "server.autoCompactionRetention {retention:?} is not valid in {} mode",
                mode.as_str()
            ));
        }
    }
}

/// The rule for flag `name` (without dashes), if etcd-server knows it.
pub fn flag_rule(name: &str) -> Option<FlagRule> {
    let flag = etcd_api::flags::find(name)?;
    if let Some((_, by)) = MANAGED_FLAGS.iter().find(|(n, _)| *n == name) {
        return Some(FlagRule::Managed(by));
    }
    if flag.test_only {
        return Some(FlagRule::Managed(
            "no one (it exists for etcd-server's tests)",
        ));
    }
    Some(match flag.kind {
        ValueKind::Count | ValueKind::LogLevel | ValueKind::Duration | ValueKind::Bool => {
            FlagRule::Extra(flag.kind)
        }
        // Addresses, names and cluster identity are all derived from the spec.
        _ => FlagRule::Managed("the operator"),
    })
}

fn extra_args(spec: &EtcdClusterSpec) -> Result<Vec<(String, serde_yaml_ng::Value)>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (raw, value) in &spec.server.extra_args {
        let name = raw.trim_start_matches('-');
        match flag_rule(name) {
            None => problems.push(format!(
                "server.extraArgs: etcd-server has no flag --{name}"
            )),
            Some(FlagRule::Managed(by)) => {
                problems.push(format!("server.extraArgs: --{name} is set by {by}"))
            }
            Some(FlagRule::Extra(kind)) => match typed_value(kind, value) {
                Some(v) => out.push((name.to_owned(), v)),
                None => problems.push(format!(
                    "server.extraArgs: {value:?} is not a valid value for --{name}"
                )),
            },
        }
    }
    if problems.is_empty() {
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    } else {
        Err(problems)
    }
}

fn typed_value(kind: ValueKind, value: &str) -> Option<serde_yaml_ng::Value> {
    let value = value.trim();
    if !kind.accepts(value) {
        return None;
    }
    match kind {
        ValueKind::Count => {
            let n: u64 = value.parse().ok()?;
            (n > 0).then(|| serde_yaml_ng::Value::Number(n.into()))
        }
        ValueKind::Bool => Some(serde_yaml_ng::Value::Bool(value == "true")),
        _ => Some(serde_yaml_ng::Value::String(value.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: serde_json::Value) -> EtcdCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.rustops.dev/v1alpha1",
            "kind": "EtcdCluster",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": spec,
        }))
        .expect("valid EtcdCluster")
    }

    fn problems(spec: serde_json::Value) -> Vec<String> {
        match validate(&cluster(spec)) {
            Err(Error::InvalidSpec(p)) => p,
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_extra_args_are_typed() {
        let v = validate(&cluster(serde_json::json!({
            "server": {"extraArgs": {"--max-txn-ops": "256", "log-level": "debug"}}
        })))
        .expect("valid");
        assert_eq!(v.spec.replicas, 3);
        assert_eq!(v.token, "c-u-1");
        assert_eq!(
            v.extra_args,
            vec![
                (
                    "log-level".to_owned(),
                    serde_yaml_ng::Value::String("debug".into())
                ),
                (
                    "max-txn-ops".to_owned(),
                    serde_yaml_ng::Value::Number(256.into())
                ),
            ]
        );
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn wrong_specs_are_reported_each() {
        let table = [
            (
                serde_json::json!({"server": {"extraArgs": {"no-such-flag": "1"}}}),
                "has no flag --no-such-flag",
            ),
            (
                serde_json::json!({"server": {"extraArgs": {"data-dir": "/x"}}}),
                "--data-dir is set by the operator",
            ),
            (
                serde_json::json!({"server": {"extraArgs": {"snapshot-count": "5"}}}),
                "spec.server.snapshotCount",
            ),
            (
                serde_json::json!({"server": {"extraArgs": {"max-txn-ops": "lots"}}}),
                "not a valid value for --max-txn-ops",
            ),
            (
                serde_json::json!({"server": {"electionTimeoutMs": 300}}),
                "at least 5 times",
            ),
            (
                serde_json::json!({"server": {"autoCompactionMode": "revision", "autoCompactionRetention": "1h"}}),
                "revision mode",
            ),
            (serde_json::json!({"replicas": 11}), "between 1 and 9"),
            (
                serde_json::json!({"pod": {"labels": {"app.kubernetes.io/instance": "x"}}}),
                "set by the operator",
            ),
        ];
        for (spec, needle) in table {
            let p = problems(spec.clone());
            assert!(
                p.iter().any(|m| m.contains(needle)),
                "{spec}: {p:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn warnings_for_even_sizes_and_empty_dir() {
        let v = validate(&cluster(
            serde_json::json!({"replicas": 4, "storage": {"emptyDir": true}}),
        ))
        .expect("valid");
        assert_eq!(
            v.warnings,
            vec![SpecWarning::EvenReplicas(4), SpecWarning::EmptyDir]
        );
    }

    #[test]
    fn every_managed_flag_is_a_server_flag_and_every_server_flag_has_a_rule() {
        for (name, _) in MANAGED_FLAGS {
            assert!(etcd_api::flags::find(name).is_some(), "{name}");
        }
        for f in etcd_api::flags::SERVER_FLAGS {
            assert!(flag_rule(f.name).is_some(), "{}", f.name);
        }
        assert_eq!(flag_rule("no-such-flag"), None);
        assert_eq!(
            flag_rule("experimental-lease-checkpoint-interval"),
            Some(FlagRule::Extra(ValueKind::Duration))
        );
    }

    #[test]
    fn extra_arg_values_as_the_server_parses_them() {
        assert!(typed_value(ValueKind::Duration, "10m").is_some());
        // etcd-server refuses a zero interval; so does the operator.
        assert!(typed_value(ValueKind::Duration, "0s").is_none());
        assert!(typed_value(ValueKind::Count, "0").is_none());
        assert_eq!(
            typed_value(ValueKind::Bool, "true"),
            Some(serde_yaml_ng::Value::Bool(true))
        );
        assert!(typed_value(ValueKind::LogLevel, "loud").is_none());
    }

    #[test]
    fn tls_settings_are_checked() {
        for (tls, want) in [
            (
                serde_json::json!({"enabled": true, "validity": "24h", "renewBefore": "48h"}),
                "spec.tls.renewBefore: must be shorter than validity",
            ),
            (
                serde_json::json!({"enabled": true, "provider": "Secrets"}),
                "spec.tls.provider Secrets needs spec.tls.secrets",
            ),
            (
                serde_json::json!({"enabled": true, "provider": "Secrets",
                    "secrets": {"serverSecret": "s", "peerSecret": "p"}}),
                "clientSecret is needed with clientCertAuth",
            ),
            (
                serde_json::json!({"enabled": true, "client": false, "peer": false}),
                "neither client nor peer",
            ),
            (serde_json::json!({"enabled": true}), ""),
        ] {
            let c = cluster(serde_json::json!({
                "tls": tls,
                "server": {"extraArgs": {"peer-cert-file": "/x"}}
            }));
            let p = match validate(&c) {
                Err(Error::InvalidSpec(p)) => p,
                other => panic!("{other:?}"),
            };
            assert!(
                p.iter()
                    .any(|m| m.contains("--peer-cert-file is set by the operator (spec.tls)")),
                "{p:?}"
            );
            if !want.is_empty() {
                assert!(p.iter().any(|m| m.contains(want)), "{want}: {p:?}");
            } else {
                assert_eq!(p.len(), 1, "{p:?}");
            }
        }
    }
}
