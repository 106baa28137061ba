//! prev_kv and filters.

use super::*;

pub(super) async fn prev_kv_and_filters(kind: Kind) -> Vec<String> {
    let p = start_async(kind, &[]).await;
    let mut c = p.client().await;
    let mut t = Vec::new();
    let mut s = c
        .watch("f", Some(WatchOptions::new().with_prev_key()))
        .await
        .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "f",
        Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "f",
        Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    s.watch(
        "f",
        Some(
            WatchOptions::new()
                .with_prev_key()
                .with_filters([WatchFilterType::NoPut, WatchFilterType::NoDelete]),
        ),
    )
    .await
    .unwrap();
    t.push(next_show(&mut s).await);
    c.put("f", "1", None).await.unwrap(); // 2
    c.put("f", "2", None).await.unwrap(); // 3
    c.delete("f", None).await.unwrap(); // 4
    c.put("f", "3", None).await.unwrap(); // 5: a new life, no prev_kv
    let m = by_id(&mut s, 8).await;
    quiet(&mut s, Duration::from_millis(300)).await;
    let expect: BTreeMap<i64, Vec<String>> = [
        (
            0,
            v(&[
                "id=0 rev=2 | PUT f=1 c2 m2 v1 l0",
                "id=0 rev=3 | PUT f=2 c2 m3 v2 l0 prev=(f=1 c2 m2 v1 l0)",
                "id=0 rev=4 | DELETE f= c0 m4 v0 l0 prev=(f=2 c2 m3 v2 l0)",
                "id=0 rev=5 | PUT f=3 c5 m5 v1 l0",
            ]),
        ),
        (1, v(&["id=1 rev=4 | DELETE f= c0 m4 v0 l0"])),
        (
            2,
            v(&[
                "id=2 rev=2 | PUT f=1 c2 m2 v1 l0",
                "id=2 rev=3 | PUT f=2 c2 m3 v2 l0",
                "id=2 rev=5 | PUT f=3 c5 m5 v1 l0",
            ]),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(m, expect, "{kind:?}");
    t.extend(lines(&m));

    // prev_kv on replayed history, and on a multi-key delete.
    c.put("g/1", "a", None).await.unwrap(); // 6
    c.put("g/2", "b", None).await.unwrap(); // 7
    c.delete("g/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap(); // 8
    let mut h = c
        .watch(
            "f",
            Some(WatchOptions::new().with_prev_key().with_start_revision(3)),
        )
        .await
        .unwrap();
    t.push(next_show(&mut h).await);
    t.push(next_show(&mut h).await);
    assert_eq!(
        t[t.len() - 1],
        "id=0 rev=8 | PUT f=2 c2 m3 v2 l0 prev=(f=1 c2 m2 v1 l0) | DELETE f= c0 m4 v0 l0 prev=(f=2 c2 m3 v2 l0) | PUT f=3 c5 m5 v1 l0",
        "{kind:?}"
    );
    h.watch(
        "g/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_start_revision(8),
        ),
    )
    .await
    .unwrap();
    t.push(next_show(&mut h).await);
    t.push(next_show(&mut h).await);
    assert_eq!(
        t[t.len() - 1],
        "id=1 rev=8 | DELETE g/1= c0 m8 v0 l0 prev=(g/1=a c6 m6 v1 l0) | DELETE g/2= c0 m8 v0 l0 prev=(g/2=b c7 m7 v1 l0)",
        "{kind:?}"
    );
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prev_kv_and_filters() {
    side_by_side(prev_kv_and_filters).await;
}
