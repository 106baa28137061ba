//! The workspace's one test kit: finds free ports and the binaries under test, and starts real
//! `etcd-server` processes, clusters of them and the reference etcd 3.4.23 on loopback
//! addresses, stopping each when dropped. The server's, the operator's and the bench's
//! integration tests all use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod certs;
pub mod s3;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server binary to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Our `etcd-server`.
    Ours,
    /// Debian's etcd 3.4.23 (`/usr/bin/etcd`), the reference.
    Reference,
}

/// Path of the reference etcd, if installed.
pub fn reference_etcd() -> Option<PathBuf> {
    let p =
        PathBuf::from(std::env::var("REFERENCE_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    p.exists().then_some(p)
}

/// Path of etcdctl 3.4, if installed.
pub fn etcdctl() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var("REFERENCE_ETCDCTL").unwrap_or_else(|_| "/usr/bin/etcdctl".into()),
    );
    p.exists().then_some(p)
}

/// Fails the test (instead of silently passing) when a reference binary is missing, unless
/// `ALLOW_MISSING_REFERENCE=1` is set for a quick local run.
pub fn require(p: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if p.is_none() {
        if std::env::var("ALLOW_MISSING_REFERENCE").as_deref() == Ok("1") {
            eprintln!("skipping: {what} is not installed");
            return None;
        }
        panic!("{what} is not installed: run scripts/test.sh, which installs it");
    }
    p
}

/// How often a start is retried when a picked port was taken before the server bound it.
const PORT_RETRIES: usize = 5;

/// A free TCP port on 127.0.0.1 (see [`free_port_on`]).
pub fn free_port() -> u16 {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// A free TCP port on `ip`, chosen below Linux's ephemeral range (32768+): the servers under
/// test open many outgoing connections, and an ephemeral port handed out by the kernel for one
/// of them must not collide with a port a test is about to listen on.
pub fn free_port_on(ip: std::net::Ipv4Addr) -> u16 {
    free_port_in(ip, 20_000..32_000)
}

/// A free TCP port on `ip` in `range` (helper servers such as the S3 server pick theirs in a
/// range of their own, so they never race the servers under test for one).
pub fn free_port_in(ip: std::net::Ipv4Addr, range: std::ops::Range<u16>) -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..10_000 {
        let port = rng.random_range(range.clone());
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found on {ip} in {range:?}");
}

/// The `etcd-server` binary under test: `$ETCD_SERVER_BIN`, else the one in the test
/// executable's own target directory (`target/<profile>/deps/it-<hash>` →
/// `target/<profile>/etcd-server`), which `cargo nextest run --workspace` and
/// `scripts/test.sh` build, whatever the profile or target directory.
pub fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("etcd-server"))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        beside.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace --all-targets`, as \
         scripts/test.sh does), or point ETCD_SERVER_BIN at a server binary",
        beside.display()
    );
    beside
}

/// One running server process with its own data dir.
pub struct Proc {
    /// Which binary.
    pub kind: Kind,
    /// `http://127.0.0.1:PORT` for clients.
    pub client_url: String,
    /// `http://IP:PORT` the member listens on for peers.
    pub peer_url: String,
    /// `http://IP:PORT` the member advertises to peers (differs from `peer_url` when a test
    /// proxy sits in between).
    pub advertise_peer_url: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: String,
    /// Member name.
    pub name: String,
    /// Data dir (kept across restarts).
    pub data_dir: PathBuf,
    /// Extra flags.
    pub extra: Vec<String>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// How to launch one member of a cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Member name.
    pub name: String,
    /// Client URL (listen and advertise).
    pub client_url: String,
    /// Peer URL to listen on.
    pub peer_url: String,
    /// Peer URL to advertise.
    pub advertise_peer_url: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `new` or `existing`.
    pub initial_cluster_state: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Extra flags.
    pub extra: Vec<String>,
}

