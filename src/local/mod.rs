//! The local runtime (`etcd-operator local`): the same planner and membership steps as the
//! Kubernetes controller, with members run as local `etcd-server` processes instead of a
//! StatefulSet's pods.
//!
//! Member `i` gets its own loopback address (`--base-ip` + `i`) on the standard ports, so the
//! peer URLs look like a real cluster's. Everything lives in the state directory, so a
//! restarted `etcd-operator local` adopts the members it finds there:
//!
//! - `cluster.json`: the cluster's identity (the token's UID), the number of members and the
//!   hash of the spec they were configured from (what a StatefulSet's annotations hold);
//! - `<member>/etcd.yaml`: the member's configuration file (as in the ConfigMap, with local
//!   addresses and data directory);
//! - `<member>/data`: its data directory; `<member>/etcd.log` and `<member>/etcd.pid`.
//!
//! Roles, as in Kubernetes: the reconcile loop observes, plans and executes exactly as the
//! controller does; [`LocalMembers::supervise`] plays the kubelet, restarting a member whose
//! process exited (with a doubling backoff, as CrashLoopBackOff does).

mod backup;
mod file;
mod members;
mod tls;

pub use backup::{backup_now, list_backups, upload_raw};
pub use members::LocalMembers;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::build::{configmap, spec_hash};
use crate::crd::{EtcdCluster, EtcdClusterStatus};
use crate::etcd::{self, EtcdAdmin, EtcdClient};
use crate::names::{Addressing, ClusterNames, LocalAddressing};
use crate::observe::{self, EtcdState, Observed, PodState, StatefulSetState};
use crate::plan::{self, Desired, MemberBootstrap, Plan, Step};
use crate::runtime::{self, Change, MemberRuntime};
use crate::status;
use crate::validate::{self, ValidatedCluster};

/// Why the local runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("failed to {what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cluster file is not an EtcdCluster.
    #[error("failed to parse {path} as an EtcdCluster: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// The cluster file has fields an EtcdCluster does not.
    #[error("failed to load {path}: unknown field(s) {fields} (not in the EtcdCluster schema)")]
    UnknownFields {
        /// The file.
        path: PathBuf,
        /// The fields' paths, comma-separated.
        fields: String,
    },
    /// `cluster.json` is unreadable.
    #[error("failed to read the state in {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The cluster lacks what validation needs.
    #[error(transparent)]
    Malformed(validate::Error),
    /// A new cluster could not start from its backup.
    #[error(transparent)]
    Backup(crate::backup::Error),
    /// A member's configuration file could not be rendered.
    #[error("failed to render the configuration of {member}: {source}")]
    Render {
        /// Member name.
        member: String,
        /// The cause.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// `etcd-server` could not be started.
    #[error("failed to start {binary} for {member}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Member name.
        member: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A membership change failed.
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// Certificates could not be issued.
    #[error(transparent)]
    Certs(crate::certs::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

/// How the local runtime runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The EtcdCluster YAML file; re-read when its modification time changes.
    pub spec_file: PathBuf,
    /// Where members' configuration and data live.
    pub state_dir: PathBuf,
    /// Members' addresses and ports.
    pub addressing: LocalAddressing,
    /// The `etcd-server` binary.
    pub server_bin: PathBuf,
    /// How often the loop observes and plans (and checks the file).
    pub poll_interval: Duration,
    /// First delay before restarting a member whose process exited; doubles up to a minute.
    pub restart_backoff: Duration,
    /// How long a member gets to stop after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// S3 credentials for `spec.backup` (from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN`); `None` leaves them to the default AWS chain.
    pub s3_credentials: Option<crate::backup::StaticCredentials>,
}

impl Options {
    /// Defaults: `127.0.0.10`, ports 2379/2380, state in `./<file stem>.local`, `etcd-server`
    /// next to this binary (or on `PATH`).
    pub fn new(spec_file: PathBuf) -> Self {
        let stem = spec_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cluster".to_owned());
        Self {
            state_dir: PathBuf::from(format!("{stem}.local")),
            spec_file,
            addressing: LocalAddressing {
                base_ip: std::net::Ipv4Addr::new(127, 0, 0, 10),
                client_port: 2379,
                peer_port: 2380,
            },
            server_bin: default_server_bin(),
            poll_interval: Duration::from_secs(1),
            restart_backoff: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(10),
            s3_credentials: crate::backup::StaticCredentials::from_env(),
        }
    }
}

/// `etcd-server` beside the running binary, else from `PATH`.
pub fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("etcd-server")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("etcd-server"))
}

