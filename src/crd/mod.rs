//! The `EtcdCluster` custom resource (`etcd.rustops.dev/v1alpha1`): spec, status and CRD schema.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod backup;

pub use backup::{
    BackupCompression, BackupRecord, BackupSpec, BackupStatus, BootstrapSpec, FromBackup,
    RestorePhase, RestoreStatus, Retention, S3Credentials, S3Location,
};

/// The API group the operator owns.
pub const GROUP: &str = "etcd.rustops.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The image built by this repository's Dockerfile; it ships both `etcd-operator` and
/// `etcd-server`, so a cluster defaults to the server released with the operator.
pub const DEFAULT_IMAGE: &str =
    concat!("ghcr.io/rustops/etcd-operator:", env!("CARGO_PKG_VERSION"));
/// Default number of members.
pub const DEFAULT_REPLICAS: i32 = 3;
/// Largest cluster the operator manages; etcd's guidance is that more than 7 voting members
/// slow every write without adding useful fault tolerance, 9 leaves room for migrations.
pub const MAX_REPLICAS: i32 = 9;
/// Default size of each member's volume: room for the server's default 2 GiB backend quota
/// plus the Raft log and snapshots.
pub const DEFAULT_STORAGE_SIZE: &str = "4Gi";

/// An etcd cluster run on the bundled `etcd-server`.
// Each `printcolumn(...)` repeats the same keys, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "etcd.rustops.dev",
    version = "v1alpha1",
    kind = "EtcdCluster",
    namespaced,
    shortname = "etcd",
    status = "EtcdClusterStatus",
    derive = "PartialEq",
    doc = "An etcd cluster run by etcd-operator on the bundled etcd-server.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of members"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Healthy members"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Member that leads the Raft group"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.currentVersion",
        description = "etcd API version the members report"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.server) || !has(self.server.heartbeatIntervalMs) || !has(self.server.electionTimeoutMs) || self.server.electionTimeoutMs >= 5 * self.server.heartbeatIntervalMs"
).message("server.electionTimeoutMs must be at least 5 times server.heartbeatIntervalMs"))]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    /// Number of members. etcd accepts even sizes, but an even cluster tolerates no more
    /// failures than the odd size below it, so the operator warns about them.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,

    /// Container image that provides the `etcd-server` binary. Defaults to the image of this
    /// operator's release (`ghcr.io/rustops/etcd-operator:<version>`), which ships it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Where members keep their data. Immutable: changing it would need every member's data
    /// moved.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage is immutable"))]
    pub storage: StorageSpec,

    /// Compute resources of the etcd-server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Overrides for the members' pods.
    #[serde(default)]
    pub pod: PodOverrides,

    /// etcd-server options, written to each member's configuration file.
    #[serde(default)]
    pub server: ServerOptions,

    /// What happens to members' PersistentVolumeClaims when the cluster is deleted or scaled
    /// down.
    #[serde(default)]
    pub pvc_retention_policy: PvcRetentionPolicy,

    /// TLS for clients and between members, with certificates the operator issues and
    /// rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Scheduled snapshot backups to S3-compatible storage, verified, with retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// How a new cluster starts: from a backup. Only read when the cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,

    /// Recovery from a lost quorum (a majority of members down for good): restart the
    /// surviving member that applied the most as a one-member cluster with its data, then add
    /// the others again. Manual (the default) waits for the annotation
    /// `etcd.rustops.dev/approve-recovery=<the cluster's UID>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// Quorum-loss recovery (`spec.recovery`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// `Manual` (default): recover only once approved by the annotation
    /// `etcd.rustops.dev/approve-recovery=<UID>`; `Automatic`: on its own.
    #[serde(default)]
    pub mode: RecoveryMode,
    /// How long a majority of the voting members must be down before the quorum counts as
    /// lost (a Go duration; default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_loss_after: Option<String>,
}

/// Whether quorum-loss recovery needs approval.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Wait for the approval annotation.
    #[default]
    Manual,
    /// Recover without asking.
    Automatic,
}

/// TLS settings (`spec.tls`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.provider != 'CertManager' || has(self.certManager)")
    .message("provider CertManager needs certManager"))]
