//! The driver.

use super::*;

pub(super) struct Driver {
    pub(super) seed: u64,
    pub(super) verbose: bool,
    pub(super) reference: KvClient<Channel>,
    pub(super) ours: KvClient<Channel>,
    pub(super) index: usize,
    pub(super) recent: VecDeque<(usize, Op)>,
    pub(super) stats: HashMap<String, usize>,
}

impl Driver {
    /// Runs `op` on both servers, fails with the seed, the op and both responses if they differ,
    /// and returns the reference's (raw) response.
    pub(super) async fn step(&mut self, op: Op) -> Resp {
        let (theirs, ours) =
            tokio::join!(exec(&mut self.reference, &op), exec(&mut self.ours, &op));
        let (nt, no) = (normalize(&op, theirs.clone()), normalize(&op, ours));
        if self.verbose {
            eprintln!("#{} {}\n  -> {}", self.index, show(&op), show(&nt));
        }
        if nt != no {
            let mut ctx = String::new();
            for (i, o) in &self.recent {
                ctx.push_str(&format!("  #{i} {}\n", show(o)));
            }
            panic!(
                "DIFFERENTIAL MISMATCH (DIFF_SEED={seed}) at op #{idx} ({kind})\n\
                 preceding ops:\n{ctx}\
                 request:   {req}\n\
                 reference: {theirs}\n\
                 ours:      {ours}\n\
                 reproduce: DIFF_SEED={seed} DIFF_OPS={ops} cargo test -p etcd-server --test it differential_kv",
                seed = self.seed,
                idx = self.index,
                kind = op.kind(),
                req = show(&op),
                theirs = show(&nt),
                ours = show(&no),
                ops = self.index + 1,
            );
        }
        let outcome = match &theirs {
            Resp::Err(_, m) => format!("{} error: {m}", op.kind()),
            Resp::Txn(t) => format!("txn ok (succeeded={})", t.succeeded),
            _ => format!("{} ok", op.kind()),
        };
        *self.stats.entry(outcome).or_default() += 1;
        self.recent.push_back((self.index, op));
        if self.recent.len() > 8 {
            self.recent.pop_front();
        }
        self.index += 1;
        theirs
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn differential_kv_against_reference() {
    if require(reference_etcd(), "reference etcd").is_none() {
        return;
    }
    let seed: u64 = match std::env::var("DIFF_SEED") {
        Ok(s) => s.parse().expect("DIFF_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    let n_ops: usize = std::env::var("DIFF_OPS")
        .ok()
        .map_or(3000, |s| s.parse().expect("DIFF_OPS must be a number"));
    let verbose = std::env::var("DIFF_VERBOSE").as_deref() == Ok("1");
    eprintln!("differential: DIFF_SEED={seed} DIFF_OPS={n_ops}");
    let started = Instant::now();

    let (theirs, ours) = tokio::join!(
        tokio::task::spawn_blocking(|| Proc::start(Kind::Reference, &[])),
        tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[])),
    );
    let (theirs, ours) = (
        theirs.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start reference: {e}")),
        ours.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start ours: {e}")),
    );
    let connect = |p: &Proc| KvClient::connect(format!("http://{}", p.endpoint()));
    let mut d = Driver {
        seed,
        verbose,
        reference: connect(&theirs)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect reference: {e}")),
        ours: connect(&ours)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect ours: {e}")),
        index: 0,
        recent: VecDeque::new(),
        stats: HashMap::new(),
    };
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        cur_rev: 1,
        compact_rev: None,
        hints: HashMap::new(),
        in_txn: false,
        leases: Vec::new(),
        live_leases: Vec::new(),
    };

    // The harness's readiness probe reads only, so both stores start at revision 1.
    let first = d.step(Op::Range(Gen::full_range(0))).await;
    g.observe(&Op::Range(Gen::full_range(0)), &first);
    assert_eq!(
        g.cur_rev, 1,
        "DIFF_SEED={seed}: the reference store does not start empty"
    );

    for i in 0..n_ops {
        // Every 25 ops, the whole keyspace (state check independent of the random reads).
        let op = if i % 25 == 24 {
            Op::Range(Gen::full_range(0))
        } else {
            g.next_op()
        };
        let resp = d.step(op.clone()).await;
        g.observe(&op, &resp);
    }

    // The whole history: every revision from just below the compaction point to one past the
    // current revision.
    let from = g.compact_rev.unwrap_or(1).max(1) - 1;
    let (to, n_history) = (g.cur_rev + 1, g.cur_rev + 2 - from);
    for rev in from..=to {
        d.step(Op::Range(Gen::full_range(rev))).await;
    }

    let mut stats: Vec<_> = d.stats.into_iter().collect();
    stats.sort();
    eprintln!(
        "differential: DIFF_SEED={seed}: {} ops ({n_ops} random, {n_history} history reads) matched in {:?}; \
         final revision {}, compaction revision {:?}",
        d.index,
        started.elapsed(),
        g.cur_rev,
        g.compact_rev
    );
    for (k, v) in stats {
        eprintln!("  {v:6}  {k}");
    }
}