/// What the loop last saw and decided; published after every pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The step the planner chose.
    pub step: Step,
    /// Members that exist (the StatefulSet's replicas, locally).
    pub replicas: i32,
    /// The status the controller would write.
    pub status: EtcdClusterStatus,
    /// The last error, if the pass failed.
    pub error: Option<String>,
    /// Every change made since the runtime started (the Events a controller would record),
    /// oldest first; the last 500.
    pub changes: Vec<Change>,
}

fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A one-line-per-member rendering of a status, for the terminal.
pub fn describe(step: &Step, status: &EtcdClusterStatus) -> String {
    let mut out = String::new();
    let progressing = status::find(status, status::PROGRESSING);
    let step_text = progressing
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| format!("{step:?}"));
    out.push_str(&format!("step: {step_text}\n"));
    if let Some(c) = status::find(status, status::DEGRADED).filter(|c| c.status == "True") {
        out.push_str(&format!("degraded: {}: {}\n", c.reason, c.message));
    }
    let mut members: Vec<_> = status.members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    for m in members {
        out.push_str(&format!(
            "  {:<16} {} {:<8} {:<9} {}\n",
            m.name,
            m.id,
            if m.is_learner { "learner" } else { "voter" },
            if m.healthy { "healthy" } else { "unhealthy" },
            if m.is_leader { "leader" } else { "" },
        ));
    }
    out
}

