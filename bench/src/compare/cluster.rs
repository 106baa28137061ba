//! Server processes for the comparison: a cluster of 1 or more members of either our
//! `etcd-server` or the reference etcd, on free loopback ports, started with the same flags,
//! stopped (SIGTERM, then SIGKILL) when asked or when dropped.

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use serde::Serialize;

use super::procfs::{ProcSample, sample};
use crate::error::{Error, Result};
use crate::tls::ClientCerts;

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Our `etcd-server`.
    Ours,
    /// The reference etcd (Debian's 3.4.23).
    Etcd,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Ours => "etcd-server",
            ServerKind::Etcd => "etcd",
        })
    }
}

/// Flags that both servers get with the same values.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `--quota-backend-bytes`.
    pub quota_backend_bytes: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--log-level` (etcd also gets `--logger zap`, its structured logger, like ours).
    pub log_level: String,
    /// TLS for clients and peers (`compare --tls`): the bench's client files; the servers'
    /// certificate (`server.crt`, `server.key`) lies beside the CA.
    pub tls: Option<ClientCerts>,
}

/// One member process.
struct Member {
    label: String,
    tls: ClientCerts,
    client_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster.
pub struct Cluster {
    kind: ServerKind,
    bin: PathBuf,
    members: Vec<Member>,
}

/// `n` distinct free TCP ports on 127.0.0.1. All listeners are held until every port is
/// chosen (so the OS cannot hand out one port twice), then closed for the servers to bind.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let io = |action| {
        move |source| Error::Io {
            action,
            path: PathBuf::from("127.0.0.1:0"),
            source,
        }
    };
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port")))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(io("read a bound port"))?.port()))
        .collect()
}

/// How often a new cluster is started on fresh ports when a member fails to start (another
/// process may take a chosen port before the member binds it).
const START_ATTEMPTS: usize = 3;

impl Cluster {
    /// Starts `size` members of `kind` with data dirs under `dir` (created; must not hold a
    /// previous cluster) and logs under `logs`, and waits until every member serves a
    /// linearizable read.
    pub async fn start(
        kind: ServerKind,
        bin: &Path,
        size: usize,
        dir: &Path,
        logs: &Path,
        settings: &Settings,
    ) -> Result<Self> {
        for d in [dir, logs] {
            std::fs::create_dir_all(d).map_err(|source| Error::Io {
                action: "create a directory",
                path: d.to_owned(),
                source,
            })?;
        }
        let mut attempt = 1;
        loop {
            let mut cluster = Self::configure(kind, bin, size, dir, logs, settings)?;
            let started = match cluster.spawn_all(true) {
                Ok(()) => cluster.wait_ready(Duration::from_secs(60)).await.map(drop),
                Err(e) => Err(e),
            };
            match started {
                Ok(()) => return Ok(cluster),
                Err(Error::Exited { .. }) if attempt < START_ATTEMPTS => {
                    drop(cluster);
                    let _ = std::fs::remove_dir_all(dir);
                    let _ = std::fs::create_dir_all(dir);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The members' flags, on fresh ports.
    fn configure(
        kind: ServerKind,
        bin: &Path,
        size: usize,
        dir: &Path,
        logs: &Path,
        settings: &Settings,
    ) -> Result<Self> {
        let ports = free_ports(2 * size)?;
        let ports: Vec<(u16, u16)> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}={scheme}://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(size);
        for (i, (client, peer)) in ports.into_iter().enumerate() {
            let name = format!("m{i}");
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("{scheme}://127.0.0.1:{peer}");
            let data_dir = dir.join(format!("{name}.etcd"));
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "etcd-bench",
                "--quota-backend-bytes",
                &settings.quota_backend_bytes.to_string(),
                "--snapshot-count",
                &settings.snapshot_count.to_string(),
                "--log-level",
                &settings.log_level,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if kind == ServerKind::Etcd {
                args.extend(["--logger".to_owned(), "zap".to_owned()]);
            }
            if let Some(ca) = settings.tls.as_ref().and_then(|t| t.cacert.as_ref()) {
                let dir = ca.parent().unwrap_or(Path::new("."));
                let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
                for (flag, path) in [
                    ("--cert-file", &cert),
                    ("--key-file", &key),
                    ("--trusted-ca-file", ca),
                    ("--peer-cert-file", &cert),
                    ("--peer-key-file", &key),
                    ("--peer-trusted-ca-file", ca),
                ] {
                    args.push(format!("{flag}={}", path.display()));
                }
                args.push("--client-cert-auth".into());
                args.push("--peer-client-cert-auth".into());
            }
            let stem = dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            members.push(Member {
                label: format!("{kind} {name}"),
                tls: settings.tls.clone().unwrap_or_default(),
                client_url,
                args,
                log: logs.join(format!("{stem}-{name}.log")),
                child: None,
            });
        }
        Ok(Self {
            kind,
            bin: bin.to_owned(),
            members,
        })
    }

    /// Starts every member; a fresh start truncates the logs, a restart appends to them.
    fn spawn_all(&mut self, fresh: bool) -> Result<()> {
        for i in 0..self.members.len() {
            self.spawn(i, fresh)?;
        }
        Ok(())
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data, its log appended to.
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        self.spawn(i, false)
    }

    /// Whether member `i` serves a linearizable read now.
    pub async fn member_ready(&self, i: usize) -> bool {
        match self.members.get(i) {
            Some(m) => probe(&m.client_url, &m.tls).await,
            None => false,
        }
    }

    /// The member that leads, as the members themselves report it.
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(200))
                .with_timeout(Duration::from_millis(500));
            let Ok(mut c) = Client::connect([m.client_url.as_str()], Some(opts)).await else {
                continue;
            };
            if let Ok(s) = c.status().await
                && s.leader() != 0
                && s.header().map(|h| h.member_id()) == Some(s.leader())
            {
                return Some(i);
            }
        }
        None
    }

    fn spawn(&mut self, i: usize, fresh: bool) -> Result<()> {
        {
            let m = &mut self.members[i];
            let log = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(!fresh)
                .truncate(fresh)
                .open(&m.log)
                .map_err(|source| Error::Io {
                    action: "open a server log",
                    path: m.log.clone(),
                    source,
                })?;
            let child = Command::new(&self.bin)
                .args(&m.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|source| Error::Io {
                    action: "start the server",
                    path: self.bin.clone(),
                    source,
                })?;
            m.child = Some(child);
        }
        Ok(())
    }

    /// Waits until every member serves a linearizable read; returns how long that took.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        for i in 0..self.members.len() {
            loop {
                self.check_alive()?;
                let m = &self.members[i];
                if probe(&m.client_url, &m.tls).await {
                    break;
                }
                if start.elapsed() > timeout {
                    return Err(Error::NotReady {
                        member: m.label.clone(),
                        timeout,
                        log: m.log.clone(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(start.elapsed())
    }

    /// Fails if a member has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                m.child = None;
                return Err(Error::Exited {
                    member: m.label.clone(),
                    status,
                    log: m.log.clone(),
                });
            }
        }
        Ok(())
    }

    /// The client endpoints, without scheme.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_url.trim_start_matches("http://").to_owned())
            .collect()
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Memory and CPU of every running member.
    pub fn samples(&self) -> Result<Vec<ProcSample>> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref())
            .map(|c| sample(c.id()))
            .collect()
    }

    /// Stops every member: SIGTERM, then SIGKILL after 30 s.
    pub fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(c) = m.child.as_ref() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Stops every member and starts them again on the same data; returns the time from
    /// starting the processes to every member serving a linearizable read.
    pub async fn restart(&mut self, timeout: Duration) -> Result<Duration> {
        self.stop();
        self.spawn_all(false)?;
        self.wait_ready(timeout).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Whether `url` answers a linearizable read now.
async fn probe(url: &str, tls: &ClientCerts) -> bool {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(200))
        .with_timeout(Duration::from_millis(250));
    if let Ok(Some(t)) = tls.etcd_client() {
        opts = opts.with_tls(t);
    }
    let Ok(mut c) = Client::connect([url], Some(opts)).await else {
        return false;
    };
    c.get(
        "etcd-bench-ready-probe",
        Some(GetOptions::new().with_count_only()),
    )
    .await
    .is_ok()
}
