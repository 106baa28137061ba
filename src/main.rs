//! `etcd-operator` binary: wiring only — the CLI, logging, the HTTP server, leader election and
//! the controller.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use etcd_operator::controller::{self, Context};
use etcd_operator::etcd::EtcdClient;
use etcd_operator::leader::{self, LeaderElector};
use etcd_operator::local;
use etcd_operator::metrics::Metrics;
use etcd_operator::names::LocalAddressing;
use tracing::info;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "etcd-operator",
    version,
    about = "Runs etcd clusters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the EtcdCluster CustomResourceDefinition as YAML.
    Crd,
    /// Run an EtcdCluster on this machine: members are local etcd-server processes, driven
    /// by the same planner as on Kubernetes.
    Local(LocalArgs),
    /// Backups of a cluster: list them, take one now, or restore a member's data dir.
    #[command(subcommand)]
    Backup(BackupCommand),
}

#[derive(Subcommand)]
enum BackupCommand {
    /// List the backups of the cluster in an EtcdCluster file (`spec.backup.s3`), newest first.
    List {
        /// The EtcdCluster YAML file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print JSON (every backup's metadata) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take a backup of a cluster run by `etcd-operator local` now: taken, verified and
    /// followed by retention as a scheduled one.
    Now(LocalArgs),
    /// Make one member's data dir from a backup, before its first start (the restore init
    /// container of a cluster with `spec.bootstrap.fromBackup`). Does nothing for a member
    /// that has data or joins an existing cluster.
    Restore {
        /// The member's etcd configuration file (name, data-dir, initial-cluster, ...).
        #[arg(long)]
        config_file: PathBuf,
        /// Where the backup is, as JSON: {"s3": {...}, "namespace": ..., "cluster": ..., "key": ...}.
        #[arg(long, env = "ETCD_OPERATOR_RESTORE_SOURCE")]
        source: Option<String>,
        /// A file that, when it exists, asks for an in-place restore (the same JSON with
        /// "inPlace"); it wins over --source.
        #[arg(long)]
        in_place: Option<PathBuf>,
        /// The etcd-server binary [default: next to etcd-operator, else from PATH].
        #[arg(long)]
        etcd_server: Option<PathBuf>,
    },
    /// Upload a file as it is, in a backup's parts, to the cluster's bucket and delete it
    /// again: the ceiling `etcd-bench backup` measures backups against.
    #[command(hide = true)]
    UploadRaw {
        /// The EtcdCluster YAML file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The file to upload.
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(clap::Args)]
struct LocalArgs {
    /// The EtcdCluster YAML file; edits are applied while running.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Where members' configuration and data live [default: ./<file stem>.local].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address of member 0; member i gets this address + i.
    #[arg(long, default_value = "127.0.0.10")]
    base_ip: Ipv4Addr,
    /// Client port of every member.
    #[arg(long, default_value_t = 2379)]
    client_port: u16,
    /// Peer port of every member.
    #[arg(long, default_value_t = 2380)]
    peer_port: u16,
    /// The etcd-server binary [default: next to etcd-operator, else from PATH].
    #[arg(long)]
    etcd_server: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the HTTP server for /metrics and /healthz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease, so several replicas can run; only the leader reconciles.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "etcd-operator")]
    lease_name: String,
    /// Namespace of the Lease: the operator's own (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "etcd-operator-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease (the pod name, from the downward API).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", etcd_operator::crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Local(args) => local(args).await,
        Command::Backup(command) => backup(command).await,
    }
}

