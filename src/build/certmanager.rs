//! `spec.tls.provider: CertManager`: the cert-manager `Certificate` objects (server, peer,
//! client) whose Secrets the pods mount (`<cluster>-server-tls`, `<cluster>-peer-tls`) and
//! the operator and users present (`<cluster>-client-tls`). cert-manager issues and renews
//! them; the members reload the files when the kubelet updates them.

use kube::api::{ApiResource, DynamicObject};
use serde_json::json;

use super::meta;
use crate::certs::{self, provider};
use crate::crd::{CertManagerIssuer, KeyAlgorithm, TlsSpec};
use crate::validate::ValidatedCluster;

/// cert-manager's `Certificate` (`cert-manager.io/v1`).
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    }
}

fn private_key(alg: KeyAlgorithm) -> serde_json::Value {
    match alg {
        KeyAlgorithm::EcdsaP256 => {
            json!({"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"})
        }
        KeyAlgorithm::EcdsaP384 => {
            json!({"algorithm": "ECDSA", "size": 384, "rotationPolicy": "Always"})
        }
        KeyAlgorithm::Ed25519 => json!({"algorithm": "Ed25519", "rotationPolicy": "Always"}),
        KeyAlgorithm::Rsa2048 => {
            json!({"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always"})
        }
        KeyAlgorithm::Rsa4096 => {
            json!({"algorithm": "RSA", "size": 4096, "rotationPolicy": "Always"})
        }
    }
}

/// The three Certificates.
pub fn build(
    cluster: &ValidatedCluster,
    tls: &TlsSpec,
    issuer: &CertManagerIssuer,
) -> Vec<DynamicObject> {
    let names = &cluster.names;
    let subjects = certs::subjects(names, &tls.extra_sans);
    fn split(sans: &[String]) -> (Vec<&String>, Vec<&String>) {
        let (ips, dns): (Vec<&String>, Vec<&String>) = sans
            .iter()
            .partition(|s| s.parse::<std::net::IpAddr>().is_ok());
        (dns, ips)
    }
    let one = |role: &str, cn: String, sans: &[String], usages: &[&str]| {
        let (dns, ips) = split(sans);
        let mut spec = json!({
            "secretName": provider::cert_manager_secret(names, role),
            "commonName": cn,
            "usages": usages,
            "privateKey": private_key(tls.key_algorithm),
            "issuerRef": {
                "name": issuer.issuer_name,
                "kind": issuer.issuer_kind,
                "group": "cert-manager.io",
            },
        });
        if !dns.is_empty() {
            spec["dnsNames"] = json!(dns);
        }
        if !ips.is_empty() {
            spec["ipAddresses"] = json!(ips);
        }
        if let Some(v) = &tls.validity {
            spec["duration"] = json!(v);
        }
        if let Some(r) = &tls.renew_before {
            spec["renewBefore"] = json!(r);
        }
        let mut obj = DynamicObject::new(&format!("{}-{role}", names.cluster), &api_resource());
        obj.metadata = meta(cluster, format!("{}-{role}", names.cluster));
        obj.data = json!({ "spec": spec });
        obj
    };
    vec![
        one(
            "server",
            format!("{}-server", names.cluster),
            &subjects.server,
            &["server auth", "digital signature", "key encipherment"],
        ),
        one(
            "peer",
            format!("{}-peer", names.cluster),
            &subjects.peer,
            &[
                "server auth",
                "client auth",
                "digital signature",
                "key encipherment",
            ],
        ),
        one(
            "client",
            "root".to_owned(),
            &[],
            &["client auth", "digital signature", "key encipherment"],
        ),
    ]
}
