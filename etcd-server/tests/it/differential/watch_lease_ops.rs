//! Watches and leases: operations and generation.

use super::*;

// ---------------------------------------------------------------------------------------------

// =============================================================================================
// Watches and leases: `differential_watch_lease_against_reference`.
//
// The KV sequence above (puts now attached to leases), interleaved with lease and watch
// operations. Unary responses are compared as above; lease responses after zeroing the header's
// cluster_id/member_id/raft_term and sorting TimeToLive keys and Leases by ID. The remaining TTL
// is timing dependent: both servers' values must lie between the granted TTL and what is left
// of it after the time since the grant (or last keep-alive) minus 2 s, and within 2 s of each
// other. After a revoke that deleted keys the whole keyspace is read at once.
//
// Watch streams: every reply is demultiplexed by watch id (a `created` reply starts a new
// incarnation of an id; id -1 collects failed creates and progress replies). Per watcher:
// - the replies without events (created, canceled, compacted, progress) must be equal, in
//   order, after zeroing the header's per-cluster fields; `created` replies are compared as
//   soon as they arrive, so watch ids (server-assigned or chosen) must match;
// - the events, flattened (etcd batches them as it likes), must be equal (type, kv, prev_kv);
// - on each server, events come in revision order, one revision's events are never split
//   across replies, no reply has the fragment flag (never requested), and a reply's header
//   revision is at least its last event's.
// The streams are compared at every synchronization point and at the end, after every stream
// has answered a progress request and a short quiet period.
//
// Synchronization: the reference's first watcher (stream 0: whole keyspace, prev_kv, from the
// start) is the event log, from which the events every watcher must get are derived. Before a
// compaction, a cancel and a progress request, the driver waits until every watcher on both
// servers has got all its events up to the current revision (or its compacted reply): etcd
// cancels a watcher that is still catching up when a compaction passes its next revision, and
// reads prev_kv only when it sends an event, so without this the reference itself would be
// timing dependent. At the end the reference's events are also checked against that
// derivation (a "MODEL MISMATCH" is a test bug, not a server one). etcd 3.4's other timing
// effects the driver waits out are explained where it does (`catching_up`, `compacted_at`,
// negative start revisions in `WDriver::watch`).

/// Lease IDs that the watch/lease test grants (explicit, so both servers use the same IDs).
pub(super) const LEASE_POOL: &[i64] = &[1, 2, 3, 4, 5, 6, 0x1234_5678_9abc, i64::MAX];
/// Lease IDs that are never granted: revoke, TimeToLive, KeepAlive and puts must treat them
/// as unknown alike.
pub(super) const LEASE_UNKNOWN: &[i64] = &[7, 424_242, -1];
/// At most this many watch streams per server.
pub(super) const MAX_STREAMS: usize = 10;
/// How long to wait for a watch reply that must come.
pub(super) const WATCH_WAIT: Duration = Duration::from_secs(5);

/// A lease operation.
#[derive(Debug, Clone)]
pub(super) enum LOp {
    Grant(LeaseGrantRequest),
    Revoke(LeaseRevokeRequest),
    TimeToLive(LeaseTimeToLiveRequest),
    Leases,
    /// One request and one reply on a fresh LeaseKeepAlive stream.
    KeepAlive(LeaseKeepAliveRequest),
}

/// A lease response or error.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum LResp {
    Grant(LeaseGrantResponse),
    Revoke(LeaseRevokeResponse),
    TimeToLive(LeaseTimeToLiveResponse),
    Leases(LeaseLeasesResponse),
    KeepAlive(LeaseKeepAliveResponse),
    Err(tonic::Code, String),
}

impl LResp {
    pub(super) fn header_mut(&mut self) -> Option<&mut ResponseHeader> {
        match self {
            LResp::Grant(r) => r.header.as_mut(),
            LResp::Revoke(r) => r.header.as_mut(),
            LResp::TimeToLive(r) => r.header.as_mut(),
            LResp::Leases(r) => r.header.as_mut(),
            LResp::KeepAlive(r) => r.header.as_mut(),
            LResp::Err(..) => None,
        }
    }
}