async fn backup(command: BackupCommand) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let credentials = etcd_operator::backup::StaticCredentials::from_env();
    match command {
        BackupCommand::List { file, json } => {
            let all = local::list_backups(&file, credentials).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!(
                "{:<60} {:>10} {:>12} {:<20} VERIFIED",
                "KEY", "REVISION", "SIZE", "TAKEN"
            );
            for m in all {
                let taken = chrono::DateTime::from_timestamp(m.taken, 0)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default();
                let verified = match m.verified {
                    Some(true) => "yes",
                    Some(false) => "FAILED",
                    None => "-",
                };
                println!(
                    "{:<60} {:>10} {:>12} {:<20} {verified}",
                    m.key, m.revision, m.size, taken
                );
            }
            Ok(())
        }
        BackupCommand::Now(args) => {
            let options = local_options(args);
            let changes = local::backup_now(&options).await?;
            let mut failed = false;
            for change in &changes {
                println!("{}", change.message());
                failed |= matches!(
                    change,
                    etcd_operator::runtime::Change::Backup {
                        reason: "BackupFailed" | "BackupVerificationFailed",
                        ..
                    }
                );
            }
            if failed {
                anyhow::bail!("the backup failed");
            }
            Ok(())
        }
        BackupCommand::UploadRaw { file, data } => {
            let sent = local::upload_raw(&file, credentials, &data).await?;
            println!("uploaded {sent} bytes");
            Ok(())
        }
        BackupCommand::Restore {
            config_file,
            source,
            in_place,
            etcd_server,
        } => {
            use etcd_operator::backup::restore;
            let in_place = match &in_place {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => Some((text, path.display().to_string())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).context(format!("reading {}", path.display())),
                },
                None => None,
            };
            let (text, what) = match (in_place, source) {
                (Some(found), _) => found,
                (None, Some(text)) => (text, "--source (ETCD_OPERATOR_RESTORE_SOURCE)".to_owned()),
                (None, None) => {
                    println!("nothing to restore: no source given");
                    return Ok(());
                }
            };
            let source: restore::Source =
                serde_json::from_str(&text).with_context(|| format!("{what} is not valid JSON"))?;
            let config = restore::MemberConfig::read(&config_file)?;
            // The source may name its own credentials (a new cluster's fromBackup bucket).
            let credentials = match &source.credentials_env {
                Some(prefix) => etcd_operator::backup::StaticCredentials::from_env_prefixed(prefix),
                None => credentials,
            };
            let bin = etcd_server.unwrap_or_else(local::default_server_bin);
            let restore_id = source.in_place.as_ref().map(|t| t.id.clone());
            let done = restore::restore_from_config(&config, &source, credentials, &bin).await?;
            // In a pod, the termination message tells the operator which restore this
            // member's data comes from (read back from the pod's status).
            if let Some(id) = restore_id {
                let log = std::path::Path::new("/dev/termination-log");
                if log.exists() {
                    let _ = std::fs::write(log, etcd_operator::backup::in_place::done_message(&id));
                }
            }
            match done {
                restore::Restored::Restored(m) => println!(
                    "restored {} from s3://{}/{} (revision {})",
                    config.name, source.s3.bucket, m.key, m.revision
                ),
                restore::Restored::Skipped(why) => println!("nothing to restore: {why}"),
            }
            Ok(())
        }
    }
}

fn local_options(args: LocalArgs) -> local::Options {
    let mut options = local::Options::new(args.file);
    if let Some(dir) = args.state_dir {
        options.state_dir = dir;
    }
    options.addressing = LocalAddressing {
        base_ip: args.base_ip,
        client_port: args.client_port,
        peer_port: args.peer_port,
    };
    if let Some(bin) = args.etcd_server {
        options.server_bin = bin;
    }
    options
}

async fn local(args: LocalArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let (base_ip, client_port, peer_port) = (args.base_ip, args.client_port, args.peer_port);
    let options = local_options(args);
    println!(
        "state in {}; members from {} (client port {}, peer port {})",
        options.state_dir.display(),
        base_ip,
        client_port,
        peer_port
    );
    let (report, _) = tokio::sync::watch::channel(None);
    // Ctrl-C or SIGTERM (what `kill` and `timeout` send) stops the members cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install the SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    local::run(options, stop, report)
        .await
        .context("the local runtime failed")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    // Colour only on a terminal: a pod's log is a file.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }

    let client = kube::Client::try_default()
        .await
        .context("failed to create a Kubernetes client")?;
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("failed to bind {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics and /healthz");
    tokio::spawn(etcd_operator::http::serve(
        listener,
        metrics.clone(),
        std::future::pending(),
    ));

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "etcd-operator".to_owned());
    let mut lost = None;
    if args.leader_election {
        let elector = LeaderElector::new(
            client.clone(),
            leader::Config {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(2),
            },
        );
        elector.acquire().await;
        lost = Some(elector.keep());
    }

    let ctx = Arc::new(Context::new(
        client,
        Arc::new(EtcdClient::default()),
        metrics,
        Some(identity),
    ));
    let mut watch_lost = lost.clone();
    let shutdown = async move {
        match watch_lost.as_mut() {
            Some(rx) => {
                let _ = rx.wait_for(|lost| *lost).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    controller::run(ctx, shutdown).await;
    if lost.is_some_and(|rx| *rx.borrow()) {
        // Exit non-zero so the pod restarts as a fresh candidate rather than reconcile
        // alongside the new leader.
        anyhow::bail!("lost leadership");
    }
    info!("shut down");
    Ok(())
}
