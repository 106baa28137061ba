//! `etcd-server` binary: parses etcd's flags, binds the listeners and runs the member.

use anyhow::Context;
use clap::Parser;
use etcd_server::config::{Flags, LogLevel};
use etcd_server::{Listeners, run};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let level = match flags.log_level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ETCD_SERVER_LOG").unwrap_or_else(|_| EnvFilter::new(level)))
        .with_writer(std::io::stderr)
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
        let mut client = Vec::new();
        for addr in &config.listen_client {
            client.push(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen on client address {addr}"))?,
            );
        }
        let mut metrics = Vec::new();
        for addr in &config.listen_metrics {
            metrics.push(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("failed to listen on metrics address {addr}"))?,
            );
        }
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler cannot fail at startup");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        run(Listeners { client, metrics }, config, shutdown).await.context("etcd-server failed")
    })
}
