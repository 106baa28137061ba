//! `etcd-operator` binary: wiring only — the CLI, logging, the HTTP server, leader election and
//! the controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use etcd_operator::controller::{self, Context};
use etcd_operator::etcd::EtcdClient;
use etcd_operator::leader::{self, LeaderElector};
use etcd_operator::metrics::Metrics;
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
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
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
