//! Generation.

use super::*;

pub(super) fn prefix_end(k: &[u8]) -> Vec<u8> {
    let mut e = k.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return e;
        }
    }
    vec![0]
}

/// Whether the delete interval `[b, e)` (etcd conventions) may cover key `k`. Conservative:
/// `"\0"` as `range_end` is taken to mean "every key ≥ b".
pub(super) fn covers((b, e): &(Vec<u8>, Vec<u8>), k: &[u8]) -> bool {
    if e.is_empty() {
        b.as_slice() == k
    } else if e.as_slice() == [0] {
        k >= b.as_slice()
    } else {
        k >= b.as_slice() && k < e.as_slice()
    }
}

/// Keys written by one txn under generation, to avoid duplicate-key rejections when `avoid`.
#[derive(Default)]
pub(super) struct DupCtx {
    pub(super) avoid: bool,
    /// When not avoiding: the few keys this txn's writes use, so that they collide.
    pub(super) pool: Vec<Vec<u8>>,
    pub(super) puts: Vec<Vec<u8>>,
    pub(super) dels: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DupCtx {
    pub(super) fn put_ok(&self, k: &[u8]) -> bool {
        !self.avoid
            || (!self.puts.iter().any(|p| p == k) && !self.dels.iter().any(|d| covers(d, k)))
    }
    pub(super) fn del_ok(&self, d: &(Vec<u8>, Vec<u8>)) -> bool {
        !self.avoid || !self.puts.iter().any(|p| covers(d, p))
    }
}

pub(super) struct Gen {
    pub(super) rng: StdRng,
    /// The reference's current revision (from the last successful response header).
    pub(super) cur_rev: i64,
    /// The last successful compaction revision.
    pub(super) compact_rev: Option<i64>,
    /// Key-values seen in reference responses (possibly stale): compare targets and filters.
    pub(super) hints: HashMap<Vec<u8>, KeyValue>,
    /// Generating ops inside a txn (where one bad revision fails the whole txn).
    pub(super) in_txn: bool,
    /// Lease IDs that puts attach to and LEASE compares use (the watch/lease test). Empty in
    /// the KV-only test, where puts with a lease use random unknown IDs and compares use 0.
    pub(super) leases: Vec<i64>,
    /// The leases currently granted on the reference (a subset of `leases`).
    pub(super) live_leases: Vec<i64>,
}

impl Gen {
    pub(super) fn pct(&mut self) -> u32 {
        self.rng.random_range(0..100)
    }

    pub(super) fn pick(&mut self, from: &[&[u8]]) -> Vec<u8> {
        from[self.rng.random_range(0..from.len())].to_vec()
    }

    pub(super) fn pick_owned(&mut self, from: &[Vec<u8>]) -> Vec<u8> {
        from[self.rng.random_range(0..from.len())].clone()
    }

    pub(super) fn write_key(&mut self) -> Vec<u8> {
        self.pick(KEYS)
    }

    pub(super) fn any_key(&mut self) -> Vec<u8> {
        if self.pct() < 80 {
            self.pick(KEYS)
        } else {
            self.pick(MISSING)
        }
    }

    pub(super) fn value(&mut self) -> Vec<u8> {
        if self.pct() < 85 {
            self.pick(VALUES)
        } else {
            let n = self.rng.random_range(0..24);
            (0..n).map(|_| self.rng.random_range(b'0'..=b'z')).collect()
        }
    }

    /// A `(key, range_end)` pair in every form etcd knows.
    pub(super) fn key_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        let key = self.any_key();
        match self.pct() {
            0..40 => (key, Vec::new()),
            40..58 => {
                let e = prefix_end(&key);
                (key, e)
            }
            58..68 => (key, vec![0]),
            68..83 => {
                let e = self.any_key();
                (key, e)
            }
            83..90 => {
                let mut e = key.clone();
                e.push(0);
                (key, e)
            }
            90..95 => (vec![0], vec![0]),
            _ => {
                let k = self.write_key();
                let e = prefix_end(&k[..1]);
                (k[..1].to_vec(), e)
            }
        }
    }

    /// A revision to read at: current, old, exactly the compaction revision, compacted,
    /// future or negative.
    pub(super) fn read_rev(&mut self) -> i64 {
        let cur = self.cur_rev;
        let low = self.compact_rev.unwrap_or(1).max(1);
        if self.in_txn && self.pct() < 80 {
            return if self.pct() < 60 {
                0
            } else {
                self.rng.random_range(low..=cur.max(low))
            };
        }
        match self.pct() {
            0..40 => 0,
            40..48 => cur,
            48..68 => self.rng.random_range(low..=cur.max(low)),
            68..75 => self.compact_rev.unwrap_or(1),
            75..83 => self.rng.random_range(1..=low),
            83..90 => cur + 1,
            90..96 => cur + self.rng.random_range(2..=5),
            _ => self.rng.random_range(-3..=-1),
        }
    }

