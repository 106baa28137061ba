//! Test fixtures: clusters from inline YAML, observed states, a fake etcd and a mock apiserver.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use etcd_operator::build::{configmap, spec_hash};
use etcd_operator::crd::EtcdCluster;
use etcd_operator::etcd::{Error as EtcdError, EtcdAdmin, EtcdStatus, ListedMember, MemberList};
use etcd_operator::names::{Addressing, ClusterNames};
use etcd_operator::observe::{
    ClusterView, EtcdState, MemberHealth, MemberView, Observed, PodState, StatefulSetState,
};
use etcd_operator::plan::{InitialState, MemberBootstrap};
use etcd_operator::validate::{ValidatedCluster, validate};
use futures::future::BoxFuture;

/// The metadata every fixture cluster has.
pub const META: &str = "
apiVersion: etcd.rustops.dev/v1alpha1
kind: EtcdCluster
metadata:
  name: main
  namespace: db
  uid: 11111111-2222-3333-4444-555555555555
  generation: 1
";

/// An EtcdCluster named `main` in `db` with `spec` (YAML, indented under `spec:`).
pub fn cluster(spec: &str) -> EtcdCluster {
    let yaml = format!("{META}spec:\n{spec}");
    serde_yaml_ng::from_str(&yaml).expect("fixture is a valid EtcdCluster")
}

/// The default cluster: `spec: {}`.
pub fn default_cluster() -> EtcdCluster {
    let yaml = format!("{META}spec: {{}}\n");
    serde_yaml_ng::from_str(&yaml).expect("fixture is a valid EtcdCluster")
}

/// `cluster` validated.
pub fn validated(cluster: &EtcdCluster) -> ValidatedCluster {
    validate(cluster).expect("fixture spec is valid")
}

/// Names of the fixture cluster.
pub fn names() -> ClusterNames {
    ClusterNames {
        cluster: "main".into(),
        namespace: "db".into(),
        addressing: Addressing::Dns,
        client_tls: false,
        peer_tls: false,
        tls_moving: false,
    }
}

/// Member IDs of the fixtures: ordinal `i` has ID `0x100 + i`.
pub fn member_id(i: i32) -> u64 {
    0x100 + i as u64
}

/// A healthy member view for ordinal `i`, following leader 0.
pub fn healthy(i: i32) -> MemberView {
    MemberView {
        id: member_id(i),
        name: names().member(i),
        ordinal: Some(i),
        is_learner: false,
        health: MemberHealth::Healthy {
            leader: member_id(0),
            version: "3.5.17".into(),
            raft_index: 10,
        },
        peer_tls: false,
        client_tls: Some(false),
    }
}

/// An unreachable member view for ordinal `i`.
pub fn unhealthy(i: i32) -> MemberView {
    MemberView {
        health: MemberHealth::Unhealthy {
            reason: "connection refused".into(),
        },
        ..healthy(i)
    }
}

/// The bootstrap configs of a cluster created with `n` members.
pub fn bootstrap_configs(n: i32) -> BTreeMap<String, MemberBootstrap> {
    let n_ = names();
    let initial: Vec<(String, String)> = (0..n).map(|i| (n_.member(i), n_.peer_url(i))).collect();
    (0..n)
        .map(|i| {
            (
                n_.member(i),
                MemberBootstrap {
                    name: n_.member(i),
                    state: InitialState::New,
                    initial_cluster: initial.clone(),
                    force_new_cluster: false,
                },
            )
        })
        .collect()
}

/// A settled cluster of `n` members built from `cluster`'s current spec, with `members`.
pub fn settled(cluster: &ValidatedCluster, n: i32, members: Vec<MemberView>) -> Observed {
    Observed {
        statefulset: Some(StatefulSetState {
            replicas: n,
            ready_replicas: members.iter().filter(|m| m.healthy()).count() as i32,
            spec_hash: Some(spec_hash(cluster)),
            tls_built: Some(etcd_operator::model::TlsBuilt::of(cluster)),
        }),
        member_configs: bootstrap_configs(n),
        pdb_exists: n >= 3,
        etcd: EtcdState::Reachable(ClusterView {
            cluster_id: 0xc1,
            members,
        }),
        pods: (0..n).map(|i| (i, PodState::default())).collect(),
        quorum_lost_for: None,
    }
}

/// Marks the pods of `ordinals` as running an older template.
pub fn with_stale(mut o: Observed, ordinals: &[i32]) -> Observed {
    for i in ordinals {
        o.pods.entry(*i).or_default().stale = true;
    }
    o
}

/// Marks the pod of `ordinal` as having exited because its data is lost.
pub fn with_lost(mut o: Observed, ordinal: i32) -> Observed {
    o.pods.entry(ordinal).or_default().data_lost =
        Some("member 101 has already been bootstrapped".into());
    o
}

/// Members following `leader` instead of member 0.
pub fn led_by(members: Vec<MemberView>, leader: i32) -> Vec<MemberView> {
    members
        .into_iter()
        .map(|mut m| {
            if let MemberHealth::Healthy { leader: l, .. } = &mut m.health {
                *l = member_id(leader);
            }
            m
        })
        .collect()
}

/// A healthy member view for ordinal `i` at Raft index `raft_index`.
pub fn at_index(i: i32, raft_index: u64) -> MemberView {
    MemberView {
        health: MemberHealth::Healthy {
            leader: member_id(0),
            version: "3.5.17".into(),
            raft_index,
        },
        ..healthy(i)
    }
}

