//! The peer transport: Raft messages to and from other members over gRPC (`peerpb.Peer`).
//!
//! Each peer gets a task holding one client-streaming `Send` call; while the call is open,
//! messages go straight into its bounded stream, otherwise they queue for the task until it
//! connects. They are dropped (and the peer reported unreachable) when the queue is full or
//! the peer is down — Raft retransmits. Snapshot messages travel on their own `Snapshot` call
//! together with the backend file they refer to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender as StdSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Input;
use crate::proto::peerpb::{RaftEnvelope, SnapshotChunk, peer_client::PeerClient};

const QUEUE: usize = 4096;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
const SNAPSHOT_CHUNK: usize = 512 * 1024;

struct Peer {
    urls: Vec<String>,
    tx: mpsc::Sender<RaftEnvelope>,
    task: tokio::task::JoinHandle<()>,
    /// The open `Send` stream and when it was established, if any: messages go straight into
    /// it, without a hop through the peer's task (each hop is a task wake-up on the
    /// replication path).
    stream: Option<(mpsc::Sender<RaftEnvelope>, Instant)>,
    /// The shared connection for request/response calls (forwarded lease renewals, member
    /// queries), kept open: tonic reconnects it when it breaks.
    rpc: Option<PeerClient<tonic::transport::Channel>>,
}

#[derive(Default)]
struct State {
    peers: HashMap<u64, Peer>,
}

/// Sends Raft messages to peers.
pub struct Transport {
    local_id: u64,
    /// Source address for outgoing peer connections (the peer listener's IP, unless it is a
    /// wildcard), so peers and test harnesses see which member a connection comes from.
    local_ip: Option<std::net::IpAddr>,
    cluster_id: u64,
    state: Arc<Mutex<State>>,
    raft: Mutex<Option<StdSender<Input>>>,
    snap_dir: PathBuf,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_id", &self.local_id)
            .finish()
    }
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