    /// A revision for a filter or a compare: near known revisions.
    pub(super) fn some_rev(&mut self) -> i64 {
        match self.pct() {
            0..10 => 0,
            10..20 => self.cur_rev,
            20..30 => self.cur_rev + 1,
            _ => self.rng.random_range(1..=self.cur_rev.max(1)),
        }
    }

    pub(super) fn range(&mut self) -> RangeRequest {
        let (mut key, range_end) = self.key_range();
        if self.pct() < 1 {
            key.clear(); // etcdserver: key is not provided
        }
        let mut r = RangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        r.limit = match self.pct() {
            0..50 => 0,
            50..97 => self.rng.random_range(1..=6),
            _ => -1,
        };
        r.revision = self.read_rev();
        if self.pct() < 40 {
            r.sort_order = self.rng.random_range(0..=2);
        }
        if self.pct() < 50 {
            r.sort_target = self.rng.random_range(0..=4);
        }
        r.serializable = self.pct() < 30;
        r.keys_only = self.pct() < 20;
        r.count_only = self.pct() < 12;
        if self.pct() < 12 {
            r.min_mod_revision = self.some_rev();
        }
        if self.pct() < 12 {
            r.max_mod_revision = self.some_rev();
        }
        if self.pct() < 12 {
            r.min_create_revision = self.some_rev();
        }
        if self.pct() < 12 {
            r.max_create_revision = self.some_rev();
        }
        r
    }

