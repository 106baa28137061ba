//! The cluster's two Services: a headless peer Service that gives each member a stable DNS
//! name, and a client Service in front of the ready members.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use crate::names::{CLIENT_PORT, CLIENT_PORT_NAME, PEER_PORT, PEER_PORT_NAME};
use crate::validate::ValidatedCluster;

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless peer Service `<cluster>-peer`. It publishes not-ready addresses: a member is
/// only Ready once the cluster has quorum, and it cannot reach quorum without resolving its
/// peers first.
pub fn peer(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: meta(cluster, cluster.names.peer_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster.names.selector_labels()),
            ports: Some(vec![
                port(PEER_PORT_NAME, PEER_PORT),
                port(CLIENT_PORT_NAME, CLIENT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service `<cluster>-client`, routing to Ready members only.
pub fn client(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: meta(cluster, cluster.names.client_service()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(cluster.names.selector_labels()),
            ports: Some(vec![port(CLIENT_PORT_NAME, CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
