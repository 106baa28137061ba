//! `etcd-bench backup`: what a backup costs. Loads a member run by `etcd-operator local` with
//! `--size-mib` of values, then, against a real S3 server on 127.0.0.1 (`weed mini`), times
//! `etcd-operator backup now` (snapshot stream → compression → SHA-256 → multipart upload)
//! beside a raw upload of the same snapshot bytes by the same client (`backup upload-raw`),
//! and reads each process's peak RSS (`VmHWM`) while it runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use rand::RngCore;
use serde::Serialize;

/// What `etcd-bench backup` runs.
#[derive(Debug, clap::Args)]
pub struct BackupOptions {
    /// The etcd-operator binary (etcd-server is taken from beside it).
    #[arg(long, default_value = "target/release/etcd-operator")]
    pub operator: PathBuf,
    /// Data to load, MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Size of each value, KiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub value_kib: u16,
    /// Rounds of each measurement (alternating); the median is reported.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// What ran.
    pub what: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Snapshot MB/s (10^6 bytes of the snapshot per second).
    pub mb_per_s: f64,
    /// Peak RSS of the process, MiB.
    pub peak_rss_mib: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The snapshot's size, bytes.
    pub snapshot_bytes: u64,
    /// Every run, in order.
    pub runs: Vec<Run>,
}

impl BackupReport {
    fn median(&self, what: &str) -> Option<(f64, f64)> {
        let mut v: Vec<&Run> = self.runs.iter().filter(|r| r.what == what).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
        let rss = self
            .runs
            .iter()
            .filter(|r| r.what == what)
            .map(|r| r.peak_rss_mib)
            .fold(0.0, f64::max);
        Some((v[v.len() / 2].mb_per_s, rss))
    }

    /// A table: median throughput, ratio to the raw upload, and the highest peak RSS.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "snapshot: {:.1} MiB\n{:<34} {:>10} {:>14} {:>14}\n",
            self.snapshot_bytes as f64 / (1 << 20) as f64,
            "run",
            "MB/s",
            "÷ raw upload",
            "peak RSS MiB"
        );
        let raw = self.median("raw upload").map(|m| m.0).unwrap_or(f64::NAN);
        for what in [
            "raw upload",
            "backup (compression none)",
            "backup (zstd)",
            "backup (zstd, verified)",
        ] {
            if let Some((mbs, rss)) = self.median(what) {
                out.push_str(&format!(
                    "{what:<34} {mbs:>10.1} {:>14.2} {rss:>14.1}\n",
                    mbs / raw
                ));
            }
        }
        out
    }
}

/// Runs `cmd` to completion, polling its peak RSS; returns (seconds, peak RSS MiB).
async fn measure(mut cmd: tokio::process::Command) -> anyhow::Result<(f64, f64, String)> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawn")?;
    let pid = child.id().unwrap_or_default();
    let mut peak_kib = 0u64;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut a, mut b) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut a).await;
        let _ = stderr.read_to_string(&mut b).await;
        a + &b
    });
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let text = output.await.unwrap_or_default();
    if !status.success() {
        bail!("{status}: {text}");
    }
    Ok((seconds, peak_kib as f64 / 1024.0, text))
}

fn spec(s3: &etcd_test_kit::s3::S3Server, compression: &str, verify: bool) -> String {
    format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: bench\nspec:\n  replicas: 1\n  server:\n    quotaBackendBytes: 8589934592\n  backup:\n    schedule: '@every 24h'\n    suspend: true\n    compression: {compression}\n    verify: {verify}\n    retention: {{keepLast: 1}}\n    s3: {{bucket: {}, endpoint: '{}', forcePathStyle: true}}\n",
        s3.bucket, s3.endpoint
    )
}

fn operator(o: &BackupOptions, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&o.operator);
    c.args(args)
        .env("AWS_ACCESS_KEY_ID", etcd_test_kit::s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", etcd_test_kit::s3::SECRET_KEY)
        .env("RUST_LOG", "warn");
    c
}