impl Proc {
    /// Starts a single-member server of `kind` with `extra` flags, and waits until it serves.
    pub fn start(kind: Kind, extra: &[&str]) -> Self {
        // Ports are picked before the server binds them; another test may take one in
        // between. That shows up as "Address already in use": pick new ports and try again.
        let mut last = String::new();
        for _ in 0..PORT_RETRIES {
            let tmp = tempfile::tempdir().expect("tempdir");
            let data_dir = tmp.path().join("data");
            let peer_url = format!("http://127.0.0.1:{}", free_port());
            let mut p = Self {
                kind,
                client_url: format!("http://127.0.0.1:{}", free_port()),
                advertise_peer_url: peer_url.clone(),
                initial_cluster: format!("default={peer_url}"),
                initial_cluster_state: "new".into(),
                peer_url,
                name: "default".into(),
                data_dir,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
                _tmp: Some(tmp),
            };
            p.spawn_no_wait();
            match p.try_wait_ready(Duration::from_secs(20)) {
                Ok(()) => return p,
                Err(e) if e.to_lowercase().contains("address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("ports kept colliding: {last}");
    }

    /// Launches a cluster member from `spec` without waiting for it to serve (members of a
    /// new cluster must all start before any can elect a leader).
    pub fn launch(kind: Kind, spec: Spec) -> Self {
        let mut p = Self {
            kind,
            client_url: spec.client_url,
            peer_url: spec.peer_url,
            advertise_peer_url: spec.advertise_peer_url,
            initial_cluster: spec.initial_cluster,
            initial_cluster_state: spec.initial_cluster_state,
            name: spec.name,
            data_dir: spec.data_dir,
            extra: spec.extra,
            child: None,
            _tmp: None,
        };
        p.spawn_no_wait();
        p
    }

    /// The client endpoint without scheme, as etcdctl and etcd-client take it.
    pub fn endpoint(&self) -> String {
        self.client_url.trim_start_matches("http://").to_owned()
    }

    fn binary(&self) -> PathBuf {
        match self.kind {
            Kind::Ours => server_binary(),
            Kind::Reference => reference_etcd().expect("reference etcd installed"),
        }
    }

    /// (Re)starts the process on the same data dir and ports, and waits until it serves.
    pub fn spawn(&mut self) {
        self.spawn_no_wait();
        self.wait_ready(Duration::from_secs(20));
    }

    /// (Re)starts the process without waiting.
    pub fn spawn_no_wait(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = Command::new(self.binary());
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&self.client_url)
            .arg("--advertise-client-urls")
            .arg(&self.client_url)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.advertise_peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(&self.initial_cluster_state)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn server"));
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until a linearizable read succeeds.
    pub fn wait_ready(&mut self, timeout: Duration) {
        if let Err(e) = self.try_wait_ready(timeout) {
            panic!("{e}");
        }
    }

    /// Like [`Proc::wait_ready`], but returns what went wrong instead of panicking.
    pub fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "{:?} exited early with {status}:\n{}",
                    self.kind,
                    self.log()
                ));
            }
            let ok = rt.block_on(async {
                let Ok(mut c) = etcd_client::Client::connect(
                    [self.endpoint()],
                    Some(
                        etcd_client::ConnectOptions::new()
                            .with_connect_timeout(Duration::from_millis(500))
                            .with_timeout(Duration::from_secs(1)),
                    ),
                )
                .await
                else {
                    return false;
                };
                c.get("health-probe", None).await.is_ok()
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{:?} not ready in {timeout:?}:\n{}",
                    self.kind,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects an `etcd-client` client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connect")
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILLs the process (no chance to flush anything).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the process and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is running.
    /// An exited process is reaped, so it can be spawned again.
    pub fn is_running(&mut self) -> bool {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !running {
            self.child = None;
        }
        running
    }

    /// Data dir path.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs etcdctl (API v3) against `endpoint` with `args`; returns (success, stdout, stderr).
pub fn etcdctl_run(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let bin = etcdctl().expect("etcdctl installed");
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn etcdctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("etcdctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A cluster of our `etcd-server` processes on 127.0.0.1.
pub struct Cluster {
    /// The members, in `--initial-cluster` order.
    pub members: Vec<Proc>,
    /// Parent of the members' data dirs.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members with `extra` flags and waits until every one serves.
    pub fn start(n: usize, extra: &[&str]) -> Self {
        Self::start_kind(Kind::Ours, n, extra)
    }

    /// [`Cluster::start`] with the binary of `kind` (ours, or the reference etcd).
    pub fn start_kind(kind: Kind, n: usize, extra: &[&str]) -> Self {
        let mut last = String::new();
        'attempt: for _ in 0..PORT_RETRIES {
            let dir = tempfile::tempdir().expect("tempdir");
            let peers: Vec<String> = (0..n)
                .map(|_| format!("http://127.0.0.1:{}", free_port()))
                .collect();
            let initial = (0..n)
                .map(|i| format!("m{i}={}", peers[i]))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<Proc> = (0..n)
                .map(|i| {
                    Proc::launch(
                        kind,
                        Spec {
                            name: format!("m{i}"),
                            client_url: format!("http://127.0.0.1:{}", free_port()),
                            peer_url: peers[i].clone(),
                            advertise_peer_url: peers[i].clone(),
                            initial_cluster: initial.clone(),
                            initial_cluster_state: "new".into(),
                            data_dir: dir.path().join(format!("m{i}")),
                            extra: extra.iter().map(|s| s.to_string()).collect(),
                        },
                    )
                })
                .collect();
            for m in &mut members {
                match m.try_wait_ready(Duration::from_secs(30)) {
                    Ok(()) => {}
                    // Another test took a port between our pick and the bind: start over.
                    Err(e) if e.to_lowercase().contains("address already in use") => {
                        last = e;
                        continue 'attempt;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            return Self { members, dir };
        }
        panic!("ports kept colliding: {last}");
    }

    /// Client endpoints of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }

    /// Index of the member that reports itself leader, if any.
    pub async fn leader(&mut self) -> Option<usize> {
        for (i, m) in self.members.iter_mut().enumerate() {
            if !m.is_running() {
                continue;
            }
            let Ok(mut c) = etcd_client::Client::connect([m.endpoint()], None).await else {
                continue;
            };
            if let Ok(s) = c.status().await
                && s.leader() == s.header().map(|h| h.member_id()).unwrap_or(0)
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits (bounded) until some member is leader; returns its index.
    pub async fn wait_leader(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts a single-member server of `kind` from async code.
pub async fn start_async(kind: Kind, flags: &'static [&'static str]) -> Proc {
    tokio::task::spawn_blocking(move || Proc::start(kind, flags))
        .await
        .expect("start server")
}

/// Runs `scenario` on our server and on the reference etcd in parallel, and asserts that both
/// transcripts are identical. `WL_TEST_ONLY=Ours|Reference` runs one side only.
pub async fn side_by_side<F, Fut>(scenario: F)
where
    F: Fn(Kind) -> Fut,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let only = std::env::var("WL_TEST_ONLY").ok();
    let ours = (only.as_deref() != Some("Reference")).then(|| tokio::spawn(scenario(Kind::Ours)));
    let theirs = (only.as_deref() != Some("Ours")
        && require(reference_etcd(), "reference etcd").is_some())
    .then(|| tokio::spawn(scenario(Kind::Reference)));
    let ours = match ours {
        Some(h) => Some(h.await.unwrap_or_else(|e| panic!("Ours: {e}"))),
        None => None,
    };
    let theirs = match theirs {
        Some(h) => Some(h.await.unwrap_or_else(|e| panic!("Reference: {e}"))),
        None => None,
    };
    if let (Some(ours), Some(theirs)) = (ours, theirs) {
        assert_same_transcript(&ours, &theirs);
    }
}

/// Asserts two transcripts are identical, listing every differing line.
pub fn assert_same_transcript(ours: &[String], theirs: &[String]) {
    use std::fmt::Write as _;
    let mut diffs = String::new();
    for i in 0..ours.len().max(theirs.len()) {
        let (a, b) = (ours.get(i), theirs.get(i));
        if a != b {
            let _ = write!(
                diffs,
                "\n  line {i}:\n    ours:      {a:?}\n    reference: {b:?}"
            );
        }
    }
    assert!(
        diffs.is_empty(),
        "our transcript differs from the reference etcd's:{diffs}"
    );
}
