//! `etcd-bench` binary: command-line parsing and wiring only.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use etcd_bench::compare::{CompareOptions, compare, disk::fsync_probe};
use etcd_bench::options::{
    Common, LeaseOptions, PutOptions, RangeOptions, TxnPutOptions, WatchOptions, Workload,
};

/// Load generator for etcd v3 servers, after etcd's tools/benchmark.
#[derive(Debug, Parser)]
#[command(name = "etcd-bench", version)]
struct Cli {
    /// Print the result as JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write keys.
    Put {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: PutOptions,
    },
    /// Read a key or a prefix, linearizable or serializable.
    Range {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: RangeOptions,
    },
    /// Transactions of several puts.
    TxnPut {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: TxnPutOptions,
    },
    /// Watch event latency from put to delivery (`--total` counts puts).
    Watch {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: WatchOptions,
    },
    /// Lease keep-alive round trips, one lease and stream per client.
    LeaseKeepalive {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: LeaseOptions,
    },
    /// Connection set-up: a new connection (TCP, TLS for `https://`, HTTP/2) per request,
    /// one read over each.
    Connect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: RangeOptions,
    },
    /// Start etcd-server and etcd in turn with the same settings, run the same workloads
    /// against each, and print ratios ours ÷ etcd.
    Compare(CompareOptions),
    /// A follower of a 3-member cluster SIGKILLed and restarted, on our server and etcd in
    /// one run: the time until every member serves a linearizable read again.
    MemberRestart(etcd_bench::compare::member_restart::MemberRestartOptions),
    /// Backup throughput beside a raw S3 upload of the same bytes, and the operator's peak
    /// RSS, against a real S3 server (`weed mini`) on 127.0.0.1.
    Backup(etcd_bench::backup::BackupOptions),
    /// Time fdatasync'd 4 KiB appends in a directory (the disk figure of BENCHMARKS.md).
    FsyncProbe {
        /// Directory on the filesystem to measure.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Number of writes.
        #[arg(long, default_value_t = 1000)]
        writes: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (common, workload) = match cli.command {
        Command::Put { common, opts } => (common, Workload::Put(opts)),
        Command::Range { common, opts } => (common, Workload::Range(opts)),
        Command::TxnPut { common, opts } => (common, Workload::TxnPut(opts)),
        Command::Watch { common, opts } => (common, Workload::Watch(opts)),
        Command::LeaseKeepalive { common, opts } => (common, Workload::LeaseKeepalive(opts)),
        Command::Connect { common, opts } => (common, Workload::Connect(opts)),
        Command::Compare(opts) => {
            // Dropping the comparison on Ctrl-C kills the server processes it started.
            let result = tokio::select! {
                r = compare(&opts) => r.context("comparison failed")?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print!("{}", result.to_text());
            }
            return Ok(());
        }
        Command::MemberRestart(opts) => {
            use etcd_bench::compare::member_restart::{member_restart, table};
            let results = member_restart(&opts).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", table(&results));
            }
            return Ok(());
        }
        Command::Backup(opts) => {
            let result = etcd_bench::backup::backup_bench(&opts).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print!("{}", result.to_text());
            }
            return Ok(());
        }
        Command::FsyncProbe { dir, writes } => {
            let p = fsync_probe(&dir, writes)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                let l = p.latency_ms;
                println!(
                    "{} × {} B write + fdatasync in {}: mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    p.writes,
                    p.write_bytes,
                    dir.display(),
                    l.mean,
                    l.p50,
                    l.p99,
                    l.max
                );
            }
            return Ok(());
        }
    };
    let report = etcd_bench::run(&common, &workload)
        .await
        .with_context(|| format!("{} benchmark failed", workload.name()))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
