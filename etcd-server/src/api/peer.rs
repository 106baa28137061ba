//! The peer port (`--listen-peer-urls`): the gRPC peer service (`peerpb.Peer`: snapshots
//! from other members, cluster information for joining members, the lease operations only
//! the leader can answer) and the acceptor of Raft streams, told apart by their first bytes
//! (over TLS, by the ALPN protocol the dialer asked for).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use raft::eraftpb::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tonic::{Request, Response, Status, Streaming};

use super::GrpcResult;
use crate::error::EtcdError;
use crate::proto::peerpb::{
    Ack, LeaseRenewRequest, LeaseRenewResponse, LeaseTtlRequest, LeaseTtlResponse, MembersRequest,
    MembersResponse, PromoteRequest, PromoteResponse, SnapshotChunk, peer_server::Peer,
};
use crate::raft::Input;
use crate::raft::stream::RaftStream;
use crate::raft::transport::incoming_snapshot;
use crate::raft::wire::{self, Hello, Verdict};
use crate::server::EtcdServer;
use crate::tls::{RAFT_ALPN, ReloadingTls, check_peer_address};

/// The peer service of one member.
#[derive(Debug, Clone)]
pub struct PeerService {
    server: Arc<EtcdServer>,
}

impl PeerService {
    /// Serves the peer protocol for `server`.
    pub fn new(server: Arc<EtcdServer>) -> Self {
        Self { server }
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        check_cluster(&self.server, cluster_id)
    }
}

fn check_cluster(server: &EtcdServer, cluster_id: u64) -> Result<(), Status> {
    let ours = server.cluster().id;
    if cluster_id != ours {
        tracing::error!(
            local = format!("{ours:x}"),
            remote = format!("{cluster_id:x}"),
            "rejected a peer of another cluster (cluster ID mismatch)"
        );
        return Err(Status::failed_precondition(format!(
            "cluster ID mismatch: local {ours:x}, remote {cluster_id:x}"
        )));
    }
    Ok(())
}

