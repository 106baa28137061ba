//! The peer transport's Tokio side: who the peers are, dialing their Raft streams (the
//! Raft thread then owns the sockets, see `peer_io`), snapshots, and request/response calls.
//!
//! Raft messages travel on plain TCP streams (`wire`); a snapshot message travels on its own
//! gRPC `Snapshot` call together with the backend file it refers to.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Input;
use super::dial;
use super::input::RaftTx;
use super::stream::RaftStream;
use super::wire::{self, Hello, Verdict};
use crate::proto::peerpb::{SnapshotChunk, peer_client::PeerClient};
use crate::tls::{PeerUse, ReloadingTls};

const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
const SNAPSHOT_CHUNK: usize = 512 * 1024;

struct Peer {
    urls: Vec<String>,
    /// Changes with the URLs, so a stream dialed to old URLs is not taken.
    generation: u64,
    /// Since when the Raft thread's outgoing stream to this peer has been up.
    connected: Option<Instant>,
    /// The shared connection for request/response calls (forwarded lease renewals, member
    /// queries), kept open: tonic reconnects it when it breaks.
    rpc: Option<PeerClient<tonic::transport::Channel>>,
}

#[derive(Default)]
struct State {
    peers: HashMap<u64, Peer>,
    removed: BTreeSet<u64>,
    next_generation: u64,
}

/// Why a Raft stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No URL of the peer could be reached.
    #[error("failed to reach {url}: {reason}")]
    Unreachable {
        /// The last URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The peer refused the stream.
    #[error("the peer refused our raft stream: {0:?}")]
    Refused(Verdict),
    /// None of the peer's URLs is usable.
    #[error("failed to dial: the peer has no usable peer URL")]
    NoUrl,
}

/// The Tokio side of the peer transport.
pub struct Transport {
    local_id: u64,
    /// Source address for outgoing peer connections (the peer listener's IP, unless it is a
    /// wildcard), so peers and test harnesses see which member a connection comes from.
    local_ip: Option<std::net::IpAddr>,
    cluster_id: u64,
    state: Arc<Mutex<State>>,
    raft: Mutex<Option<RaftTx>>,
    snap_dir: PathBuf,
    rt: tokio::runtime::Handle,
    /// The peer TLS material, for `https://` peer URLs.
    tls: Option<Arc<ReloadingTls>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_id", &self.local_id)
            .finish()
    }
}

/// Splits a snapshot message and its backend file into the chunks of one `Snapshot` call:
/// the message rides in the first, the SHA-256 of the whole file in the last.
fn snapshot_chunks(
    cluster_id: u64,
    m: &Message,
    data: &[u8],
) -> Result<Vec<SnapshotChunk>, String> {
    use sha2::Digest;
    let msg = m.write_to_bytes().map_err(|e| e.to_string())?;
    let mut chunks: Vec<SnapshotChunk> = data
        .chunks(SNAPSHOT_CHUNK)
        .map(|part| SnapshotChunk {
            cluster_id,
            message: Vec::new(),
            data: part.to_vec(),
            sha256: Vec::new(),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(SnapshotChunk {
            cluster_id,
            ..Default::default()
        });
    }
    chunks[0].message = msg;
    if let Some(last) = chunks.last_mut() {
        last.sha256 = sha2::Sha256::digest(data).to_vec();
    }
    Ok(chunks)
}

/// Path of the outgoing snapshot file for `index`.
pub fn outgoing_snapshot(snap_dir: &std::path::Path, index: u64) -> PathBuf {
    snap_dir.join(format!("{index:016x}.out.db"))
}

/// Path of a received snapshot file for `index`.
pub fn incoming_snapshot(snap_dir: &std::path::Path, index: u64) -> PathBuf {
    snap_dir.join(format!("{index:016x}.in.db"))
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends the hello and reads the verdict: `Err` is the peer's refusal.
async fn exchange_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: Hello,
) -> std::io::Result<Result<(), Verdict>> {
    stream.write_all(&hello.encode()).await?;
    stream.flush().await?;
    let mut verdict = [0u8; 1];
    stream.read_exact(&mut verdict).await?;
    match Verdict::from_byte(verdict[0]) {
        Some(Verdict::Accepted) => Ok(Ok(())),
        Some(v) => Ok(Err(v)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a raft stream acceptor",
        )),
    }
}