/// Runs the benchmark.
pub async fn backup_bench(o: &BackupOptions) -> anyhow::Result<BackupReport> {
    if !o.operator.is_file() {
        bail!(
            "{} not found: build it with cargo build --release",
            o.operator.display()
        );
    }
    let s3 = tokio::task::spawn_blocking(|| etcd_test_kit::s3::S3Server::start("bench"))
        .await
        .context("weed mini")?;
    let dir = tempfile::tempdir()?;
    let spec_path = dir.path().join("bench.yaml");
    std::fs::write(&spec_path, spec(&s3, "none", false))?;
    let ip = std::net::Ipv4Addr::new(127, 0, 70, 10);
    let client_port = etcd_test_kit::free_port_on(ip);
    let mut peer_port = etcd_test_kit::free_port_on(ip);
    while peer_port == client_port {
        peer_port = etcd_test_kit::free_port_on(ip);
    }
    let state = dir.path().join("state");
    let (sp, st, ips, cps, pps) = (
        spec_path.display().to_string(),
        state.display().to_string(),
        ip.to_string(),
        client_port.to_string(),
        peer_port.to_string(),
    );
    let local_args = [
        "-f",
        sp.as_str(),
        "--state-dir",
        st.as_str(),
        "--base-ip",
        ips.as_str(),
        "--client-port",
        cps.as_str(),
        "--peer-port",
        pps.as_str(),
    ];
    let mut args = vec!["local"];
    args.extend(local_args);
    let mut local = operator(o, &args);
    let local = local
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("etcd-operator local")?;
    let result = measure_all(o, &s3, &dir, &spec_path, ip, client_port, &local_args).await;
    stop(local).await;
    result
}

/// Stops `etcd-operator local` with SIGTERM, so that it stops its members (killed, it would
/// leave them running).
async fn stop(mut local: tokio::process::Child) {
    if let Some(pid) = local.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(30), local.wait())
        .await
        .is_err()
    {
        let _ = local.kill().await;
    }
}

async fn measure_all(
    o: &BackupOptions,
    s3: &etcd_test_kit::s3::S3Server,
    dir: &tempfile::TempDir,
    spec_path: &Path,
    ip: std::net::Ipv4Addr,
    client_port: u16,
    local_args: &[&str],
) -> anyhow::Result<BackupReport> {
    let sp = spec_path.display().to_string();
    let endpoint = format!("http://{ip}:{client_port}");
    let mut client = None;
    for _ in 0..300 {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], None).await
            && c.status().await.is_ok()
        {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.context("the member did not start")?;

    // Load: incompressible values (the worst case for compression).
    let count = (o.size_mib << 10) as usize / usize::from(o.value_kib);
    let mut tasks = futures::stream::iter((0..count).map(|i| {
        let mut c = client.clone();
        let mut value = vec![0u8; usize::from(o.value_kib) << 10];
        rand::rng().fill_bytes(&mut value);
        async move { c.put(format!("bench/{i:08}"), value, None).await }
    }))
    .buffer_unordered(8);
    while let Some(r) = tasks.next().await {
        r.context("load")?;
    }
    drop(tasks);

    // The snapshot's bytes, for the raw upload.
    let raw_file = dir.path().join("snapshot.db");
    let mut stream = client.maintenance_client().snapshot().await?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&raw_file)?);
    while let Some(m) = stream.message().await? {
        use std::io::Write;
        f.write_all(m.blob())?;
    }
    drop(f);
    let snapshot_bytes = std::fs::metadata(&raw_file)?.len();

    let mut runs = Vec::new();
    let mb = |s: f64| snapshot_bytes as f64 / 1e6 / s;
    let rf = raw_file.display().to_string();
    let mut now_args = vec!["backup", "now"];
    now_args.extend(local_args.iter().copied());
    for _ in 0..o.rounds {
        let (s, rss, _) = measure(operator(
            o,
            &["backup", "upload-raw", "-f", &sp, "--data", &rf],
        ))
        .await?;
        runs.push(Run {
            what: "raw upload".into(),
            seconds: s,
            mb_per_s: mb(s),
            peak_rss_mib: rss,
        });
        for (compression, verify, what) in [
            ("none", false, "backup (compression none)"),
            ("zstd", false, "backup (zstd)"),
        ] {
            write_spec(spec_path, &spec(s3, compression, verify))?;
            let (s, rss, _) = measure(operator(o, &now_args)).await?;
            runs.push(Run {
                what: what.into(),
                seconds: s,
                mb_per_s: mb(s),
                peak_rss_mib: rss,
            });
        }
    }
    write_spec(spec_path, &spec(s3, "zstd", true))?;
    let (s, rss, text) = measure(operator(o, &now_args)).await?;
    if !text.contains("verified") {
        bail!("the verified backup did not verify: {text}");
    }
    runs.push(Run {
        what: "backup (zstd, verified)".into(),
        seconds: s,
        mb_per_s: mb(s),
        peak_rss_mib: rss,
    });
    Ok(BackupReport {
        snapshot_bytes,
        runs,
    })
}

fn write_spec(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
