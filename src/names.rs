//! Names, labels, ports and paths of the objects the operator owns, shared by every stage.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::EtcdCluster;

/// The one field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "etcd-operator";
/// The etcd client port (gRPC, `/health`, `/livez`, `/readyz`, `/metrics`).
pub const CLIENT_PORT: i32 = 2379;
/// The etcd peer port (Raft).
pub const PEER_PORT: i32 = 2380;
/// Name of the client port on containers and Services.
pub const CLIENT_PORT_NAME: &str = "client";
/// Name of the peer port on containers and Services.
pub const PEER_PORT_NAME: &str = "peer";
/// Where the ConfigMap with the members' configuration files is mounted.
pub const CONFIG_DIR: &str = "/etc/etcd";
/// Where the data volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/etcd";
/// The data directory, one level below the mount so a filesystem's `lost+found` stays out of
/// it.
pub const DATA_DIR: &str = "/var/lib/etcd/data";
/// Name of the data volume and of the StatefulSet's volumeClaimTemplate.
pub const DATA_VOLUME: &str = "data";
/// Name of the configuration volume.
pub const CONFIG_VOLUME: &str = "config";
/// The member container.
pub const CONTAINER: &str = "etcd";
/// UID and GID the member runs as (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;

/// `app.kubernetes.io/name`, always `etcd`.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`, the EtcdCluster's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`, always `etcd-operator`; the controller's watches select on it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`, always `etcd`.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "etcd-operator";
/// Label selector for everything the operator owns.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=etcd-operator";

/// Hash of the spec (without `replicas`) the StatefulSet was last built from; the planner
/// compares it with the current spec to know whether a rollout is pending.
pub const SPEC_HASH_ANNOTATION: &str = "etcd.rustops.dev/spec-hash";
/// Hash of the server options on the pod template, so that a change to the members'
/// configuration files rolls the pods (kubelet would not restart them for a ConfigMap change).
pub const CONFIG_HASH_ANNOTATION: &str = "etcd.rustops.dev/config-hash";

/// The cluster's name and namespace, with the names derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    /// EtcdCluster name.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
}

impl ClusterNames {
    /// Names of `cluster`; `None` when it has no namespace (the resource is namespaced, so
    /// only a malformed object lacks one).
    pub fn of(cluster: &EtcdCluster) -> Option<Self> {
        Some(Self {
            cluster: cluster.name_any(),
            namespace: cluster.namespace()?,
        })
    }

    /// The StatefulSet (and PodDisruptionBudget) name.
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }

    /// The PodDisruptionBudget name.
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }

    /// The headless Service that gives members stable DNS names.
    pub fn peer_service(&self) -> String {
        format!("{}-peer", self.cluster)
    }

    /// The Service clients use.
    pub fn client_service(&self) -> String {
        format!("{}-client", self.cluster)
    }

    /// The ConfigMap with one configuration file per member.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }

    /// The pod (and etcd member) name of ordinal `i`.
    pub fn member(&self, i: i32) -> String {
        format!("{}-{i}", self.cluster)
    }

    /// The stable DNS name of member `i`, through the headless peer Service.
    pub fn member_host(&self, i: i32) -> String {
        format!(
            "{}.{}.{}.svc",
            self.member(i),
            self.peer_service(),
            self.namespace
        )
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: i32) -> String {
        format!("http://{}:{PEER_PORT}", self.member_host(i))
    }

    /// Member `i`'s client URL.
    pub fn client_url(&self, i: i32) -> String {
        format!("http://{}:{CLIENT_PORT}", self.member_host(i))
    }

    /// The ordinal of the member whose peer URL is `url`, if it is one of ours.
    pub fn ordinal_of_peer_url(&self, url: &str) -> Option<i32> {
        let host = url
            .strip_prefix("http://")?
            .strip_suffix(&format!(":{PEER_PORT}"))?;
        let suffix = format!(".{}.{}.svc", self.peer_service(), self.namespace);
        let pod = host.strip_suffix(&suffix)?;
        let ordinal = pod.strip_prefix(&format!("{}-", self.cluster))?;
        let i: i32 = ordinal.parse().ok()?;
        (i >= 0 && self.member(i) == pod).then_some(i)
    }

    /// The ordinal of the member called `name`, if it is one of ours.
    pub fn ordinal_of_name(&self, name: &str) -> Option<i32> {
        let i: i32 = name
            .strip_prefix(&format!("{}-", self.cluster))?
            .parse()
            .ok()?;
        (i >= 0 && self.member(i) == name).then_some(i)
    }

    /// Labels that select the cluster's pods. Never change: a StatefulSet's selector is
    /// immutable.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_owned(), "etcd".to_owned()),
            (LABEL_INSTANCE.to_owned(), self.cluster.clone()),
        ])
    }

    /// Labels on every object the operator owns.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        labels.insert(LABEL_COMPONENT.to_owned(), "etcd".to_owned());
        labels
    }
}

/// Label keys users may not set through `spec.pod.labels`.
pub const RESERVED_LABELS: &[&str] = &[
    LABEL_NAME,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_COMPONENT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_map_back_to_ordinals() {
        let n = ClusterNames {
            cluster: "main".into(),
            namespace: "db".into(),
        };
        assert_eq!(n.peer_url(2), "http://main-2.main-peer.db.svc:2380");
        assert_eq!(n.ordinal_of_peer_url(&n.peer_url(2)), Some(2));
        assert_eq!(
            n.ordinal_of_peer_url("http://main-2.main-peer.other.svc:2380"),
            None
        );
        assert_eq!(
            n.ordinal_of_peer_url("http://main-x.main-peer.db.svc:2380"),
            None
        );
        assert_eq!(
            n.ordinal_of_peer_url("http://main-01.main-peer.db.svc:2380"),
            None
        );
        assert_eq!(n.ordinal_of_name("main-7"), Some(7));
        assert_eq!(n.ordinal_of_name("other-7"), None);
    }
}
