//! The `watch` workload: watchers spread over streams and connections all watch one key, one
//! putter writes it at a fixed rate, and each event's latency is measured from the moment its put
//! was sent (carried in the value) to the moment the event reached the watcher.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchStream};

use crate::error::{Error, Result};
use crate::options::{Common, WatchOptions};
use crate::pool::Pool;
use crate::report::{Recorder, Report, error_kind};
use crate::runner::Progress;

/// How long to wait for the server to confirm the creation of the watchers.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn run(common: &Common, o: &WatchOptions, description: String) -> Result<Report> {
    if o.watchers == 0 || o.streams == 0 {
        return Err(Error::InvalidOptions(
            "--watchers and --streams must be at least 1".into(),
        ));
    }
    if !(o.put_rate > 0.0 && o.put_rate.is_finite()) {
        return Err(Error::InvalidOptions(
            "--put-rate must be a positive number".into(),
        ));
    }
    if o.val_size < 8 {
        return Err(Error::InvalidOptions("watch needs --val-size ≥ 8".into()));
    }
    let streams = o.streams.min(o.watchers);
    let pool = Pool::connect(common).await?;
    let base = Instant::now();
    let progress = Arc::new(Progress::default());
    let (done_tx, done_rx) = tokio::sync::watch::channel::<Option<u64>>(None);

    let mut receivers = Vec::with_capacity(streams);
    for s in 0..streams {
        // Watchers split as evenly as possible: the first `watchers % streams` get one more.
        let n = o.watchers / streams + usize::from(s < o.watchers % streams);
        let stream = open_stream(&pool, s, &o.key, n).await?;
        receivers.push(tokio::spawn(receive(
            stream,
            done_rx.clone(),
            base,
            o.drain_timeout,
            progress.clone(),
        )));
    }

    let _printer = progress.spawn_printer("watch", common.progress);
    let mut kv = pool.for_client(0).kv_client();
    let total = common.effective_total();
    let start = tokio::time::Instant::now();
    let deadline = common.duration.map(|d| start + d);
    let pad = vec![b'w'; o.val_size - 8];
    let mut puts_ok = 0u64;
    let mut put_errors = Recorder::new();
    for i in 0u64.. {
        if total.is_some_and(|t| i >= t) {
            break;
        }
        let at = start + Duration::from_secs_f64(i as f64 / o.put_rate);
        if deadline.is_some_and(|d| at >= d) {
            break;
        }
        tokio::time::sleep_until(at).await;
        let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut value = sent.to_le_bytes().to_vec();
        value.extend_from_slice(&pad);
        match kv.put(o.key.clone(), value, None).await {
            Ok(_) => puts_ok += 1,
            Err(e) => put_errors.error(format!("put: {}", error_kind(&e))),
        }
    }
    let puts_failed: u64 = put_errors.errors.values().sum();
    // Receivers may already have exited on a stream error; then nobody listens, which is fine.
    let _ = done_tx.send(Some(puts_ok));

    let mut all = put_errors;
    let mut missing = 0u64;
    let mut end = start;
    for r in receivers {
        let got = r.await.map_err(Error::Join)?;
        all.merge(got.rec);
        missing += got
            .counts
            .values()
            .map(|&c| puts_ok.saturating_sub(c))
            .sum::<u64>();
        end = end.max(tokio::time::Instant::from_std(got.last_event));
    }
    if missing > 0 {
        *all.errors.entry("missing event".into()).or_default() += missing;
    }
    let mut report = Report::build("watch", description, &all, end - start);
    report.counters.insert("puts".into(), puts_ok);
    report.counters.insert("puts_failed".into(), puts_failed);
    report.counters.insert("watchers".into(), o.watchers as u64);
    report.counters.insert("streams".into(), streams as u64);
    report.counters.insert("missing_events".into(), missing);
    Ok(report)
}

/// Opens watch stream `s` with `n` watchers on `key` and waits until all are created.
async fn open_stream(pool: &Pool, s: usize, key: &str, n: usize) -> Result<Opened> {
    let request = |source| Error::Request {
        action: "create a watcher".into(),
        source,
    };
    let mut wc = pool.for_client(s).watch_client();
    let mut stream = wc.watch(key, None).await.map_err(request)?;
    for _ in 1..n {
        stream.watch(key, None).await.map_err(request)?;
    }
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match tokio::time::timeout(CREATE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(resp))) if resp.created() && !resp.canceled() => ids.push(resp.watch_id()),
            Ok(Ok(Some(resp))) if resp.canceled() => {
                let reason = resp.cancel_reason().to_owned();
                return Err(request(etcd_client::Error::WatchError(format!(
                    "canceled: {reason}"
                ))));
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                return Err(request(etcd_client::Error::WatchError(
                    "stream closed".into(),
                )));
            }
            Ok(Err(e)) => return Err(request(e)),
            Err(_) => {
                return Err(request(etcd_client::Error::WatchError(format!(
                    "no created response within {CREATE_TIMEOUT:?}"
                ))));
            }
        }
    }
    Ok(Opened { stream, ids })
}

struct Opened {
    stream: WatchStream,
    ids: Vec<i64>,
}

struct Received {
    rec: Recorder,
    counts: HashMap<i64, u64>,
    last_event: Instant,
}

/// Receives events until every watcher of the stream saw as many events as there were
/// successful puts, or until the drain timeout after the last put.
async fn receive(
    opened: Opened,
    mut done: tokio::sync::watch::Receiver<Option<u64>>,
    base: Instant,
    drain_timeout: Duration,
    progress: Arc<Progress>,
) -> Received {
    let Opened { mut stream, ids } = opened;
    let mut rec = Recorder::new();
    let mut counts: HashMap<i64, u64> = ids.iter().map(|&id| (id, 0)).collect();
    let mut last_event = Instant::now();
    let mut expected: Option<u64> = None;
    let mut drain_deadline = tokio::time::Instant::now();
    loop {
        if let Some(exp) = expected
            && counts.values().all(|&c| c >= exp)
        {
            break;
        }
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        rec.error(format!("watch canceled: {}", resp.cancel_reason()));
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(sent) = kv.value().get(..8) else { continue };
                        if ev.event_type() != EventType::Put {
                            continue;
                        }
                        let mut b = [0u8; 8];
                        b.copy_from_slice(sent);
                        let sent = Duration::from_nanos(u64::from_le_bytes(b));
                        rec.ok(base.elapsed().saturating_sub(sent));
                        *counts.entry(resp.watch_id()).or_default() += 1;
                        progress.ok.fetch_add(1, Ordering::Relaxed);
                        last_event = Instant::now();
                    }
                }
                Ok(None) => {
                    rec.error("watch stream closed".into());
                    break;
                }
                Err(e) => {
                    rec.error(format!("watch: {}", error_kind(&e)));
                    break;
                }
            },
            changed = done.changed(), if expected.is_none() => {
                if changed.is_err() {
                    break;
                }
                expected = *done.borrow();
                drain_deadline = tokio::time::Instant::now() + drain_timeout;
            }
            () = tokio::time::sleep_until(drain_deadline), if expected.is_some() => break,
        }
    }
    Received {
        rec,
        counts,
        last_event,
    }
}
