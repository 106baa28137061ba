//! The closed-loop driver shared by the request/response workloads: one task per client, each
//! taking the next request number from a shared counter until the total or the deadline is
//! reached, timing every request, plus an optional progress printer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::options::Common;
use crate::report::{Recorder, Report, error_kind};

/// One client's request loop body. Each client owns its state (a KV client, a lease stream…).
pub(crate) trait ClientOp: Send + 'static {
    /// Sends request number `index` and waits for its response.
    fn call(&mut self, index: u64) -> impl Future<Output = Result<(), etcd_client::Error>> + Send;

    /// Releases what the client holds (e.g. revokes its lease); not timed.
    fn finish(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Counters the progress printer reads while a run goes on.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl Progress {
    /// Prints a line to stderr every `interval` until the returned guard is dropped.
    pub(crate) fn spawn_printer(
        self: &Arc<Self>,
        name: &'static str,
        interval: Duration,
    ) -> Option<PrinterGuard> {
        if interval.is_zero() {
            return None;
        }
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = 0;
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tick.tick().await;
                let ok = me.ok.load(Ordering::Relaxed);
                let failed = me.failed.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>7.1}s] {name}: {ok} ok, {failed} failed, {:.0} ops/s over the last {:?}",
                    start.elapsed().as_secs_f64(),
                    (ok - last) as f64 / interval.as_secs_f64(),
                    interval,
                );
                last = ok;
            }
        });
        Some(PrinterGuard(handle))
    }
}

/// Stops the progress printer when dropped.
pub(crate) struct PrinterGuard(tokio::task::JoinHandle<()>);

impl Drop for PrinterGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one task per client state until `common`'s total or duration is used up, and reports.
pub(crate) async fn drive<S: ClientOp>(
    common: &Common,
    name: &'static str,
    description: String,
    states: Vec<S>,
) -> Result<Report> {
    let total = common.effective_total();
    let rate = common.rate;
    let start = tokio::time::Instant::now();
    let deadline = common.duration.map(|d| start + d);
    let next = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::default());
    let _printer = progress.spawn_printer(name, common.progress);

    let mut tasks = Vec::with_capacity(states.len());
    for mut state in states {
        let next = next.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            let mut last_end = start;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) {
                    break;
                }
                if rate > 0.0 {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                }
                let t0 = tokio::time::Instant::now();
                if deadline.is_some_and(|d| t0 >= d) {
                    break;
                }
                let res = state.call(i).await;
                last_end = tokio::time::Instant::now();
                match res {
                    Ok(()) => {
                        rec.ok(last_end - t0);
                        progress.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        rec.error(error_kind(&e));
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            state.finish().await;
            (rec, last_end)
        }));
    }

    let mut all = Recorder::new();
    let mut end = start;
    for t in tasks {
        let (rec, last_end) = t.await.map_err(Error::Join)?;
        all.merge(rec);
        end = end.max(last_end);
    }
    Ok(Report::build(name, description, &all, end - start))
}
