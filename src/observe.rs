//! Observe: reads what exists — the owned Kubernetes objects and etcd's member list and each
//! member's health. The only stage besides apply and status that does I/O; it changes nothing.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::etcd::{EtcdAdmin, EtcdStatus};
use crate::model::MemberBootstrap;
use crate::model::parse_member_files;
use crate::names::{ClusterNames, SPEC_HASH_ANNOTATION};

/// Why observing failed. etcd being unreachable is an observation, not an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an owned object failed.
    #[error("failed to read {kind} {name}: {source}")]
    Read {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Everything the planner and the status stage need to know about the world.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The StatefulSet, if it exists.
    pub statefulset: Option<StatefulSetState>,
    /// Member configuration files from the ConfigMap, by member name.
    pub member_configs: BTreeMap<String, MemberBootstrap>,
    /// Whether the PodDisruptionBudget exists.
    pub pdb_exists: bool,
    /// What etcd says.
    pub etcd: EtcdState,
    /// Each member's pod (locally: its process), by ordinal. A member without an entry has
    /// no pod yet.
    pub pods: BTreeMap<i32, PodState>,
    /// How long the quorum has been seen lost (the `QuorumLost` condition's age); `None`
    /// while it is not.
    pub quorum_lost_for: Option<std::time::Duration>,
}

/// One member's pod, or locally its process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodState {
    /// It runs an older template (locally: an older configuration file) than the current one.
    pub stale: bool,
    /// It is being deleted.
    pub terminating: bool,
    /// Its last exit said that its data is lost or belongs to a removed member (one of
    /// [`DATA_LOST_MARKERS`]): restarting it cannot help.
    pub data_lost: Option<String>,
    /// Its restore init container failed, with the end of what it said.
    pub restore_failed: Option<String>,
    /// Its restore init container finished: the restore ID its data comes from (empty when
    /// it restored nothing).
    pub restored: Option<String>,
}

/// What `etcd-server` (and etcd) print when a member cannot run on the data it has: its data
/// directory was emptied while the cluster still lists it as started; the cluster removed it;
/// its Raft log is behind what the cluster says it committed.
pub const DATA_LOST_MARKERS: &[&str] = &[
    "has already been bootstrapped",
    "the backend is lost",
    "the member has been permanently removed from the cluster",
    "is out of range [last_index",
    "is out of range [lastIndex",
];

/// The line of `text` (a log tail or a termination message) that says the member's data is
/// lost, if any.
pub fn data_lost_reason(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|line| DATA_LOST_MARKERS.iter().any(|m| line.contains(m)))
        .map(|line| line.trim().to_owned())
}

/// The parts of the StatefulSet the planner uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatefulSetState {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// The spec hash it was built from.
    pub spec_hash: Option<String>,
    /// The schemes it was built to serve (absent on StatefulSets of older operators).
    pub tls_built: Option<crate::model::TlsBuilt>,
}

/// etcd as seen from the operator.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum EtcdState {
    /// Not asked: there is no StatefulSet yet.
    #[default]
    NotChecked,
    /// No member answered the member list.
    Unreachable {
        /// Why.
        error: String,
    },
    /// The member list, with each member's health.
    Reachable(ClusterView),
}

/// etcd's member list with each member's health.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterView {
    /// Cluster ID.
    pub cluster_id: u64,
    /// Members, in member-list order.
    pub members: Vec<MemberView>,
}

/// One member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Member ID.
    pub id: u64,
    /// Name (empty until started).
    pub name: String,
    /// StatefulSet ordinal, from the peer URL; `None` for a member the operator did not create.
    pub ordinal: Option<i32>,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Its answer to a status request.
    pub health: MemberHealth,
    /// Its peer URL is `https://`.
    pub peer_tls: bool,
    /// Its advertised client URL is `https://`; `None` until it started and published one.
    pub client_tls: Option<bool>,
}

/// A member's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberHealth {
    /// It answered and knows a leader.
    Healthy {
        /// Leader ID it reports.
        leader: u64,
        /// Version it reports.
        version: String,
        /// Raft index.
        raft_index: u64,
    },
    /// It answered, but knows no leader (no quorum, or an election under way): how far its
    /// log goes tells which member to recover from when the quorum is lost.
    Leaderless {
        /// Raft index.
        raft_index: u64,
    },
    /// It did not answer or reports errors.
    Unhealthy {
        /// Why.
        reason: String,
    },
}

