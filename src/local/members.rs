//! The members as local processes: starting, adopting, supervising (restarts with backoff, data-loss detection), stopping and wiping them; the `MemberRuntime` of `etcd-operator local`.

use super::*;

/// `cluster.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct State {
    /// Stands in for the object's UID: it makes the `initial-cluster-token` unique.
    pub(super) uid: String,
    /// Members that exist.
    pub(super) replicas: i32,
    /// Hash of the spec members were configured from.
    pub(super) spec_hash: String,
    /// The schemes members were configured to serve (absent in older state files).
    #[serde(default)]
    pub(super) tls_built: Option<crate::model::TlsBuilt>,
    /// The last in-place restore request carried out, until its annotation goes away (the
    /// user's file cannot be edited to use up the confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) restored: Option<String>,
}

/// A running member process.
pub(super) struct Running {
    /// The process, when this runtime started it; `None` for one adopted from an earlier run
    /// of the runtime (it keeps running when the runtime dies, as pods outlive an operator).
    pub(super) child: Option<Child>,
    pub(super) pid: u32,
    /// The configuration file it started with.
    pub(super) config: String,
    pub(super) started: Instant,
    /// Where this run's output starts in the member's log file (which keeps every run's):
    /// only this run's lines say why it exited, as a pod's termination message does.
    pub(super) log_from: u64,
}

