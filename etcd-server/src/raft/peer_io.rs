//! The Raft thread's own I/O: its input queue and the Raft streams to and from peers, all
//! waited on in one `mio` poll, so a Raft message goes from raft-rs to the kernel, and from
//! the kernel to raft-rs, without waking any other thread.
//!
//! Outgoing messages are framed into a per-peer buffer and written right away; what the
//! socket does not take waits for it to become writable. Streams are dialed and their hellos
//! exchanged on the Tokio runtime ([`Transport::dial`]), then handed over as plain sockets.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use raft::eraftpb::Message;

use super::Input;
use super::input::{RaftRx, Shared, WAKE};
use super::stream::{RaftStream, Stream};
use super::transport::Transport;
use super::wire::{self, Verdict};

/// Inputs taken per loop turn, so sockets and ticks keep their turn under a flood.
const BATCH: usize = 8192;
/// Bytes buffered for one peer before further messages are dropped (Raft resends them).
const MAX_BUFFERED: usize = 64 * 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A stream that lived shorter than this counts as a failed dial (back-off keeps growing).
const STABLE: Duration = Duration::from_secs(1);
/// Written bytes kept at the front of a buffer that never drains (a peer catching up over a
/// full socket) before they are dropped from it.
const COMPACT_AFTER: usize = 1024 * 1024;

/// An incoming stream.
struct Incoming {
    stream: Stream,
    from: u64,
    buf: Vec<u8>,
    last_read: Instant,
    /// `etcd_network_peer_received_bytes_total` for `from`.
    received: prometheus::IntCounter,
}

/// The outgoing stream to one peer and what waits to go out on it.
struct Outgoing {
    conn: Option<(Token, Stream)>,
    /// When `conn` was established.
    since: Option<Instant>,
    /// Framed messages; `buf[sent..]` is not written yet.
    buf: Vec<u8>,
    sent: usize,
    /// When the socket last took bytes, or when bytes started waiting for it: with nothing
    /// pending, how long the stream has been idle (keep-alives); with bytes pending, how long
    /// the peer has taken none of them (the write timeout).
    last_progress: Instant,
    /// `etcd_network_peer_sent_bytes_total` for this peer.
    sent_bytes: Option<prometheus::IntCounter>,
    dialing: bool,
    next_dial: Instant,
    backoff: Duration,
    /// When a dial from the peer last cut our backoff short (at most once per [`STABLE`], so
    /// two members whose streams both die at once still back off).
    hurried: Option<Instant>,
}