impl MemberView {
    /// Whether the member is healthy.
    pub fn healthy(&self) -> bool {
        matches!(self.health, MemberHealth::Healthy { .. })
    }
}

impl ClusterView {
    /// The leader most healthy members agree on.
    pub fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for m in &self.members {
            if let MemberHealth::Healthy { leader, .. } = m.health {
                *votes.entry(leader).or_default() += 1;
            }
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id)
    }

    /// The member with ordinal `i`.
    pub fn by_ordinal(&self, i: i32) -> Option<&MemberView> {
        self.members.iter().find(|m| m.ordinal == Some(i))
    }

    /// Whether a majority of voting members is healthy.
    pub fn has_quorum(&self) -> bool {
        let voters = self.members.iter().filter(|m| !m.is_learner).count();
        let healthy = self
            .members
            .iter()
            .filter(|m| !m.is_learner && m.healthy())
            .count();
        voters > 0 && healthy > voters / 2
    }
}

/// Reads the owned objects and, once a StatefulSet exists, etcd.
pub async fn observe(
    client: &Client,
    etcd: &dyn EtcdAdmin,
    names: &ClusterNames,
) -> Result<Observed, Error> {
    let ns = &names.namespace;
    let statefulset = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get_opt(&names.statefulset())
        .await
        .map_err(|source| Error::Read {
            kind: "StatefulSet",
            name: names.statefulset(),
            source,
        })?;
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&names.config_map())
        .await
        .map_err(|source| Error::Read {
            kind: "ConfigMap",
            name: names.config_map(),
            source,
        })?;
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get_opt(&names.pdb())
        .await
        .map_err(|source| Error::Read {
            kind: "PodDisruptionBudget",
            name: names.pdb(),
            source,
        })?;

    let pods = match &statefulset {
        None => BTreeMap::new(),
        Some(sts) => {
            let selector: Vec<String> = names
                .selector_labels()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let list = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels(&selector.join(",")))
                .await
                .map_err(|source| Error::Read {
                    kind: "Pod",
                    name: names.statefulset(),
                    source,
                })?;
            let revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
            pod_states(names, revision.as_deref(), &list.items)
        }
    };
    let statefulset = statefulset.as_ref().map(statefulset_state);
    let member_configs = config_map
        .as_ref()
        .map(parse_member_files)
        .unwrap_or_default();
    let etcd = match &statefulset {
        None => EtcdState::NotChecked,
        Some(sts) => {
            let first = forced_ordinal(names, &member_configs);
            observe_etcd(etcd, names, sts.replicas, first).await
        }
    };
    Ok(Observed {
        member_configs,
        statefulset,
        pdb_exists: pdb.is_some(),
        etcd,
        pods,
        // The controller sets it from the status it keeps.
        quorum_lost_for: None,
    })
}

/// The member whose configuration file carries `force-new-cluster` (a quorum recovery under
/// way), if any.
pub fn forced_ordinal(
    names: &ClusterNames,
    configs: &BTreeMap<String, MemberBootstrap>,
) -> Option<i32> {
    configs
        .values()
        .find(|c| c.force_new_cluster)
        .and_then(|c| names.ordinal_of_name(&c.name))
}

