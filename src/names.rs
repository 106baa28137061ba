//! Names, labels, ports and paths of the objects the operator owns, shared by every stage.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

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
/// Where a pod mounts the cluster's TLS files (`ca.crt`, `server.*`, `peer.*`).
pub const TLS_DIR: &str = "/etc/etcd-tls";
/// The volume of the TLS files.
pub const TLS_VOLUME: &str = "tls";
/// With client TLS on, a pod also serves `/metrics` and the health endpoints over plain HTTP
/// on this port (kubelet probes cannot present a client certificate; kubeadm does the same).
pub const METRICS_PORT: i32 = 2381;
/// The name of the metrics port.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Where the data volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/etcd";
/// The data directory, one level below the mount so a filesystem's `lost+found` stays out of
/// it.
pub const DATA_DIR: &str = "/var/lib/etcd/data";
/// The init container that restores a member's data from a backup.
pub const RESTORE_CONTAINER: &str = "restore";
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
/// The StatefulSet annotation saying which schemes its members serve
/// ([`crate::model::TlsBuilt`]).
pub const TLS_BUILT_ANNOTATION: &str = "etcd.rustops.dev/tls";
/// Hash of the server options on the pod template, so that a change to the members'
/// configuration files rolls the pods (kubelet would not restart them for a ConfigMap change).
pub const CONFIG_HASH_ANNOTATION: &str = "etcd.rustops.dev/config-hash";

/// Where members are reached: the only thing that differs between members run as pods and
/// members run as local processes. The planner builds every peer and client URL through it,
/// so it stays one pure function for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// Pods of a StatefulSet: stable DNS names through the headless peer Service, the standard
    /// ports, listeners on `0.0.0.0`.
    #[default]
    Dns,
    /// Local processes: member `i` on its own loopback address `base_ip + i`, listening on
    /// that address only.
    Local(LocalAddressing),
}

/// Addresses of members run as local processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddressing {
    /// Address of member 0; member `i` gets `base_ip + i`.
    pub base_ip: Ipv4Addr,
    /// Client port of every member.
    pub client_port: u16,
    /// Peer port of every member.
    pub peer_port: u16,
}

impl LocalAddressing {
    /// Member `i`'s address.
    pub fn ip(&self, i: i32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base_ip).wrapping_add(i as u32))
    }

    /// The ordinal of the member at `ip`, if it is one of ours.
    pub fn ordinal_of_ip(&self, ip: Ipv4Addr) -> Option<i32> {
        let i = u32::from(ip).checked_sub(u32::from(self.base_ip))?;
        i32::try_from(i).ok().filter(|i| *i < 256)
    }
}

/// The cluster's name and namespace, with the names derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    /// EtcdCluster name.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// How members are addressed.
    pub addressing: Addressing,
    /// Clients reach members over TLS (`https://` client URLs).
    pub client_tls: bool,
    /// Members reach each other over TLS (`https://` peer URLs).
    pub peer_tls: bool,
    /// The cluster is moving between plain and TLS (turned on or off while it runs): members
    /// serve both schemes on each port and hold the TLS material, until every member
    /// advertises the wanted scheme. Set by the planner from what it observes.
    pub tls_moving: bool,
}

impl ClusterNames {
    /// Names of `cluster`; `None` when it has no namespace (the resource is namespaced, so
    /// only a malformed object lacks one).
    pub fn of(cluster: &EtcdCluster) -> Option<Self> {
        let tls = cluster.spec.tls.as_ref().filter(|t| t.enabled);
        Some(Self {
            cluster: cluster.name_any(),
            namespace: cluster.namespace()?,
            addressing: Addressing::Dns,
            client_tls: tls.is_some_and(|t| t.client),
            peer_tls: tls.is_some_and(|t| t.peer),
            tls_moving: false,
        })
    }

    /// Whether members serve TLS to clients (as wanted, or while moving).
    pub fn serves_client_tls(&self) -> bool {
        self.client_tls || self.tls_moving
    }

    /// Whether members serve TLS to each other (as wanted, or while moving).
    pub fn serves_peer_tls(&self) -> bool {
        self.peer_tls || self.tls_moving
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

    /// The stable host of member `i`: its DNS name through the headless peer Service, or its
    /// own loopback address when run locally.
    pub fn member_host(&self, i: i32) -> String {
        match self.addressing {
            Addressing::Dns => format!(
                "{}.{}.{}.svc",
                self.member(i),
                self.peer_service(),
                self.namespace
            ),
            Addressing::Local(local) => local.ip(i).to_string(),
        }
    }

    /// The peer port.
    pub fn peer_port(&self) -> u16 {
        match self.addressing {
            Addressing::Dns => PEER_PORT as u16,
            Addressing::Local(local) => local.peer_port,
        }
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        match self.addressing {
            Addressing::Dns => CLIENT_PORT as u16,
            Addressing::Local(local) => local.client_port,
        }
    }

    /// The host member `i` listens on: every interface of its pod, or its own address.
    pub fn listen_host(&self, i: i32) -> String {
        match self.addressing {
            Addressing::Dns => "0.0.0.0".to_owned(),
            Addressing::Local(local) => local.ip(i).to_string(),
        }
    }

    fn scheme(tls: bool) -> &'static str {
        if tls { "https" } else { "http" }
    }

