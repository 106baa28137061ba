//! Backups (`spec.backup`): scheduled snapshots streamed to S3-compatible storage, with a
//! metadata object beside each, and retention.
//!
//! Layout: [`schedule`] (when a backup is due, pure), [`retention`] (which to keep, pure),
//! [`store`] (the bucket), [`take`] (one backup), [`verify`] (restoring one into a scratch
//! member and comparing it with the cluster), and here [`pass`], the step both runtimes run
//! each reconcile: take a backup when one is due or asked for, verify it, then apply
//! retention. [`in_place`] decides what an in-place restore request asks for.

pub mod in_place;
pub mod kube;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod store;
pub mod take;
pub mod verify;

use crate::crd::{BackupCompression, BackupRecord, BackupStatus, EtcdCluster};
use crate::etcd::EtcdAdmin;
use crate::names::ClusterNames;
use crate::runtime::Change;

pub use schedule::Schedule;
pub use store::{StaticCredentials, Store};

/// An annotation whose new value asks for a backup now.
pub const BACKUP_NOW_ANNOTATION: &str = "etcd.rustops.dev/backup-now";
/// How many backups `status.backup.recent` lists.
pub const RECENT: usize = 10;

/// Why a backup step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `spec.backup.schedule` (or its time zone) is not valid.
    #[error("spec.backup.schedule {schedule:?}: {reason}")]
    Schedule {
        /// The schedule.
        schedule: String,
        /// Why.
        reason: String,
    },
    /// The bucket refused or could not be reached.
    #[error("failed to {op} bucket {bucket}: {message}")]
    Store {
        /// What was attempted.
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The store's error.
        message: String,
    },
    /// The member's snapshot stream failed.
    #[error("snapshot: {0}")]
    Etcd(crate::etcd::Error),
    /// Compressing failed.
    #[error("compressing the snapshot failed: {0}")]
    Compress(std::io::Error),
    /// A metadata object could not be written or read.
    #[error("backup metadata: {0}")]
    Metadata(String),
    /// The S3 credentials could not be read.
    #[error("S3 credentials: {0}")]
    Credentials(String),
    /// A backup could not be checked (the store or this machine failed, not the backup).
    #[error("could not verify {key}: {reason}")]
    Unverifiable {
        /// The snapshot's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A backup did not restore to what the cluster held.
    #[error("verifying {key}: {reason}")]
    Verify {
        /// The snapshot's key.
        key: String,
        /// What differed.
        reason: String,
    },
    /// A new cluster could not start from its backup.
    #[error("restoring from a backup: {0}")]
    Restore(String),
    /// No member to take a snapshot from.
    #[error("no healthy member to take a snapshot from")]
    NoSource,
    /// The background task running a backup failed (it panicked or was cancelled).
    #[error("the backup task failed: {0}")]
    Task(String),
}

/// The metadata object beside each snapshot (`<snapshot key minus extension>.json`): only
/// backups whose metadata exists count, and it is written last.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The snapshot object's key.
    pub key: String,
    /// The EtcdCluster's name.
    pub cluster: String,
    /// When it was taken, Unix seconds.
    pub taken: i64,
    /// The revision the snapshot holds.
    pub revision: i64,
    /// etcd's cluster ID, hex.
    pub cluster_id: String,
    /// Members of the cluster then.
    pub members: usize,
    /// The server version of the member it came from.
    pub server_version: String,
    /// The snapshot's size as the server streamed it.
    pub raw_size: u64,
    /// The object's size.
    pub size: u64,
    /// SHA-256 of the object (lowercase hex).
    pub sha256: String,
    /// SHA-256 of the snapshot as the server streamed it.
    pub raw_sha256: String,
    /// How it is compressed.
    pub compression: BackupCompression,
    /// Whether it was restored and compared with the cluster: `None` until checked.
    pub verified: Option<bool>,
    /// Why verification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// What the source member held at the revision when the backup was taken (`HashKV` and
    /// key count), which verification compares the restored member with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<crate::etcd::Digest>,
    /// The `spec.backup` that made it.
    pub spec: serde_json::Value,
}

impl Metadata {
    fn record(&self) -> BackupRecord {
        BackupRecord {
            key: self.key.clone(),
            revision: self.revision,
            size: self.size as i64,
            verified: self.verified == Some(true),
            taken: time(self.taken),
        }
    }
}

/// The metadata object's key for the snapshot at `key`.
pub fn metadata_key(key: &str) -> String {
    format!(
        "{}.json",
        key.trim_end_matches(".zst").trim_end_matches(".snap")
    )
}