impl Transport {
    /// A transport for member `local_id` of cluster `cluster_id`.
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        local_ip: Option<std::net::IpAddr>,
        snap_dir: PathBuf,
        rt: tokio::runtime::Handle,
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
        })
    }

    /// Connects the transport to the Raft driver's input (for unreachable/snapshot reports).
    pub fn set_raft(&self, tx: StdSender<Input>) {
        *self.raft.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Stops every peer task and lets go of the Raft driver's input, so the driver can stop.
    pub fn close(&self) {
        self.raft.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut st = lock(&self.state);
        for (_, p) in st.peers.drain() {
            p.task.abort();
        }
    }

    fn report(&self, input: Input) {
        if let Some(tx) = self.raft.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(input);
        }
    }

    /// Makes the peer set equal to `members` (ID → peer URLs), excluding this member.
    pub fn set_peers(self: &Arc<Self>, members: &[(u64, Vec<String>)]) {
        let mut st = lock(&self.state);
        let wanted: HashMap<u64, Vec<String>> = members
            .iter()
            .filter(|(id, _)| *id != self.local_id)
            .cloned()
            .collect();
        let stale: Vec<u64> = st
            .peers
            .iter()
            .filter(|(id, p)| wanted.get(id) != Some(&p.urls))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(p) = st.peers.remove(&id) {
                p.task.abort();
            }
        }
        for (id, urls) in wanted {
            if st.peers.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let this = self.clone();
            let task = self.rt.spawn(this.clone().peer_loop(id, urls.clone(), rx));
            st.peers.insert(
                id,
                Peer {
                    urls,
                    tx,
                    task,
                    stream: None,
                    rpc: None,
                },
            );
        }
    }

    /// Members whose outgoing stream has been up since at least `since` ago.
    pub fn active_peers(&self, since: Duration) -> Vec<u64> {
        let st = lock(&self.state);
        st.peers
            .iter()
            .filter(|(_, p)| p.stream.as_ref().is_some_and(|(_, t)| t.elapsed() >= since))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Queues messages for their peers; never blocks.
    pub fn send(self: &Arc<Self>, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let this = self.clone();
                self.rt.spawn(async move {
                    let ok = this.send_snapshot(m).await;
                    if let Err(e) = &ok {
                        tracing::warn!(to = format!("{to:x}"), error = %e, "failed to send snapshot");
                    }
                    this.report(Input::SnapshotStatus { to, ok: ok.is_ok() });
                });
                continue;
            }
            let env = RaftEnvelope {
                cluster_id: self.cluster_id,
                from: self.local_id,
                message: m.write_to_bytes().unwrap_or_default(),
            };
            let full = {
                let st = lock(&self.state);
                match st.peers.get(&to) {
                    Some(p) => match &p.stream {
                        Some((stream, _)) => stream.try_send(env).is_err(),
                        // Not connected yet: the peer's task forwards it once it is.
                        None => p.tx.try_send(env).is_err(),
                    },
                    None => true,
                }
            };
            if full {
                self.report(Input::Unreachable(to));
            }
        }
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
            let Ok(ep) = tonic::transport::Endpoint::from_shared(url) else {
                continue;
            };
            // HTTP/2 keepalives notice a connection that died silently (a partition drops
            // packets without closing anything), so the stream is rebuilt instead of wedging.
            let ep = ep
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .local_address(self.local_ip);
            if let Ok(ch) = ep.connect().await {
                return Some(
                    PeerClient::new(ch)
                        .max_decoding_message_size(64 * 1024 * 1024)
                        .max_encoding_message_size(64 * 1024 * 1024),
                );
            }
        }
        None
    }

    async fn peer_loop(
        self: Arc<Self>,
        id: u64,
        _urls: Vec<String>,
        mut rx: mpsc::Receiver<RaftEnvelope>,
    ) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let Some(mut client) = self.connect(id).await else {
                // Down: drop what is queued (Raft will resend) and tell Raft.
                while rx.try_recv().is_ok() {}
                self.report(Input::Unreachable(id));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            let (ctx, crx) = mpsc::channel(QUEUE);
            let call = client.send(ReceiverStream::new(crx));
            tokio::pin!(call);
            let opened = Instant::now();
            {
                if let Some(p) = lock(&self.state).peers.get_mut(&id) {
                    p.stream = Some((ctx.clone(), opened));
                }
            }
            loop {
                tokio::select! {
                    res = &mut call => {
                        match res {
                            Err(e) if e.code() == tonic::Code::PermissionDenied
                                && e.message() == crate::membership::REMOVED_MESSAGE =>
                            {
                                self.report(Input::Removed);
                            }
                            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                                tracing::error!(peer = format!("{id:x}"), error = %e.message(), "peer refused our messages: it belongs to a different cluster");
                            }
                            Err(e) => tracing::debug!(peer = format!("{id:x}"), error = %e, "peer stream ended"),
                            Ok(_) => {}
                        }
                        break;
                    }
                    msg = rx.recv() => match msg {
                        None => return,
                        // Never wait here: `call` must keep being polled, or a stalled
                        // connection would wedge this loop for good. A full stream drops the
                        // message and Raft resends.
                        Some(m) => match ctx.try_send(m) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => self.report(Input::Unreachable(id)),
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        },
                    }
                }
            }
            {
                if let Some(p) = lock(&self.state).peers.get_mut(&id) {
                    p.stream = None;
                }
            }
            self.report(Input::Unreachable(id));
            // A stream that died right away counts as a failed attempt: keep backing off.
            if opened.elapsed() > Duration::from_secs(1) {
                backoff = MIN_BACKOFF;
            } else {
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn send_snapshot(&self, m: Message) -> Result<(), String> {
        let index = m.get_snapshot().get_metadata().index;
        let path = outgoing_snapshot(&self.snap_dir, index);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        let mut client = self.connect(m.to).await.ok_or("peer unreachable")?;
        let mut chunks = Vec::new();
        let msg = m.write_to_bytes().map_err(|e| e.to_string())?;
        let mut first = true;
        for part in data.chunks(SNAPSHOT_CHUNK) {
            chunks.push(SnapshotChunk {
                cluster_id: self.cluster_id,
                message: if first { msg.clone() } else { Vec::new() },
                data: part.to_vec(),
            });
            first = false;
        }
        if chunks.is_empty() {
            chunks.push(SnapshotChunk {
                cluster_id: self.cluster_id,
                message: msg,
                data: Vec::new(),
            });
        }
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
