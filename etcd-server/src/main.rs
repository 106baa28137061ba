//! `etcd-server` binary: parses etcd's flags, binds the listeners and runs the member.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use etcd_server::config::{Flags, LogLevel};
use etcd_server::{Listeners, run};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: the gRPC path allocates and frees many small buffers per
/// request, which cost glibc ~17% of the server's CPU under a put load (see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `etcd-server snapshot ...`: offline snapshot tools.
#[derive(Debug, Parser)]
#[command(name = "etcd-server snapshot")]
enum SnapshotCmd {
    /// Print the revision, key count, size and hash of a snapshot file.
    Status {
        /// Snapshot file (from `etcdctl snapshot save` or the Snapshot API).
        file: PathBuf,
        /// Output format: `table`, `json` or `simple`.
        #[arg(short = 'w', long = "write-out", default_value = "table")]
        write_out: String,
    },
    /// Build a fresh member data dir from a snapshot, with a new cluster identity.
    Restore {
        /// Snapshot file.
        file: PathBuf,
        /// Data dir to create (default `${name}.etcd`); must not exist or be empty.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Member name.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster (`name=url,...`; default `${name}=${initial-advertise-peer-urls}`).
        #[arg(long)]
        initial_cluster: Option<String>,
        /// Token of the new cluster.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
    },
}

fn snapshot_main(args: Vec<String>) -> anyhow::Result<()> {
    use etcd_server::snapshot;
    match SnapshotCmd::parse_from(args) {
        SnapshotCmd::Status { file, write_out } => {
            let s = snapshot::status(&file)?;
            match write_out.as_str() {
                "json" => println!(
                    r#"{{"hash":{},"revision":{},"totalKey":{},"totalSize":{}}}"#,
                    s.hash, s.revision, s.total_keys, s.total_size
                ),
                "simple" => println!(
                    "{:x}, {}, {}, {}",
                    s.hash, s.revision, s.total_keys, s.total_size
                ),
                _ => {
                    println!("+----------+----------+------------+------------+");
                    println!("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |");
                    println!("+----------+----------+------------+------------+");
                    println!(
                        "| {:>8x} | {:>8} | {:>10} | {:>10} |",
                        s.hash, s.revision, s.total_keys, s.total_size
                    );
                    println!("+----------+----------+------------+------------+");
                }
            }
        }
        SnapshotCmd::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
        } => {
            let urls: Vec<String> = initial_advertise_peer_urls
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect();
            let initial_cluster = initial_cluster.unwrap_or_else(|| {
                urls.iter()
                    .map(|u| format!("{name}={u}"))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let opts = snapshot::RestoreOptions {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd"))),
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls: urls,
            };
            snapshot::restore(&file, &opts)?;
            println!(
                "restored snapshot {} into {}",
                file.display(),
                opts.data_dir.display()
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("snapshot") {
        let rest: Vec<String> = std::iter::once("etcd-server snapshot".to_owned())
            .chain(args.into_iter().skip(2))
            .collect();
        if let Err(e) = snapshot_main(rest) {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let flags = match Flags::load() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("etcd-server: {e}");
            std::process::exit(2);
        }
    };
    let level = match flags.log_level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ETCD_SERVER_LOG").unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: supervisors (the operator's local runtime,
        // kubelet) write stderr to files, where escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("etcd-server: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async move {
        let client = bind_all(&config.listen_client, "client").await?;
        let peer = bind_all(&config.listen_peer, "peer").await?;
        let mut metrics = Vec::new();
        for url in &config.listen_metrics {
            let addr = url.addr;
            metrics.push(etcd_server::BoundListener {
                listener: tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen on metrics address {addr}"))?,
                schemes: etcd_server::Schemes::of([url.tls]),
            });
        }
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler cannot fail at startup");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        // One line per cause and no backtrace: supervisors (a pod's termination message, the
        // local runtime) read the last lines to learn why a member stopped.
        if let Err(e) = run(
            Listeners {
                client,
                metrics,
                peer,
            },
            config,
            shutdown,
        )
        .await
        {
            eprintln!("etcd-server: {e}");
            std::process::exit(1);
        }
        Ok(())
    })
}

/// Binds one listener per address of `urls`: an `http://` and an `https://` URL on the same
/// address share it (see [`etcd_server::Schemes::Both`]).
async fn bind_all(
    urls: &[etcd_server::config::ListenUrl],
    what: &str,
) -> anyhow::Result<Vec<etcd_server::BoundListener>> {
    let mut addrs: Vec<std::net::SocketAddr> = Vec::new();
    for url in urls {
        if !addrs.contains(&url.addr) {
            addrs.push(url.addr);
        }
    }
    let mut out = Vec::new();
    for addr in addrs {
        let schemes =
            etcd_server::Schemes::of(urls.iter().filter(|u| u.addr == addr).map(|u| u.tls));
        out.push(etcd_server::BoundListener {
            listener: tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to listen on {what} address {addr}"))?,
            schemes,
        });
    }
    Ok(out)
}