pub(crate) fn time(unix: i64) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

fn unix(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_second()
}

/// Every backup of the cluster in `store`, by its metadata, newest first.
pub async fn list(store: &Store) -> Result<Vec<Metadata>, Error> {
    let mut out = Vec::new();
    for (key, _) in store.list().await? {
        if !key.ends_with(".json") {
            continue;
        }
        let bytes = store.get(&key).await?;
        match serde_json::from_slice::<Metadata>(&bytes) {
            // Only a metadata object beside its own snapshot counts (a copied one naming
            // another key must not make retention delete that key).
            Ok(m) if metadata_key(&m.key) == key => out.push(m),
            Ok(m) => {
                tracing::warn!(%key, named = %m.key, "skipping a metadata object that names another snapshot")
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "skipping a metadata object that does not parse")
            }
        }
    }
    out.sort_by(|a, b| b.taken.cmp(&a.taken).then_with(|| b.key.cmp(&a.key)));
    Ok(out)
}

/// Client URLs of the healthy voting members of `observed`, followers first (a snapshot costs
/// the member that streams it).
pub fn sources(observed: &crate::observe::Observed, names: &ClusterNames) -> Vec<String> {
    use crate::observe::{EtcdState, MemberHealth};
    let EtcdState::Reachable(view) = &observed.etcd else {
        return Vec::new();
    };
    let leader = view.leader();
    let mut out: Vec<(bool, String)> = view
        .members
        .iter()
        .filter(|m| matches!(m.health, MemberHealth::Healthy { .. }) && !m.is_learner)
        .filter_map(|m| {
            m.ordinal
                .map(|i| (Some(m.id) == leader, names.client_url(i)))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, url)| url).collect()
}

/// Members in `observed`'s member list.
pub fn member_count(observed: &crate::observe::Observed) -> usize {
    match &observed.etcd {
        crate::observe::EtcdState::Reachable(view) => view.members.len(),
        _ => 0,
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `status.backup` after it.
    pub status: BackupStatus,
    /// Backups taken, failed or deleted, as Events.
    pub changes: Vec<Change>,
    /// Seconds until the next backup is due.
    pub next_in: i64,
    /// The `BackupReady` and `BackupOverdue` conditions: type, status, reason, message.
    pub conditions: Vec<(&'static str, bool, &'static str, String)>,
    /// The backup this pass attempted, for the metrics.
    pub attempt: Option<Attempt>,
}

/// One backup attempt, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// Whether it succeeded (taken, and verified when asked).
    pub ok: bool,
    /// Seconds it took (snapshot, upload and verification).
    pub seconds: f64,
    /// The object's size, bytes (0 when nothing was stored).
    pub size: u64,
    /// When it was taken, Unix seconds.
    pub taken: i64,
}

/// `BackupReady` (the last attempt succeeded) and `BackupOverdue` (no success within two
/// schedule intervals; with none yet, after a failure), from `status` at `now`.
pub fn conditions(
    status: &BackupStatus,
    schedule: &Schedule,
    suspend: bool,
    now: i64,
) -> Vec<(&'static str, bool, &'static str, String)> {
    let success = status.last_success.as_ref().map(unix);
    let failure = status.last_failure.as_ref().map(unix);
    let stamp = |t: i64| time(t).map(|t| t.0.to_string()).unwrap_or_default();
    let ready = match (success, failure) {
        (None, None) => (
            false,
            "NoBackupYet",
            "no backup has been taken yet".to_owned(),
        ),
        (s, Some(f)) if s.is_none_or(|s| f > s) => (
            false,
            "BackupFailed",
            status
                .last_failure_reason
                .clone()
                .unwrap_or_else(|| "the last backup failed".to_owned()),
        ),
        (s, _) => (
            true,
            "BackupSucceeded",
            format!(
                "the last backup was taken at {}",
                stamp(s.unwrap_or_default())
            ),
        ),
    };
    let interval = schedule.interval_at(now);
    let overdue = match success {
        _ if suspend => (
            false,
            "Suspended",
            "scheduled backups are suspended".to_owned(),
        ),
        Some(s) if now - s > 2 * interval => (
            true,
            "Overdue",
            format!("no backup succeeded since {}", stamp(s)),
        ),
        None if failure.is_some() => (true, "Overdue", "no backup has succeeded yet".to_owned()),
        _ => (false, "OnSchedule", "backups are on schedule".to_owned()),
    };
    vec![
        ("BackupReady", ready.0, ready.1, ready.2),
        ("BackupOverdue", overdue.0, overdue.1, overdue.2),
    ]
}