/// Runs the cluster described by `options.spec_file` until `shutdown` completes, then stops
/// every member. Publishes a [`Report`] after every pass.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()>,
    report: watch::Sender<Option<Report>>,
) -> Result<(), Error> {
    let mut certs = tls::LocalCerts::new(&options.state_dir);
    let etcd = EtcdClient {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        tls: Some(etcd::ClientTls::Dir(certs.dir().to_owned())),
    };
    let mut last_certs: Option<String> = None;
    let mut tls_hint = false;
    let mut tls_moving = false;
    let mut backups =
        backup::LocalBackups::new(options.s3_credentials.clone(), options.server_bin.clone());
    let mut generation = 1;
    let mut seen = modified(&options.spec_file);
    let first = file::load_spec(&options.spec_file, "pending", generation)?;
    let cluster_name = first.metadata.name.clone().unwrap_or_default();
    let mut members = LocalMembers::new(options.clone(), cluster_name.clone())?;
    let uid = members.uid();
    let mut cluster = file::load_spec(&options.spec_file, &uid, generation)?;
    let mut last_printed = String::new();
    let mut last_status: Option<EtcdClusterStatus> = None;
    let mut last_error: Option<String> = None;
    let mut changes: Vec<Change> = Vec::new();
    let mut approval_used: Option<String> = None;
    tokio::pin!(shutdown);

    loop {
        // The file: reload when it changes; a broken edit keeps the last good spec.
        let now_seen = modified(&options.spec_file);
        if now_seen != seen {
            seen = now_seen;
            match file::load_spec(&options.spec_file, &uid, generation + 1) {
                Ok(c) if c.metadata.name.as_deref() == Some(cluster_name.as_str()) => {
                    generation += 1;
                    cluster = c;
                    println!("{} changed: reconciling", options.spec_file.display());
                }
                Ok(_) => println!(
                    "{}: renaming the cluster is not supported; keeping {cluster_name}",
                    options.spec_file.display()
                ),
                Err(error) => println!("{error}; keeping the last good spec"),
            }
        }
        cluster.status = last_status.clone();
        // A recovery approval is used once: the runtime cannot edit the user's file, so it
        // ignores the value it acted on until the annotation goes away.
        let approval = cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::recovery::APPROVE_ANNOTATION))
            .cloned();
        match (&approval, &approval_used) {
            (None, _) => approval_used = None,
            (Some(value), Some(used)) if value == used => {
                if let Some(a) = cluster.metadata.annotations.as_mut() {
                    a.remove(crate::recovery::APPROVE_ANNOTATION);
                }
            }
            _ => {}
        }

        members.supervise().await;
        // An in-place restore, when asked and confirmed, before anything else this pass.
        if let Some((restore, made)) = backup::restore_pass(&etcd, &mut members, &cluster).await {
            for change in &made {
                println!("{}", change.message());
            }
            changes.extend(made);
            let mut status = last_status.clone().unwrap_or_default();
            status.restore = Some(restore);
            last_status = Some(status);
            cluster.status = last_status.clone();
        }
        // Certificates first: a new cluster's members start with them (and a cluster moving
        // between plain and TLS, as last planned, needs them either way).
        let mut tls_status = None;
        if let Some(mut names) = ClusterNames::of(&cluster) {
            names.addressing = Addressing::Local(members.options.addressing);
            names.tls_moving = tls_moving;
            let replicas = members.observe_members().0.map_or(0, |s| s.replicas);
            match certs.pass(&etcd, &cluster, &names, replicas).await {
                Ok(pass) => {
                    tls_status = pass.status;
                    if let Some(change) = pass.change {
                        changes.push(change);
                        if changes.len() > 500 {
                            changes.remove(0);
                        }
                    }
                    if let Some(message) = pass.message
                        && last_certs.as_ref() != Some(&message)
                    {
                        info!(%message, "certificates");
                        println!("{message}");
                        last_certs = Some(message);
                    }
                }
                Err(e) => {
                    let message = format!("certificates: {e}");
                    if last_certs.as_ref() != Some(&message) {
                        warn!(%message);
                        println!("{message}");
                        last_certs = Some(message);
                    }
                }
            }
        }
        if tls_status.is_some() && !tls_hint {
            tls_hint = true;
            let d = std::path::absolute(certs.dir()).unwrap_or_else(|_| certs.dir().to_owned());
            let endpoint = ClusterNames::of(&cluster).map(|mut n| {
                n.addressing = Addressing::Local(members.options.addressing);
                n.client_url(0)
            });
            println!(
                "TLS is on; the CA bundle and a client certificate are in {}:\n  etcdctl --endpoints={} --cacert={} --cert={} --key={} endpoint health",
                d.display(),
                endpoint.unwrap_or_default(),
                d.join("ca.crt").display(),
                d.join("client.crt").display(),
                d.join("client.key").display(),
            );
        }
        let pass = reconcile(&etcd, &mut members, &cluster).await;
        if pass
            .plan
            .as_ref()
            .is_some_and(|p| matches!(p.step, Step::ForceNewCluster { .. }))
        {
            approval_used = approval.clone();
        }
        tls_moving = pass.plan.as_ref().is_some_and(|p| p.tls_moving);
        let error = pass.error.as_ref().map(ToString::to_string);
        if let Some(change) = &pass.change {
            changes.push(change.clone());
            if changes.len() > 500 {
                changes.remove(0);
            }
        }
        if let (Some(plan), Some(names)) = (&pass.plan, &pass.names) {
            let mut status =
                status::compute(&cluster, names, &pass.observed, plan, Timestamp::now());
            if let Some((reason, message)) =
                status::quorum_lost_event(last_status.as_ref(), &status)
            {
                warn!(reason, "{message}");
                println!("{reason}: {message}");
            }
            if let Some((reason, message)) = status::set_tls(
                &mut status,
                last_status.as_ref(),
                tls_status,
                cluster.metadata.generation,
                Timestamp::now(),
            ) {
                warn!(reason, "{message}");
                changes.push(crate::runtime::Change::Certificates { reason, message });
            }
            let previous = last_status.as_ref().and_then(|s| s.backup.as_ref());
            if let Some(outcome) = backups
                .pass(&etcd, &cluster, names, &pass.observed, previous)
                .await
            {
                changes.extend(outcome.changes.iter().cloned());
                if changes.len() > 500 {
                    let extra = changes.len() - 500;
                    changes.drain(..extra);
                }
                status::set_backup(
                    &mut status,
                    last_status.as_ref(),
                    outcome,
                    cluster.metadata.generation,
                    Timestamp::now(),
                );
            }
            let text = describe(&plan.step, &status);
            if text != last_printed {
                print!("{text}");
                last_printed = text;
            }
            if let Step::ScaleInRefused { name, reason } = &plan.step {
                warn!(member = %name, %reason, "refusing to scale in");
            }
            report.send_replace(Some(Report {
                step: plan.step.clone(),
                replicas: pass.observed.statefulset.as_ref().map_or(0, |s| s.replicas),
                status: status.clone(),
                error: error.clone(),
                changes: changes.clone(),
            }));
            last_status = Some(status);
        }
        // Errors repeat while a step is retried (a learner catching up): print changes only.
        if let Some(error) = &error
            && last_error.as_ref() != Some(error)
        {
            warn!(%error, "reconcile failed");
            println!("error: {error}");
        }
        last_error = error;

        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(options.poll_interval) => {}
        }
    }
    println!("stopping members");
    members.shutdown().await;
    Ok(())
}

