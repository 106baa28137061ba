//! `spec.backup` and `status.backup`: scheduled snapshots to S3-compatible storage.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduled backups (`spec.backup`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take a backup: a 5-field cron expression (`0 */6 * * *`), a shorthand
    /// (`@hourly`, `@daily`, `@weekly`, `@monthly`), or `@every <duration>` (`@every 30m`).
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,

    /// The time zone of the cron expression (an IANA name such as `Europe/Berlin`; default
    /// `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,

    /// Where backups go.
    pub s3: S3Location,

    /// Which backups to keep. A backup kept by any rule stays.
    #[serde(default)]
    pub retention: Retention,

    /// How snapshots are compressed: `zstd` (default) or `none`.
    #[serde(default)]
    pub compression: BackupCompression,

    /// Restore each new backup into a scratch member and compare it with the cluster before
    /// calling it verified (default true).
    #[serde(default = "yes")]
    pub verify: bool,

    /// Take no scheduled backups (the `etcd.rustops.dev/backup-now` annotation still does).
    #[serde(default)]
    pub suspend: bool,
}

fn yes() -> bool {
    true
}

/// How a new cluster starts (`spec.bootstrap`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start from a backup: every member restores the same snapshot before its first start,
    /// with its own name and peer URL. Only read when the cluster is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// Which backup a new cluster starts from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// Where the backups are (default: `spec.backup.s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// The cluster whose backups they are, in this cluster's namespace (default: this
    /// cluster's name): backups live under `<prefix><namespace>/<cluster>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The snapshot object's key; without it, the newest backup (a verified one if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// An S3 bucket and prefix.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// The bucket.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,

    /// A key prefix (`etcd/prod/`); backups go under `<prefix><namespace>/<cluster>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,

    /// The endpoint of an S3-compatible store (`https://minio.example:9000`); AWS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Address buckets as `<endpoint>/<bucket>` rather than `<bucket>.<endpoint>` (most
    /// S3-compatible stores want this).
    #[serde(default)]
    pub force_path_style: bool,

    /// A Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`. Without it the default AWS credential chain is used (environment,
    /// web identity / IRSA, instance profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3Credentials>,
}

/// The Secret holding S3 credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// The Secret's name, in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which backups to keep (`spec.backup.retention`). Every rule counts backups that are
/// verified (or, with `verify: false`, complete); a backup kept by any rule stays. With no rule
/// set, the last 7 are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// The newest N backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_hourly: Option<u32>,
    /// The newest backup of each of the last N days that have one (UTC days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_daily: Option<u32>,
    /// The newest backup of each of the last N ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_weekly: Option<u32>,
}

/// How a snapshot is stored: `none` or `zstd`, as the spec writes them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupCompression {
    /// As the server streams it.
    #[serde(alias = "None")]
    None,
    /// zstd (the default).
    #[default]
    #[serde(alias = "Zstd")]
    Zstd,
}

/// What the operator knows of the cluster's backups (`status.backup`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the last backup succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
    /// When the last backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Time>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// When the next scheduled backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled: Option<Time>,
    /// The newest backups, newest first.
    #[serde(default)]
    pub recent: Vec<BackupRecord>,
    /// The last `etcd.rustops.dev/backup-now` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
}

/// One backup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The snapshot object's key.
    pub key: String,
    /// The etcd revision it holds.
    pub revision: i64,
    /// Its size in the bucket, bytes.
    pub size: i64,
    /// Whether it was restored and compared with the cluster.
    #[serde(default)]
    pub verified: bool,
    /// When it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken: Option<Time>,
}

/// Where an in-place restore stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestorePhase {
    /// Asked for, but `etcd.rustops.dev/restore-confirm` does not name the cluster yet.
    #[default]
    WaitingForConfirmation,
    /// The members are stopped and being restored.
    Restoring,
    /// Every member was restored and started.
    Completed,
    /// The restore failed; the members run on their old data.
    Failed,
}

/// The last in-place restore (`status.restore`), asked for with the
/// `etcd.rustops.dev/restore` annotation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The `etcd.rustops.dev/restore` value acted on (a backup key, or `latest`).
    pub request: String,
    /// Where it stands.
    pub phase: RestorePhase,
    /// The backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The revision it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// What happened, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// This restore's identity (on Kubernetes): each member's init container restores once
    /// per ID, and the new cluster token is made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Whether every member's pod was deleted to restart from the backup (on Kubernetes).
    #[serde(default)]
    pub members_restarted: bool,
    /// etcd's cluster ID before the restore (hex); a restore makes a new cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_cluster_id: Option<String>,
    /// etcd's cluster ID after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
}

impl super::EtcdClusterSpec {
    /// The bucket this cluster's backups are in: `spec.backup.s3`, else
    /// `spec.bootstrap.fromBackup.s3`.
    pub fn backup_bucket(&self) -> Option<&S3Location> {
        self.backup.as_ref().map(|b| &b.s3).or_else(|| {
            self.bootstrap
                .as_ref()
                .and_then(|b| b.from_backup.as_ref())
                .and_then(|f| f.s3.as_ref())
        })
    }
}
