//! The lessor's clock on the leader: follows leadership, checkpoints remaining TTLs and revokes
//! expired leases through Raft. It lives with the member, above the lessor, so the lessor
//! never calls up into the member that proposes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::EtcdServer;

/// How often the leader looks for expired leases.
const EXPIRY_CHECK: Duration = Duration::from_millis(500);

/// Follows leadership (starting or stopping lease clocks) and, on the leader, revokes expired
/// leases through Raft. Runs until the member stops.
pub async fn run_lease_expiry(server: Arc<EtcdServer>) {
    use crate::proto::etcdserverpb::{
        LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest, internal_raft_request::Request,
    };
    let mut ticker = tokio::time::interval(EXPIRY_CHECK);
    let election = server.config().heartbeat * server.config().election_ticks as u32;
    let checkpoint_every = server.config().lease_checkpoint_interval;
    let mut last_checkpoint = Instant::now();
    loop {
        ticker.tick().await;
        if server.lessor().is_primary() && last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = Instant::now();
            let checkpoints: Vec<LeaseCheckpoint> = server
                .lessor()
                .remaining_all()
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            let result = if checkpoints.is_empty() {
                Ok(())
            } else {
                let request = Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints });
                server.propose(request).await.map(drop)
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "failed to checkpoint lease TTLs");
            }
        }
        if server
            .raft_status()
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let lessor = server.lessor();
        lessor.follow_leadership(server.is_leader(), election);
        if !lessor.is_primary() {
            continue;
        }
        for id in lessor.take_expired(Instant::now()) {
            let s = server.clone();
            tokio::spawn(async move {
                match s
                    .propose(Request::LeaseRevoke(LeaseRevokeRequest { id }))
                    .await
                {
                    Ok(_) => tracing::info!(lease = format!("{id:x}"), "revoked expired lease"),
                    Err(crate::error::EtcdError::LeaseNotFound) => {}
                    Err(e) => {
                        tracing::warn!(lease = format!("{id:x}"), error = %e, "failed to revoke expired lease");
                        s.lessor().revoke_failed(id);
                    }
                }
            });
        }
    }
}