/// What a pass needs to know of the cluster now.
pub struct Inputs<'a> {
    /// etcd.
    pub etcd: &'a dyn EtcdAdmin,
    /// The cluster.
    pub cluster: &'a EtcdCluster,
    /// Its names.
    pub names: &'a ClusterNames,
    /// Client URLs of healthy members to take the snapshot from, in order of preference
    /// (followers first).
    pub sources: Vec<String>,
    /// Members in the cluster.
    pub members: usize,
    /// The bucket.
    pub store: &'a Store,
    /// `status.backup` before.
    pub previous: Option<&'a BackupStatus>,
    /// The `etcd-server` binary verification restores with; `None` skips verification.
    pub server_bin: Option<&'a std::path::Path>,
    /// Now, Unix seconds.
    pub now: i64,
}

/// Deletes what retention no longer keeps (metadata first: a backup without it no longer
/// counts); returns the newest backups left, for the status.
async fn apply_retention(
    i: &Inputs<'_>,
    spec: &crate::crd::BackupSpec,
    out: &mut Outcome,
) -> Result<Vec<BackupRecord>, Error> {
    let all = list(i.store).await?;
    let candidates: Vec<retention::Candidate> = all
        .iter()
        .map(|m| retention::Candidate {
            key: m.key.clone(),
            taken: m.taken,
            good: m.verified == Some(true) || (!spec.verify && m.verified.is_none()),
        })
        .collect();
    let failed: Vec<&str> = all
        .iter()
        .filter(|m| m.verified == Some(false))
        .map(|m| m.key.as_str())
        .collect();
    let gone = retention::to_delete(&spec.retention, &candidates, |k| failed.contains(&k));
    for m in all.iter().filter(|m| gone.contains(&m.key)) {
        i.store.delete(&metadata_key(&m.key)).await?;
        i.store.delete(&m.key).await?;
        out.changes.push(Change::Backup {
            reason: "BackupDeleted",
            message: format!("deleted {} (retention)", m.key),
        });
    }
    Ok(all
        .iter()
        .filter(|m| !gone.contains(&m.key))
        .take(RECENT)
        .map(Metadata::record)
        .collect())
}

/// When a pass takes a backup, and what it asked for.
struct Decision {
    /// A backup is due now.
    due: bool,
    /// The `backup-now` annotation's value.
    requested: Option<String>,
    /// The next scheduled time, Unix seconds.
    next: i64,
}

fn decide(
    spec: &crate::crd::BackupSpec,
    schedule: &Schedule,
    cluster: &EtcdCluster,
    previous: Option<&BackupStatus>,
    now: i64,
) -> Decision {
    let requested = cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BACKUP_NOW_ANNOTATION))
        .cloned();
    let last_request = previous.and_then(|p| p.last_request.clone());
    let asked = requested.is_some() && requested != last_request;
    let upcoming = schedule.next_after(now).unwrap_or(now + 86400);
    // The recorded next time, unless the schedule changed to an earlier one.
    let next = previous
        .and_then(|p| p.next_scheduled.as_ref())
        .map(unix)
        .map_or(upcoming, |t| t.min(upcoming));
    Decision {
        due: asked || (!spec.suspend && now >= next),
        requested,
        next,
    }
}

/// Whether a pass at `now` would take a backup (so a caller may run it in the background).
pub fn due(
    cluster: &EtcdCluster,
    previous: Option<&BackupStatus>,
    now: i64,
) -> Result<bool, Error> {
    let Some(spec) = cluster.spec.backup.as_ref() else {
        return Ok(false);
    };
    let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())?;
    Ok(decide(spec, &schedule, cluster, previous, now).due)
}

