//! The reconciler: runs observe → validate → plan → (membership change) → build → apply →
//! status for one `EtcdCluster`, and the controller loop around it.
//!
//! No finalizer: everything the operator creates carries an owner reference, so Kubernetes'
//! garbage collector removes it with the cluster, and claims follow `pvcRetentionPolicy`
//! through the StatefulSet. Nothing outside Kubernetes needs cleaning up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use crate::crd::EtcdCluster;
use crate::etcd::EtcdAdmin;
use crate::kube_runtime::{Error as KubeRuntimeError, StatefulSetRuntime};
use crate::metrics::Metrics;
use crate::names::{ClusterNames, MANAGED_SELECTOR};
use crate::plan::{Plan, Step};
use crate::runtime;
use crate::validate::ValidatedCluster;
use crate::{apply, build, etcd, observe, plan, status, validate};

/// Why a reconciliation failed. An invalid spec is not an error: it is reported in the status
/// and waits for a change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks a namespace or UID.
    #[error(transparent)]
    Malformed(validate::Error),
    /// Reading the owned objects failed.
    #[error(transparent)]
    Observe(#[from] observe::Error),
    /// A membership change failed.
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// Building the objects failed.
    #[error(transparent)]
    Build(#[from] build::Error),
    /// Applying the objects failed.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// Writing the status failed.
    #[error(transparent)]
    Status(#[from] status::Error),
    /// The certificates could not be read or issued.
    #[error("certificates: {0}")]
    Certs(String),
}

impl Error {
    /// A short, fixed label for `etcd_operator_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Observe(_) => "observe",
            Self::Etcd(_) => "etcd",
            Self::Build(_) => "build",
            Self::Apply(_) => "apply",
            Self::Status(_) => "status",
            Self::Certs(_) => "certificates",
        }
    }
}

impl From<KubeRuntimeError> for Error {
    fn from(e: KubeRuntimeError) -> Self {
        match e {
            KubeRuntimeError::Etcd(e) => Self::Etcd(e),
            KubeRuntimeError::Build(e) => Self::Build(e),
            KubeRuntimeError::Apply(e) => Self::Apply(e),
        }
    }
}

/// First retry delay after a failed reconciliation; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The retry delay after `failures` consecutive failures (1 or more).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// What every reconciliation shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// etcd access.
    pub etcd: Arc<dyn EtcdAdmin>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Consecutive failures per cluster (`namespace/name`), for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Per cluster: since when the certificate lifecycle has waited for members.
    cert_waits: Mutex<HashMap<String, i64>>,
    /// Per cluster (by UID): the backup running in the background, if any.
    backup_tasks: Mutex<HashMap<String, BackupTask>>,
    /// Per cluster (by UID): `status.backup` as this operator last made it, which a pass
    /// reading an older copy of the object must not undo (a `backup-now` value would run
    /// twice).
    backup_status: Mutex<HashMap<String, crate::crd::BackupStatus>>,
}

/// A backup running in the background: reconciles go on meanwhile and collect its outcome
/// when it is done.
type BackupTask =
    tokio::task::JoinHandle<Result<Option<crate::backup::Outcome>, crate::backup::Error>>;