/// All `n` members healthy.
pub fn all_healthy(n: i32) -> Vec<MemberView> {
    (0..n).map(healthy).collect()
}

/// A fake etcd: answers from a fixed member list and per-endpoint statuses, and records every
/// membership call.
#[derive(Default)]
pub struct FakeEtcd {
    /// The member list; `None` makes the cluster unreachable.
    pub members: Option<Vec<ListedMember>>,
    /// Endpoints that answer status requests (others are unreachable).
    pub statuses: HashMap<String, EtcdStatus>,
    /// Calls made: `add <peer url>`, `promote <id>`, `remove <id>`, `move-leader <id>`.
    pub calls: Mutex<Vec<String>>,
    /// When set, membership changes are refused with this message (after being recorded).
    pub refuse: Option<String>,
    /// When set, a snapshot is answered after this long, with an error (a member that went
    /// away mid-stream); unset, this client takes no snapshots.
    pub snapshot_delay: Option<std::time::Duration>,
}

impl FakeEtcd {
    /// A healthy cluster of `n` members led by member 0.
    pub fn healthy(n: i32) -> Arc<Self> {
        let n_ = names();
        let members = (0..n)
            .map(|i| ListedMember {
                id: member_id(i),
                name: n_.member(i),
                peer_urls: vec![n_.peer_url(i)],
                client_urls: vec![n_.client_url(i)],
                is_learner: false,
            })
            .collect();
        let statuses = (0..n)
            .map(|i| {
                let s = EtcdStatus {
                    member_id: member_id(i),
                    leader: member_id(0),
                    version: "3.5.17".into(),
                    raft_index: 10,
                    errors: vec![],
                };
                (n_.client_url(i), s)
            })
            .collect();
        Arc::new(Self {
            members: Some(members),
            statuses,
            calls: Mutex::default(),
            refuse: None,
            snapshot_delay: None,
        })
    }

    /// Calls recorded so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn record(&self, call: String) -> Result<(), EtcdError> {
        self.calls.lock().expect("lock").push(call);
        match &self.refuse {
            Some(message) => Err(EtcdError::Rejected {
                op: "change membership",
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl EtcdAdmin for FakeEtcd {
    fn member_list<'a>(
        &'a self,
        endpoints: &'a [String],
    ) -> BoxFuture<'a, Result<MemberList, EtcdError>> {
        Box::pin(async move {
            match &self.members {
                Some(members) => Ok(MemberList {
                    cluster_id: 0xc1,
                    members: members.clone(),
                }),
                None => Err(EtcdError::Unreachable {
                    endpoints: endpoints.join(","),
                    message: "connection refused".into(),
                }),
            }
        })
    }

    fn status<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<EtcdStatus, EtcdError>> {
        Box::pin(async move {
            self.statuses
                .get(endpoint)
                .cloned()
                .ok_or_else(|| EtcdError::Unreachable {
                    endpoints: endpoint.to_owned(),
                    message: "connection refused".into(),
                })
        })
    }

    fn add_learner<'a>(
        &'a self,
        _: &'a [String],
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<u64, EtcdError>> {
        Box::pin(async move {
            self.record(format!("add {peer_url}"))?;
            Ok(0x999)
        })
    }

    fn promote<'a>(&'a self, _: &'a [String], id: u64) -> BoxFuture<'a, Result<(), EtcdError>> {
        Box::pin(async move { self.record(format!("promote {id:x}")) })
    }

    fn remove<'a>(&'a self, _: &'a [String], id: u64) -> BoxFuture<'a, Result<(), EtcdError>> {
        Box::pin(async move { self.record(format!("remove {id:x}")) })
    }

    fn snapshot<'a>(
        &'a self,
        endpoint: &'a str,
    ) -> BoxFuture<'a, Result<etcd_operator::etcd::Snapshot, EtcdError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .expect("lock")
                .push(format!("snapshot {endpoint}"));
            if let Some(delay) = self.snapshot_delay {
                tokio::time::sleep(delay).await;
            }
            Err(EtcdError::Rejected {
                op: "snapshot",
                message: "the member went away".into(),
            })
        })
    }

    fn move_leader<'a>(&'a self, _: &'a str, to: u64) -> BoxFuture<'a, Result<(), EtcdError>> {
        Box::pin(async move { self.record(format!("move-leader {to:x}")) })
    }

    fn update_peer_url<'a>(
        &'a self,
        _: &'a [String],
        id: u64,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<(), EtcdError>> {
        Box::pin(async move { self.record(format!("update {id:x} {peer_url}")) })
    }

    fn with_tls(
        self: std::sync::Arc<Self>,
        _tls: etcd_operator::etcd::ClientTls,
    ) -> std::sync::Arc<dyn EtcdAdmin> {
        self
    }
}

/// The ConfigMap the operator would have written for a cluster bootstrapped with `n` members.
pub fn config_map_json(cluster: &ValidatedCluster, n: i32) -> serde_json::Value {
    let members: Vec<MemberBootstrap> = bootstrap_configs(n).into_values().collect();
    let desired = etcd_operator::plan::Desired {
        replicas: n,
        members,
    };
    serde_json::to_value(configmap::build(cluster, &desired).expect("renders")).expect("json")
}
