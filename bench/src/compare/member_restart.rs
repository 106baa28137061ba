//! `etcd-bench member-restart`: how long a 3-member cluster takes to be whole again after a
//! follower crashes and restarts, on our server and on etcd in one run, alternating. Each
//! round SIGKILLs a follower, leaves it down for `--down`, starts it on its data and times
//! until every member (the restarted one included) serves a linearizable read.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster::{Cluster, ServerKind, Settings};
use crate::error::{Error, Result};
use crate::options::parse_duration;

/// Options of `member-restart`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemberRestartOptions {
    /// Our server binary.
    #[arg(long, default_value = "target/release/etcd-server")]
    pub ours_bin: PathBuf,
    /// The reference etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// Restarts per server.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// How long the follower stays down (long enough for peers to back off their dials).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub down: Duration,
    /// Where the members' data and logs go.
    #[arg(long, default_value = "target/etcd-bench/member-restart")]
    pub dir: PathBuf,
}

/// One server's restarts, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Restarts {
    /// Which server.
    pub server: ServerKind,
    /// Each round's time from starting the process to the cluster being whole.
    pub secs: Vec<f64>,
}

impl Restarts {
    fn mean(&self) -> f64 {
        self.secs.iter().sum::<f64>() / self.secs.len().max(1) as f64
    }
    fn max(&self) -> f64 {
        self.secs.iter().copied().fold(0.0, f64::max)
    }
    fn median(&self) -> f64 {
        let mut v = self.secs.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

/// Runs both servers, alternating round by round, and returns their restarts.
pub async fn member_restart(o: &MemberRestartOptions) -> Result<Vec<Restarts>> {
    let settings = Settings {
        quota_backend_bytes: 2 << 30,
        snapshot_count: 100_000,
        log_level: "warn".into(),
        tls: None,
    };
    let mut clusters = Vec::new();
    for (kind, bin) in [
        (ServerKind::Ours, &o.ours_bin),
        (ServerKind::Etcd, &o.etcd_bin),
    ] {
        let dir = o.dir.join(kind.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cluster::start(
            kind,
            bin,
            3,
            &dir.join("data"),
            &dir.join("logs"),
            &settings,
        )
        .await?;
        clusters.push((
            Restarts {
                server: kind,
                secs: Vec::new(),
            },
            c,
        ));
    }
    for round in 0..o.rounds {
        for (restarts, cluster) in &mut clusters {
            let leader = wait_leader(cluster).await?;
            // A follower, alternating between the two.
            let victim = [(leader + 1) % 3, (leader + 2) % 3][(round % 2) as usize];
            cluster.kill_member(victim);
            tokio::time::sleep(o.down).await;
            let start = Instant::now();
            cluster.restart_member(victim)?;
            loop {
                cluster.check_alive()?;
                let mut whole = true;
                for i in [victim, (victim + 1) % 3, (victim + 2) % 3] {
                    whole = whole && cluster.member_ready(i).await;
                }
                if whole {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    return Err(Error::NotReady {
                        member: format!("{} member {victim}", restarts.server),
                        timeout: Duration::from_secs(60),
                        log: o.dir.join(restarts.server.to_string()).join("logs"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "member-restart: {} round {round}: {secs:.3} s",
                restarts.server
            );
            restarts.secs.push(secs);
        }
    }
    Ok(clusters.into_iter().map(|(r, _)| r).collect())
}

async fn wait_leader(cluster: &Cluster) -> Result<usize> {
    let endpoints = cluster.endpoints();
    let start = Instant::now();
    loop {
        if let Some(i) = cluster.leader().await {
            return Ok(i);
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(Error::NoLeader { endpoints });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The result as a table: mean, median and max per server, and ours ÷ etcd.
pub fn table(results: &[Restarts]) -> String {
    let mut out =
        String::from("| server | rounds | mean | median | max |\n|---|--:|--:|--:|--:|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {:.3} s | {:.3} s | {:.3} s |\n",
            r.server,
            r.secs.len(),
            r.mean(),
            r.median(),
            r.max()
        ));
    }
    if let [ours, etcd] = results {
        out.push_str(&format!(
            "\nours ÷ etcd: mean {:.2}, median {:.2}, max {:.2}\n",
            ours.mean() / etcd.mean(),
            ours.median() / etcd.median(),
            ours.max() / etcd.max()
        ));
    }
    out
}