impl Outgoing {
    fn new(now: Instant) -> Self {
        Self {
            conn: None,
            since: None,
            buf: Vec::new(),
            sent: 0,
            last_progress: now,
            sent_bytes: None,
            dialing: false,
            next_dial: now,
            backoff: MIN_BACKOFF,
            hurried: None,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// The buffer to append frames to; starts the stall clock if nothing was waiting.
    fn append(&mut self, now: Instant) -> &mut Vec<u8> {
        if self.pending() == 0 {
            self.last_progress = now;
        }
        &mut self.buf
    }

    fn discard(&mut self) {
        self.buf.clear();
        self.sent = 0;
    }
}

/// The driver's sockets and input queue.
pub struct PeerIo {
    rx: Receiver<Input>,
    poll: Poll,
    events: Events,
    shared: Arc<Shared>,
    transport: Arc<Transport>,
    out: HashMap<u64, Outgoing>,
    /// Which peer an outgoing stream's token belongs to.
    out_tokens: HashMap<Token, u64>,
    incoming: HashMap<Token, Incoming>,
    next_token: usize,
    scratch: Vec<u8>,
    /// Inputs the sockets produced (messages read, streams lost), for the next turn.
    generated: Vec<Input>,
}

impl PeerIo {
    /// The I/O side of a driver sending through `transport`.
    pub fn new(rx: RaftRx, transport: Arc<Transport>) -> Self {
        Self {
            rx: rx.rx,
            poll: rx.poll,
            events: Events::with_capacity(256),
            shared: rx.shared,
            transport,
            out: HashMap::new(),
            out_tokens: HashMap::new(),
            incoming: HashMap::new(),
            next_token: 0,
            scratch: vec![0; 64 * 1024],
            generated: Vec::new(),
        }
    }

    fn token(&mut self) -> Token {
        self.next_token = (self.next_token + 1) % (usize::MAX - 1);
        Token(self.next_token)
    }

    /// Waits up to `timeout` for inputs or socket events and puts what came into `out`:
    /// queued inputs, messages read from peers as `Input::Step`, lost streams and dropped
    /// messages as `Input::Unreachable`.
    /// Returns false once every sender is gone and the queue is empty.
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<Input>) -> bool {
        self.shared.parked.store(true, Ordering::SeqCst);
        let (first, timeout) = match self.rx.try_recv() {
            Ok(input) => (Some(input), Duration::ZERO),
            Err(TryRecvError::Empty) if !self.generated.is_empty() => (None, Duration::ZERO),
            Err(TryRecvError::Empty) => (None, timeout),
            Err(TryRecvError::Disconnected) => return false,
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout))
            && e.kind() != ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "failed to poll raft sockets");
        }
        self.shared.parked.store(false, Ordering::SeqCst);
        let ready: Vec<(Token, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable() || e.is_write_closed() || e.is_error(),
                )
            })
            .collect();
        for (token, readable, writable) in ready {
            if token == WAKE {
                continue;
            }
            if let Some(&to) = self.out_tokens.get(&token) {
                if readable {
                    self.read_outgoing(to);
                }
                if writable {
                    self.flush(to);
                }
            } else if readable {
                self.read_incoming(token);
            }
        }
        out.append(&mut self.generated);
        out.extend(first);
        out.extend(self.rx.try_iter().take(BATCH));
        true
    }

    /// Frames `msgs` for their peers and writes them out.
    pub fn send(&mut self, msgs: Vec<Message>) {
        let now = Instant::now();
        let mut touched: Vec<u64> = Vec::new();
        for m in msgs {
            let to = m.to;
            let o = self.out.entry(to).or_insert_with(|| Outgoing::new(now));
            if o.pending() > MAX_BUFFERED {
                self.generated.push(Input::Unreachable(to));
                continue;
            }
            wire::put_frame(o.append(now), &m);
            if !touched.contains(&to) {
                touched.push(to);
            }
        }
        for to in touched {
            if self.out.get(&to).is_some_and(|o| o.conn.is_some()) {
                self.flush(to);
            } else {
                self.maybe_dial(to, now);
            }
        }
    }

    fn maybe_dial(&mut self, to: u64, now: Instant) {
        let Some(o) = self.out.get_mut(&to) else {
            return;
        };
        if o.conn.is_none() && !o.dialing && now >= o.next_dial {
            o.dialing = true;
            self.transport.dial(to);
        }
    }

    /// Periodic upkeep: dial peers without a stream, send keep-alives on idle streams and
    /// close incoming streams that went silent.
    pub fn maintain(&mut self) {
        let now = Instant::now();
        let peers = self.transport.peer_ids();
        // Entries Raft created for members that have left (or not joined yet, a dial having
        // failed): nothing to keep.
        self.out
            .retain(|id, o| peers.contains(id) || o.conn.is_some() || o.dialing);
        for &to in &peers {
            self.out.entry(to).or_insert_with(|| Outgoing::new(now));
            self.maybe_dial(to, now);
        }
        // Idle streams get a keep-alive. A peer that stopped reading (its process frozen, or
        // a middlebox that swallows data) leaves the kernel buffers full: its stream is
        // dropped after etcd's write timeout, as etcd's stream writers do, so the peer stops
        // counting as active. (peer, stalled)
        let due: Vec<(u64, bool)> = self
            .out
            .iter()
            .filter(|(_, o)| o.conn.is_some())
            .filter_map(|(id, o)| {
                let quiet = now - o.last_progress;
                // Encrypted bytes still waiting count as pending: a peer that stopped
                // reading is found as soon as with a plain stream.
                let tls_waiting = o.conn.as_ref().is_some_and(|(_, s)| s.has_pending_tls());
                match (o.pending(), tls_waiting) {
                    (0, false) if quiet >= wire::KEEPALIVE => Some((*id, false)),
                    (0, false) => None,
                    _ => (quiet >= wire::USER_TIMEOUT).then_some((*id, true)),
                }
            })
            .collect();
        for (to, stalled) in due {
            if stalled {
                tracing::warn!(
                    peer = format!("{to:x}"),
                    "dropping the raft stream to a peer that stopped reading it"
                );
                self.drop_outgoing(to);
            } else if let Some(o) = self.out.get_mut(&to) {
                wire::put_keepalive(o.append(now));
                self.flush(to);
            }
        }
        let silent: Vec<Token> = self
            .incoming
            .iter()
            .filter(|(_, c)| now - c.last_read >= wire::IDLE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in silent {
            if let Some(c) = self.incoming.remove(&t) {
                tracing::debug!(
                    from = format!("{:x}", c.from),
                    "closed a silent incoming raft stream"
                );
                self.close(c.stream);
            }
        }
    }

    /// Takes over an incoming stream whose hello was accepted.
    pub fn accepted(&mut self, from: u64, stream: RaftStream) {
        let mut stream = Stream::new(stream);
        let token = self.token();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream.sock, token, Interest::READABLE)
        {
            tracing::warn!(error = %e, "failed to watch an incoming raft stream");
            return;
        }
        self.incoming.insert(
            token,
            Incoming {
                stream,
                from,
                buf: Vec::new(),
                last_read: Instant::now(),
                received: crate::metrics::PEER_RECEIVED_BYTES
                    .with_label_values(&[&format!("{from:x}")]),
            },
        );
        if self
            .incoming
            .get(&token)
            .is_some_and(|c| c.stream.may_hold_input())
        {
            self.read_incoming(token);
        }
        // A peer that dials us is up. If our own stream to it is down and waiting out a
        // backoff (it was down a while: up to MAX_BACKOFF), dial now: a restarted member
        // otherwise waited that long for the leader's first message.
        let now = Instant::now();
        if let Some(o) = self.out.get_mut(&from)
            && o.conn.is_none()
            && !o.dialing
            && o.hurried.is_none_or(|t| now - t >= STABLE)
        {
            o.hurried = Some(now);
            o.backoff = MIN_BACKOFF;
            o.next_dial = now;
        }
        self.maybe_dial(from, now);
    }

    /// Takes over the outgoing stream dialed to `to` with the URLs of `generation`, if it is
    /// still wanted.
    pub fn connected(&mut self, to: u64, generation: u64, stream: RaftStream) {
        if self.transport.generation(to) != Some(generation) {
            // Dialed to URLs the peer no longer has.
            self.dial_failed(to);
            return;
        }
        let now = Instant::now();
        let token = self.token();
        let o = self.out.entry(to).or_insert_with(|| Outgoing::new(now));
        o.dialing = false;
        if o.conn.is_some() {
            return;
        }
        let mut stream = Stream::new(stream);
        if let Err(e) = self.poll.registry().register(
            &mut stream.sock,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "failed to watch an outgoing raft stream");
            o.next_dial = now + o.backoff;
            return;
        }
        o.conn = Some((token, stream));
        o.since = Some(now);
        o.last_progress = now;
        self.out_tokens.insert(token, to);
        self.transport.set_connected(to, Some(now));
        tracing::debug!(peer = format!("{to:x}"), "raft stream connected");
        // Bytes the handshake left inside a TLS connection raise no readiness event.
        if self
            .out
            .get(&to)
            .and_then(|o| o.conn.as_ref())
            .is_some_and(|(_, s)| s.may_hold_input())
        {
            self.read_outgoing(to);
        }
        self.flush(to);
    }

    /// A dial to `to` failed: drop what waited for it and try again later.
    pub fn dial_failed(&mut self, to: u64) {
        let now = Instant::now();
        let o = self.out.entry(to).or_insert_with(|| Outgoing::new(now));
        o.dialing = false;
        o.next_dial = now + o.backoff;
        o.backoff = (o.backoff * 2).min(MAX_BACKOFF);
        if o.pending() > 0 {
            o.discard();
            self.generated.push(Input::Unreachable(to));
        }
    }

    /// The peer's URLs changed or it left: drop its stream; the next one dials anew.
    pub fn reset(&mut self, to: u64) {
        self.drop_outgoing(to);
        self.out.remove(&to);
    }

    fn drop_outgoing(&mut self, to: u64) {
        let Some(o) = self.out.get_mut(&to) else {
            return;
        };
        let Some((token, stream)) = o.conn.take() else {
            return;
        };
        o.discard();
        let now = Instant::now();
        // A stream that died right away (a peer that accepts the hello and then drops it)
        // counts as a failed dial: keep backing off.
        if o.since.take().is_some_and(|t| now - t >= STABLE) {
            o.backoff = MIN_BACKOFF;
        }
        o.next_dial = now + o.backoff;
        o.backoff = (o.backoff * 2).min(MAX_BACKOFF);
        self.out_tokens.remove(&token);
        self.transport.set_connected(to, None);
        self.close(stream);
        tracing::debug!(peer = format!("{to:x}"), "raft stream lost");
        self.generated.push(Input::Unreachable(to));
    }

    fn close(&self, mut stream: Stream) {
        let _ = self.poll.registry().deregister(&mut stream.sock);
    }

    /// Writes what waits for `to` until done or the socket is full.
    fn flush(&mut self, to: u64) {
        let Some(o) = self.out.get_mut(&to) else {
            return;
        };
        let Some((_, stream)) = o.conn.as_mut() else {
            return;
        };
        let mut failed = false;
        // TLS records of bytes taken earlier go first.
        match stream.flush_tls() {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(peer = format!("{to:x}"), error = %e, "failed to write to a raft stream");
                failed = true;
            }
        }
        while !failed && o.sent < o.buf.len() {
            match stream.write(&o.buf[o.sent..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    o.sent += n;
                    o.last_progress = Instant::now();
                    o.sent_bytes
                        .get_or_insert_with(|| {
                            crate::metrics::PEER_SENT_BYTES.with_label_values(&[&format!("{to:x}")])
                        })
                        .inc_by(n as u64);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(peer = format!("{to:x}"), error = %e, "failed to write to a raft stream");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            self.drop_outgoing(to);
            return;
        }
        if o.sent == o.buf.len() {
            o.discard();
            // A buffer grown by a burst (a snapshot's worth of appends) is not kept around.
            if o.buf.capacity() > COMPACT_AFTER {
                o.buf = Vec::new();
            }
        } else if o.sent > COMPACT_AFTER && o.sent * 2 > o.buf.len() {
            o.buf.drain(..o.sent);
            o.sent = 0;
        }
    }

    /// The acceptor only writes to an outgoing stream to say the sender was removed; an end
    /// of stream means the peer closed it.
    fn read_outgoing(&mut self, to: u64) {
        let Some((_, stream)) = self.out.get_mut(&to).and_then(|o| o.conn.as_mut()) else {
            return;
        };
        let mut byte = [0u8; 1];
        let lost = match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => {
                if Verdict::from_byte(byte[0]) == Some(Verdict::Removed) {
                    self.generated.push(Input::Removed);
                }
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                false
            }
            Err(_) => true,
        };
        if lost {
            self.drop_outgoing(to);
        }
    }

    fn read_incoming(&mut self, token: Token) {
        let Some(c) = self.incoming.get_mut(&token) else {
            return;
        };
        let mut closed = false;
        loop {
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&self.scratch[..n]);
                    c.received.inc_by(n as u64);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        c.last_read = Instant::now();
        let mut msgs = Vec::new();
        if let Err(e) = wire::take_frames(&mut c.buf, &mut msgs) {
            tracing::warn!(from = format!("{:x}", c.from), error = %e, "closing a raft stream");
            closed = true;
        }
        if !msgs.is_empty() && self.transport.is_removed(c.from) {
            // Removed after its stream was accepted: tell it, so it stops.
            let _ = c.stream.write(&[Verdict::Removed as u8]);
            msgs.clear();
            closed = true;
        }
        self.generated
            .extend(msgs.into_iter().map(|m| Input::Step(Box::new(m))));
        if closed && let Some(c) = self.incoming.remove(&token) {
            self.close(c.stream);
        }
    }
}