pub(super) async fn exec_lease(c: &mut LeaseClient<Channel>, op: &LOp) -> LResp {
    let r = match op {
        LOp::Grant(r) => c
            .lease_grant(*r)
            .await
            .map(|x| LResp::Grant(x.into_inner())),
        LOp::Revoke(r) => c
            .lease_revoke(*r)
            .await
            .map(|x| LResp::Revoke(x.into_inner())),
        LOp::TimeToLive(r) => c
            .lease_time_to_live(*r)
            .await
            .map(|x| LResp::TimeToLive(x.into_inner())),
        LOp::Leases => c
            .lease_leases(LeaseLeasesRequest {})
            .await
            .map(|x| LResp::Leases(x.into_inner())),
        LOp::KeepAlive(r) => {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(*r).unwrap();
            match c.lease_keep_alive(UnboundedReceiverStream::new(rx)).await {
                Err(s) => Err(s),
                Ok(resp) => match resp.into_inner().message().await {
                    Ok(Some(m)) => Ok(LResp::KeepAlive(m)),
                    Ok(None) => Err(tonic::Status::unknown(
                        "keep-alive stream ended without a reply",
                    )),
                    Err(s) => Err(s),
                },
            }
        }
    };
    r.unwrap_or_else(|s| LResp::Err(s.code(), s.message().to_owned()))
}

/// Zeroes the per-cluster header fields and sorts what etcd returns in map order.
pub(super) fn norm_lease(mut r: LResp) -> LResp {
    if let Some(h) = r.header_mut() {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
    match &mut r {
        LResp::TimeToLive(t) => t.keys.sort(),
        LResp::Leases(l) => l.leases.sort_by_key(|s| s.id),
        _ => {}
    }
    r
}

/// One operation of the watch/lease sequence.
#[derive(Debug, Clone)]
pub(super) enum WOp {
    Kv(Op),
    Lease(LOp),
    /// Create a watcher on stream `stream` (a new stream when `stream` is the stream count).
    Watch {
        stream: usize,
        req: WatchCreateRequest,
    },
    Cancel {
        stream: usize,
        watch_id: i64,
    },
    Progress {
        stream: usize,
    },
}

impl WOp {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            WOp::Kv(op) => op.kind(),
            WOp::Lease(LOp::Grant(_)) => "lease-grant",
            WOp::Lease(LOp::Revoke(_)) => "lease-revoke",
            WOp::Lease(LOp::TimeToLive(_)) => "lease-ttl",
            WOp::Lease(LOp::Leases) => "lease-leases",
            WOp::Lease(LOp::KeepAlive(_)) => "lease-keepalive",
            WOp::Watch { .. } => "watch-create",
            WOp::Cancel { .. } => "watch-cancel",
            WOp::Progress { .. } => "watch-progress",
        }
    }
}

/// What the generator knows about the reference's watch streams.
pub(super) struct WatchView {
    pub(super) streams: usize,
    /// Per stream: watch ids that exist on the reference (created, not cancel-acknowledged;
    /// a compacted watcher still exists until canceled).
    pub(super) exists: Vec<BTreeSet<i64>>,
    /// Per stream: every watch id the reference ever assigned.
    pub(super) seen: Vec<BTreeSet<i64>>,
}

impl Gen {
    /// A watch start revision: now (0), a past one, exactly the compaction revision, a
    /// compacted one, a future one, 1, or negative.
    pub(super) fn watch_start(&mut self) -> i64 {
        let cur = self.cur_rev;
        let c = self.compact_rev.unwrap_or(0);
        let low = c.max(1);
        match self.pct() {
            0..45 => 0,
            45..65 => self.rng.random_range(low..=cur.max(low)),
            65..73 if c >= 1 => c,
            65..73 => 0,
            73..83 if c >= 2 => self.rng.random_range(1..c),
            73..83 => 1,
            83..90 => cur + self.rng.random_range(1..=3),
            90..95 => 1,
            // Negative: etcd 3.4 compares them with its compaction revision, which starts at
            // -1 (see `WDriver::watch`).
            _ => self.rng.random_range(-3..=-1),
        }
    }