/// The StatefulSet's pods by ordinal: stale when their `controller-revision-hash` is not the
/// StatefulSet's update revision; data lost when the etcd container's last termination
/// message (the log tail, with `FallbackToLogsOnError`) says so.
pub fn pod_states(
    names: &ClusterNames,
    update_revision: Option<&str>,
    pods: &[Pod],
) -> BTreeMap<i32, PodState> {
    let prefix = format!("{}-", names.statefulset());
    pods.iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.as_deref()?;
            let ordinal: i32 = name.strip_prefix(&prefix)?.parse().ok()?;
            let revision = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash"))
                .map(String::as_str);
            let stale = matches!((revision, update_revision), (Some(a), Some(b)) if a != b);
            let data_lost = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.name == crate::names::CONTAINER)
                .flat_map(|c| {
                    [
                        c.state.as_ref().and_then(|s| s.terminated.as_ref()),
                        c.last_state.as_ref().and_then(|s| s.terminated.as_ref()),
                    ]
                })
                .flatten()
                .find_map(|t| t.message.as_deref().and_then(data_lost_reason));
            let init = pod
                .status
                .as_ref()
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.name == crate::names::RESTORE_CONTAINER);
            let now = init.and_then(|c| c.state.as_ref());
            let restored = now
                .and_then(|s| s.terminated.as_ref())
                .filter(|t| t.exit_code == 0)
                .map(|t| {
                    crate::backup::in_place::restored_id(t.message.as_deref().unwrap_or_default())
                });
            // Failing now, or failed before and not through yet.
            let restore_failed = init
                .filter(|_| restored.is_none() && now.is_none_or(|s| s.running.is_none()))
                .into_iter()
                .flat_map(|c| {
                    [
                        c.state.as_ref().and_then(|s| s.terminated.as_ref()),
                        c.last_state.as_ref().and_then(|s| s.terminated.as_ref()),
                    ]
                })
                .flatten()
                .find(|t| t.exit_code != 0)
                .map(|t| {
                    let text = t.message.as_deref().unwrap_or_default().trim();
                    text.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("no message")
                        .trim()
                        .to_owned()
                });
            Some((
                ordinal,
                PodState {
                    stale,
                    terminating: pod.metadata.deletion_timestamp.is_some(),
                    data_lost,
                    restore_failed,
                    restored,
                },
            ))
        })
        .collect()
}

fn statefulset_state(sts: &StatefulSet) -> StatefulSetState {
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.clone().unwrap_or_default();
    StatefulSetState {
        replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        spec_hash: sts
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
            .cloned(),
        tls_built: sts
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::names::TLS_BUILT_ANNOTATION))
            .and_then(|v| crate::model::TlsBuilt::decode(v)),
    }
}

/// Asks etcd, through members `0..replicas`, for its member list and each member's health.
pub async fn observe_etcd(
    etcd: &dyn EtcdAdmin,
    names: &ClusterNames,
    replicas: i32,
    first: Option<i32>,
) -> EtcdState {
    // The member list comes from the first member that answers: during a quorum recovery,
    // the member restarted alone (`first`), whose list is the cluster's from then on, while
    // other survivors may still answer with the old one.
    let mut endpoints: Vec<String> = (0..replicas).map(|i| names.client_url(i)).collect();
    if let Some(i) = first.filter(|i| (0..replicas).contains(i)) {
        endpoints.rotate_left(i as usize);
    }
    if endpoints.is_empty() {
        return EtcdState::Unreachable {
            error: "the StatefulSet has no replicas".to_owned(),
        };
    }
    let list = match etcd.member_list(&endpoints).await {
        Ok(list) => list,
        Err(e) => {
            return EtcdState::Unreachable {
                error: e.to_string(),
            };
        }
    };
    let checks = list.members.iter().map(|m| {
        let ordinal = m
            .peer_urls
            .iter()
            .find_map(|u| names.ordinal_of_peer_url(u));
        // Ask the member itself: its advertised client URL, or the one the operator gave it.
        let endpoint = m
            .client_urls
            .first()
            .cloned()
            .or_else(|| ordinal.map(|i| names.client_url(i)));
        async move {
            let health = match endpoint {
                None => MemberHealth::Unhealthy {
                    reason: "the member has not started".to_owned(),
                },
                Some(endpoint) => health_of(etcd.status(&endpoint).await),
            };
            MemberView {
                id: m.id,
                name: m.name.clone(),
                ordinal,
                is_learner: m.is_learner,
                health,
                peer_tls: m.peer_urls.iter().any(|u| u.starts_with("https://")),
                client_tls: m.client_urls.first().map(|u| u.starts_with("https://")),
            }
        }
    });
    let members = join_all(checks).await;
    EtcdState::Reachable(ClusterView {
        cluster_id: list.cluster_id,
        members,
    })
}

fn health_of(status: Result<EtcdStatus, crate::etcd::Error>) -> MemberHealth {
    match status {
        Err(e) => MemberHealth::Unhealthy {
            reason: e.to_string(),
        },
        Ok(s) if !s.errors.is_empty() => MemberHealth::Unhealthy {
            reason: s.errors.join("; "),
        },
        Ok(s) if s.leader == 0 => MemberHealth::Leaderless {
            raft_index: s.raft_index,
        },
        Ok(s) => MemberHealth::Healthy {
            leader: s.leader,
            version: s.version,
            raft_index: s.raft_index,
        },
    }
}