#[x_kube(validation = Rule::new("self.provider != 'Secrets' || has(self.secrets)")
    .message("provider Secrets needs secrets"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Turn TLS on. With it off (the default) members speak plain HTTP/2.
    #[serde(default)]
    pub enabled: bool,

    /// TLS on the client port (`https://` client URLs).
    #[serde(default = "yes")]
    pub client: bool,

    /// TLS between members (`https://` peer URLs, mutual authentication).
    #[serde(default = "yes")]
    pub peer: bool,

    /// Clients must present a certificate signed by the cluster's CA (`--client-cert-auth`).
    #[serde(default = "yes")]
    pub client_cert_auth: bool,

    /// Who issues the certificates: `Auto` (the operator is the CA), `CertManager`, or
    /// `Secrets` (your own Secrets, which the operator mounts and watches).
    #[serde(default)]
    pub provider: TlsProvider,

    /// The cert-manager issuer, for provider `CertManager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerIssuer>,

    /// Your own Secrets, for provider `Secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<UserSecrets>,

    /// How long leaf certificates are valid, as a Go duration (default `8760h`, one year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub validity: Option<String>,

    /// How long the CA is valid (default `43800h`, five years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub ca_validity: Option<String>,

    /// Re-issue a certificate this long before it expires (default `720h`, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"))]
    pub renew_before: Option<String>,

    /// The key algorithm of every certificate.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,

    /// More names for the client certificate (load balancers, external DNS names, IPs).
    #[serde(default, rename = "extraSANs", skip_serializing_if = "Vec::is_empty")]
    pub extra_sans: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Who issues the certificates.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsProvider {
    /// The operator is the CA and rotates everything.
    #[default]
    Auto,
    /// cert-manager issues the certificates from `certManager.issuerRef`.
    CertManager,
    /// Your own Secrets; the operator only mounts and watches them.
    Secrets,
}

/// A cert-manager issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerIssuer {
    /// The issuer's name.
    #[schemars(length(min = 1, max = 253))]
    pub issuer_name: String,
    /// `Issuer` (in the cluster's namespace) or `ClusterIssuer`.
    #[serde(default = "issuer_kind")]
    pub issuer_kind: String,
}

fn issuer_kind() -> String {
    "Issuer".to_owned()
}

/// Secrets you provide (each with `tls.crt`, `tls.key` and `ca.crt`, as cert-manager and
/// `kubectl create secret tls` plus a CA make them). The operator mounts them; members reload
/// them when the kubelet updates the files.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserSecrets {
    /// The client port's certificate; its `ca.crt` holds the CAs client certificates are
    /// checked against.
    #[schemars(length(min = 1, max = 253))]
    pub server_secret: String,
    /// The members' peer certificate (valid for server and client authentication, naming
    /// every member's host); its `ca.crt` holds the CAs of the members' certificates.
    #[schemars(length(min = 1, max = 253))]
    pub peer_secret: String,
    /// A client certificate for the operator's own calls, with a `ca.crt` that trusts the
    /// server certificate. Needed with `clientCertAuth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_secret: Option<String>,
}

/// Key algorithm of the certificates.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 (the default: fast handshakes, accepted by every etcd client).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519 (Go clients accept it; some older clients do not).
    Ed25519,
    /// RSA, 2048-bit keys (slower handshakes; for clients or policies that need RSA).
    Rsa2048,
    /// RSA, 4096-bit keys.
    Rsa4096,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

/// Storage of each member's data directory.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.emptyDir || !has(self.storageClassName)")
    .message("storageClassName cannot be set together with emptyDir"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's PersistentVolumeClaim (or the emptyDir size limit). Keep it well
    /// above `server.quotaBackendBytes`: the Raft log and snapshots live here too.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,

    /// StorageClass of the claims. Unset uses the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Keep data in an emptyDir instead of a PersistentVolumeClaim. Only for throwaway
    /// clusters: a member whose pod is deleted or rescheduled loses its data and cannot rejoin
    /// without manual repair. Reported with the `EphemeralStorage` condition and a warning
    /// Event.
    #[serde(default)]
    pub empty_dir: bool,
}

fn default_storage_size() -> Quantity {
    Quantity(DEFAULT_STORAGE_SIZE.to_owned())
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            empty_dir: false,
        }
    }
}

/// Overrides for the members' pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels on the pods. The operator's own `app.kubernetes.io/*` labels cannot be
    /// overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Scheduling affinity. Replaces the default, which prefers one member per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Topology spread constraints of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// etcd-server options. Unset options keep etcd's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "!has(self.autoCompactionMode) || self.autoCompactionMode != 'revision' || !has(self.autoCompactionRetention) || self.autoCompactionRetention.matches('^[0-9]+$')"
).message("autoCompactionRetention must be a revision count when autoCompactionMode is revision"))]
#[serde(rename_all = "camelCase")]
pub struct ServerOptions {
    /// Backend size quota in bytes (`--quota-backend-bytes`); writes fail with NOSPACE past it.
    /// etcd's default is 2 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub quota_backend_bytes: Option<i64>,

    /// Auto-compaction mode (`--auto-compaction-mode`): `periodic` or `revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction_mode: Option<AutoCompactionMode>,

