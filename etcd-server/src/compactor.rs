//! Auto-compaction (`--auto-compaction-mode` / `--auto-compaction-retention`), run by the
//! leader as ordinary Compact requests through Raft, as etcd's v3compactor does.
//!
//! - `periodic`: samples the revision every tenth of the retention window (at most every hour)
//!   and compacts to the revision seen one retention window ago.
//! - `revision`: every check interval (5 minutes, as etcd), compacts to `current - retention`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::AutoCompaction;
use crate::proto::etcdserverpb::{CompactionRequest, internal_raft_request::Request};
use crate::server::EtcdServer;

/// etcd's revision-mode check interval.
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// How often the periodic compactor samples revisions for a retention window.
pub fn periodic_sample_interval(retention: Duration) -> Duration {
    (retention.min(Duration::from_secs(3600)) / 10).max(Duration::from_millis(10))
}

/// Picks the revision to compact to: the newest sample at least `retention` old.
pub fn periodic_target(
    samples: &VecDeque<(Instant, i64)>,
    now: Instant,
    retention: Duration,
) -> Option<i64> {
    samples
        .iter()
        .rev()
        .find(|(t, _)| now.duration_since(*t) >= retention)
        .map(|(_, r)| *r)
}

/// Runs the compactor until the server stops. `check` overrides the revision-mode interval.
pub async fn run(server: Arc<EtcdServer>, policy: AutoCompaction, check: Option<Duration>) {
    let interval = match policy {
        AutoCompaction::Off => return,
        AutoCompaction::Periodic(r) => check.unwrap_or_else(|| periodic_sample_interval(r)),
        AutoCompaction::Revision(_) => check.unwrap_or(REVISION_CHECK_INTERVAL),
    };
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut last_compacted = 0i64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let status = server.raft_status();
        if status.stopped.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let current = server.store().current_rev();
        let target = match policy {
            AutoCompaction::Off => return,
            AutoCompaction::Periodic(retention) => {
                samples.push_back((now, current));
                let target = periodic_target(&samples, now, retention);
                // Keep only what a future decision can still need.
                while samples.len() > 1
                    && samples
                        .get(1)
                        .is_some_and(|(t, _)| now.duration_since(*t) >= retention)
                {
                    samples.pop_front();
                }
                target
            }
            AutoCompaction::Revision(keep) => Some(current - keep),
        };
        let is_leader = status.leader.load(Ordering::SeqCst) == server.member_id();
        let Some(rev) = target else { continue };
        if !is_leader || rev <= last_compacted || rev <= server.store().compact_rev() || rev < 1 {
            continue;
        }
        let req = Request::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        });
        match server.propose(req).await {
            Ok(_) => {
                tracing::info!(revision = rev, "auto-compacted");
                last_compacted = rev;
            }
            Err(e) => tracing::warn!(revision = rev, error = %e, "auto-compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn periodic_target_is_the_revision_one_window_ago() {
        let retention = Duration::from_secs(3600);
        let start = Instant::now();
        let mut samples = VecDeque::new();
        for i in 0..20 {
            samples.push_back((start + Duration::from_secs(360 * i), 100 + i as i64));
        }
        let now = start + Duration::from_secs(360 * 19);
        // 3600 s before `now` is sample 9.
        assert_eq!(periodic_target(&samples, now, retention), Some(109));
        assert_eq!(
            periodic_target(&samples, start + Duration::from_secs(100), retention),
            None
        );
        assert_eq!(
            periodic_sample_interval(retention),
            Duration::from_secs(360)
        );
        assert_eq!(
            periodic_sample_interval(Duration::from_secs(72 * 3600)),
            Duration::from_secs(360)
        );
    }
}
