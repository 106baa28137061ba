//! The metrics port's TLS listener for axum, telling TLS from plain on a port that serves
//! both, and `--auto-tls` / `--peer-auto-tls`'s
//! self-signed certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{ReloadingTls, Role, TlsError};

/// An `https://` `--listen-metrics-urls` listener for axum: the client port's material, the
/// handshake done before the connection is handed over (bounded by [`METRICS_HANDSHAKE`], so a
/// stalled client delays the next scrape at most that long).
pub struct TlsListener {
    /// The socket.
    pub inner: tokio::net::TcpListener,
    /// The material.
    pub tls: Arc<ReloadingTls>,
}

/// How long a metrics client may take to finish its handshake.
pub const METRICS_HANDSHAKE: Duration = Duration::from_secs(3);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shake = self.tls.acceptor_http1().accept(tcp);
            match tokio::time::timeout(METRICS_HANDSHAKE, shake).await {
                Ok(Ok(stream)) => return (stream, addr),
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// On a port that serves both schemes: whether a new connection opens with a TLS handshake
/// record (content type 22), looked at without taking it. `None` when the client closed or
/// sent nothing within `timeout` (every protocol on these ports has the client speak first).
pub async fn opens_with_handshake(tcp: &tokio::net::TcpStream, timeout: Duration) -> Option<bool> {
    const HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] == HANDSHAKE_RECORD),
        _ => None,
    }
}

/// `--auto-tls` / `--peer-auto-tls`: a self-signed certificate for `hosts` under `dir` (etcd
/// keeps its own under `<data-dir>/fixtures/client` and `.../peer`), made once and reused on
/// restart.
pub fn auto_tls(role: Role, dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let fail = |reason: String| TlsError::Setting {
        flag: role.flags().auto_tls,
        reason,
    };
    let mut names: Vec<String> = hosts.to_vec();
    names.push("localhost".into());
    names.sort();
    names.dedup();
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    std::fs::write(&key, made.signing_key.serialize_pem())
        .and_then(|()| std::fs::write(&cert, made.cert.pem()))
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    Ok((cert, key))
}
