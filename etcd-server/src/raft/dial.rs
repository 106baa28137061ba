//! Dialing another member's peer URL: TCP from this member's peer address, then TLS when
//! the URL is `https://` (the peer material, the URL's host as the server name). Raft streams
//! and gRPC peer calls both come through here.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{PeerUse, ReloadingTls};

/// Why a connection to a member could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not one we can dial.
    #[error("bad peer URL {0:?}")]
    BadUrl(String),
    /// An `https://` URL, but this member has no peer TLS material.
    #[error(
        "{0} is https, but this member has no peer certificate (--peer-cert-file or --peer-auto-tls)"
    )]
    NoTls(String),
    /// The socket or the handshake failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether a peer URL asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The host of a `host:port` or `[v6]:port`, without brackets.
fn host_of(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The server name to verify a member's certificate against.
fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid server name: {e}"),
        )
    })
}

/// Connects to `addr` from `source` (if of the same family), with Nagle off.
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The TLS handshake as a client, for `what`, verifying the member's certificate against
/// `host` (from its peer URL).
pub async fn tls(
    tls: &ReloadingTls,
    what: PeerUse,
    host_port: &str,
    tcp: TcpStream,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tls.connector(what).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "no peer TLS material")
    })?;
    connector
        .connect(server_name(host_of(host_port))?, tcp)
        .await
}

/// How long the TCP connect plus the TLS handshake of a gRPC peer connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// tonic's connector for `https://` peer URLs (tonic's own TLS cannot take our reloading
/// material): connect, then handshake with the current peer material.
#[derive(Clone)]
struct TlsConnector {
    tls: Arc<ReloadingTls>,
    source: Option<IpAddr>,
}

type Io = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<http::Uri> for TlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host"))?;
            let connect = async {
                let addrs = tokio::net::lookup_host(authority.as_str()).await?;
                let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                for addr in addrs {
                    match tcp(addr, this.source).await {
                        Ok(s) => {
                            return tls(&this.tls, PeerUse::Grpc, &authority, s).await;
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(r) => r.map(hyper_util::rt::TokioIo::new),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting timed out",
                )),
            }
        })
    }
}

/// A gRPC channel to a member's peer URL: plain for `http://`, TLS with the peer material
/// for `https://`. `tune` sets the endpoint's timeouts and keep-alives.
pub async fn grpc_channel(
    url: &str,
    source: Option<IpAddr>,
    peer_tls: Option<&Arc<ReloadingTls>>,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ConnectError> {
    if !is_https(url) {
        let ep = Endpoint::from_shared(url.to_owned())
            .map_err(|_| ConnectError::BadUrl(url.to_owned()))?
            .tcp_nodelay(true)
            .local_address(source);
        return tune(ep)
            .connect()
            .await
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)));
    }
    let Some(tls) = peer_tls else {
        return Err(ConnectError::NoTls(url.to_owned()));
    };
    // The TLS is ours: tonic sees a plain URI.
    let plain = format!("http://{}", &url[8..]);
    let ep = Endpoint::from_shared(plain).map_err(|_| ConnectError::BadUrl(url.to_owned()))?;
    tune(ep)
        .connect_with_connector(TlsConnector {
            tls: tls.clone(),
            source,
        })
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::{host_of, is_https};

    #[test]
    fn hosts_and_schemes_of_peer_urls() {
        assert!(is_https("https://10.0.0.1:2380") && is_https("HTTPS://a:1"));
        assert!(!is_https("http://10.0.0.1:2380"));
        assert_eq!(host_of("10.0.0.1:2380"), "10.0.0.1");
        assert_eq!(host_of("[::1]:2380"), "::1");
        assert_eq!(host_of("etcd-0.etcd.ns.svc:2380"), "etcd-0.etcd.ns.svc");
    }
}