    pub(super) fn watch_create(&mut self, stream: usize, view: &WatchView) -> WatchCreateRequest {
        let (key, range_end) = match self.pct() {
            0..25 => (self.any_key(), Vec::new()),
            25..45 => {
                let k = self.any_key();
                let k = if self.pct() < 40 { k[..1].to_vec() } else { k };
                let e = prefix_end(&k);
                (k, e)
            }
            45..58 => (self.any_key(), vec![0]),
            58..70 => (vec![0], vec![0]),
            70..73 => (Vec::new(), vec![0]),
            73..75 => (Vec::new(), Vec::new()),
            _ => (self.any_key(), self.any_key()), // arbitrary, possibly empty or inverted
        };
        let (noput, nodelete) = (FilterType::Noput as i32, FilterType::Nodelete as i32);
        let filters = match self.pct() {
            0..55 => vec![],
            55..70 => vec![noput],
            70..85 => vec![nodelete],
            85..90 => vec![noput, nodelete],
            90..94 => vec![noput, noput],
            94..97 => vec![nodelete, nodelete],
            _ => vec![7], // unknown filter: ignored
        };
        let watch_id = if self.pct() < 70 {
            0 // the server assigns
        } else if stream < view.streams && !view.exists[stream].is_empty() && self.pct() < 40 {
            let ids: Vec<i64> = view.exists[stream].iter().copied().collect();
            ids[self.rng.random_range(0..ids.len())] // duplicate
        } else if self.pct() < 90 {
            self.rng.random_range(1..=8)
        } else {
            1000
        };
        WatchCreateRequest {
            key,
            range_end,
            start_revision: self.watch_start(),
            progress_notify: self.pct() < 20,
            filters,
            prev_kv: self.pct() < 50,
            watch_id,
            fragment: false,
        }
    }

    pub(super) fn lease_op(&mut self) -> LOp {
        let any_id = |g: &mut Gen| {
            if g.pct() < 85 {
                g.pick_lease()
            } else {
                LEASE_UNKNOWN[g.rng.random_range(0..LEASE_UNKNOWN.len())]
            }
        };
        match self.pct() {
            0..35 => {
                let free: Vec<i64> = LEASE_POOL
                    .iter()
                    .copied()
                    .filter(|id| !self.live_leases.contains(id))
                    .collect();
                let id = if !free.is_empty() && self.pct() < 75 {
                    free[self.rng.random_range(0..free.len())]
                } else {
                    LEASE_POOL[self.rng.random_range(0..LEASE_POOL.len())] // maybe live: exists
                };
                let ttl = if self.pct() < 3 {
                    9_000_000_001 // too large
                } else {
                    self.rng.random_range(300..=900)
                };
                LOp::Grant(LeaseGrantRequest { ttl, id })
            }
            35..55 => LOp::Revoke(LeaseRevokeRequest { id: any_id(self) }),
            55..80 => LOp::TimeToLive(LeaseTimeToLiveRequest {
                id: any_id(self),
                keys: self.pct() < 70,
            }),
            80..88 => LOp::Leases,
            _ => LOp::KeepAlive(LeaseKeepAliveRequest { id: any_id(self) }),
        }
    }

    pub(super) fn next_wop(&mut self, view: &WatchView) -> WOp {
        match self.rng.random_range(0..1000) {
            0..20 => {
                let stream = if view.streams < MAX_STREAMS && self.pct() < 25 {
                    view.streams
                } else {
                    self.rng.random_range(0..view.streams)
                };
                let req = self.watch_create(stream, view);
                WOp::Watch { stream, req }
            }
            20..26 => {
                let stream = self.rng.random_range(0..view.streams);
                let pick = |g: &mut Gen, s: &BTreeSet<i64>| {
                    let ids: Vec<i64> = s.iter().copied().collect();
                    (!ids.is_empty()).then(|| ids[g.rng.random_range(0..ids.len())])
                };
                let watch_id = match self.pct() {
                    0..65 => pick(self, &view.exists[stream]),
                    65..85 => pick(self, &view.seen[stream]),
                    _ => None,
                }
                .unwrap_or_else(|| self.rng.random_range(0..=10));
                if stream == 0 && watch_id == 0 {
                    // The whole-keyspace watcher of stream 0 is the test's event log.
                    return WOp::Progress { stream };
                }
                WOp::Cancel { stream, watch_id }
            }
            26..30 => WOp::Progress {
                stream: self.rng.random_range(0..view.streams),
            },
            30..120 => WOp::Lease(self.lease_op()),
            _ => WOp::Kv(self.next_op()),
        }
    }
}