/// What one pass saw, decided and ran into.
struct Pass {
    observed: Observed,
    /// The cluster's names with local addressing; `None` when the object is malformed.
    names: Option<ClusterNames>,
    plan: Option<Plan>,
    change: Option<Change>,
    error: Option<Error>,
}

/// One pass: observe, validate, plan, execute — the controller's pipeline, with the local
/// members in place of the StatefulSet.
async fn reconcile(etcd: &EtcdClient, members: &mut LocalMembers, cluster: &EtcdCluster) -> Pass {
    let mut pass = Pass {
        observed: Observed::default(),
        names: None,
        plan: None,
        change: None,
        error: None,
    };
    let addressing = Addressing::Local(members.options.addressing);
    let validated = match validate::validate(cluster) {
        // Locally the operator is the CA: there are no Secrets to take certificates from.
        Ok(v)
            if crate::certs::provider::enabled(v.spec.tls.as_ref())
                .is_some_and(|t| t.provider != crate::crd::TlsProvider::Auto) =>
        {
            Err(vec![
                "spec.tls.provider: the local runtime supports Auto only".to_owned(),
            ])
        }
        Ok(mut v) => {
            v.names.addressing = addressing;
            // Locally a new cluster's members are restored as their files are written.
            v.backup_to_choose = false;
            Ok(v)
        }
        Err(validate::Error::InvalidSpec(problems)) => Err(problems),
        Err(e) => {
            pass.error = Some(Error::Malformed(e));
            return pass;
        }
    };
    let Some(mut names) = ClusterNames::of(cluster) else {
        pass.error = Some(Error::Malformed(validate::Error::MissingNamespace));
        return pass;
    };
    names.addressing = addressing;

    let (statefulset, member_configs, pods) = members.observe_members();
    let etcd_state = match &statefulset {
        None => EtcdState::NotChecked,
        Some(sts) => {
            let first = observe::forced_ordinal(&names, &member_configs);
            observe::observe_etcd(etcd, &names, sts.replicas, first).await
        }
    };
    let mut observed = Observed {
        statefulset,
        member_configs,
        pdb_exists: false,
        etcd: etcd_state,
        pods,
        quorum_lost_for: status::quorum_lost_for(cluster.status.as_ref(), Timestamp::now()),
    };
    if let (Some(sts), EtcdState::Reachable(view)) = (&mut observed.statefulset, &observed.etcd) {
        sts.ready_replicas = view.members.iter().filter(|m| m.healthy()).count() as i32;
    }

    let plan = plan::plan(validated.as_ref().map_err(Vec::as_slice), &observed);
    if let Ok(v) = &validated {
        let current = observed.statefulset.as_ref().map_or(0, |s| s.replicas);
        // Built as planned: a cluster moving between plain and TLS serves both.
        let v = &v.tls_moving(plan.tls_moving);
        match runtime::execute(etcd as &dyn EtcdAdmin, members, v, current, &plan).await {
            Ok(Some(change)) => {
                info!(change = ?change, "membership changed");
                println!("{}", change.message());
                pass.change = Some(change);
            }
            Ok(None) => {}
            Err(e) => pass.error = Some(e),
        }
    }
    pass.observed = observed;
    pass.names = Some(names);
    pass.plan = Some(plan);
    pass
}
