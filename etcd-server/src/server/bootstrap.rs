//! Starting a member: what its data dir and its peers say about whether it exists, joining an
//! existing cluster, and rebuilding what is derived from the backend.

use super::*;

pub(super) fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

/// `(member ID, peer URLs)` of every member.
pub(super) fn peer_list(c: &Cluster) -> Vec<(u64, Vec<String>)> {
    c.members
        .values()
        .map(|m| (m.id, m.peer_ur_ls.clone()))
        .collect()
}

/// Rebuilds the lessor's and alarms' in-memory state from the backend.
pub(super) fn recover_aux(
    store: &KvStore,
    lessor: &Lessor,
    alarms: &Alarms,
) -> Result<(), MvccError> {
    let leased = store.take_loaded_leases();
    let view = store.read()?;
    lessor.recover(view.backend_tx(), &leased)?;
    alarms.recover(view.backend_tx())?;
    Ok(())
}

/// The peer URLs in `--initial-cluster` other than this member's.
pub(super) fn other_peer_urls(cfg: &Config) -> Vec<String> {
    let own = sorted(&cfg.advertise_peer_urls);
    cfg.initial_cluster
        .split(',')
        .filter_map(|p| p.split_once('=').map(|(_, u)| u.trim().to_owned()))
        .filter(|u| !own.contains(u))
        .collect()
}

/// The address peer connections leave from: the first `--listen-peer-urls` IP, as the Raft
/// transport binds (so peers and firewalls see the member's own address).
pub(super) fn peer_source(cfg: &Config) -> Option<std::net::IpAddr> {
    cfg.listen_peer
        .first()
        .map(|a| a.addr.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// Removes received snapshot files at or below `index` that were never installed (Raft
/// ignored them, or a newer one won).
pub(super) fn remove_stale_incoming(snap_dir: &std::path::Path, index: u64) {
    let Ok(dir) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".in.db")) else {
            continue;
        };
        if u64::from_str_radix(hex, 16).is_ok_and(|i| i <= index) {
            let _ = std::fs::remove_file(ent.path());
        }
    }
}

/// Asks one peer for the cluster's members, from `source`.
pub(super) async fn ask_members(
    url: String,
    source: Option<std::net::IpAddr>,
    tls: Option<&PeerTls>,
) -> Option<crate::proto::peerpb::MembersResponse> {
    use crate::proto::peerpb::{MembersRequest, peer_client::PeerClient};
    let tune = |ep: tonic::transport::Endpoint| {
        ep.connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(1))
    };
    let channel = match crate::raft::dial::grpc_channel(&url, source, tls, tune).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%url, error = %e, "failed to ask a member for the cluster");
            return None;
        }
    };
    let mut client = PeerClient::new(channel);
    client
        .members(MembersRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Before bootstrapping a new cluster from an empty data dir: if a peer that already runs
/// this cluster says this member started before (it has published its client URLs) or was
/// removed,
/// its data was lost and bootstrapping again would make it vote with an empty log. As etcd
/// does, refuse. Peers that are not running (the usual case: they are bootstrapping too)
/// refuse the connection and are not waited for; a peer that runs but is slow to answer (a
/// busy machine) is given [`BOOTSTRAPPED_CHECK`]: giving up on it early would let a member
/// whose data was lost rejoin with an empty log, which etcd's shorter wait allows.
/// How long a member with an empty data dir waits for running peers to say whether it
/// started before.
const BOOTSTRAPPED_CHECK: Duration = Duration::from_secs(10);

pub(super) fn check_not_bootstrapped(
    cfg: &Config,
    tls: Option<&PeerTls>,
    cluster: &Cluster,
    id: u64,
) -> Result<(), StartError> {
    let urls = other_peer_urls(cfg);
    if urls.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Handle::current();
    let answers = rt.block_on(async {
        let source = peer_source(cfg);
        let asks = urls.into_iter().map(|u| ask_members(u, source, tls));
        tokio::time::timeout(BOOTSTRAPPED_CHECK, futures::future::join_all(asks))
            .await
            .unwrap_or_default()
    });
    for resp in answers.into_iter().flatten() {
        if resp.cluster_id != cluster.id {
            continue;
        }
        match resp.members.iter().find(|m| m.id == id) {
            // Client URLs are published once the member has started (initial members carry
            // their names from the start, so the name says nothing).
            Some(m) if !m.client_ur_ls.is_empty() => {
                return Err(StartError::AlreadyBootstrapped { id });
            }
            Some(_) => {}
            None => return Err(StartError::Removed),
        }
    }
    Ok(())
}

/// Asks the members named in `--initial-cluster` (other than this one) for the cluster, as a
/// member started with `--initial-cluster-state=existing` must.
pub(super) fn join_existing(cfg: &Config, tls: Option<&PeerTls>) -> Result<Cluster, StartError> {
    let urls = other_peer_urls(cfg);
    if urls.is_empty() {
        return Err(StartError::DataDir {
            path: cfg.data_dir.display().to_string(),
            reason: "--initial-cluster-state=existing needs other members in --initial-cluster"
                .into(),
        });
    }
    let rt = tokio::runtime::Handle::current();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for url in &urls {
            if let Some(resp) = rt.block_on(ask_members(url.clone(), peer_source(cfg), tls)) {
                let members = resp.members.into_iter().map(|m| (m.id, m)).collect();
                return Ok(Cluster {
                    id: resp.cluster_id,
                    members,
                    removed: Default::default(),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(StartError::DataDir {
                path: cfg.data_dir.display().to_string(),
                reason: format!("could not reach any member of the existing cluster at {urls:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