/// How long a peer connection may take to show what it is and to send its hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A peer-port connection handed to the gRPC server: plain, or TLS after the handshake.
pub enum PeerConn {
    /// An `http://` peer listener's connection.
    Plain(TcpStream),
    /// An `https://` peer listener's connection.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for PeerConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for PeerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts peer-port connections until `stop`: Raft streams go to the Raft thread, every
/// other connection to the gRPC server through `grpc`. On an `https://` listener (`tls`),
/// the handshake comes first (the peer material, its client checks, and etcd's check of the
/// member's address against its certificate), and the ALPN tells the two kinds apart.
pub async fn route_connections(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    schemes: crate::Schemes,
    server: Arc<EtcdServer>,
    grpc: tokio::sync::mpsc::Sender<std::io::Result<PeerConn>>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.recv() => return,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "failed to accept a peer connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (server, grpc, tls) = (server.clone(), grpc.clone(), tls.clone());
        tokio::spawn(async move {
            // A port serving both schemes (a cluster moving between them): TLS when the
            // connection opens with a handshake.
            let tls = match (tls, schemes) {
                (Some(tls), crate::Schemes::Both) => {
                    match crate::tls::opens_with_handshake(&tcp, HELLO_TIMEOUT).await {
                        Some(true) => Some(tls),
                        Some(false) => None,
                        None => return,
                    }
                }
                (tls, _) => tls,
            };
            match tls {
                None if is_raft_stream(&tcp).await => {
                    accept_raft_stream(server, tcp, |s| Ok(RaftStream::plain(s.into_std()?))).await;
                }
                None => {
                    let _ = grpc.send(Ok(PeerConn::Plain(tcp))).await;
                }
                Some(tls) => {
                    let shake =
                        tokio::time::timeout(HELLO_TIMEOUT, tls.acceptor().accept(tcp)).await;
                    let stream = match shake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(%remote, error = %e, "rejected a peer connection: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = stream.get_ref().1;
                    // DNS lookups inside are bounded as a whole by the hello's timeout.
                    let check = async {
                        match conn.peer_certificates().and_then(|c| c.first()) {
                            Some(cert) if !tls.files().skip_san_verification => {
                                check_peer_address(cert, remote.ip()).await
                            }
                            _ => Ok(()),
                        }
                    };
                    let checked = tokio::time::timeout(HELLO_TIMEOUT, check)
                        .await
                        .unwrap_or_else(|_| Err("resolving its DNS names timed out".into()));
                    if let Err(e) = checked {
                        tracing::warn!(%remote, error = %e, "rejected a peer connection: its certificate does not name its address");
                        return;
                    }
                    if conn.alpn_protocol() == Some(RAFT_ALPN) {
                        accept_raft_stream(server, stream, |s| {
                            let (sock, conn) = s.into_inner();
                            RaftStream::from_tokio(sock, conn)
                        })
                        .await;
                    } else {
                        let _ = grpc.send(Ok(PeerConn::Tls(Box::new(stream)))).await;
                    }
                }
            }
        });
    }
}

/// Whether a new peer-port connection opens a Raft stream (rather than HTTP/2 for gRPC):
/// looks at its first bytes without taking them.
async fn is_raft_stream(tcp: &TcpStream) -> bool {
    let look = async {
        let mut head = [0u8; 4];
        loop {
            let n = tcp.peek(&mut head).await.unwrap_or(0);
            if n == 0 || head[..n] != wire::MAGIC[..n] {
                return false;
            }
            if n == head.len() {
                return true;
            }
            // A magic split across segments: wait for the rest.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, look)
        .await
        .unwrap_or(false)
}

/// Takes a Raft stream off the peer port: checks its hello (same cluster, sender not
/// removed, meant for this member), answers it and hands the stream (`finish` makes it
/// the Raft thread's) over.
async fn accept_raft_stream<S: AsyncRead + AsyncWrite + Unpin>(
    server: Arc<EtcdServer>,
    mut stream: S,
    finish: impl FnOnce(S) -> std::io::Result<RaftStream>,
) {
    let mut hello = [0u8; wire::HELLO_LEN];
    let Ok(Ok(_)) = tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(&mut hello)).await else {
        return;
    };
    let Some(h) = Hello::decode(&hello) else {
        return;
    };
    let verdict = if check_cluster(&server, h.cluster_id).is_err() {
        Verdict::ClusterMismatch
    } else if server.transport().is_removed(h.from) {
        Verdict::Removed
    } else if h.to != server.member_id() {
        tracing::warn!(
            local = format!("{:x}", server.member_id()),
            wanted = format!("{:x}", h.to),
            "refused a raft stream meant for another member"
        );
        Verdict::WrongMember
    } else {
        Verdict::Accepted
    };
    let answered = stream.write_all(&[verdict as u8]).await.is_ok() && stream.flush().await.is_ok();
    if !answered || verdict != Verdict::Accepted {
        return;
    }
    match finish(stream) {
        Ok(stream) => {
            let _ = server.raft_input(Input::Accepted {
                from: h.from,
                stream,
            });
        }
        Err(e) => tracing::warn!(error = %e, "failed to take over a raft stream"),
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    crate::raft::decode::message(bytes)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

/// Writes a snapshot's chunks to `tmp` and makes them durable, checking the SHA-256 the
/// last chunk carries.
async fn receive_snapshot(
    tmp: &std::path::Path,
    first: SnapshotChunk,
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<(), Status> {
    use sha2::Digest;
    let io = |e: std::io::Error| Status::internal(format!("failed to store snapshot: {e}"));
    let mut f = tokio::fs::File::create(tmp).await.map_err(io)?;
    let mut hash = sha2::Sha256::new();
    let mut expected = Vec::new();
    let mut chunk = first;
    loop {
        hash.update(&chunk.data);
        f.write_all(&chunk.data).await.map_err(io)?;
        if !chunk.sha256.is_empty() {
            expected = chunk.sha256;
        }
        match stream.next().await {
            Some(next) => chunk = next?,
            None => break,
        }
    }
    if expected.is_empty() || hash.finalize().as_slice() != expected.as_slice() {
        return Err(Status::data_loss(
            "snapshot data does not match its SHA-256 (truncated or corrupted in transfer)",
        ));
    }
    f.sync_all().await.map_err(io)?;
    Ok(())
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> GrpcResult<Ack> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_cluster(first.cluster_id)?;
        let m = decode(&first.message)?;
        let index = m.get_snapshot().get_metadata().index;
        let dir = self.server.snap_dir();
        let path = incoming_snapshot(&dir, index);
        // A name of its own for every transfer: two transfers of the same snapshot (a leader
        // retrying) must not write into one file.
        let tmp = dir.join(format!("{index:016x}.{:016x}.part", rand::random::<u64>()));
        let received = receive_snapshot(&tmp, first, &mut stream).await;
        let verified = match received {
            Ok(()) => {
                let check = tmp.clone();
                tokio::task::spawn_blocking(move || EtcdServer::verify_snapshot(&check, index))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map_err(|e| Status::data_loss(format!("refused snapshot at {index}: {e}")))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = verified {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(index, from = format!("{:x}", m.from), error = %e.message(), "refused snapshot");
            return Err(e);
        }
        let io = |e: std::io::Error| Status::internal(format!("failed to store snapshot: {e}"));
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        tracing::info!(index, from = format!("{:x}", m.from), "received snapshot");
        self.server
            .raft_input(Input::Step(Box::new(m)))
            .map_err(EtcdError::status)?;
        Ok(Response::new(Ack {}))
    }

    async fn members(&self, _: Request<MembersRequest>) -> GrpcResult<MembersResponse> {
        let c = self.server.cluster();
        Ok(Response::new(MembersResponse {
            cluster_id: c.id,
            members: c.members.into_values().collect(),
        }))
    }

    async fn lease_renew(&self, req: Request<LeaseRenewRequest>) -> GrpcResult<LeaseRenewResponse> {
        if !self.server.lessor().is_primary() {
            return Err(EtcdError::NotLeader.status());
        }
        let ttl = super::lease::renew(&self.server, req.get_ref().id).await?;
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn promote(&self, req: Request<PromoteRequest>) -> GrpcResult<PromoteResponse> {
        let members = super::cluster::promote_on_leader(&self.server, req.get_ref().id).await?;
        Ok(Response::new(PromoteResponse { members }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTtlRequest>,
    ) -> GrpcResult<LeaseTtlResponse> {
        Ok(Response::new(
            match self.server.lessor().time_to_live(req.get_ref().id) {
                Some(t) => LeaseTtlResponse {
                    found: true,
                    remaining: t.remaining,
                    granted: t.granted_ttl,
                    keys: t.keys,
                },
                None => LeaseTtlResponse::default(),
            },
        ))
    }
}