    /// Member `i`'s peer URL.
    pub fn peer_url(&self, i: i32) -> String {
        let scheme = Self::scheme(self.peer_tls);
        format!("{scheme}://{}:{}", self.member_host(i), self.peer_port())
    }

    /// Member `i`'s client URL.
    pub fn client_url(&self, i: i32) -> String {
        let scheme = Self::scheme(self.client_tls);
        format!("{scheme}://{}:{}", self.member_host(i), self.client_port())
    }

    /// The URLs member `i` listens on for peers (both schemes on the one port while moving).
    pub fn listen_peer_url(&self, i: i32) -> String {
        self.listen_urls(self.peer_tls, self.listen_host(i), self.peer_port())
    }

    /// The URLs member `i` listens on for clients (both schemes while moving).
    pub fn listen_client_url(&self, i: i32) -> String {
        self.listen_urls(self.client_tls, self.listen_host(i), self.client_port())
    }

    fn listen_urls(&self, tls: bool, host: String, port: u16) -> String {
        if self.tls_moving {
            format!("http://{host}:{port},https://{host}:{port}")
        } else {
            format!("{}://{host}:{port}", Self::scheme(tls))
        }
    }

    /// The client Service's DNS name.
    pub fn client_service_host(&self) -> String {
        format!("{}.{}.svc", self.client_service(), self.namespace)
    }

    /// The Secret the pods mount: the trust bundle and the server and peer pairs.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.cluster)
    }

    /// The Secret for clients: `ca.crt`, `tls.crt`, `tls.key` (CN `root`).
    pub fn client_tls_secret(&self) -> String {
        format!("{}-client-tls", self.cluster)
    }

    /// The Secret where the operator keeps its CA keys and rotation state.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }

    /// Where the operator reads member `i`'s metrics (which certificates it loaded): the
    /// plain metrics port in a pod with client TLS, otherwise the client URL.
    pub fn metrics_url(&self, i: i32) -> String {
        match self.addressing {
            Addressing::Dns if self.serves_client_tls() => {
                format!("http://{}:{METRICS_PORT}", self.member_host(i))
            }
            _ => self.client_url(i),
        }
    }

    /// The wildcard DNS name that covers every member's host (`*.<peer-service>.<ns>.svc`).
    pub fn members_wildcard(&self) -> String {
        format!("*.{}.{}.svc", self.peer_service(), self.namespace)
    }

    /// The ordinal of the member whose peer URL is `url`, if it is one of ours.
    pub fn ordinal_of_peer_url(&self, url: &str) -> Option<i32> {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))?
            .strip_suffix(&format!(":{}", self.peer_port()))?;
        if let Addressing::Local(local) = self.addressing {
            return local.ordinal_of_ip(host.parse().ok()?);
        }
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
        let mut n = ClusterNames {
            cluster: "main".into(),
            namespace: "db".into(),
            addressing: Addressing::Dns,
            client_tls: false,
            peer_tls: false,
            tls_moving: false,
        };
        assert_eq!(n.peer_url(2), "http://main-2.main-peer.db.svc:2380");
        n.peer_tls = true;
        assert_eq!(n.peer_url(2), "https://main-2.main-peer.db.svc:2380");
        assert_eq!(n.ordinal_of_peer_url(&n.peer_url(2)), Some(2));
        // A member still on its http URL (TLS being turned on) is still ours.
        assert_eq!(
            n.ordinal_of_peer_url("http://main-2.main-peer.db.svc:2380"),
            Some(2)
        );
        n.peer_tls = false;
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

        let local = ClusterNames {
            addressing: Addressing::Local(LocalAddressing {
                base_ip: Ipv4Addr::new(127, 0, 0, 10),
                client_port: 2379,
                peer_port: 2380,
            }),
            ..n
        };
        assert_eq!(local.peer_url(2), "http://127.0.0.12:2380");
        assert_eq!(local.client_url(0), "http://127.0.0.10:2379");
        assert_eq!(local.ordinal_of_peer_url("http://127.0.0.12:2380"), Some(2));
        assert_eq!(local.ordinal_of_peer_url("http://127.0.0.9:2380"), None);
        assert_eq!(local.ordinal_of_peer_url("http://127.0.0.12:2379"), None);
    }
}