    pub(super) fn full_range(rev: i64) -> RangeRequest {
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        }
    }

    pub(super) fn put_with_key(&mut self, key: Vec<u8>) -> PutRequest {
        let mut p = PutRequest {
            key,
            value: self.value(),
            prev_kv: self.pct() < 50,
            ..Default::default()
        };
        match self.pct() {
            0..3 => {
                // ignore_value: no value (error if the key is missing), rarely with a value.
                p.ignore_value = true;
                if self.pct() < 80 {
                    p.value.clear();
                }
            }
            3..6 => {
                p.ignore_lease = true;
                if self.pct() < 20 {
                    p.lease = self.rng.random_range(1..1000);
                }
            }
            // Lease not found (the KV test), or a live, revoked or unknown lease.
            6..8 if self.leases.is_empty() => p.lease = self.rng.random_range(1..1000),
            6..30 if !self.leases.is_empty() => p.lease = self.pick_lease(),
            _ => {}
        }
        p
    }

    /// A lease ID: mostly a live one, else any of the pool (revoked or never granted).
    pub(super) fn pick_lease(&mut self) -> i64 {
        if !self.live_leases.is_empty() && self.pct() < 75 {
            self.live_leases[self.rng.random_range(0..self.live_leases.len())]
        } else {
            self.leases[self.rng.random_range(0..self.leases.len())]
        }
    }

    pub(super) fn put(&mut self) -> PutRequest {
        let mut key = self.write_key();
        if self.pct() < 1 {
            key.clear();
        }
        self.put_with_key(key)
    }

    pub(super) fn delete(&mut self) -> DeleteRangeRequest {
        let (mut key, range_end) = self.key_range();
        // Deleting everything is rare, or the store would stay nearly empty.
        let (key, range_end) = if key == [0] && range_end == [0] && self.pct() < 80 {
            (self.write_key(), Vec::new())
        } else {
            if self.pct() < 1 {
                key.clear();
            }
            (key, range_end)
        };
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.pct() < 50,
        }
    }

    pub(super) fn compare(&mut self) -> Compare {
        let key = if self.pct() < 1 {
            Vec::new()
        } else {
            self.any_key()
        };
        let range_end = match self.pct() {
            0..75 => Vec::new(),
            75..87 => prefix_end(&key),
            87..94 => vec![0],
            _ => self.any_key(),
        };
        let target = self.rng.random_range(0..=4);
        let result = self.rng.random_range(0..=3);
        let hint = self.hints.get(&key).cloned().unwrap_or_default();
        let near = |g: &mut Self, v: i64| v + g.rng.random_range(-1..=1);
        let mut union = match CompareTarget::try_from(target).unwrap() {
            CompareTarget::Version => Some(TargetUnion::Version(match self.pct() {
                0..50 => near(self, hint.version),
                50..70 => 0,
                _ => self.rng.random_range(0..=5),
            })),
            CompareTarget::Create => Some(TargetUnion::CreateRevision(match self.pct() {
                0..55 => near(self, hint.create_revision),
                55..70 => 0,
                _ => self.some_rev(),
            })),
            CompareTarget::Mod => Some(TargetUnion::ModRevision(match self.pct() {
                0..55 => near(self, hint.mod_revision),
                55..70 => 0,
                _ => self.some_rev(),
            })),
            CompareTarget::Value => Some(TargetUnion::Value(if self.pct() < 50 {
                hint.value
            } else {
                self.value()
            })),
            CompareTarget::Lease if self.leases.is_empty() => Some(TargetUnion::Lease(0)),
            CompareTarget::Lease => Some(TargetUnion::Lease(match self.pct() {
                0..50 => hint.lease,
                50..70 => 0,
                _ => self.pick_lease(),
            })),
        };
        match self.pct() {
            // A target_union member that does not match the target, or none.
            0..2 => union = Some(TargetUnion::Version(self.rng.random_range(0..=3))),
            2..4 => union = Some(TargetUnion::Value(self.value())),
            4..6 => union = None,
            _ => {}
        }
        Compare {
            result,
            target,
            key,
            target_union: union,
            range_end,
        }
    }

    pub(super) fn txn_op(&mut self, depth: u32, ctx: &mut DupCtx) -> RequestOp {
        let p = self.pct();
        let req = if p < 35 {
            let mut tries = 0;
            loop {
                let k = if ctx.pool.is_empty() {
                    self.write_key()
                } else {
                    self.pick_owned(&ctx.pool)
                };
                if ctx.put_ok(&k) {
                    ctx.puts.push(k.clone());
                    let mut p = self.put_with_key(k);
                    if ctx
                        .dels
                        .iter()
                        .any(|(b, e)| e.as_slice() == [0] && p.key >= *b)
                    {
                        // etcd 3.4.23 panics ("unexpected error during txn: etcdserver: key
                        // not found") on an ignore_value/ignore_lease put of a key that an
                        // earlier delete to "\0" in the same txn removed (the duplicate-key
                        // check does not see such deletes), so the reference cannot answer it.
                        p.ignore_value = false;
                        p.ignore_lease = false;
                    }
                    break Request::RequestPut(p);
                }
                tries += 1;
                if tries > 10 {
                    break Request::RequestRange(self.range());
                }
            }
        } else if p < 55 {
            let mut tries = 0;
            loop {
                let mut d = self.delete();
                if !ctx.pool.is_empty() && self.pct() < 50 {
                    d.key = self.pick_owned(&ctx.pool);
                    d.range_end = if self.pct() < 70 {
                        Vec::new()
                    } else {
                        prefix_end(&d.key)
                    };
                }
                let iv = (d.key.clone(), d.range_end.clone());
                if ctx.del_ok(&iv) {
                    ctx.dels.push(iv);
                    break Request::RequestDeleteRange(d);
                }
                tries += 1;
                if tries > 10 {
                    break Request::RequestRange(self.range());
                }
            }
        } else if p < 85 || depth >= 2 {
            Request::RequestRange(self.range())
        } else {
            Request::RequestTxn(self.txn(depth + 1, ctx))
        };
        RequestOp { request: Some(req) }
    }

    pub(super) fn txn(&mut self, depth: u32, ctx: &mut DupCtx) -> TxnRequest {
        let nc = match self.pct() {
            0..20 => 0,
            20..70 => 1,
            _ => self.rng.random_range(2..=4),
        };
        let compare = (0..nc).map(|_| self.compare()).collect();
        let ns = self.rng.random_range(0..=5);
        let success = (0..ns).map(|_| self.txn_op(depth, ctx)).collect();
        let nf = self.rng.random_range(0..=5);
        let failure = (0..nf).map(|_| self.txn_op(depth, ctx)).collect();
        TxnRequest {
            compare,
            success,
            failure,
        }
    }

    pub(super) fn read_op(&mut self) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(self.range())),
        }
    }

    /// Txns at the op-count limit (128), just above it, and nested ones whose budget is what
    /// the outer txn leaves.
    pub(super) fn big_txn(&mut self) -> TxnRequest {
        let n = if self.pct() < 50 { 128 } else { 129 };
        let del = |g: &mut Self| {
            let k = g.write_key();
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                })),
            }
        };
        match self.rng.random_range(0..5) {
            0 => TxnRequest {
                success: (0..n).map(|_| self.read_op()).collect(),
                ..Default::default()
            },
            1 => TxnRequest {
                compare: (0..n).map(|_| self.compare()).collect(),
                failure: vec![self.read_op()],
                ..Default::default()
            },
            2 => TxnRequest {
                compare: vec![self.compare()],
                success: (0..n).map(|_| del(self)).collect(), // overlapping deletes are allowed
                failure: (0..n).map(|_| self.read_op()).collect(),
            },
            _ => {
                let outer = self.rng.random_range(90..=110);
                let budget = 128 - (outer + 1);
                let inner = (budget + self.rng.random_range(-1..=2)).max(0);
                let mut success: Vec<RequestOp> = (0..outer).map(|_| self.read_op()).collect();
                let nested = TxnRequest {
                    compare: vec![],
                    success: (0..inner).map(|_| self.read_op()).collect(),
                    failure: vec![],
                };
                let at = self.rng.random_range(0..=success.len());
                success.insert(
                    at,
                    RequestOp {
                        request: Some(Request::RequestTxn(nested)),
                    },
                );
                TxnRequest {
                    success,
                    ..Default::default()
                }
            }
        }
    }

    pub(super) fn compact(&mut self) -> CompactionRequest {
        let cur = self.cur_rev;
        let c = self.compact_rev;
        let revision = match self.pct() {
            // Valid: lagging behind the head, so that old revisions stay readable.
            0..60 => {
                let lo = c.unwrap_or(0) + 1;
                self.rng.random_range(lo..=lo.max(lo + (cur - lo) / 2))
            }
            60..70 => c.unwrap_or(0),
            70..78 => self.rng.random_range(-2..=c.unwrap_or(1).max(-2)),
            78..88 => cur + 1,
            88..95 => cur + self.rng.random_range(2..=10),
            _ => 0,
        };
        CompactionRequest {
            revision,
            physical: self.pct() < 50,
        }
    }

    pub(super) fn next_op(&mut self) -> Op {
        match self.rng.random_range(0..1000) {
            0..300 => Op::Put(self.put()),
            300..400 => Op::Delete(self.delete()),
            400..690 => Op::Range(self.range()),
            690..965 => {
                let mut ctx = DupCtx {
                    avoid: self.pct() < 85,
                    ..Default::default()
                };
                if !ctx.avoid {
                    let n = self.rng.random_range(2..=4);
                    ctx.pool = (0..n).map(|_| self.write_key()).collect();
                }
                self.in_txn = true;
                let t = self.txn(0, &mut ctx);
                self.in_txn = false;
                Op::Txn(t)
            }
            965..970 => {
                self.in_txn = true;
                let t = self.big_txn();
                self.in_txn = false;
                Op::Txn(t)
            }
            _ => Op::Compact(self.compact()),
        }
    }

    /// Learns revisions and key-values from the reference's answer to `op`.
    pub(super) fn observe(&mut self, op: &Op, resp: &Resp) {
        if let Some(h) = resp.header() {
            self.cur_rev = h.revision;
        }
        let mut kvs: Vec<&KeyValue> = Vec::new();
        collect_kvs(resp, &mut kvs);
        for kv in kvs {
            self.hints.insert(kv.key.clone(), kv.clone());
        }
        match (op, resp) {
            (Op::Compact(c), Resp::Compact(_)) => self.compact_rev = Some(c.revision),
            (Op::Put(p), Resp::Put(r)) => {
                let rev = r.header.as_ref().map_or(0, |h| h.revision);
                let h = self.hints.entry(p.key.clone()).or_default();
                h.key = p.key.clone();
                h.mod_revision = rev;
                h.version += 1;
                if h.version == 1 {
                    h.create_revision = rev;
                }
                if !p.ignore_value {
                    h.value = p.value.clone();
                }
            }
            _ => {}
        }
    }
}

pub(super) fn collect_kvs<'a>(resp: &'a Resp, out: &mut Vec<&'a KeyValue>) {
    fn txn<'a>(t: &'a TxnResponse, out: &mut Vec<&'a KeyValue>) {
        for r in &t.responses {
            match &r.response {
                Some(Response::ResponseRange(r)) => out.extend(&r.kvs),
                Some(Response::ResponsePut(p)) => out.extend(&p.prev_kv),
                Some(Response::ResponseDeleteRange(d)) => out.extend(&d.prev_kvs),
                Some(Response::ResponseTxn(t)) => txn(t, out),
                None => {}
            }
        }
    }
    match resp {
        Resp::Range(r) => out.extend(&r.kvs),
        Resp::Put(p) => out.extend(&p.prev_kv),
        Resp::Delete(d) => out.extend(&d.prev_kvs),
        Resp::Txn(t) => txn(t, out),
        Resp::Compact(_) | Resp::Err(..) => {}
    }
}
