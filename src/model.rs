//! The pipeline's shared vocabulary (pure): what the planner decides a member's bootstrap
//! configuration is ([`MemberBootstrap`], [`Desired`]), how such a configuration reads back
//! from a member file, and the hashes that identify a spec. Observe, plan and build all use
//! it; it uses none of them, so the pipeline's arrows point one way:
//! observe → plan → build → apply → status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_yaml_ng::{Mapping, Value};

use crate::validate::ValidatedCluster;

/// `initial-cluster-state` of a member's configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    /// Bootstrapping a new cluster together with the other initial members.
    New,
    /// Joining a running cluster after `MemberAdd`.
    Existing,
}

impl InitialState {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }
}

/// How a member starts: what its configuration file says about the cluster it joins. Only
/// read by etcd-server when the member's data directory is empty, so it is kept unchanged
/// once written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberBootstrap {
    /// Member (pod) name.
    pub name: String,
    /// `initial-cluster-state`.
    pub state: InitialState,
    /// `initial-cluster`: `(name, peer URL)` pairs.
    pub initial_cluster: Vec<(String, String)>,
    /// `force-new-cluster`: the member restarts alone with its data (quorum-loss recovery).
    /// Set for one restart only: the planner clears it once the member runs alone, before
    /// any other member is added again.
    pub force_new_cluster: bool,
}

impl MemberBootstrap {
    /// The `initial-cluster` value.
    pub fn initial_cluster_value(&self) -> String {
        let pairs: Vec<String> = self
            .initial_cluster
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect();
        pairs.join(",")
    }
}

/// The objects to apply: the StatefulSet's size and every member's bootstrap configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// StatefulSet replicas.
    pub replicas: i32,
    /// One entry per ordinal `0..replicas`.
    pub members: Vec<MemberBootstrap>,
}

/// Hash of everything in the spec except `replicas`, plus the operator version (a new
/// operator may build different pods) and whether the cluster moves between plain and TLS. The planner compares it with the StatefulSet's
/// annotation to know whether a rollout is pending.
pub fn spec_hash(cluster: &ValidatedCluster) -> String {
    let mut spec = serde_json::to_value(&cluster.spec).unwrap_or_default();
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("replicas");
    }
    // Moving between plain and TLS builds other pods (both schemes on each port).
    let moving = if cluster.names.tls_moving {
        "|tls-moving"
    } else {
        ""
    };
    fnv64_hex(&format!("{}|{spec}{moving}", env!("CARGO_PKG_VERSION")))
}

/// Hash of the server options written to the configuration files; on the pod template so that
/// changing them rolls the pods.
pub fn config_hash(cluster: &ValidatedCluster) -> String {
    let options = serde_json::to_value(&cluster.spec.server).unwrap_or_default();
    // The files' listen URLs and TLS blocks too (not validity and the like, which change no
    // file): moving between plain and TLS changes only them, and each step must restart the
    // pods.
    let tls = cluster.spec.tls.as_ref().filter(|t| t.enabled);
    let files = (
        TlsBuilt::of(cluster).encode(),
        tls.map(|t| (t.client_cert_auth, t.provider)),
    );
    fnv64_hex(&format!("{options}|{files:?}"))
}

/// What a StatefulSet was built to serve: its members' schemes and whether they serve both
/// (see [`crate::names::ClusterNames::tls_moving`]). Kept on it (and locally in the state
/// file) so that, without etcd to ask, the planner never switches the scheme members serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TlsBuilt {
    /// `https://` client URLs.
    pub client: bool,
    /// `https://` peer URLs.
    pub peer: bool,
    /// Both schemes on each port.
    pub moving: bool,
}

impl TlsBuilt {
    /// What `cluster` is built as.
    pub fn of(cluster: &ValidatedCluster) -> Self {
        let n = &cluster.names;
        Self {
            client: n.client_tls,
            peer: n.peer_tls,
            moving: n.tls_moving,
        }
    }

    /// The annotation value: `client=https,peer=http,moving=false`.
    pub fn encode(self) -> String {
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        format!(
            "client={},peer={},moving={}",
            scheme(self.client),
            scheme(self.peer),
            self.moving
        )
    }

    /// Reads [`TlsBuilt::encode`]'s value; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let mut built = Self::default();
        let mut seen = 0;
        for pair in text.split(',') {
            let (k, v) = pair.split_once('=')?;
            match (k.trim(), v.trim()) {
                ("client", v) => built.client = v == "https",
                ("peer", v) => built.peer = v == "https",
                ("moving", v) => built.moving = v.parse().ok()?,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 3).then_some(built)
    }
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike `DefaultHasher`.
fn fnv64_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Reads back the bootstrap part of each member file in an existing ConfigMap, so that files
/// already written keep their `initial-cluster` and state. Unparsable files are skipped (the
/// planner regenerates them).
pub fn parse_member_files(cm: &ConfigMap) -> BTreeMap<String, MemberBootstrap> {
    let mut out = BTreeMap::new();
    for text in cm.data.iter().flat_map(|d| d.values()) {
        if let Some(member) = parse_member(text) {
            out.insert(member.name.clone(), member);
        }
    }
    out
}

/// Reads back the bootstrap part of one member file; `None` when it is not one.
pub fn parse_member(text: &str) -> Option<MemberBootstrap> {
    let m: Mapping = serde_yaml_ng::from_str(text).ok()?;
    let get = |k: &str| m.get(k).and_then(Value::as_str);
    let state = match get("initial-cluster-state")? {
        "new" => InitialState::New,
        "existing" => InitialState::Existing,
        _ => return None,
    };
    let initial_cluster = get("initial-cluster")?
        .split(',')
        .map(|pair| {
            pair.split_once('=')
                .map(|(n, u)| (n.to_owned(), u.to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(MemberBootstrap {
        name: get("name")?.to_owned(),
        state,
        initial_cluster,
        force_new_cluster: m
            .get("force-new-cluster")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}
