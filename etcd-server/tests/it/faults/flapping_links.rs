//! Flapping links.

use super::*;

/// Links that flap (cut and restored every few hundred milliseconds, in random directions)
/// must all come back once the network heals: every member reconnects to every other, and
/// the cluster converges. `FLAP_SECS` (default 20), `FLAP_MAX_MS` (longest cut or healed
/// spell, default 200) and `FLAP_SEED` tune it.
#[tokio::test(flavor = "multi_thread")]
async fn flapping_links_recover() {
    use rand::{Rng, SeedableRng};
    let secs: u64 = std::env::var("FLAP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FLAP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let max_ms: u64 = std::env::var("FLAP_MAX_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
        .max(11);
    eprintln!("flapping links: FLAP_SECS={secs} FLAP_SEED={seed} FLAP_MAX_MS={max_ms}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = tokio::task::spawn_blocking(|| ProxiedCluster::start(3, FAST))
        .await
        .unwrap();
    let all = [0, 1, 2];
    c.wait_leader(&all, Duration::from_secs(15)).await;
    // Background writes, so that there is replication traffic.
    let eps = c.endpoints();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = 0u32;
            for n in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut cl) = connect(&eps[n as usize % 3], Duration::from_millis(500)).await
                    && let Res::Ok(_) = timed_put(
                        &mut cl,
                        &format!("flap/{n}"),
                        "x",
                        Duration::from_millis(700),
                    )
                    .await
                {
                    acked += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    let until = Instant::now() + Duration::from_secs(secs);
    let mut flaps = 0;
    while Instant::now() < until {
        match rng.random_range(0..3) {
            0 => c.proxy.isolate(rng.random_range(0..3)),
            1 => {
                let f = rng.random_range(0..3);
                c.proxy.cut(f, (f + 1 + rng.random_range(0..2)) % 3);
            }
            _ => {
                let f = rng.random_range(0..3);
                let t = (f + 1 + rng.random_range(0..2)) % 3;
                c.proxy.cut(f, t);
                c.proxy.cut(t, f);
            }
        }
        flaps += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..max_ms))).await;
        c.proxy.heal();
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..max_ms))).await;
    }
    c.proxy.heal();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    eprintln!("{flaps} flaps, {acked} writes acknowledged");
    // Every member must be connected to every other again (heartbeats flow every 50 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let missing = c.proxy.unlinked_pairs();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let saved = c.save_logs("flap");
            panic!(
                "FLAP_SEED={seed}: no connection for {missing:?} 10 s after healing (logs saved: {saved:?})\n{}{}",
                c.proxy.describe(),
                c.log_tails(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_leader(&all, Duration::from_secs(10)).await;
    c.wait_converged(Duration::from_secs(20)).await;
}

/// The proxy itself: a cut refuses new connections and tears down live ones; heal restores.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_cuts_and_heals_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An echo server standing in for member 1's peer port.
    let target_ip = member_ip(1);
    let echo = TcpListener::bind((target_ip, 0)).await.unwrap();
    let target = echo.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut s, _)) = echo.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                for _ in 0..64 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let unused = SocketAddr::new(IpAddr::V4(member_ip(0)), free_port_on(member_ip(0)));
    let proxy = Proxy::start(&[unused, target]);
    let dial = |from: usize| {
        let to = proxy.addr(1);
        async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(IpAddr::V4(member_ip(from)), 0))
                .unwrap();
            sock.connect(to).await.unwrap()
        }
    };
    async fn echo_ok(s: &mut TcpStream) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }
    let mut s = dial(0).await;
    assert!(echo_ok(&mut s).await, "forwarding works");
    proxy.cut(0, 1);
    assert!(
        !echo_ok(&mut s).await,
        "a cut tears down the live connection"
    );
    let mut s2 = dial(0).await;
    assert!(!echo_ok(&mut s2).await, "a cut refuses new connections");
    proxy.heal();
    let mut s3 = dial(0).await;
    assert!(echo_ok(&mut s3).await, "heal restores");
    // A connection from a non-member address is refused.
    let mut s4 = TcpStream::connect(proxy.addr(1)).await.unwrap();
    assert!(!echo_ok(&mut s4).await);
    let st = proxy.stats();
    assert_eq!(
        (st.torn_down, st.refused, st.unknown_source),
        (1, 1, 1),
        "{st:?}"
    );
    drop(proxy);
    echo_task.abort();
}