/// One pass: `None` without `spec.backup`. Takes a backup when the schedule says it is due
/// (not while `suspend`) or the `backup-now` annotation has a value not acted on yet; after a
/// successful one, deletes what retention no longer keeps.
pub async fn pass(i: Inputs<'_>) -> Result<Option<Outcome>, Error> {
    let Some(spec) = i.cluster.spec.backup.as_ref() else {
        return Ok(None);
    };
    let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())?;
    let mut status = i.previous.cloned().unwrap_or_default();
    let Decision {
        due,
        requested,
        next,
    } = decide(spec, &schedule, i.cluster, i.previous, i.now);
    let mut out = Outcome::default();
    if !due {
        status.next_scheduled = time(next);
        // Suspended, the recorded time may be long past: look again in an hour.
        out.next_in = if spec.suspend { 3600 } else { next - i.now };
        out.conditions = conditions(&status, &schedule, spec.suspend, i.now);
        out.status = status;
        return Ok(Some(out));
    }
    status.last_request = requested;
    let spec_json = serde_json::to_value(spec).unwrap_or_default();
    let started = std::time::Instant::now();
    // The bucket first: a missing bucket or wrong credentials fail before any member
    // streams a snapshot, and are not retried on another member.
    let mut result = i.store.check().await.and(Err(Error::NoSource));
    let sources = if result.is_ok() || matches!(result, Err(Error::NoSource)) {
        i.sources.as_slice()
    } else {
        &[]
    };
    for source in sources {
        let job = take::Job {
            cluster: &i.names.cluster,
            members: i.members,
            compression: spec.compression,
            taken: i.now,
            spec: spec_json.clone(),
        };
        result = take::take(i.etcd, source, i.store, job).await;
        // Another member helps only when this one's stream failed.
        if !matches!(result, Err(Error::Etcd(_))) {
            break;
        }
    }
    match result {
        Ok(mut meta) => {
            out.changes.push(Change::Backup {
                reason: "BackupTaken",
                message: format!(
                    "backed up revision {} to s3://{}/{} ({} bytes)",
                    meta.revision,
                    i.store.bucket(),
                    meta.key,
                    meta.size
                ),
            });
            // Verification: a backup that does not restore to what the cluster held is not a
            // success (and retention deletes it); one that could not be checked (the store,
            // this machine) stays unverified and is neither counted nor deleted.
            let mut good = true;
            if spec.verify
                && let Some(bin) = i.server_bin
            {
                let checked = match meta.digest {
                    None => Err(Error::Unverifiable {
                        key: meta.key.clone(),
                        reason: "the source member's HashKV at the revision could not be read"
                            .into(),
                    }),
                    Some(expected) => verify::verify(i.etcd, i.store, &meta, expected, bin).await,
                };
                meta.verified = match &checked {
                    Ok(()) => Some(true),
                    Err(Error::Verify { .. }) => Some(false),
                    Err(_) => None,
                };
                meta.verify_error = checked.as_ref().err().map(ToString::to_string);
                good = meta.verified != Some(false);
                out.changes.push(match checked {
                    Ok(()) => Change::Backup {
                        reason: "BackupVerified",
                        message: format!(
                            "verified {}: restored, it holds what the cluster held at revision {}",
                            meta.key, meta.revision
                        ),
                    },
                    Err(e @ Error::Verify { .. }) => Change::Backup {
                        reason: "BackupVerificationFailed",
                        message: e.to_string(),
                    },
                    Err(e) => Change::Backup {
                        reason: "BackupNotVerified",
                        message: e.to_string(),
                    },
                });
                match serde_json::to_vec_pretty(&meta) {
                    Ok(text) => {
                        if let Err(e) = i.store.put(&metadata_key(&meta.key), text).await {
                            out.changes.push(Change::Backup {
                                reason: "BackupNotVerified",
                                message: format!("recording the verification failed: {e}"),
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "backup metadata"),
                }
            }
            out.attempt = Some(Attempt {
                ok: good,
                seconds: started.elapsed().as_secs_f64(),
                size: meta.size,
                taken: i.now,
            });
            if good {
                status.last_success = time(i.now);
            } else {
                status.last_failure = time(i.now);
                status.last_failure_reason = meta.verify_error.clone();
            }
            // Retention never fails the pass: the backup is taken and recorded either way.
            match apply_retention(&i, spec, &mut out).await {
                Ok(kept) => status.recent = kept,
                Err(e) => out.changes.push(Change::Backup {
                    reason: "RetentionFailed",
                    message: format!("retention: {e}"),
                }),
            }
        }
        Err(e) => {
            out.attempt = Some(Attempt {
                ok: false,
                seconds: started.elapsed().as_secs_f64(),
                size: 0,
                taken: i.now,
            });
            status.last_failure = time(i.now);
            status.last_failure_reason = Some(e.to_string());
            out.changes.push(Change::Backup {
                reason: "BackupFailed",
                message: format!("backup failed: {e}"),
            });
        }
    }
    let next = schedule.next_after(i.now).unwrap_or(i.now + 86400);
    status.next_scheduled = time(next);
    out.next_in = next - i.now;
    out.conditions = conditions(&status, &schedule, spec.suspend, i.now);
    out.status = status;
    Ok(Some(out))
}
