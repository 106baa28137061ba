//! The fault proxy.

use super::*;

/// One forwarded connection, from member `from` to member `to`.
pub(super) struct Link {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) task: tokio::task::AbortHandle,
    pub(super) stats: Arc<LinkStats>,
}

/// Traffic of one forwarded connection, for diagnostics.
pub(super) struct LinkStats {
    pub(super) accepted_at: Instant,
    pub(super) upstream_connected: AtomicBool,
    /// Bytes from the connecting member to the target member.
    pub(super) forward: AtomicU64,
    /// Bytes back.
    pub(super) backward: AtomicU64,
}

#[derive(Default)]
pub(super) struct ProxyState {
    /// Directed (from, to) pairs whose traffic is dropped.
    pub(super) cut: HashSet<(usize, usize)>,
    /// Live forwarded connections.
    pub(super) links: HashMap<u64, Link>,
    pub(super) next_link: u64,
    /// Connections accepted in total.
    pub(super) accepted: u64,
    /// Connections refused because their pair was cut.
    pub(super) refused: u64,
    /// Live connections torn down by `partition`/`cut`.
    pub(super) torn_down: u64,
    /// Connections from a source address that is no member's (refused).
    pub(super) unknown_source: u64,
    /// Per directed pair: connections accepted (forwarded or refused) and the last time.
    pub(super) pair_accepted: HashMap<(usize, usize), (u64, Instant)>,
    pub(super) created: Option<Instant>,
}

/// Counters of a proxy, for assertions and diagnostics.
#[derive(Debug, Clone, Copy)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Refused because cut.
    pub refused: u64,
    /// Torn down by a cut.
    pub torn_down: u64,
    /// Refused because the source is not a member.
    pub unknown_source: u64,
    /// Live now.
    pub live: usize,
}

/// A fault-injecting TCP proxy: member `i`'s peers reach it at `addrs()[i]` (on 127.0.0.1),
/// and it forwards to member `i`'s real peer listener. The member a connection comes from is
/// identified by its source IP (`127.0.0.{10+j}`). Runs on its own runtime; stops when dropped.
pub struct Proxy {
    rt: Option<tokio::runtime::Runtime>,
    state: Arc<Mutex<ProxyState>>,
    addrs: Vec<SocketAddr>,
}

impl Proxy {
    /// Starts one listener on 127.0.0.1 (free port) per target; `targets[i]` is member `i`'s
    /// real peer address.
    pub fn start(targets: &[SocketAddr]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let state = Arc::new(Mutex::new(ProxyState {
            created: Some(Instant::now()),
            ..ProxyState::default()
        }));
        let n = targets.len();
        let mut addrs = Vec::new();
        for (to, &target) in targets.iter().enumerate() {
            // Bound here, synchronously, so the port is taken before any member starts.
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind proxy");
            l.set_nonblocking(true).expect("nonblocking");
            addrs.push(l.local_addr().expect("proxy addr"));
            let state = state.clone();
            rt.spawn(async move {
                let l = TcpListener::from_std(l).expect("tokio listener");
                accept_loop(l, to, target, n, state).await;
            });
        }
        Self {
            rt: Some(rt),
            state,
            addrs,
        }
    }

    /// The proxy address for member `i` (what the member advertises to its peers).
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Drops traffic from `from` to `to` (one direction): refuses new connections and tears
    /// down live ones.
    pub fn cut(&self, from: usize, to: usize) {
        let mut st = lock(&self.state);
        st.cut.insert((from, to));
        Self::enforce(&mut st);
    }

