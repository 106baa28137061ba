//! Election.

use super::*;

pub(super) fn leader_str(l: &LeaderKey) -> String {
    format!(
        "name={} key={} rev={} lease={:x}",
        esc(l.name()),
        esc(l.key()),
        l.rev(),
        l.lease()
    )
}

pub(super) async fn election(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    grant(&mut c, 0x100, 30).await;
    grant(&mut c, 0x200, 30).await;
    grant(&mut c, 0x400, 30).await;
    let campaign = |c: &Client, value: &'static str, lease: i64| {
        let mut c = c.clone();
        tokio::spawn(async move {
            let r = c.campaign("E", value, lease).await.unwrap();
            r.leader().unwrap().clone()
        })
    };
    let leader = |c: &Client| {
        let mut c = c.clone();
        async move {
            match c.leader("E").await {
                Ok(r) => format!("leader: {}", r.kv().map(kv_str).unwrap_or_default()),
                Err(e) => format!("leader: {}", err_str(&e)),
            }
        }
    };
    t.push(leader(&c).await);
    // Observe before there is any leader. (etcd sends the stream's response headers only with
    // the first leader, so the call itself waits: run it in a task.)
    let ob = {
        let mut c = c.clone();
        tokio::spawn(async move { c.observe("E").await.unwrap() })
    };
    async fn observed(ob: &mut etcd_client::ObserveStream) -> String {
        let r = tokio::time::timeout(STEP, ob.message())
            .await
            .expect("no observe message")
            .unwrap()
            .unwrap();
        format!("observe: {}", r.kv().map(kv_str).unwrap_or_default())
    }

    let a = campaign(&c, "a1", 0x100).await.unwrap();
    t.push(format!("a leads: {}", leader_str(&a)));
    let mut ob = tokio::time::timeout(STEP, ob).await.unwrap().unwrap();
    t.push(observed(&mut ob).await);
    t.push(leader(&c).await);
    let b = campaign(&c, "b1", 0x200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.push(format!("b waiting: {}", !b.is_finished()));
    c.proclaim("a2", Some(ProclaimOptions::new().with_leader(a.clone())))
        .await
        .unwrap();
    t.push(observed(&mut ob).await);
    t.push(leader(&c).await);
    c.resign(Some(ResignOptions::new().with_leader(a.clone())))
        .await
        .unwrap();
    let b = tokio::time::timeout(STEP, b).await.unwrap().unwrap();
    t.push(format!("b leads: {}", leader_str(&b)));
    t.push(observed(&mut ob).await);
    // The old leader can no longer proclaim.
    let e = c
        .proclaim("a3", Some(ProclaimOptions::new().with_leader(a.clone())))
        .await
        .unwrap_err();
    t.push(format!("stale proclaim: {}", err_str(&e)));
    c.resign(Some(ResignOptions::new().with_leader(b)))
        .await
        .unwrap();
    t.push(leader(&c).await);

    // c leads on a 2 s lease that nobody keeps alive; its leadership ends when it expires, and
    // the waiting d takes over.
    grant(&mut c, 0x300, 2).await;
    let cl = campaign(&c, "c1", 0x300).await.unwrap();
    t.push(format!("c leads: {}", leader_str(&cl)));
    t.push(observed(&mut ob).await);
    let began = Instant::now();
    let d = campaign(&c, "d1", 0x400);
    let d = tokio::time::timeout(STEP, d).await.unwrap().unwrap();
    let waited = began.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{kind:?}: d waited {waited:?}"
    );
    t.push(format!("d leads: {}", leader_str(&d)));
    t.push(observed(&mut ob).await);
    t.push(leader(&c).await);
    t.push(get_str(&mut c, "E/300").await);
    c.resign(Some(ResignOptions::new().with_leader(d)))
        .await
        .unwrap();
    t.push(leader(&c).await);
    let e = c
        .delete("E/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    t.push(format!("left under E/: {}", e.deleted()));
    let no_leader = format!("leader: Unknown: {NO_LEADER}");
    assert_eq!(
        t,
        v(&[
            &no_leader,
            "a leads: name=E key=E/100 rev=2 lease=100",
            "observe: E/100=a1 c2 m2 v1 l100",
            "leader: E/100=a1 c2 m2 v1 l100",
            "b waiting: true",
            "observe: E/100=a2 c2 m4 v2 l100",
            "leader: E/100=a2 c2 m4 v2 l100",
            "b leads: name=E key=E/200 rev=3 lease=200",
            "observe: E/200=b1 c3 m3 v1 l200",
            &format!("stale proclaim: Unknown: {NOT_LEADER}"),
            &no_leader,
            "c leads: name=E key=E/300 rev=7 lease=300",
            "observe: E/300=c1 c7 m7 v1 l300",
            "d leads: name=E key=E/400 rev=8 lease=400",
            "observe: E/400=d1 c8 m8 v1 l400",
            "leader: E/400=d1 c8 m8 v1 l400",
            "E/300: none",
            &no_leader,
            "left under E/: 0",
        ]),
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn election_campaign_proclaim_observe_resign_and_expiry() {
    side_by_side(election).await;
}
