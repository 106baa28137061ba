//! 8. Leases and watches across members.

use super::*;

pub(super) type Ev = (String, String, String, i64);

/// Collects the events of a watch until it sees a put of `end`.
pub(super) async fn collect_until(stream: &mut etcd_client::WatchStream, end: &str) -> Vec<Ev> {
    let mut out = Vec::new();
    loop {
        let r = tokio::time::timeout(STEP, stream.message()).await;
        let resp = match r {
            Ok(Ok(Some(resp))) => resp,
            other => panic!("watch ended or stalled after {out:?}: {other:?}"),
        };
        assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
        for e in resp.events() {
            let kv = e.kv().unwrap();
            let t = match e.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            out.push((
                t.to_owned(),
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
                kv.mod_revision(),
            ));
            if t == "PUT" && kv.key_str().unwrap() == end {
                return out;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_kept_alive_through_a_follower_expires_once_and_watches_agree() {
    let c = start(3, &[]).await;
    let leader = wait_agreed_leader(&c, &[0, 1, 2], STEP).await;
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;
    let eps = c.endpoints();
    let start_rev = client(&eps[leader])
        .await
        .get("lw/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;

    // A watch on every member from the same revision.
    let mut watches = Vec::new();
    for ep in &eps {
        let mut w = client(ep).await;
        let stream = w
            .watch(
                "lw/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(start_rev),
                ),
            )
            .await
            .unwrap();
        watches.push((w, stream));
    }

    // Grant on a follower, attach keys through the other follower.
    let mut g = client(&eps[f1]).await;
    let grant = g.lease_grant(3, None).await.unwrap();
    assert_eq!(grant.ttl(), 3);
    let id = grant.id();
    let mut p = client(&eps[f2]).await;
    p.put("lw/a", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    p.put("lw/b", "2", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    p.put("lw/plain", "3", None).await.unwrap();

    // Keep it alive through a follower for longer than its TTL.
    let mut k = client(&eps[f2]).await;
    let (mut keeper, mut ka) = k.lease_keep_alive(id).await.unwrap();
    let kept_from = Instant::now();
    while kept_from.elapsed() < Duration::from_secs(5) {
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(STEP, ka.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.id(), id);
        assert_eq!(
            r.ttl(),
            3,
            "keep-alive through a follower did not renew to the granted TTL"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    for ep in &eps {
        let r = client(ep).await.get("lw/a", None).await.unwrap();
        assert_eq!(
            r.kvs().len(),
            1,
            "lease expired on {ep} although it was kept alive{}",
            logs(&c)
        );
        let t = client(ep).await.lease_time_to_live(id, None).await.unwrap();
        assert!(
            t.ttl() > 0 && t.ttl() <= 3,
            "TimeToLive on {ep}: {}",
            t.ttl()
        );
        assert_eq!(t.granted_ttl(), 3);
    }
    drop(keeper);
    drop(ka);

    // Stop renewing: the leader revokes it; its keys vanish everywhere.
    let stopped = Instant::now();
    for ep in &eps {
        let deadline = Instant::now() + STEP;
        loop {
            let r = client(ep)
                .await
                .get("lw/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            let keys: Vec<&str> = r.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
            if keys == ["lw/plain"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lease keys still on {ep}: {keys:?}{}",
                logs(&c)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "lease expired too early ({:?} after the last renewal)",
        stopped.elapsed()
    );
    for ep in &eps {
        let t = client(ep).await.lease_time_to_live(id, None).await.unwrap();
        assert_eq!(t.ttl(), -1, "TimeToLive of an expired lease on {ep}");
    }
    let revocations: usize = c
        .members
        .iter()
        .map(|m| m.log().matches("revoked expired lease").count())
        .sum();
    assert_eq!(
        revocations,
        1,
        "the lease must be revoked exactly once (by the leader){}",
        logs(&c)
    );
    assert!(
        c.members[leader].log().contains("revoked expired lease"),
        "the leader did not revoke it{}",
        logs(&c)
    );

    p.put("lw/end", "e", None).await.unwrap();
    let mut seqs = Vec::new();
    for (_, stream) in watches.iter_mut() {
        seqs.push(collect_until(stream, "lw/end").await);
    }
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(s, &seqs[0], "watch on member {i} saw a different sequence");
    }
    let shape: Vec<(&str, &str)> = seqs[0]
        .iter()
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("PUT", "lw/a"),
            ("PUT", "lw/b"),
            ("PUT", "lw/plain"),
            ("DELETE", "lw/a"),
            ("DELETE", "lw/b"),
            ("PUT", "lw/end")
        ]
    );
    assert_eq!(seqs[0][3].3, seqs[0][4].3, "one revocation, one revision");
    assert_converged(&eps, "after lease expiry").await;
}

/// Reads from a raw peer connection until it yields bytes, ends, or `timeout` passes:
/// `Some(bytes)` (empty once the server closed it), `None` on timeout.
pub(super) async fn read_raw(
    tcp: &mut tokio::net::TcpStream,
    timeout: Duration,
) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(timeout, tcp.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_streams_refuse_strangers_and_share_the_peer_port_with_grpc() {
    use etcd_server::raft::wire::{HELLO_LEN, Hello, IDLE_TIMEOUT, Verdict};
    use tokio::io::AsyncWriteExt;

    let mut c = start(3, &[]).await;
    c.wait_leader(STEP).await;
    let ep = c.members[0].endpoint();
    let mut cl = client(&ep).await;
    let header = cl.status().await.unwrap().header().cloned().unwrap();
    let (cluster_id, member_id) = (header.cluster_id(), header.member_id());
    let peer = c.members[0]
        .peer_url
        .trim_start_matches("http://")
        .to_string();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(&peer).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp
    };
    let stranger = 0x5eed;

    // (what, hello, verdict)
    let cases = [
        (
            "another cluster",
            Hello {
                cluster_id: cluster_id ^ 1,
                from: stranger,
                to: member_id,
            },
            Verdict::ClusterMismatch,
        ),
        (
            "meant for another member",
            Hello {
                cluster_id,
                from: stranger,
                to: member_id ^ 1,
            },
            Verdict::WrongMember,
        ),
        (
            "right cluster and member",
            Hello {
                cluster_id,
                from: stranger,
                to: member_id,
            },
            Verdict::Accepted,
        ),
    ];
    for (what, hello, verdict) in cases {
        let mut tcp = connect().await;
        tcp.write_all(&hello.encode()).await.unwrap();
        let got = read_raw(&mut tcp, STEP).await.expect("a verdict");
        assert_eq!(got.first(), Some(&(verdict as u8)), "{what}: {got:?}");
        if verdict != Verdict::Accepted {
            assert_eq!(
                read_raw(&mut tcp, STEP).await,
                Some(vec![]),
                "{what}: closed after"
            );
        }
    }

    // A hello whose magic arrives split across writes is still recognized.
    let mut tcp = connect().await;
    let bytes = Hello {
        cluster_id,
        from: stranger,
        to: member_id,
    }
    .encode();
    tcp.write_all(&bytes[..2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    tcp.write_all(&bytes[2..HELLO_LEN]).await.unwrap();
    assert_eq!(
        read_raw(&mut tcp, STEP).await,
        Some(vec![Verdict::Accepted as u8]),
        "split magic"
    );
    // An accepted stream that then sends nothing is closed as dead...
    let started = Instant::now();
    assert_eq!(
        read_raw(&mut tcp, IDLE_TIMEOUT * 4).await,
        Some(vec![]),
        "a silent stream is closed"
    );
    assert!(
        started.elapsed() >= IDLE_TIMEOUT / 2,
        "closed too early: {:?}",
        started.elapsed()
    );

    // ... as is one sending a frame over the limit or one that is not a Raft message.
    for (what, frame) in [
        ("oversized frame", u32::MAX.to_be_bytes().to_vec()),
        ("undecodable frame", vec![0, 0, 0, 3, 0xff, 0xff, 0xff]),
    ] {
        let mut tcp = connect().await;
        tcp.write_all(
            &Hello {
                cluster_id,
                from: stranger,
                to: member_id,
            }
            .encode(),
        )
        .await
        .unwrap();
        assert_eq!(
            read_raw(&mut tcp, STEP).await,
            Some(vec![Verdict::Accepted as u8]),
            "{what}"
        );
        tcp.write_all(&frame).await.unwrap();
        assert_eq!(
            read_raw(&mut tcp, STEP).await,
            Some(vec![]),
            "{what}: closed"
        );
    }

    // The same port still serves gRPC, and the cluster still replicates.
    let mut pc =
        etcd_server::proto::peerpb::peer_client::PeerClient::connect(c.members[0].peer_url.clone())
            .await
            .expect("gRPC on the peer port");
    let members = pc
        .members(etcd_server::proto::peerpb::MembersRequest {})
        .await
        .expect("Members over the peer port")
        .into_inner();
    assert_eq!((members.cluster_id, members.members.len()), (cluster_id, 3));
    cl.put("after", "strangers", None).await.unwrap();
    for m in &c.members {
        wait_serializable(&m.endpoint(), "after", "strangers", &c).await;
    }
}

/// The value of `etcd_network_active_peers` for `local` → `remote` on `client_url`'s
/// `/metrics`, if exported, and `etcd_network_disconnected_peers_total` for the same pair.
pub(super) fn peer_metrics(client_url: &str, local: u64, remote: u64) -> (Option<f64>, f64) {
    let (_, _, body) = crate::ops::http_get(client_url, "/metrics");
    let labels = format!("{{Local=\"{local:x}\",Remote=\"{remote:x}\"}}");
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{labels} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    (
        value("etcd_network_active_peers"),
        value("etcd_network_disconnected_peers_total").unwrap_or(0.0),
    )
}

/// A follower that stops reading (SIGSTOP: its kernel still holds the connection open and
/// acknowledges window probes) stops counting as an active peer once the leader's writes to it
/// have made no progress for etcd's write timeout (the kernel's `TCP_USER_TIMEOUT` or the
/// writer's own stall check, whichever fires first; with neither, this test fails); it counts
/// again, and catches up, once it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_dropped_as_a_peer_and_returns() {
    use etcd_server::raft::wire::USER_TIMEOUT;

    let mut c = start(3, &[]).await;
    let leader = c.wait_leader(STEP).await;
    let follower = (leader + 1) % 3;
    let leader_url = c.members[leader].endpoint();
    let (leader_id, follower_id) = (
        member_id(&leader_url).await,
        member_id(&c.members[follower].endpoint()).await,
    );
    let active = |url: &str| peer_metrics(url, leader_id, follower_id);
    let deadline = Instant::now() + STEP;
    while blocking(|| active(&leader_url)).0 != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the follower never became an active peer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, disconnects_before) = blocking(|| active(&leader_url));
    let pid = c.members[follower].pid().expect("the follower runs");
    crate::ops::signal(pid, "STOP");

    // Large writes fill the socket buffers toward the stopped follower quickly; the other two
    // members keep committing them.
    let mut cl = client(&leader_url).await;
    let value = vec![b'x'; 512 * 1024];
    let stopped_at = Instant::now();
    let mut n = 0;
    let dropped = loop {
        cl.put(format!("big/{}", n % 8), value.clone(), None)
            .await
            .expect("the majority commits");
        n += 1;
        let (now, disconnects) = blocking(|| active(&leader_url));
        if now == Some(0.0) {
            assert!(disconnects > disconnects_before, "disconnects not counted");
            break stopped_at.elapsed();
        }
        if stopped_at.elapsed() > USER_TIMEOUT * 6 {
            crate::ops::signal(pid, "CONT");
            panic!(
                "the leader still counts the stopped follower as active after {n} puts{}",
                logs(&c)
            );
        }
    };
    assert!(
        dropped >= USER_TIMEOUT,
        "dropped before the write timeout: {dropped:?}"
    );
    cl.put("after-stop", "1", None).await.unwrap();

    crate::ops::signal(pid, "CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while blocking(|| active(&leader_url)).0 != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the resumed follower never became active again{}",
            logs(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_serializable(&c.members[follower].endpoint(), "after-stop", "1", &c).await;
}