    /// Auto-compaction retention (`--auto-compaction-retention`): a duration such as `1h` or
    /// `30m` (bare numbers are hours) in periodic mode, a revision count in revision mode.
    /// `0` disables auto-compaction, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(regex(pattern = r"^([0-9]+|([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+)$"))]
    pub auto_compaction_retention: Option<String>,

    /// Applied Raft entries between snapshots (`--snapshot-count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_count: Option<i64>,

    /// Raft heartbeat interval in milliseconds (`--heartbeat-interval`); default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub heartbeat_interval_ms: Option<i64>,

    /// Raft election timeout in milliseconds (`--election-timeout`); default 1000, at least
    /// 5 times the heartbeat interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 50000))]
    pub election_timeout_ms: Option<i64>,

    /// Further etcd-server flags, by name without the leading dashes (`max-txn-ops: "256"`).
    /// Only flags the operator does not set itself are accepted; anything else is reported in
    /// the `Degraded` condition and nothing is applied until the spec is fixed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
}

/// `--auto-compaction-mode`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AutoCompactionMode {
    /// Keep history for a time window.
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

impl AutoCompactionMode {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Periodic => "periodic",
            Self::Revision => "revision",
        }
    }
}

/// What happens to members' PersistentVolumeClaims. Maps onto the StatefulSet's
/// `persistentVolumeClaimRetentionPolicy`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// When the EtcdCluster is deleted. `Retain` (the default) keeps the data: recreating a
    /// cluster of the same name and size picks it up again.
    #[serde(default = "retain")]
    pub when_deleted: RetentionMode,

    /// When the cluster is scaled down. `Delete` (the default) removes the claim of each removed
    /// member: its data belongs to a member that left the cluster, and a member added later
    /// under the same name must start from an empty data directory to join.
    #[serde(default = "delete")]
    pub when_scaled: RetentionMode,
}

fn retain() -> RetentionMode {
    RetentionMode::Retain
}

fn delete() -> RetentionMode {
    RetentionMode::Delete
}

impl Default for PvcRetentionPolicy {
    fn default() -> Self {
        Self {
            when_deleted: RetentionMode::Retain,
            when_scaled: RetentionMode::Delete,
        }
    }
}

/// Whether a claim is kept or deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionMode {
    /// Keep the claim and its data.
    Retain,
    /// Delete the claim.
    Delete,
}

impl RetentionMode {
    /// The StatefulSet policy value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}

/// Observed state of an `EtcdCluster`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Available`, `Progressing`, `Degraded` and, for emptyDir storage, `EphemeralStorage`.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// The members in etcd's member list.
    #[serde(default)]
    pub members: Vec<MemberStatus>,

    /// Number of healthy members.
    #[serde(default)]
    pub ready_replicas: i32,

    /// etcd's cluster ID, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,

    /// etcd API version the members report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,

    /// Name of the member that leads the Raft group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,

    /// The certificates in use, with `spec.tls` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,

    /// Backups, with `spec.backup` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,

    /// The last in-place restore, asked for with the `etcd.rustops.dev/restore` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// The certificates of a cluster with `spec.tls` on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// Where a CA rotation stands: `Idle`, `TrustBoth` (the bundle trusts the old and the new
    /// CA), `NewLeaves` (certificates re-issued by the new CA; the old CA still trusted).
    pub phase: String,
    /// Every certificate: the CAs of the trust bundle, then the leaves.
    #[serde(default)]
    pub certificates: Vec<CertificateStatus>,
}

/// One certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `ca`, `server`, `peer` or `client`.
    pub role: String,
    /// Its Common Name.
    pub common_name: String,
    /// SHA-256 of the certificate (what the members' `etcd_server_tls_cert_expiry_seconds`
    /// metric shows for the material they loaded).
    pub sha256: String,
    /// When it expires (RFC 3339).
    pub not_after: String,
}

/// One member of the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member name (its pod's name).
    pub name: String,
    /// etcd member ID, in hex.
    pub id: String,
    /// Whether the member is a non-voting learner.
    #[serde(default)]
    pub is_learner: bool,
    /// Whether the member leads the Raft group.
    #[serde(default)]
    pub is_leader: bool,
    /// Whether the member answered a status request and knows a leader.
    #[serde(default)]
    pub healthy: bool,
    /// etcd API version the member reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl EtcdClusterSpec {
    /// The image members run.
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_IMAGE)
    }
}

/// The CRD as YAML, exactly as `etcd-operator crd` prints it.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    use kube::CustomResourceExt;
    serde_yaml_ng::to_string(&EtcdCluster::crd())
}