/// The `host:port` of a peer URL (`http://10.0.0.1:2380/` → `10.0.0.1:2380`).
fn host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hp = rest.split('/').next()?;
    (!hp.is_empty()).then_some(hp)
}

impl Transport {
    /// A transport for member `local_id` of cluster `cluster_id`.
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        local_ip: Option<std::net::IpAddr>,
        snap_dir: PathBuf,
        rt: tokio::runtime::Handle,
        tls: Option<Arc<ReloadingTls>>,
    ) -> Arc<Self> {
        let local_ip = local_ip.filter(|ip| !ip.is_unspecified());
        Arc::new(Self {
            local_id,
            cluster_id,
            local_ip,
            state: Arc::default(),
            raft: Mutex::new(None),
            snap_dir,
            rt,
            tls,
        })
    }

    /// Connects the transport to the Raft driver's input.
    pub fn set_raft(&self, tx: RaftTx) {
        *self.raft.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Lets go of the Raft driver's input, so the driver can stop.
    pub fn close(&self) {
        self.raft.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn report(&self, input: Input) {
        if let Some(tx) = self.raft.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(input);
        }
    }

    /// Makes the peer set equal to `members` (ID → peer URLs), excluding this member, and
    /// records the members removed from the cluster (their streams are refused).
    pub fn set_peers(&self, members: &[(u64, Vec<String>)], removed: &BTreeSet<u64>) {
        let mut reset = Vec::new();
        {
            let mut st = lock(&self.state);
            st.removed = removed.clone();
            let wanted: HashMap<u64, Vec<String>> = members
                .iter()
                .filter(|(id, _)| *id != self.local_id)
                .cloned()
                .collect();
            st.peers.retain(|id, p| {
                let keep = wanted.get(id) == Some(&p.urls);
                if !keep {
                    reset.push(*id);
                }
                keep
            });
            for (id, urls) in wanted {
                if st.peers.contains_key(&id) {
                    continue;
                }
                st.next_generation += 1;
                let generation = st.next_generation;
                st.peers.insert(
                    id,
                    Peer {
                        urls,
                        generation,
                        connected: None,
                        rpc: None,
                    },
                );
            }
        }
        for id in reset {
            self.report(Input::PeerReset(id));
        }
    }

    /// The other members.
    pub fn peer_ids(&self) -> Vec<u64> {
        lock(&self.state).peers.keys().copied().collect()
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed(&self, id: u64) -> bool {
        lock(&self.state).removed.contains(&id)
    }

    /// The current generation of peer `id`'s URLs.
    pub fn generation(&self, id: u64) -> Option<u64> {
        lock(&self.state).peers.get(&id).map(|p| p.generation)
    }

    /// Records whether the outgoing stream to `id` is up (from the Raft thread).
    pub fn set_connected(&self, id: u64, since: Option<Instant>) {
        let labels = [format!("{:x}", self.local_id), format!("{id:x}")];
        let labels = [labels[0].as_str(), labels[1].as_str()];
        let was = lock(&self.state)
            .peers
            .get_mut(&id)
            .map(|p| std::mem::replace(&mut p.connected, since));
        crate::metrics::ACTIVE_PEERS
            .with_label_values(&labels)
            .set(if since.is_some() { 1.0 } else { 0.0 });
        if since.is_none() && was.flatten().is_some() {
            crate::metrics::DISCONNECTED_PEERS
                .with_label_values(&labels)
                .inc();
        }
    }

    /// Members whose outgoing stream has been up since at least `since` ago.
    pub fn active_peers(&self, since: Duration) -> Vec<u64> {
        let st = lock(&self.state);
        st.peers
            .iter()
            .filter(|(_, p)| p.connected.is_some_and(|t| t.elapsed() >= since))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sends a snapshot message with its backend file, reporting the outcome to Raft.
    pub fn send_snapshot(self: &Arc<Self>, m: Message) {
        debug_assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
        let to = m.to;
        let this = self.clone();
        self.rt.spawn(async move {
            let ok = this.snapshot_call(m).await;
            if let Err(e) = &ok {
                tracing::warn!(to = format!("{to:x}"), error = %e, "failed to send snapshot");
            }
            this.report(Input::SnapshotStatus { to, ok: ok.is_ok() });
        });
    }

    /// Opens a Raft stream to `to` in the background; the Raft driver gets
    /// `Input::Connected` or `Input::DialFailed`.
    pub fn dial(self: &Arc<Self>, to: u64) {
        let Some((urls, generation)) = lock(&self.state)
            .peers
            .get(&to)
            .map(|p| (p.urls.clone(), p.generation))
        else {
            self.report(Input::DialFailed { to });
            return;
        };
        let this = self.clone();
        self.rt.spawn(async move {
            match this.open_stream(to, &urls).await {
                Ok(stream) => this.report(Input::Connected {
                    to,
                    generation,
                    stream,
                }),
                Err(e) => {
                    match &e {
                        DialError::Refused(Verdict::Removed) => this.report(Input::Removed),
                        DialError::Refused(Verdict::ClusterMismatch) => tracing::error!(
                            peer = format!("{to:x}"),
                            "peer refused our messages: it belongs to a different cluster"
                        ),
                        _ => tracing::debug!(peer = format!("{to:x}"), error = %e, "failed to open a raft stream"),
                    }
                    this.report(Input::DialFailed { to });
                }
            }
        });
    }

    /// Tries `urls` in turn (every address each resolves to) until one accepts the stream.
    async fn open_stream(&self, to: u64, urls: &[String]) -> Result<RaftStream, DialError> {
        let hello = Hello {
            cluster_id: self.cluster_id,
            from: self.local_id,
            to,
        };
        let timed_out = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
        let mut last = DialError::NoUrl;
        for url in urls {
            let Some(hp) = host_port(url) else {
                continue;
            };
            let tls = if dial::is_https(url) {
                match &self.tls {
                    Some(t) => Some(t.as_ref()),
                    None => {
                        last = DialError::Unreachable {
                            url: url.clone(),
                            reason: dial::ConnectError::NoTls(url.clone()).to_string(),
                        };
                        continue;
                    }
                }
            } else {
                None
            };
            let unreachable = |e: std::io::Error| DialError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            };
            let lookup = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::lookup_host(hp))
                .await
                .unwrap_or_else(|_| Err(timed_out("name lookup timed out")));
            let addrs = match lookup {
                Ok(addrs) => addrs,
                Err(e) => {
                    last = unreachable(e);
                    continue;
                }
            };
            for addr in addrs {
                // A TLS handshake may take a moment longer on a busy member.
                let limit = if tls.is_some() {
                    3 * DIAL_TIMEOUT
                } else {
                    DIAL_TIMEOUT
                };
                let shake = tokio::time::timeout(limit, self.handshake(addr, hp, tls, hello))
                    .await
                    .unwrap_or_else(|_| Err(timed_out("timed out")));
                match shake {
                    Ok(Ok(s)) => return Ok(s),
                    Ok(Err(v)) => return Err(DialError::Refused(v)),
                    Err(e) => last = unreachable(e),
                }
            }
        }
        Err(last)
    }

    /// Connects to `addr` (TLS with `tls`, verifying `host_port`'s host) and exchanges the
    /// hello: the stream, ready for frames, or the peer's refusal.
    async fn handshake(
        &self,
        addr: SocketAddr,
        host_port: &str,
        tls: Option<&ReloadingTls>,
        hello: Hello,
    ) -> std::io::Result<Result<RaftStream, Verdict>> {
        let stream = dial::tcp(addr, self.local_ip).await?;
        socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(wire::USER_TIMEOUT))?;
        let Some(tls) = tls else {
            let mut stream = stream;
            if let Err(v) = exchange_hello(&mut stream, hello).await? {
                return Ok(Err(v));
            }
            return Ok(Ok(RaftStream::plain(stream.into_std()?)));
        };
        let mut stream = dial::tls(tls, PeerUse::Raft, host_port, stream).await?;
        if let Err(v) = exchange_hello(&mut stream, hello).await? {
            return Ok(Err(v));
        }
        let (sock, conn) = stream.into_inner();
        Ok(Ok(RaftStream::from_tokio(sock, conn)?))
    }

    /// A client for request/response calls to peer `id` over a connection shared by all such
    /// calls (one TCP and HTTP/2 handshake per peer, not per call: a follower forwards every
    /// lease keep-alive this way).
    pub async fn rpc_client(&self, id: u64) -> Option<PeerClient<tonic::transport::Channel>> {
        if let Some(c) = lock(&self.state).peers.get(&id).and_then(|p| p.rpc.clone()) {
            return Some(c);
        }
        let urls = lock(&self.state).peers.get(&id).map(|p| p.urls.clone())?;
        let client = self.connect(id).await?;
        // Keep it only if the peer's URLs did not change while connecting.
        if let Some(p) = lock(&self.state)
            .peers
            .get_mut(&id)
            .filter(|p| p.urls == urls)
        {
            p.rpc.get_or_insert_with(|| client.clone());
        }
        Some(client)
    }

    /// A client for peer `id` over a new connection.
    pub async fn connect(&self, id: u64) -> Option<PeerClient<tonic::transport::Channel>> {
        let urls = lock(&self.state).peers.get(&id).map(|p| p.urls.clone())?;
        for url in urls {
            // HTTP/2 keepalives notice a connection that died silently (a partition drops
            // packets without closing anything), so the stream is rebuilt instead of wedging.
            let tune = |ep: tonic::transport::Endpoint| {
                ep.connect_timeout(Duration::from_secs(1))
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
            };
            let dialed = dial::grpc_channel(&url, self.local_ip, self.tls.as_ref(), tune).await;
            if let Ok(ch) = dialed {
                return Some(
                    PeerClient::new(ch)
                        .max_decoding_message_size(64 * 1024 * 1024)
                        .max_encoding_message_size(64 * 1024 * 1024),
                );
            }
        }
        None
    }

    async fn snapshot_call(&self, m: Message) -> Result<(), String> {
        let index = m.get_snapshot().get_metadata().index;
        let path = outgoing_snapshot(&self.snap_dir, index);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        let mut client = self.connect(m.to).await.ok_or("peer unreachable")?;
        let chunks = snapshot_chunks(self.cluster_id, &m, &data)?;
        client
            .snapshot(tokio_stream::iter(chunks))
            .await
            .map_err(|e| e.message().to_owned())?;
        tracing::info!(
            to = format!("{:x}", m.to),
            index,
            bytes = data.len(),
            "sent snapshot"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn peer_urls_give_their_host_and_port() {
        for (url, want) in [
            ("http://127.0.0.1:2380", Some("127.0.0.1:2380")),
            (
                "https://etcd-0.etcd.ns.svc:2380/",
                Some("etcd-0.etcd.ns.svc:2380"),
            ),
            ("http://[::1]:2380", Some("[::1]:2380")),
            ("10.0.0.1:2380", Some("10.0.0.1:2380")),
            ("http://", None),
        ] {
            assert_eq!(host_port(url), want, "{url}");
        }
    }
}
