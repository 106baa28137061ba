//! The Secrets of `spec.tls` (provider `Auto`), from the operator's certificate authority:
//!
//! - `<cluster>-ca`: `authority.json`, the CA keys and the rotation state (the operator's
//!   own record; nothing mounts it);
//! - `<cluster>-tls`: what the pods mount at `/etc/etcd-tls`: `ca.crt` (the trust bundle),
//!   `server.crt`/`server.key` and `peer.crt`/`peer.key`;
//! - `<cluster>-client-tls` (type `kubernetes.io/tls`): `ca.crt`, `tls.crt`, `tls.key`, a
//!   client certificate with CN `root`, for users and tools.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::meta;
use crate::certs::{self, Authority};
use crate::validate::ValidatedCluster;

/// The key of the authority in `<cluster>-ca`.
pub const AUTHORITY_KEY: &str = "authority.json";

fn secret(
    cluster: &ValidatedCluster,
    name: String,
    type_: &str,
    data: Vec<(&str, String)>,
) -> Secret {
    Secret {
        metadata: meta(cluster, name),
        type_: Some(type_.to_owned()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// The three Secrets, in the order they are applied (the record first, so the files never
/// run ahead of it).
pub fn build(cluster: &ValidatedCluster, auth: &Authority) -> Vec<Secret> {
    let names = &cluster.names;
    let json = serde_json::to_string(auth).unwrap_or_default();
    let files: BTreeMap<&str, String> = certs::files(auth).into_iter().collect();
    let file = |n: &str| files.get(n).cloned().unwrap_or_default();
    vec![
        secret(
            cluster,
            names.ca_secret(),
            "Opaque",
            vec![(AUTHORITY_KEY, json)],
        ),
        secret(
            cluster,
            names.tls_secret(),
            "Opaque",
            [
                "ca.crt",
                "server.crt",
                "server.key",
                "peer-ca.crt",
                "peer.crt",
                "peer.key",
            ]
            .into_iter()
            .map(|n| (n, file(n)))
            .collect(),
        ),
        secret(
            cluster,
            names.client_tls_secret(),
            "kubernetes.io/tls",
            vec![
                ("ca.crt", file("ca.crt")),
                ("tls.crt", file("client.crt")),
                ("tls.key", file("client.key")),
            ],
        ),
    ]
}

/// Reads the authority back from `<cluster>-ca`; `None` when absent or unreadable.
pub fn authority(ca: &Secret) -> Option<Authority> {
    let bytes = ca.data.as_ref()?.get(AUTHORITY_KEY)?;
    serde_json::from_slice(&bytes.0).ok()
}