impl Running {
    /// Whether the process has exited, and how, if known.
    pub(super) fn exited(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                _ => None,
            },
            None => (!alive(self.pid)).then(|| "exited".to_owned()),
        }
    }

    pub(super) fn signal(&self, signal: rustix::process::Signal) -> Result<(), rustix::io::Errno> {
        match rustix::process::Pid::from_raw(self.pid as i32) {
            Some(pid) => rustix::process::kill_process(pid, signal),
            None => Ok(()),
        }
    }

    /// Waits until the process is gone.
    pub(super) async fn wait(&mut self) {
        match &mut self.child {
            Some(child) => {
                let _ = child.wait().await;
            }
            None => {
                while alive(self.pid) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Whether process `pid` exists.
pub(super) fn alive(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// The last part of a member's log.
pub(super) fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
    let start = text.len().saturating_sub(16 * 1024).max(from);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// Members as local `etcd-server` processes.
pub struct LocalMembers {
    pub(super) options: Options,
    running: BTreeMap<i32, Running>,
    /// Members waiting to be (re)started: when, and the backoff used.
    pending: BTreeMap<i32, (Instant, Duration)>,
    state: Option<State>,
    /// The cluster's identity: from `cluster.json`, or made once for a new cluster.
    uid: String,
    /// Members whose last exit said their data is lost (what a pod's termination message
    /// says in Kubernetes), with that line.
    lost: BTreeMap<i32, String>,
    cluster_name: String,
}

impl LocalMembers {
    pub(super) fn new(options: Options, cluster_name: String) -> Result<Self, Error> {
        std::fs::create_dir_all(&options.state_dir).map_err(io("create", &options.state_dir))?;
        let path = options.state_dir.join("cluster.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|source| Error::State {
                    path: path.clone(),
                    source,
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("read", &path)(e)),
        };
        let uid = match &state {
            Some(State { uid, .. }) => uid.clone(),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                format!("local-{nanos:x}-{:x}", std::process::id())
            }
        };
        let mut members = Self {
            options,
            running: BTreeMap::new(),
            pending: BTreeMap::new(),
            state,
            uid,
            lost: BTreeMap::new(),
            cluster_name,
        };
        // Adopt what is on disk: a member process still running from an earlier run is
        // adopted as it is; every other member starts now, as pods would.
        if let Some(replicas) = members.state.as_ref().map(|s| s.replicas) {
            info!(replicas, "adopting existing members");
            for i in 0..replicas {
                match members.adopt(i) {
                    Some(running) => {
                        println!("adopted {} (pid {})", members.member_name(i), running.pid);
                        members.running.insert(i, running);
                    }
                    None => {
                        members.pending.insert(i, (Instant::now(), Duration::ZERO));
                    }
                }
            }
        }
        Ok(members)
    }

    /// Member `i`'s process from an earlier run, if it still runs: the PID in `etcd.pid`
    /// names a live process started with this member's configuration file.
    pub(super) fn adopt(&self, i: i32) -> Option<Running> {
        let dir = self.member_dir(i);
        let pid: u32 = std::fs::read_to_string(dir.join("etcd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config_path = self.config_path(i);
        let wanted = format!("--config-file={}", config_path.display());
        let ours = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == wanted.as_bytes());
        if !ours || !alive(pid) {
            return None;
        }
        let config = std::fs::read_to_string(dir.join("etcd.started.yaml"))
            .or_else(|_| std::fs::read_to_string(&config_path))
            .ok()?;
        Some(Running {
            child: None,
            pid,
            config,
            started: Instant::now(),
            // Where this run's output starts, as recorded when it was started.
            log_from: std::fs::read_to_string(dir.join("etcd.log.from"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        })
    }

    pub(super) fn member_name(&self, i: i32) -> String {
        format!("{}-{i}", self.cluster_name)
    }

    pub(super) fn member_dir(&self, i: i32) -> PathBuf {
        self.options.state_dir.join(self.member_name(i))
    }

    pub(super) fn config_path(&self, i: i32) -> PathBuf {
        self.member_dir(i).join("etcd.yaml")
    }

    /// The last in-place restore request carried out (see [`State::restored`]).
    pub(super) fn restored(&self) -> Option<&str> {
        self.state.as_ref()?.restored.as_deref()
    }

    /// Records (or forgets) the in-place restore request carried out.
    pub(super) fn set_restored(&mut self, request: Option<String>) -> Result<(), Error> {
        if let Some(state) = self.state.as_mut() {
            state.restored = request;
        }
        self.save_state()
    }

    pub(super) fn uid(&self) -> String {
        self.uid.clone()
    }

    pub(super) fn save_state(&self) -> Result<(), Error> {
        let path = self.options.state_dir.join("cluster.json");
        if let Some(state) = &self.state {
            let text = serde_json::to_vec_pretty(state).unwrap_or_default();
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("write", &path))?;
        }
        Ok(())
    }

    /// The member's configuration file: the ConfigMap's rendering, with the local data
    /// directory.
    pub(super) fn render(
        &self,
        cluster: &ValidatedCluster,
        i: i32,
        member: &MemberBootstrap,
    ) -> Result<String, Error> {
        let err = |source| Error::Render {
            member: member.name.clone(),
            source,
        };
        let tls_dir = std::path::absolute(self.options.state_dir.join("tls"))
            .unwrap_or_else(|_| self.options.state_dir.join("tls"));
        let text =
            configmap::render(cluster, i, member, &tls_dir.display().to_string()).map_err(err)?;
        let mut map: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).map_err(err)?;
        let data = std::path::absolute(self.member_dir(i).join("data"))
            .unwrap_or_else(|_| self.member_dir(i).join("data"));
        map.insert(
            "data-dir".into(),
            serde_yaml_ng::Value::String(data.display().to_string()),
        );
        serde_yaml_ng::to_string(&map).map_err(err)
    }

    /// What exists, in the planner's terms (without etcd): the "StatefulSet", the members'
    /// configuration files and their "pods".
    pub(super) fn observe_members(
        &self,
    ) -> (
        Option<StatefulSetState>,
        BTreeMap<String, MemberBootstrap>,
        BTreeMap<i32, PodState>,
    ) {
        let Some(state) = &self.state else {
            return (None, BTreeMap::new(), BTreeMap::new());
        };
        let mut configs = BTreeMap::new();
        let mut pods = BTreeMap::new();
        for i in 0..state.replicas {
            let Ok(text) = std::fs::read_to_string(self.config_path(i)) else {
                continue;
            };
            pods.insert(
                i,
                PodState {
                    stale: self.running.get(&i).is_some_and(|r| r.config != text),
                    terminating: false,
                    data_lost: self.lost.get(&i).cloned(),
                    restore_failed: None,
                    restored: None,
                },
            );
            if let Some(m) = configmap::parse_member(&text) {
                configs.insert(m.name.clone(), m);
            }
        }
        let sts = StatefulSetState {
            replicas: state.replicas,
            ready_replicas: 0,
            spec_hash: Some(state.spec_hash.clone()),
            tls_built: state.tls_built,
        };
        (Some(sts), configs, pods)
    }

    /// Restarts members whose process exited, after their backoff; the kubelet's job.
    pub async fn supervise(&mut self) {
        let replicas = self.state.as_ref().map_or(0, |s| s.replicas);
        let exited: Vec<(i32, String, Duration, u64)> = self
            .running
            .iter_mut()
            .filter_map(|(i, r)| Some((*i, r.exited()?, r.started.elapsed(), r.log_from)))
            .collect();
        for (i, status, ran, log_from) in exited {
            self.running.remove(&i);
            let _ = std::fs::remove_file(self.member_dir(i).join("etcd.pid"));
            // What a pod's termination message would say: does its data still work?
            match observe::data_lost_reason(&log_tail(
                &self.member_dir(i).join("etcd.log"),
                log_from,
            )) {
                Some(reason) => {
                    println!("{} cannot run on its data: {reason}", self.member_name(i));
                    self.lost.insert(i, reason);
                }
                None => {
                    self.lost.remove(&i);
                }
            }
            let previous = self.pending.get(&i).map(|p| p.1).unwrap_or(Duration::ZERO);
            let backoff = if ran > Duration::from_secs(60) || previous.is_zero() {
                self.options.restart_backoff
            } else {
                (previous * 2).min(Duration::from_secs(60))
            };
            warn!(member = %self.member_name(i), %status, restart_in = ?backoff, "member exited");
            println!(
                "{} exited ({status}); restarting in {backoff:?}",
                self.member_name(i)
            );
            self.pending.insert(i, (Instant::now() + backoff, backoff));
        }
        let due: Vec<i32> = self
            .pending
            .iter()
            .filter(|(i, (at, _))| **i < replicas && *at <= Instant::now())
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            if let Err(error) = self.start(i) {
                warn!(%error, "failed to start a member");
                println!("{error}");
            }
        }
    }

    /// Starts member `i` from its configuration file.
    pub(super) fn start(&mut self, i: i32) -> Result<(), Error> {
        let dir = self.member_dir(i);
        let config_path = self.config_path(i);
        let config = std::fs::read_to_string(&config_path).map_err(io("read", &config_path))?;
        let log_path = dir.join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("open", &log_path))?;
        let log_from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(io("open", &log_path))?;
        let name = self.member_name(i);
        let child = Command::new(&self.options.server_bin)
            .arg(format!("--config-file={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: Ctrl-C reaches the runtime only, which stops members
            // in order; and a runtime that dies without stopping them does not leave them
            // running (kill_on_drop).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: self.options.server_bin.clone(),
                member: name.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let from_path = dir.join("etcd.log.from");
        std::fs::write(&from_path, format!("{log_from}\n")).map_err(io("write", &from_path))?;
        let pid_path = dir.join("etcd.pid");
        std::fs::write(&pid_path, format!("{pid}\n")).map_err(io("write", &pid_path))?;
        let started_path = dir.join("etcd.started.yaml");
        std::fs::write(&started_path, &config).map_err(io("write", &started_path))?;
        info!(member = %name, "started member");
        println!("started {name} ({})", self.options.addressing.ip(i));
        self.pending.remove(&i);
        self.running.insert(
            i,
            Running {
                child: Some(child),
                pid,
                config,
                started: Instant::now(),
                log_from,
            },
        );
        Ok(())
    }

    /// Stops member `i`: SIGTERM, then SIGKILL after the stop timeout.
    pub(super) async fn stop(&mut self, i: i32) {
        self.pending.remove(&i);
        if let Some(r) = self.running.remove(&i) {
            stop_all(vec![(self.member_name(i), r)], self.options.stop_timeout).await;
            let _ = std::fs::remove_file(self.member_dir(i).join("etcd.pid"));
        }
    }

    /// Stops every member (all at once: a member stopping alone would see the others go).
    pub async fn shutdown(&mut self) {
        let running: Vec<(String, Running)> = std::mem::take(&mut self.running)
            .into_iter()
            .map(|(i, r)| (self.member_name(i), r))
            .collect();
        stop_all(running, self.options.stop_timeout).await;
        for i in 0..self.state.as_ref().map_or(0, |s| s.replicas) {
            let _ = std::fs::remove_file(self.member_dir(i).join("etcd.pid"));
        }
        self.pending.clear();
    }

    /// Ordinals with a directory in the state directory.
    pub(super) fn ordinals_on_disk(&self) -> Vec<i32> {
        let prefix = format!("{}-", self.cluster_name);
        std::fs::read_dir(&self.options.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let i: i32 = name.strip_prefix(&prefix)?.parse().ok()?;
                (self.member_name(i) == name && e.path().is_dir()).then_some(i)
            })
            .collect()
    }

    pub(super) async fn apply_desired(
        &mut self,
        cluster: &ValidatedCluster,
        desired: &Desired,
    ) -> Result<(), Error> {
        let n = desired.replicas;
        // Members beyond: the planner has removed them from etcd already.
        let mut beyond: Vec<i32> = self.running.keys().copied().filter(|i| *i >= n).collect();
        beyond.extend(self.ordinals_on_disk().into_iter().filter(|i| *i >= n));
        beyond.sort_unstable();
        beyond.dedup();
        for i in beyond {
            self.stop(i).await;
            let dir = self.member_dir(i);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io("delete", &dir))?;
            }
            println!("deleted {} and its data", self.member_name(i));
        }

        // New members start from an empty data directory (to join), or, bootstrapping from a
        // backup, from the backup. Restored before their files are written: a restore that
        // fails leaves no file behind, and the next pass restores again rather than start
        // members on empty data.
        let mut restoring = Vec::new();
        for (i, member) in desired.members.iter().enumerate() {
            let i = i as i32;
            if std::fs::read_to_string(self.config_path(i)).is_ok() {
                continue;
            }
            let dir = self.member_dir(i);
            let data = dir.join("data");
            if data.exists() {
                std::fs::remove_dir_all(&data).map_err(io("delete", &data))?;
            }
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            if member.state == crate::model::InitialState::New {
                restoring.push((i, member));
            }
        }
        if let Some(from) = cluster
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.from_backup.as_ref())
            && !restoring.is_empty()
        {
            self.restore_from_backup(cluster, from, &restoring).await?;
        }
        for (i, member) in desired.members.iter().enumerate() {
            let i = i as i32;
            let text = self.render(cluster, i, member)?;
            let path = self.config_path(i);
            let existing = std::fs::read_to_string(&path).ok();
            if existing.as_deref() != Some(text.as_str()) {
                std::fs::write(&path, &text).map_err(io("write", &path))?;
            }
        }

        self.state = Some(State {
            uid: self.uid(),
            replicas: n,
            spec_hash: spec_hash(cluster),
            tls_built: Some(crate::model::TlsBuilt::of(cluster)),
            restored: self.state.as_ref().and_then(|s| s.restored.clone()),
        });
        self.save_state()?;

        // Running members keep running: restarts are the planner's (RestartMembers).
        for i in 0..n {
            if !self.running.contains_key(&i) && !self.pending.contains_key(&i) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// `spec.bootstrap.fromBackup`: the chosen backup, downloaded once and checked, restored
    /// into each new member's data dir under its own name and peer URL before its first start.
    async fn restore_from_backup(
        &self,
        cluster: &ValidatedCluster,
        from: &crate::crd::FromBackup,
        members: &[(i32, &MemberBootstrap)],
    ) -> Result<(), Error> {
        use crate::backup::{Error as BackupError, Store, restore};
        let location = from
            .s3
            .as_ref()
            .or_else(|| cluster.spec.backup.as_ref().map(|b| &b.s3))
            .ok_or_else(|| {
                Error::Backup(BackupError::Restore(
                    "spec.bootstrap.fromBackup needs s3, or spec.backup.s3".into(),
                ))
            })?;
        let source = from.cluster.as_deref().unwrap_or(&cluster.names.cluster);
        let store = Store::new(
            location,
            &cluster.names.namespace,
            source,
            self.options.s3_credentials.clone(),
        )
        .await;
        let meta = restore::choose(&store, from).await.map_err(Error::Backup)?;
        let scratch = self.options.state_dir.join("restore");
        let file = restore::fetch(&store, &meta, &scratch)
            .await
            .map_err(Error::Backup)?;
        let restored = self.restore_members(cluster, &file, members).await;
        let _ = std::fs::remove_dir_all(&scratch);
        let done = restored?;
        for name in done {
            println!(
                "restored {name} from s3://{}/{} (revision {})",
                store.bucket(),
                meta.key,
                meta.revision
            );
        }
        Ok(())
    }

    /// Each member's data dir from `file`; returns their names.
    async fn restore_members(
        &self,
        cluster: &ValidatedCluster,
        file: &std::path::Path,
        members: &[(i32, &MemberBootstrap)],
    ) -> Result<Vec<String>, Error> {
        use crate::backup::restore;
        let mut done = Vec::new();
        for (i, member) in members {
            let data = std::path::absolute(self.member_dir(*i).join("data"))
                .unwrap_or_else(|_| self.member_dir(*i).join("data"));
            let peer_url = cluster.names.peer_url(*i);
            let initial = member.initial_cluster_value();
            restore::restore_member(
                &self.options.server_bin,
                file,
                restore::Member {
                    name: &member.name,
                    peer_url: &peer_url,
                    initial_cluster: &initial,
                    token: &cluster.token,
                    data_dir: &data,
                },
            )
            .await
            .map_err(Error::Backup)?;
            done.push(member.name.clone());
        }
        Ok(done)
    }

    /// In-place restore: the backup (`key`, or the newest usable) is downloaded and checked
    /// while the members still run; then every member is stopped, its data dir moved aside to
    /// `data.pre-restore-<time>` (kept, never deleted), made again from the backup under a new
    /// cluster token (so the cluster gets a new ID, as etcd's restore gives), and started. If a
    /// member cannot be restored, the old data dirs go back and the members start on them.
    /// Returns the backup and where the old data dirs are.
    pub(super) async fn restore_in_place(
        &mut self,
        cluster: &ValidatedCluster,
        key: Option<String>,
    ) -> Result<(crate::backup::Metadata, String), Error> {
        use crate::backup::{Error as BackupError, Store, restore};
        let fail = |m: String| Error::Backup(BackupError::Restore(m));
        let replicas = self
            .state
            .as_ref()
            .map(|s| s.replicas)
            .filter(|n| *n > 0)
            .ok_or_else(|| fail("the cluster has no members to restore".into()))?;
        let location = cluster
            .spec
            .backup_bucket()
            .ok_or_else(|| fail("an in-place restore needs spec.backup.s3".into()))?;
        let store = Store::new(
            location,
            &cluster.names.namespace,
            &cluster.names.cluster,
            self.options.s3_credentials.clone(),
        )
        .await;
        let from = crate::crd::FromBackup {
            s3: None,
            cluster: None,
            key,
        };
        let meta = restore::choose(&store, &from)
            .await
            .map_err(Error::Backup)?;
        let scratch = self.options.state_dir.join("restore");
        let file = restore::fetch(&store, &meta, &scratch)
            .await
            .map_err(Error::Backup)?;

        println!(
            "restoring every member from {} (revision {})",
            meta.key, meta.revision
        );
        self.shutdown().await;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        // Unique per attempt: an aside copy is never overwritten or confused with another's.
        let aside = format!(
            "data.pre-restore-{}-{:09}",
            now.as_secs(),
            now.subsec_nanos()
        );
        let token = format!("{}-restore-{}", cluster.token, now.as_secs());
        let initial = (0..replicas)
            .map(|i| format!("{}={}", cluster.names.member(i), cluster.names.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        // The members this attempt reached, and whether it moved their data aside.
        let mut touched: Vec<(i32, bool)> = Vec::new();
        let mut result = Ok(());
        for i in 0..replicas {
            let data = std::path::absolute(self.member_dir(i).join("data"))
                .unwrap_or_else(|_| self.member_dir(i).join("data"));
            let moved = data.exists();
            if moved && let Err(e) = std::fs::rename(&data, self.member_dir(i).join(&aside)) {
                result = Err(io("move aside", &data)(e));
                break;
            }
            touched.push((i, moved));
            let name = cluster.names.member(i);
            let peer_url = cluster.names.peer_url(i);
            if let Err(e) = restore::restore_member(
                &self.options.server_bin,
                &file,
                restore::Member {
                    name: &name,
                    peer_url: &peer_url,
                    initial_cluster: &initial,
                    token: &token,
                    data_dir: &data,
                },
            )
            .await
            {
                result = Err(Error::Backup(e));
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = result {
            // Back to the old data: nothing is lost, and the members run as before. If a copy
            // cannot go back, no member starts, and the error says where the data is.
            for (i, moved) in touched {
                let data = self.member_dir(i).join("data");
                let mut back = match std::fs::remove_dir_all(&data) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
                if moved && back.is_ok() {
                    back = std::fs::rename(self.member_dir(i).join(&aside), &data);
                }
                if let Err(undo) = back {
                    return Err(fail(format!(
                        "{e}; putting {}'s old data back failed ({undo}): the members stay stopped; each member's old data is in <member>/{aside}",
                        self.member_name(i)
                    )));
                }
            }
            for i in 0..replicas {
                self.start(i)?;
            }
            return Err(e);
        }
        for i in 0..replicas {
            self.start(i)?;
        }
        Ok((meta, aside))
    }

    pub(super) async fn restart_member(&mut self, i: i32) -> Result<(), Error> {
        println!(
            "restarting {} with its current configuration",
            self.member_name(i)
        );
        self.stop(i).await;
        self.start(i)
    }

    pub(super) async fn wipe_member(&mut self, i: i32) -> Result<(), Error> {
        self.stop(i).await;
        let data = self.member_dir(i).join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io("delete", &data))?;
        }
        println!("wiped the data of {}", self.member_name(i));
        self.lost.remove(&i);
        self.start(i)
    }
}

/// SIGTERMs every member, then waits for each until `timeout`, killing what is left.
pub(super) async fn stop_all(members: Vec<(String, Running)>, timeout: Duration) {
    for (name, r) in &members {
        if let Err(error) = r.signal(rustix::process::Signal::TERM) {
            warn!(member = %name, %error, "failed to send SIGTERM");
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (name, mut r) in members {
        match tokio::time::timeout_at(deadline, r.wait()).await {
            Ok(()) => println!("stopped {name}"),
            Err(_) => {
                warn!(member = %name, "did not stop in time; killing it");
                let _ = r.signal(rustix::process::Signal::KILL);
                r.wait().await;
                println!("killed {name} (it did not stop within {timeout:?})");
            }
        }
    }
}

impl MemberRuntime for LocalMembers {
    type Error = Error;

    fn apply<'a>(
        &'a mut self,
        cluster: &'a ValidatedCluster,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.apply_desired(cluster, desired))
    }

    fn restart<'a>(
        &'a mut self,
        _cluster: &'a ValidatedCluster,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.restart_member(ordinal))
    }

    fn wipe<'a>(
        &'a mut self,
        _cluster: &'a ValidatedCluster,
        ordinal: i32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.wipe_member(ordinal))
    }
}
