//! The ConfigMap holding one etcd configuration file per member, `<pod-name>.yaml`, in
//! etcd's `--config-file` format (the flag names without dashes as keys).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_yaml_ng::{Mapping, Value};

use super::{Error, meta};
use crate::model::{Desired, MemberBootstrap};
pub use crate::model::{parse_member, parse_member_files};
use crate::names::{Addressing, DATA_DIR, METRICS_PORT, TLS_DIR};
use crate::validate::ValidatedCluster;

/// The file name of `member`'s configuration.
pub fn file_name(member: &str) -> String {
    format!("{member}.yaml")
}

/// Builds the ConfigMap.
pub fn build(cluster: &ValidatedCluster, desired: &Desired) -> Result<ConfigMap, Error> {
    let mut data = BTreeMap::new();
    for (i, member) in desired.members.iter().enumerate() {
        let text = render(cluster, i as i32, member, TLS_DIR).map_err(|source| Error::Render {
            member: member.name.clone(),
            source,
        })?;
        data.insert(file_name(&member.name), text);
    }
    // (Plain structs with string keys: serializing cannot fail.)
    if let Some(text) = in_place_source(cluster, desired)
        .and_then(|source| serde_json::to_string_pretty(&source).ok())
    {
        data.insert(crate::backup::in_place::SOURCE_FILE.to_owned(), text);
    }
    Ok(ConfigMap {
        metadata: meta(cluster, cluster.names.config_map()),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// While an in-place restore is under way, what every member's init container restores
/// from: the backup, and the new cluster (every member under the restore's token).
pub fn in_place_source(
    cluster: &ValidatedCluster,
    desired: &Desired,
) -> Option<crate::backup::restore::Source> {
    let restore = cluster.restore.as_ref()?;
    let n = &cluster.names;
    // A new cluster restores another cluster's backups from fromBackup's bucket (by default
    // spec.backup's); an in-place restore, its own from spec.backup's.
    let from = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.from_backup.as_ref())
        .filter(|_| restore.bootstrap);
    let s3 = from
        .and_then(|f| f.s3.clone())
        .or_else(|| cluster.spec.backup.as_ref().map(|b| b.s3.clone()))?;
    let source_cluster = from
        .and_then(|f| f.cluster.clone())
        .unwrap_or_else(|| n.cluster.clone());
    // fromBackup's own bucket, with its own Secret: the init container has it under a prefix.
    let credentials_env = from
        .and_then(|f| f.s3.as_ref())
        .and_then(|s3| s3.credentials_secret_ref.as_ref())
        .map(|_| crate::backup::restore::BOOTSTRAP_CREDENTIALS.to_owned());
    let initial_cluster = (0..desired.replicas)
        .map(|i| format!("{}={}", n.member(i), n.peer_url(i)))
        .collect::<Vec<_>>()
        .join(",");
    Some(crate::backup::restore::Source {
        s3,
        namespace: n.namespace.clone(),
        cluster: source_cluster,
        key: Some(restore.key.clone()),
        in_place: Some(crate::backup::restore::InPlaceTarget {
            id: restore.id.clone(),
            token: restore.token(&cluster.token),
            initial_cluster,
        }),
        credentials_env,
    })
}

/// Renders member `ordinal`'s configuration file.
pub fn render(
    cluster: &ValidatedCluster,
    ordinal: i32,
    member: &MemberBootstrap,
    tls_dir: &str,
) -> Result<String, serde_yaml_ng::Error> {
    let n = &cluster.names;
    let s = &cluster.spec.server;
    let mut m = Mapping::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Value::String(k.to_owned()), v);
    };
    let text = |v: String| Value::String(v);
    put("name", text(member.name.clone()));
    put("data-dir", text(DATA_DIR.to_owned()));
    put("listen-client-urls", text(n.listen_client_url(ordinal)));
    put("advertise-client-urls", text(n.client_url(ordinal)));
    put("listen-peer-urls", text(n.listen_peer_url(ordinal)));
    put("initial-advertise-peer-urls", text(n.peer_url(ordinal)));
    put("initial-cluster", text(member.initial_cluster_value()));
    put(
        "initial-cluster-state",
        text(member.state.as_str().to_owned()),
    );
    put("initial-cluster-token", text(cluster.token.clone()));
    if member.force_new_cluster {
        put("force-new-cluster", Value::Bool(true));
    }
    if let Some(q) = s.quota_backend_bytes {
        put("quota-backend-bytes", Value::Number(q.into()));
    }
    if let Some(mode) = s.auto_compaction_mode {
        put("auto-compaction-mode", text(mode.as_str().to_owned()));
    }
    if let Some(r) = &s.auto_compaction_retention {
        put("auto-compaction-retention", text(r.clone()));
    }
    if let Some(c) = s.snapshot_count {
        put("snapshot-count", Value::Number(c.into()));
    }
    if let Some(h) = s.heartbeat_interval_ms {
        put("heartbeat-interval", Value::Number(h.into()));
    }
    if let Some(e) = s.election_timeout_ms {
        put("election-timeout", Value::Number(e.into()));
    }
    for (k, v) in &cluster.extra_args {
        put(k, v.clone());
    }
    // TLS: the operator's certificates, reloaded by the server when they change on disk.
    let file = |name: &str| text(format!("{}/{name}", tls_dir.trim_end_matches('/')));
    let client_cert_auth = cluster
        .spec
        .tls
        .as_ref()
        .is_some_and(|t| t.client_cert_auth);
    if n.serves_client_tls() && n.addressing == Addressing::Dns {
        put(
            "listen-metrics-urls",
            text(format!("http://{}:{METRICS_PORT}", n.listen_host(ordinal))),
        );
    }
    if n.serves_client_tls() {
        let mut block = Mapping::new();
        let mut set = |k: &str, v: Value| {
            block.insert(Value::String(k.to_owned()), v);
        };
        set("cert-file", file("server.crt"));
        set("key-file", file("server.key"));
        if client_cert_auth {
            set("trusted-ca-file", file("ca.crt"));
            set("client-cert-auth", Value::Bool(true));
        }
        put("client-transport-security", Value::Mapping(block));
    }
    if n.serves_peer_tls() {
        let mut block = Mapping::new();
        let mut set = |k: &str, v: Value| {
            block.insert(Value::String(k.to_owned()), v);
        };
        set("cert-file", file("peer.crt"));
        set("key-file", file("peer.key"));
        set("trusted-ca-file", file("peer-ca.crt"));
        set("client-cert-auth", Value::Bool(true));
        put("peer-transport-security", Value::Mapping(block));
    }
    serde_yaml_ng::to_string(&m)
}
