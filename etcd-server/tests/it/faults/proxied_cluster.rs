//! The proxied cluster.

use super::*;

/// A cluster of our servers whose peer traffic all goes through a `Proxy`. Member `i` listens
/// for peers and clients on `127.0.0.{10+i}` and advertises its proxy address to peers.
pub struct ProxiedCluster {
    /// The members (dropped first, which kills them).
    pub members: Vec<Proc>,
    /// The proxy in front of every member's peer port.
    pub proxy: Proxy,
    /// Member IDs, by index.
    pub ids: Vec<u64>,
    /// Logs of earlier runs of each member (a restart truncates the log file).
    pub old_logs: Vec<String>,
    /// Parent of the data dirs (dropped last).
    pub dir: tempfile::TempDir,
}

impl ProxiedCluster {
    /// Starts `n` members with `extra` flags and waits until every one serves. Blocking: call it
    /// from `spawn_blocking`.
    pub fn start(n: usize, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let real: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::new(IpAddr::V4(member_ip(i)), free_port_on(member_ip(i))))
            .collect();
        let proxy = Proxy::start(&real);
        let advertised: Vec<String> = (0..n)
            .map(|i| format!("http://{}", proxy.addr(i)))
            .collect();
        let initial = (0..n)
            .map(|i| format!("m{i}={}", advertised[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Proc> = (0..n)
            .map(|i| {
                Proc::launch(
                    Kind::Ours,
                    Spec {
                        name: format!("m{i}"),
                        client_url: format!(
                            "http://{}:{}",
                            member_ip(i),
                            free_port_on(member_ip(i))
                        ),
                        peer_url: format!("http://{}", real[i]),
                        advertise_peer_url: advertised[i].clone(),
                        initial_cluster: initial.clone(),
                        initial_cluster_state: "new".into(),
                        data_dir: dir.path().join(format!("m{i}")),
                        extra: extra.iter().map(|s| s.to_string()).collect(),
                    },
                )
            })
            .collect();
        for m in &mut members {
            m.wait_ready(Duration::from_secs(30));
        }
        let mut this = Self {
            members,
            proxy,
            ids: vec![0; n],
            old_logs: vec![String::new(); n],
            dir,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        for i in 0..n {
            let st = rt
                .block_on(this.status(i))
                .unwrap_or_else(|| panic!("status of m{i}"));
            this.ids[i] = st.id;
        }
        let stats = this.proxy.stats();
        assert_eq!(
            stats.unknown_source, 0,
            "peer connections not from a member IP (source binding broken?)"
        );
        assert!(stats.accepted > 0, "no peer traffic went through the proxy");
        this
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s client endpoint (no scheme).
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint()
    }

    /// All client endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }

    /// A client of member `i` only, with a per-request timeout.
    pub async fn client(&self, i: usize, timeout: Duration) -> etcd_client::Client {
        connect(&self.endpoint(i), timeout).await.expect("connect")
    }

    /// Index of the member with ID `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|&x| x == id && id != 0)
    }

    /// Member `i`'s status, or `None` if it does not answer within about a second.
    pub async fn status(&self, i: usize) -> Option<MemberStatus> {
        let mut c = connect(&self.endpoint(i), Duration::from_secs(1))
            .await
            .ok()?;
        let s = tokio::time::timeout(Duration::from_millis(1500), c.status())
            .await
            .ok()?
            .ok()?;
        Some(MemberStatus {
            id: s.header().map(|h| h.member_id()).unwrap_or(0),
            leader: s.leader(),
            term: s.raft_term(),
            index: s.raft_index(),
        })
    }

    /// The leader that every running member of `set` agrees on (it must be in `set`), if any.
    pub async fn agreed_leader(&mut self, set: &[usize]) -> Option<usize> {
        let mut leader = None;
        for &i in set {
            if !self.members[i].is_running() {
                continue;
            }
            let st = self.status(i).await?;
            if st.leader == 0 {
                return None;
            }
            match leader {
                None => leader = Some(st.leader),
                Some(l) if l != st.leader => return None,
                _ => {}
            }
        }
        let idx = self.index_of(leader?)?;
        set.contains(&idx).then_some(idx)
    }

    /// Waits (bounded) until the running members of `set` agree on a leader in `set`.
    pub async fn wait_leader(&mut self, set: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader(set).await {
                return l;
            }
            if Instant::now() > deadline {
                let mut seen = Vec::new();
                for i in 0..self.len() {
                    seen.push((i, self.status(i).await));
                }
                let saved = self.save_logs("wait-leader");
                panic!(
                    "members {set:?} agree on no leader within {timeout:?}: {seen:?} (logs saved: {saved:?})\n{}{}",
                    self.proxy.describe(),
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The member that claims leadership with the highest term, if any (a quick guess, for the
    /// nemesis: an isolated old leader may still claim it for a moment).
    pub async fn claimed_leader(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.len() {
            if !self.members[i].is_running() {
                continue;
            }
            if let Some(st) = self.status(i).await
                && st.leader == st.id
                && best.is_none_or(|(t, _)| st.term > t)
            {
                best = Some((st.term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Restarts member `i` if it is not running, without waiting for it to serve.
    pub fn restart(&mut self, i: usize) {
        if self.members[i].is_running() {
            return;
        }
        let log = self.members[i].log();
        self.old_logs[i].push_str(&log);
        self.old_logs[i].push_str("\n----- restarted (SIGKILL) -----\n");
        self.members[i].spawn_no_wait();
    }

    /// Member `i`'s whole log, across restarts.
    pub fn full_log(&self, i: usize) -> String {
        format!("{}{}", self.old_logs[i], self.members[i].log())
    }

    /// The last `lines` lines of every member's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            let log = self.full_log(i);
            let all: Vec<&str> = log.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "===== m{i} ({:x}) log, last {lines} lines =====\n",
                self.ids[i]
            ));
            for l in &all[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Writes every member's full log to `$FAULT_LOG_DIR` (if set) and returns where they went.
    pub fn save_logs(&self, tag: &str) -> Option<String> {
        let dir = std::env::var("FAULT_LOG_DIR").ok()?;
        let _ = std::fs::create_dir_all(&dir);
        for i in 0..self.len() {
            let _ = std::fs::write(format!("{dir}/{tag}-m{i}.log"), self.full_log(i));
        }
        Some(dir)
    }

    /// Waits (bounded) until every member serves a linearizable read and all of them are at the
    /// same revision with the same HashKV; returns (revision, hash). Panics otherwise.
    pub async fn wait_converged(&mut self, timeout: Duration) -> (i64, u32) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_converged().await {
                Ok(x) => return x,
                Err(e) => e,
            };
            if Instant::now() > deadline {
                let saved = self.save_logs("converge");
                panic!(
                    "members did not converge within {timeout:?}: {last} (logs saved: {saved:?})\n{}{}",
                    self.proxy.describe(),
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn try_converged(&self) -> Result<(i64, u32), String> {
        let mut revs = Vec::new();
        for i in 0..self.len() {
            let mut c = connect(&self.endpoint(i), Duration::from_secs(2))
                .await
                .map_err(|e| format!("m{i}: {e}"))?;
            let r = c
                .get("converge-probe", None)
                .await
                .map_err(|e| format!("m{i} get: {e}"))?;
            revs.push(r.header().map(|h| h.revision()).unwrap_or(0));
        }
        if revs.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("revisions differ: {revs:?}"));
        }
        let rev = revs[0];
        let mut hashes = Vec::new();
        for i in 0..self.len() {
            let mut c = connect(&self.endpoint(i), Duration::from_secs(2))
                .await
                .map_err(|e| format!("m{i}: {e}"))?;
            let h = c
                .hash_kv(rev)
                .await
                .map_err(|e| format!("m{i} hash_kv: {e}"))?;
            hashes.push((h.hash(), h.header().map(|h| h.revision()).unwrap_or(0)));
        }
        if hashes.iter().any(|&(h, r)| h != hashes[0].0 || r != rev) {
            return Err(format!("HashKV at revision {rev} differs: {hashes:?}"));
        }
        Ok((rev, hashes[0].0))
    }
}

/// Whether an error is one a partitioned member may legitimately return for a write: one of
/// etcd's errors, or the client giving up.
pub(super) fn acceptable_minority_error(e: &str) -> bool {
    e.contains("etcdserver: request timed out")
        || e.contains("etcdserver: no leader")
        || e.contains("etcdserver: leader changed")
        || e.contains("etcdserver: request timed out, possibly due to connection lost")
        || e.contains("client timeout")
        || e.contains("Timeout expired")
}

/// Result of one client request in the partition tests.
#[derive(Debug, Clone)]
pub(super) enum Res {
    Ok(Option<String>),
    Err(String),
}

pub(super) async fn timed_put(
    c: &mut etcd_client::Client,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Res {
    match tokio::time::timeout(timeout, c.put(key, value, None)).await {
        Ok(Ok(_)) => Res::Ok(None),
        Ok(Err(e)) => Res::Err(e.to_string()),
        Err(_) => Res::Err("client timeout".into()),
    }
}

pub(super) async fn timed_get(c: &mut etcd_client::Client, key: &str, timeout: Duration) -> Res {
    match tokio::time::timeout(timeout, c.get(key, None)).await {
        Ok(Ok(r)) => Res::Ok(
            r.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        ),
        Ok(Err(e)) => Res::Err(e.to_string()),
        Err(_) => Res::Err("client timeout".into()),
    }
}
