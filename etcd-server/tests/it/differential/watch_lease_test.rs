//! The watch and lease test.

use super::*;

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn differential_watch_lease_against_reference() {
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
    eprintln!("differential watch/lease: DIFF_SEED={seed} DIFF_OPS={n_ops}");
    let started = Instant::now();

    let (theirs, ours) = tokio::join!(
        tokio::task::spawn_blocking(|| Proc::start(Kind::Reference, &[])),
        tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[])),
    );
    let (theirs, ours) = (
        theirs.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start reference: {e}")),
        ours.unwrap_or_else(|e| panic!("DIFF_SEED={seed}: start ours: {e}")),
    );
    let mut d = WDriver {
        seed,
        verbose,
        theirs: Side::connect("reference", &theirs)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect reference: {e}")),
        ours: Side::connect("ours", &ours)
            .await
            .unwrap_or_else(|e| panic!("DIFF_SEED={seed}: connect ours: {e}")),
        index: 0,
        recent: VecDeque::new(),
        stats: HashMap::new(),
        creates: Vec::new(),
        model: Vec::new(),
        view: WatchView {
            streams: 0,
            exists: Vec::new(),
            seen: Vec::new(),
        },
        granted: HashMap::new(),
        syncs: 0,
        catching_up: None,
        compacted_at: None,
    };
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        cur_rev: 1,
        compact_rev: None,
        hints: HashMap::new(),
        in_txn: false,
        leases: LEASE_POOL.iter().chain(LEASE_UNKNOWN).copied().collect(),
        live_leases: Vec::new(),
    };

    d.kv(&mut g, Op::Range(Gen::full_range(0))).await;
    assert_eq!(
        g.cur_rev, 1,
        "DIFF_SEED={seed}: the reference store does not start empty"
    );

    // Stream 0 starts with the event log: everything, with prev_kv, from now on.
    let log_watcher = WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        prev_kv: true,
        ..Default::default()
    };
    d.watch(&g, 0, log_watcher).await;
    assert_eq!(
        d.model.first().map(|m| m.key),
        Some(LOG_WATCHER),
        "DIFF_SEED={seed}: the log watcher did not get watch id 0"
    );
    for _ in 0..g.rng.random_range(3..=6) {
        let stream = g.rng.random_range(0..=d.view.streams.min(3));
        let req = g.watch_create(stream, &d.view);
        d.watch(&g, stream, req).await;
    }

    for i in 0..n_ops {
        if i == 12 {
            // A second wave of watchers once there is some history, usually before the first
            // compaction: then also one with a negative start revision.
            if g.compact_rev.is_none() {
                let stream = g.rng.random_range(0..d.view.streams);
                let mut req = g.watch_create(stream, &d.view);
                req.start_revision = -1;
                d.watch(&g, stream, req).await;
            }
            for _ in 0..g.rng.random_range(1..=3) {
                let stream = g.rng.random_range(0..d.view.streams);
                let req = g.watch_create(stream, &d.view);
                d.watch(&g, stream, req).await;
            }
        }
        let op = if i % 25 == 24 {
            WOp::Kv(Op::Range(Gen::full_range(0)))
        } else {
            g.next_wop(&d.view)
        };
        match op {
            WOp::Kv(op) => d.kv(&mut g, op).await,
            WOp::Lease(op) => d.lease(&mut g, op).await,
            WOp::Watch { stream, req } => d.watch(&g, stream, req).await,
            WOp::Cancel { stream, watch_id } => d.cancel(&g, stream, watch_id).await,
            WOp::Progress { stream } => d.progress(&g, stream, true).await,
        }
    }

    // Quiesce: every watcher catches up, every stream answers a progress request, and a
    // moment more for anything unexpected; then the whole streams are compared.
    d.sync(g.cur_rev, "at the end").await;
    for stream in 0..d.view.streams {
        d.progress(&g, stream, false).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.compare_watches(true);

    // Final lease state: every lease with its keys, and the list.
    for &id in LEASE_POOL.iter().chain(LEASE_UNKNOWN) {
        d.lease(
            &mut g,
            LOp::TimeToLive(LeaseTimeToLiveRequest { id, keys: true }),
        )
        .await;
    }
    d.lease(&mut g, LOp::Leases).await;
    d.kv(&mut g, Op::Range(Gen::full_range(0))).await;

    let events: usize = d
        .theirs
        .streams
        .iter()
        .flat_map(|s| s.st.watchers.values())
        .map(|w| w.events.len())
        .sum();
    let mut stats: Vec<_> = d.stats.into_iter().collect();
    stats.sort();
    eprintln!(
        "differential watch/lease: DIFF_SEED={seed}: {} ops matched in {:?}; final revision {}, \
         compaction revision {:?}; {} streams, {} watchers, {events} events compared, {} syncs",
        d.index,
        started.elapsed(),
        g.cur_rev,
        g.compact_rev,
        d.view.streams,
        d.model.len(),
        d.syncs,
    );
    for (k, v) in stats {
        eprintln!("  {v:6}  {k}");
    }
}