impl Context {
    /// A context reporting Events as `etcd-operator` (instance `instance`).
    pub fn new(
        client: Client,
        etcd: Arc<dyn EtcdAdmin>,
        metrics: Metrics,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "etcd-operator".to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            etcd,
            metrics,
            failures: Mutex::default(),
            cert_waits: Mutex::default(),
            backup_tasks: Mutex::default(),
            backup_status: Mutex::default(),
        }
    }

    fn backup_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, BackupTask>> {
        self.backup_tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn backup_status(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, crate::crd::BackupStatus>> {
        self.backup_status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cluster's UID (its `namespace/name` when it has none).
fn uid_key(cluster: &EtcdCluster) -> String {
    cluster.uid().unwrap_or_else(|| key(cluster))
}

fn key(cluster: &EtcdCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

/// Reconciles one cluster.
#[instrument(skip_all, fields(cluster = %cluster.name_any(), namespace = cluster.namespace().unwrap_or_default()))]
pub async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let _timer = ctx.metrics.duration.start_timer();
    let names =
        ClusterNames::of(&cluster).ok_or(Error::Malformed(validate::Error::MissingNamespace))?;
    // Restores follow status.restore: read the object as the API holds it now, not the watch
    // cache's copy, which may predate this operator's own last status write.
    let cluster = if crate::backup::in_place::involved(&cluster) {
        match apply::get_cluster(&ctx.client, &names.namespace, &names.cluster).await? {
            Some(fresh) => Arc::new(fresh),
            None => return Ok(Action::await_change()),
        }
    } else {
        cluster
    };

    // With TLS on, the operator talks to members with the cluster's own client certificate;
    // also with `spec.tls` turned off, while members may still serve TLS only.
    use crate::crd::TlsProvider;
    let provider = cluster.spec.tls.as_ref().map(|t| t.provider);
    // Also with `spec.tls` removed from a cluster that had it (its status still shows
    // certificates): its members may still serve TLS only.
    let had_tls = cluster.status.as_ref().is_some_and(|s| s.tls.is_some());
    let authority = if provider == Some(TlsProvider::Auto) || provider.is_none() && had_tls {
        crate::certs::kube::read_authority(&ctx.client, &names)
            .await
            .map_err(Error::Certs)?
    } else {
        None
    };
    // Auto: the operator's own certificate from its authority; cert-manager's or yours: the
    // client Secret (absent until issued: members are then unreachable, as they would be).
    let client_tls = match provider {
        Some(TlsProvider::Auto) | None => authority.as_ref().and_then(crate::certs::client_tls),
        Some(_) => match crate::certs::provider::client_secret(&names, cluster.spec.tls.as_ref()) {
            Some(secret) => {
                crate::certs::kube::read_client_tls(&ctx.client, &names.namespace, &secret)
                    .await
                    .map_err(Error::Certs)?
            }
            None => None,
        },
    };
    let etcd: Arc<dyn EtcdAdmin> = match client_tls {
        Some(tls) => ctx.etcd.clone().with_tls(tls),
        None => ctx.etcd.clone(),
    };
    let mut observed = observe::observe(&ctx.client, etcd.as_ref(), &names).await?;
    observed.quorum_lost_for = status::quorum_lost_for(cluster.status.as_ref(), Timestamp::now());
    // An in-place restore asked for (the annotations): its backup is chosen and checked, and
    // the request recorded, before planning, so that this very pass plans it.
    let now = crate::certs::issue::unix(std::time::SystemTime::now());
    let restore_request =
        match crate::backup::kube::bootstrap_request(&ctx.client, &cluster, &observed, now).await {
            Some(r) => Some(r),
            None => {
                crate::backup::kube::restore_request(&ctx.client, &cluster, &observed, now).await
            }
        };
    // A restore chosen (or refused) is recorded before anything acts on it: the pods'
    // restore follows status.restore, and a later pass must find it even if this one fails.
    if let Some((restore, _)) = &restore_request
        && restore.phase != crate::crd::RestorePhase::WaitingForConfirmation
    {
        status::patch_restore(&ctx.client, &cluster, restore).await?;
    }
    // A confirmation is used once (then, or on any later pass that finds it still there):
    // neither a retry nor the next request runs without a new one.
    let current = restore_request
        .as_ref()
        .map(|(r, _)| r)
        .or_else(|| cluster.status.as_ref().and_then(|s| s.restore.as_ref()));
    if crate::backup::in_place::confirmation_used(&cluster, current) {
        apply::remove_annotation(
            &ctx.client,
            &names.namespace,
            &names.cluster,
            crate::backup::in_place::CONFIRM_ANNOTATION,
        )
        .await?;
    }
    let cluster = match &restore_request {
        Some((restore, _)) => {
            let mut c = (*cluster).clone();
            c.status.get_or_insert_default().restore = Some(restore.clone());
            Arc::new(c)
        }
        None => cluster,
    };
    let validated = match validate::validate(&cluster) {
        Ok(v) => Ok(v),
        Err(validate::Error::InvalidSpec(problems)) => Err(problems),
        Err(e) => return Err(Error::Malformed(e)),
    };
    let plan = plan::plan(validated.as_ref().map_err(Vec::as_slice), &observed);
    info!(step = ?plan.step, "planned");
    // A recovery approval is used once: removed as the recovery starts, so that a later loss
    // of quorum needs a new one.
    if matches!(plan.step, Step::ForceNewCluster { .. })
        && cluster
            .annotations()
            .contains_key(crate::recovery::APPROVE_ANNOTATION)
    {
        apply::remove_annotation(
            &ctx.client,
            &names.namespace,
            &names.cluster,
            crate::recovery::APPROVE_ANNOTATION,
        )
        .await?;
    }

    // Spec problems and warnings are announced once per generation.
    let new_generation =
        cluster.status.as_ref().and_then(|s| s.observed_generation) != cluster.metadata.generation;
    if new_generation {
        match &validated {
            Err(problems) => {
                publish(
                    &ctx,
                    &cluster,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    problems.join("; "),
                )
                .await
            }
            Ok(v) => {
                for w in &v.warnings {
                    publish(
                        &ctx,
                        &cluster,
                        EventType::Warning,
                        w.reason(),
                        "Validate",
                        w.message(),
                    )
                    .await;
                }
            }
        }
    }

    let Ok(validated) = validated else {
        let status = status::compute(&cluster, &names, &observed, &plan, Timestamp::now());
        status::patch(&ctx.client, &cluster, &status).await?;
        ctx.failures().remove(&key(&cluster));
        return Ok(Action::await_change());
    };

    // Membership calls go to the members that exist now.
    let existing = observed.statefulset.as_ref().map_or(0, |s| s.replicas);
    // Built as planned: a cluster moving between plain and TLS serves both.
    let validated = validated.tls_moving(plan.tls_moving);
    let tls = crate::certs::provider::effective(&validated.names, validated.spec.tls.as_ref());
    let provider = tls.as_ref().map(|t| t.provider);
    // Certificates before members: a new cluster's pods mount them.
    let tls_status = if provider == Some(TlsProvider::Auto) {
        certificates(
            &ctx,
            &cluster,
            &validated,
            etcd.as_ref(),
            authority,
            existing,
        )
        .await?
    } else {
        if let Some(tls) = tls
            .as_ref()
            .filter(|t| t.provider == TlsProvider::CertManager)
            && let Some(issuer) = tls.cert_manager.as_ref()
        {
            let certificates = build::certmanager::build(&validated, tls, issuer);
            apply::apply_certificates(&ctx.client, &names.namespace, &certificates).await?;
        }
        match tls.as_ref() {
            Some(tls) => {
                Some(external_certificates(&ctx, &validated, tls, etcd.as_ref(), existing).await?)
            }
            None => None,
        }
    };
    let mut members = StatefulSetRuntime {
        client: ctx.client.clone(),
        pdb_exists: observed.pdb_exists,
    };
    execute(
        &ctx,
        etcd.as_ref(),
        &cluster,
        &validated,
        &mut members,
        existing,
        &plan,
    )
    .await?;
    let mut status = status::compute(&cluster, &names, &observed, &plan, Timestamp::now());
    if let Some((reason, message)) = status::quorum_lost_event(cluster.status.as_ref(), &status) {
        publish(
            &ctx,
            &cluster,
            EventType::Warning,
            reason,
            "Recover",
            message,
        )
        .await;
    }
    if let Some((reason, message)) = status::set_tls(
        &mut status,
        cluster.status.as_ref(),
        tls_status,
        cluster.metadata.generation,
        Timestamp::now(),
    ) {
        publish(
            &ctx,
            &cluster,
            EventType::Warning,
            reason,
            "Certificates",
            message,
        )
        .await;
    }
    // The restore under way moves on (its members restarted, or the restored cluster up).
    let mut restore_events = restore_request.map(|(_, e)| e).unwrap_or_default();
    if let Some(restore) = status.restore.as_mut()
        && let Some(change) = crate::backup::in_place::advance(
            restore,
            &plan.step,
            &observed,
            existing,
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::now(),
            )),
        )
    {
        restore_events.push(change);
    }
    publish_changes(&ctx, &cluster, &restore_events).await;
    let mut requeue = plan.requeue_after;
    // No backup while a restore is under way: it would back up a cluster coming back, and
    // its retention could delete the backup the members are restoring.
    let restoring = status
        .restore
        .as_ref()
        .is_some_and(|r| r.phase == crate::crd::RestorePhase::Restoring);
    if validated.spec.backup.is_some() && !restoring {
        match backups(&ctx, &cluster, &validated, etcd.clone(), &observed).await {
            Ok(Some(o)) => {
                if let Some(attempt) = &o.attempt {
                    ctx.metrics
                        .record_backup(&names.namespace, &names.cluster, attempt);
                }
                let (changes, next_in) = (o.changes.clone(), o.next_in);
                ctx.backup_status()
                    .insert(uid_key(&cluster), o.status.clone());
                status::set_backup(
                    &mut status,
                    cluster.status.as_ref(),
                    o,
                    cluster.metadata.generation,
                    Timestamp::now(),
                );
                publish_changes(&ctx, &cluster, &changes).await;
                requeue = requeue.min(Duration::from_secs(next_in.max(1) as u64));
            }
            // Running in the background: look again soon to collect it.
            Ok(None) => requeue = requeue.min(Duration::from_secs(10)),
            Err(e) => {
                warn!(error = %e, "backup");
                publish(
                    &ctx,
                    &cluster,
                    EventType::Warning,
                    "BackupFailed",
                    "Backup",
                    e.to_string(),
                )
                .await;
            }
        }
    }
    status::patch(&ctx.client, &cluster, &status).await?;
    ctx.failures().remove(&key(&cluster));
    Ok(Action::requeue(requeue))
}

/// One backup pass (`spec.backup`): credentials from `credentialsSecretRef` (or the default
/// AWS chain), then [`crate::backup::pass`]. A backup that is due runs in the background (a
/// large one takes minutes, and membership steps must not wait for it): this returns `None`
/// while it runs, and its outcome on the first pass after it finished.
async fn backups(
    ctx: &Context,
    cluster: &EtcdCluster,
    validated: &ValidatedCluster,
    etcd: Arc<dyn EtcdAdmin>,
    observed: &observe::Observed,
) -> Result<Option<crate::backup::Outcome>, crate::backup::Error> {
    use crate::backup::{Inputs, Store};
    let Some(spec) = validated.spec.backup.as_ref() else {
        return Ok(None);
    };
    // By UID: a cluster deleted and made again under its name never gets the old one's.
    let task_key = uid_key(cluster);
    let finished = {
        let mut tasks = ctx.backup_tasks();
        match tasks.get(&task_key) {
            Some(task) if task.is_finished() => tasks.remove(&task_key),
            Some(_) => return Ok(None),
            None => None,
        }
    };
    if let Some(task) = finished {
        return task
            .await
            .unwrap_or_else(|e| Err(crate::backup::Error::Task(e.to_string())));
    }
    let names = &validated.names;
    let credentials =
        crate::backup::kube::s3_credentials(&ctx.client, &names.namespace, &spec.s3).await?;
    let store = Store::new(&spec.s3, &names.namespace, &names.cluster, credentials).await;
    let previous = ctx
        .backup_status()
        .get(&task_key)
        .cloned()
        .or_else(|| cluster.status.as_ref().and_then(|s| s.backup.clone()));
    let now = crate::certs::issue::unix(std::time::SystemTime::now());
    let sources = crate::backup::sources(observed, names);
    let members = crate::backup::member_count(observed);
    // The image ships etcd-server next to the operator.
    let server_bin = crate::local::default_server_bin();
    let due = crate::backup::due(cluster, previous.as_ref(), now)?;
    let (cluster, names) = (cluster.clone(), names.clone());
    let run = async move {
        crate::backup::pass(Inputs {
            etcd: etcd.as_ref(),
            cluster: &cluster,
            names: &names,
            sources,
            members,
            store: &store,
            previous: previous.as_ref(),
            server_bin: Some(&server_bin),
            now,
        })
        .await
    };
    // Not due, the pass only reads the schedule: at once.
    if !due {
        return run.await;
    }
    let span = tracing::info_span!("backup", cluster = %task_key);
    let task = tokio::spawn(tracing::Instrument::instrument(run, span));
    ctx.backup_tasks().insert(task_key, task);
    Ok(None)
}

/// What the status shows of certificates the operator does not issue (`CertManager`,
/// `Secrets`): what their Secrets hold, and whether every member has loaded it.
async fn external_certificates(
    ctx: &Context,
    validated: &ValidatedCluster,
    tls: &crate::crd::TlsSpec,
    etcd: &dyn EtcdAdmin,
    existing: i32,
) -> Result<(crate::crd::TlsStatus, crate::certs::status::Readiness), Error> {
    use crate::certs::provider::{Mount, client_secret, mount};
    let names = &validated.names;
    let mut wanted: Vec<(&'static str, String)> = Vec::new();
    if let Some(Mount::Mapped { server, peer }) = mount(names, Some(tls)) {
        wanted.extend([("server", server), ("peer", peer)]);
    }
    if let Some(client) = client_secret(names, Some(tls)) {
        wanted.push(("client", client));
    }
    let mut secrets = Vec::new();
    for (role, name) in wanted {
        secrets.push(
            crate::certs::kube::read_external(&ctx.client, &names.namespace, role, &name)
                .await
                .map_err(Error::Certs)?,
        );
    }
    let mut members = Vec::new();
    for i in 0..existing {
        let loaded = etcd
            .metrics(&names.metrics_url(i))
            .await
            .ok()
            .map(|text| crate::certs::loaded_from_metrics(&text));
        members.push((names.member(i), loaded));
    }
    let renew_before = crate::certs::Settings::of(tls)
        .map(|s| s.policy.renew_before)
        .map_err(|e| Error::Certs(e.to_string()))?;
    Ok(crate::certs::status::external_status(
        &secrets,
        &members,
        crate::certs::issue::unix(std::time::SystemTime::now()),
        renew_before,
    ))
}

/// One pass of the certificate lifecycle: the next step, the Secrets applied (every pass, so
/// a deleted one comes back), the step announced. Returns what the status shows.
async fn certificates(
    ctx: &Context,
    cluster: &EtcdCluster,
    validated: &ValidatedCluster,
    etcd: &dyn EtcdAdmin,
    authority: Option<crate::certs::Authority>,
    existing: i32,
) -> Result<Option<(crate::crd::TlsStatus, crate::certs::status::Readiness)>, Error> {
    let k = key(cluster);
    let mut waiting = ctx
        .cert_waits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&k)
        .copied();
    let outcome = crate::certs::pass(
        etcd,
        cluster,
        &validated.names,
        existing,
        authority.unwrap_or_default(),
        &mut waiting,
    )
    .await
    .map_err(|e| Error::Certs(e.to_string()))?;
    {
        let mut waits = ctx.cert_waits.lock().unwrap_or_else(|e| e.into_inner());
        match waiting {
            Some(t) => waits.insert(k, t),
            None => waits.remove(&k),
        };
    }
    let Some(o) = outcome else {
        return Ok(None);
    };
    let secrets = build::secret::build(validated, &o.authority);
    apply::apply_secrets(&ctx.client, &validated.names.namespace, &secrets).await?;
    if let Some(message) = &o.message {
        info!(%message, "certificates");
    }
    if let Some(change) = &o.change {
        publish(
            ctx,
            cluster,
            EventType::Normal,
            change.reason(),
            change.action(),
            change.message(),
        )
        .await;
    }
    Ok(Some(o.status))
}

/// Carries out the plan's etcd side (the membership change shared with the local runtime)
/// and announces it.
async fn execute(
    ctx: &Context,
    etcd: &dyn EtcdAdmin,
    cluster: &EtcdCluster,
    validated: &ValidatedCluster,
    members: &mut StatefulSetRuntime,
    current: i32,
    plan: &Plan,
) -> Result<(), Error> {
    if plan.step == Step::Bootstrap {
        let replicas = plan.desired.as_ref().map(|d| d.replicas).unwrap_or(0);
        let note = format!("bootstrapping a new cluster of {replicas} members");
        publish(
            ctx,
            cluster,
            EventType::Normal,
            "Bootstrapping",
            "Create",
            note,
        )
        .await;
    }
    if let Some(change) = runtime::execute(etcd, members, validated, current, plan).await? {
        info!(change = ?change, "membership changed");
        publish(
            ctx,
            cluster,
            EventType::Normal,
            change.reason(),
            change.action(),
            change.message(),
        )
        .await;
    }
    Ok(())
}

/// Publishes an Event. Events are best effort: failing to record one never fails a
/// reconciliation.
/// Backup and restore changes as Events: failures as warnings.
async fn publish_changes(ctx: &Context, cluster: &EtcdCluster, changes: &[runtime::Change]) {
    for change in changes {
        let warning = matches!(
            change.reason(),
            "BackupFailed"
                | "BackupVerificationFailed"
                | "RetentionFailed"
                | "RestoreFailed"
                | "RestoreNotConfirmed"
        );
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            cluster,
            type_,
            change.reason(),
            change.action(),
            change.message(),
        )
        .await;
    }
}

async fn publish(
    ctx: &Context,
    cluster: &EtcdCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        warn!(%error, reason, "failed to publish an event");
    }
}

/// Backs off per cluster: 5 s after the first failure, doubling up to 5 minutes.
pub fn error_policy(cluster: Arc<EtcdCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    let failures = {
        let mut map = ctx.failures();
        let n = map.entry(key(&cluster)).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(failures);
    warn!(cluster = %cluster.name_any(), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller until `shutdown` completes (or a signal arrives).
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    Controller::new(
        Api::<EtcdCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned())
    .owns(Api::<Service>::all(client.clone()), owned())
    .owns(Api::<ConfigMap>::all(client.clone()), owned())
    .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned())
    .owns(Api::<Secret>::all(client), owned())
    .graceful_shutdown_on(shutdown)
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "controller error");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(1000), Duration::from_secs(300));
    }
}