    /// Cuts every link between `a` and `b`, both directions.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let mut st = lock(&self.state);
        for &x in a {
            for &y in b {
                if x != y {
                    st.cut.insert((x, y));
                    st.cut.insert((y, x));
                }
            }
        }
        Self::enforce(&mut st);
    }

    /// Cuts member `i` off from all the others.
    pub fn isolate(&self, i: usize) {
        let others: Vec<usize> = (0..self.addrs.len()).filter(|&j| j != i).collect();
        self.partition(&[i], &others);
    }

    /// Restores every link.
    pub fn heal(&self) {
        lock(&self.state).cut.clear();
    }

    /// The currently cut (from, to) pairs.
    pub fn cuts(&self) -> HashSet<(usize, usize)> {
        lock(&self.state).cut.clone()
    }

    /// Counters.
    pub fn stats(&self) -> ProxyStats {
        let st = lock(&self.state);
        ProxyStats {
            accepted: st.accepted,
            refused: st.refused,
            torn_down: st.torn_down,
            unknown_source: st.unknown_source,
            live: st.links.values().filter(|l| !l.task.is_finished()).count(),
        }
    }

    /// A description of the proxy's state: cuts, live links and their traffic, per-pair
    /// connection counts (for failure messages).
    pub fn describe(&self) -> String {
        let st = lock(&self.state);
        let t0 = st.created.unwrap_or_else(Instant::now);
        let mut out = format!("proxy cuts: {:?}\n", st.cut);
        let mut links: Vec<_> = st
            .links
            .values()
            .filter(|l| !l.task.is_finished())
            .collect();
        links.sort_by_key(|l| (l.from, l.to, l.stats.accepted_at));
        for l in links {
            out.push_str(&format!(
                "  live link m{} -> m{}: accepted at +{:?}, upstream connected: {}, bytes forward {} / back {}\n",
                l.from,
                l.to,
                l.stats.accepted_at.duration_since(t0),
                l.stats.upstream_connected.load(Ordering::Relaxed),
                l.stats.forward.load(Ordering::Relaxed),
                l.stats.backward.load(Ordering::Relaxed),
            ));
        }
        let mut pairs: Vec<_> = st.pair_accepted.iter().collect();
        pairs.sort_by_key(|(k, _)| **k);
        for ((f, t), (n, last)) in pairs {
            out.push_str(&format!(
                "  m{f} -> m{t}: {n} connections, last accepted at +{:?}\n",
                last.duration_since(t0)
            ));
        }
        out.push_str(&format!("  now: +{:?}\n", t0.elapsed()));
        out
    }

    /// Directed pairs (from, to) with no live forwarded connection right now.
    pub fn unlinked_pairs(&self) -> Vec<(usize, usize)> {
        let st = lock(&self.state);
        let n = self.addrs.len();
        let mut out = Vec::new();
        for f in 0..n {
            for t in 0..n {
                if f != t
                    && !st
                        .links
                        .values()
                        .any(|l| l.from == f && l.to == t && !l.task.is_finished())
                {
                    out.push((f, t));
                }
            }
        }
        out
    }

    pub(super) fn enforce(st: &mut ProxyState) {
        let doomed: Vec<u64> = st
            .links
            .iter()
            .filter(|(_, l)| st.cut.contains(&(l.from, l.to)))
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            if let Some(l) = st.links.remove(&id) {
                if !l.task.is_finished() {
                    st.torn_down += 1;
                }
                l.task.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Aborts every task (closing listeners and connections) without blocking, which
            // is allowed even inside an async test.
            rt.shutdown_background();
        }
    }
}

pub(super) async fn accept_loop(
    l: TcpListener,
    to: usize,
    target: SocketAddr,
    n: usize,
    state: Arc<Mutex<ProxyState>>,
) {
    // Runs until the proxy's runtime shuts down.
    loop {
        let (conn, src) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut st = lock(&state);
        st.accepted += 1;
        st.links.retain(|_, l| !l.task.is_finished());
        let Some(from) = member_of(src.ip(), n) else {
            st.unknown_source += 1;
            drop(conn);
            continue;
        };
        let pair = st
            .pair_accepted
            .entry((from, to))
            .or_insert((0, Instant::now()));
        pair.0 += 1;
        pair.1 = Instant::now();
        if st.cut.contains(&(from, to)) {
            st.refused += 1;
            drop(conn);
            continue;
        }
        // Spawned and registered under the lock, so a concurrent `partition` sees it.
        let stats = Arc::new(LinkStats {
            accepted_at: Instant::now(),
            upstream_connected: AtomicBool::new(false),
            forward: AtomicU64::new(0),
            backward: AtomicU64::new(0),
        });
        let task = tokio::spawn(forward(conn, target, stats.clone())).abort_handle();
        let id = st.next_link;
        st.next_link += 1;
        st.links.insert(
            id,
            Link {
                from,
                to,
                task,
                stats,
            },
        );
    }
}

pub(super) async fn forward(mut conn: TcpStream, target: SocketAddr, stats: Arc<LinkStats>) {
    let _ = conn.set_nodelay(true);
    let Ok(Ok(mut upstream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    stats.upstream_connected.store(true, Ordering::Relaxed);
    let (mut cr, mut cw) = conn.split();
    let (mut ur, mut uw) = upstream.split();
    // Ends at the first error (the other direction is dropped with it); a clean EOF is passed
    // on as a write shutdown while the other direction carries on.
    let _ = tokio::try_join!(
        pump(&mut cr, &mut uw, &stats.forward),
        pump(&mut ur, &mut cw, &stats.backward)
    );
}

pub(super) async fn pump<R, W>(r: &mut R, w: &mut W, bytes: &AtomicU64) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What a member reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its member ID.
    pub id: u64,
    /// The leader it knows (0 for none).
    pub leader: u64,
    /// Its Raft term.
    pub term: u64,
    /// Its Raft index.
    pub index: u64,
}

/// Connects a client to one endpoint with the given per-request timeout.
pub async fn connect(
    endpoint: &str,
    timeout: Duration,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(timeout);
    match tokio::time::timeout(
        timeout + Duration::from_secs(1),
        etcd_client::Client::connect([endpoint], Some(opts)),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(etcd_client::Error::Internal(
            "client timeout: connect".into(),
        )),
    }
}
