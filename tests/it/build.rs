//! Builder tests: objects built from inline EtcdCluster specs.

use std::collections::BTreeMap;

use etcd_operator::build::{Objects, build, spec_hash};
use etcd_operator::names::{CONFIG_HASH_ANNOTATION, SPEC_HASH_ANNOTATION};
use etcd_operator::observe::Observed;
use etcd_operator::plan::plan;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::fixtures::*;

fn objects(spec: &str) -> Objects {
    let c = validated(&cluster(spec));
    let desired = plan(Ok(&c), &Observed::default())
        .desired
        .expect("bootstrap applies objects");
    build(&c, &desired).expect("builds")
}

const FULL: &str = r#"
  replicas: 3
  image: registry.example/etcd-server:test
  storage:
    size: 10Gi
    storageClassName: fast
  resources:
    requests: {cpu: 500m, memory: 1Gi}
  pod:
    labels: {team: storage}
    annotations: {note: hello}
    nodeSelector: {disk: ssd}
    tolerations:
    - {key: dedicated, operator: Equal, value: etcd, effect: NoSchedule}
    priorityClassName: system-cluster-critical
  server:
    quotaBackendBytes: 8589934592
    autoCompactionMode: revision
    autoCompactionRetention: "1000"
    snapshotCount: 5000
    heartbeatIntervalMs: 200
    electionTimeoutMs: 2000
    extraArgs: {max-txn-ops: "512", log-level: warn}
"#;

#[test]
fn every_object_is_owned_and_labelled() {
    let o = objects(FULL);
    let metas = [
        &o.config_map.metadata,
        &o.peer_service.metadata,
        &o.client_service.metadata,
        &o.pdb.as_ref().expect("pdb").metadata,
        &o.statefulset.metadata,
    ];
    for m in metas {
        assert_eq!(m.namespace.as_deref(), Some("db"));
        let owners = m.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        let owner = &owners[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("EtcdCluster", "main")
        );
        assert_eq!(owner.api_version, "etcd.rustops.dev/v1alpha1");
        assert_eq!(owner.uid, "11111111-2222-3333-4444-555555555555");
        assert_eq!(owner.controller, Some(true));
        let labels = m.labels.as_ref().expect("labels");
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("etcd-operator")
        );
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("main")
        );
    }
    assert_eq!(o.statefulset.name_any(), "main");
    assert_eq!(o.peer_service.name_any(), "main-peer");
    assert_eq!(o.client_service.name_any(), "main-client");
    assert_eq!(o.config_map.name_any(), "main-config");
}

#[test]
fn selectors_match_pod_labels() {
    let o = objects(FULL);
    let sts = o.statefulset.spec.as_ref().expect("spec");
    let pod_labels = sts
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    let selector = sts.selector.match_labels.clone().expect("selector");
    let matches =
        |sel: &BTreeMap<String, String>| sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v));
    assert!(matches(&selector));
    assert!(matches(
        o.peer_service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .expect("peer selector")
    ));
    assert!(matches(
        o.client_service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .expect("client selector")
    ));
    let pdb = o
        .pdb
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .expect("pdb spec");
    assert!(matches(
        pdb.selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("pdb selector")
    ));
    // User labels reach the pods but never the selector, which is immutable.
    assert_eq!(pod_labels.get("team").map(String::as_str), Some("storage"));
    assert!(!selector.contains_key("team"));
}

#[test]
fn members_run_their_own_config_file_with_probes_and_ports() {
    let o = objects(FULL);
    let sts = o.statefulset.spec.as_ref().expect("spec");
    assert_eq!(sts.replicas, Some(3));
    assert_eq!(sts.service_name.as_deref(), Some("main-peer"));
    assert_eq!(sts.pod_management_policy.as_deref(), Some("Parallel"));
    // The operator orders restarts itself: the StatefulSet replaces only deleted pods.
    assert_eq!(
        sts.update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("OnDelete")
    );
    let pod = sts.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
    // A member that cannot run on its data says so in the pod's status.
    assert_eq!(
        pod.containers[0].termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("disk"))
            .map(String::as_str),
        Some("ssd")
    );
    assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("default anti-affinity");
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .expect("preferred")[0];
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );

    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/etcd-server:test")
    );
    assert_eq!(c.command.as_deref(), Some(&["etcd-server".to_owned()][..]));
    assert_eq!(
        c.args.as_deref(),
        Some(&["--config-file=/etc/etcd/$(POD_NAME).yaml".to_owned()][..])
    );
    let env = c.env.as_ref().expect("env");
    assert_eq!(env[0].name, "POD_NAME");
    let field = env[0]
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("downward API");
    assert_eq!(field.field_path, "metadata.name");
    let ports: Vec<(Option<&str>, i32)> = c
        .ports
        .as_ref()
        .expect("ports")
        .iter()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(ports, vec![(Some("client"), 2379), (Some("peer"), 2380)]);
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("http probe");
        assert_eq!(get.port, IntOrString::String("client".into()));
        get.path.clone().expect("path")
    };
    assert_eq!(path(&c.readiness_probe), "/readyz");
    assert_eq!(path(&c.liveness_probe), "/livez");
    assert_eq!(path(&c.startup_probe), "/livez");
    assert!(
        c.startup_probe
            .as_ref()
            .and_then(|p| p.failure_threshold)
            .unwrap_or(0)
            >= 30
    );
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("500m"));
    let mounts: Vec<(&str, &str)> = c
        .volume_mounts
        .as_ref()
        .expect("mounts")
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(
        mounts,
        vec![("config", "/etc/etcd"), ("data", "/var/lib/etcd")]
    );

    let annotations = sts
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .expect("annotations");
    assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
    assert_eq!(annotations.get("note").map(String::as_str), Some("hello"));
    let hash = o
        .statefulset
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
        .expect("spec hash");
    assert_eq!(hash, &spec_hash(&validated(&cluster(FULL))));
}

#[test]
fn each_member_gets_a_claim_and_data_is_kept_by_default() {
    let o = objects(FULL);
    let sts = o.statefulset.spec.as_ref().expect("spec");
    let claims = sts.volume_claim_templates.as_ref().expect("claims");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let spec = claims[0].spec.as_ref().expect("claim spec");
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_owned()][..])
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    assert_eq!(size.map(|q| q.0.as_str()), Some("10Gi"));
    let retention = sts
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("retention");
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
    let volumes = sts
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.as_ref())
        .expect("volumes");
    assert!(
        volumes.iter().all(|v| v.empty_dir.is_none()),
        "never emptyDir by default"
    );
}

#[test]
fn empty_dir_is_an_explicit_opt_in() {
    let o = objects("  replicas: 1\n  storage: {emptyDir: true, size: 1Gi}\n");
    let sts = o.statefulset.spec.as_ref().expect("spec");
    assert!(sts.volume_claim_templates.is_none());
    let volumes = sts
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.as_ref())
        .expect("volumes");
    let data = volumes
        .iter()
        .find(|v| v.name == "data")
        .expect("data volume");
    assert_eq!(
        data.empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .map(|q| q.0.as_str()),
        Some("1Gi")
    );
}

#[test]
fn services_peer_headless_and_client() {
    let o = objects(FULL);
    let peer = o.peer_service.spec.as_ref().expect("peer spec");
    assert_eq!(peer.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peer.publish_not_ready_addresses, Some(true));
    let peer_ports: Vec<i32> = peer
        .ports
        .as_ref()
        .expect("ports")
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(peer_ports, vec![2380, 2379]);
    let client = o.client_service.spec.as_ref().expect("client spec");
    assert_eq!(client.cluster_ip, None);
    assert_eq!(client.publish_not_ready_addresses, None);
    let client_ports: Vec<i32> = client
        .ports
        .as_ref()
        .expect("ports")
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(client_ports, vec![2379]);
}

#[test]
fn pdb_allows_one_disruption_from_three_members_and_none_exists_below() {
    let pdb = objects("  replicas: 3\n").pdb.expect("pdb for 3 members");
    assert_eq!(
        pdb.spec.as_ref().and_then(|s| s.max_unavailable.clone()),
        Some(IntOrString::Int(1))
    );
    assert_eq!(
        pdb.spec.as_ref().and_then(|s| s.min_available.clone()),
        None
    );
    assert!(objects("  replicas: 5\n").pdb.is_some());
    assert!(objects("  replicas: 1\n").pdb.is_none());
    assert!(objects("  replicas: 2\n").pdb.is_none());
}

#[test]
fn config_map_has_one_file_per_member_with_etcd_keys() {
    let o = objects(FULL);
    let data = o.config_map.data.as_ref().expect("data");
    let files: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(files, vec!["main-0.yaml", "main-1.yaml", "main-2.yaml"]);
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&data["main-1.yaml"]).expect("yaml");
    let get = |k: &str| {
        file.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("missing {k}"))
    };
    let s = |v: &str| serde_yaml_ng::Value::String(v.to_owned());
    let num = |v: u64| serde_yaml_ng::Value::Number(v.into());
    assert_eq!(get("name"), s("main-1"));
    assert_eq!(get("data-dir"), s("/var/lib/etcd/data"));
    assert_eq!(get("listen-client-urls"), s("http://0.0.0.0:2379"));
    assert_eq!(get("listen-peer-urls"), s("http://0.0.0.0:2380"));
    assert_eq!(
        get("advertise-client-urls"),
        s("http://main-1.main-peer.db.svc:2379")
    );
    assert_eq!(
        get("initial-advertise-peer-urls"),
        s("http://main-1.main-peer.db.svc:2380")
    );
    assert_eq!(
        get("initial-cluster"),
        s(
            "main-0=http://main-0.main-peer.db.svc:2380,main-1=http://main-1.main-peer.db.svc:2380,main-2=http://main-2.main-peer.db.svc:2380"
        )
    );
    assert_eq!(get("initial-cluster-state"), s("new"));
    assert_eq!(
        get("initial-cluster-token"),
        s("main-11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(get("quota-backend-bytes"), num(8_589_934_592));
    assert_eq!(get("auto-compaction-mode"), s("revision"));
    assert_eq!(get("auto-compaction-retention"), s("1000"));
    assert_eq!(get("snapshot-count"), num(5000));
    assert_eq!(get("heartbeat-interval"), num(200));
    assert_eq!(get("election-timeout"), num(2000));
    assert_eq!(get("max-txn-ops"), num(512));
    assert_eq!(get("log-level"), s("warn"));

    // Options left unset are left to etcd-server's defaults.
    let plain = objects("  replicas: 1\n");
    let text = &plain.config_map.data.as_ref().expect("data")["main-0.yaml"];
    assert!(
        !text.contains("quota-backend-bytes") && !text.contains("snapshot-count"),
        "{text}"
    );
}

#[test]
fn config_files_round_trip_through_the_observer() {
    let o = objects(FULL);
    let parsed = etcd_operator::build::configmap::parse_member_files(&o.config_map);
    assert_eq!(parsed, bootstrap_configs(3));
}

#[test]
fn a_user_affinity_replaces_the_default() {
    let o = objects(
        "  replicas: 3\n  pod:\n    affinity:\n      nodeAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms:\n          - matchExpressions: [{key: zone, operator: In, values: [a]}]\n",
    );
    let pod = o
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let affinity = pod.affinity.as_ref().expect("affinity");
    assert!(affinity.node_affinity.is_some());
    assert!(affinity.pod_anti_affinity.is_none());
}

/// The TLS volume by provider: the operator's Secret as is, or cert-manager's and your
/// `kubernetes.io/tls` Secrets mapped onto the same file names.
#[test]
fn the_tls_volume_follows_the_provider() {
    let volume = |spec: &str| {
        let o = objects(spec);
        let pod = o
            .statefulset
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        pod.volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "tls")
    };
    assert!(volume("  replicas: 3\n").is_none());
    let auto = volume("  replicas: 3\n  tls:\n    enabled: true\n").expect("tls volume");
    assert_eq!(
        auto.secret.and_then(|s| s.secret_name).as_deref(),
        Some("main-tls")
    );
    let mapped = |v: k8s_openapi::api::core::v1::Volume| -> Vec<(String, String, String)> {
        v.projected
            .expect("projected")
            .sources
            .expect("sources")
            .into_iter()
            .flat_map(|s| {
                let s = s.secret.expect("secret source");
                let name = s.name.clone();
                s.items
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |i| (name.clone(), i.key, i.path))
            })
            .collect()
    };
    let own = volume(
        "  replicas: 3\n  tls:\n    enabled: true\n    provider: Secrets\n    secrets:\n      serverSecret: my-server\n      peerSecret: my-peer\n      clientSecret: my-client\n",
    )
    .expect("tls volume");
    let files = mapped(own);
    for want in [
        ("my-server", "tls.crt", "server.crt"),
        ("my-server", "ca.crt", "ca.crt"),
        ("my-peer", "tls.key", "peer.key"),
        ("my-peer", "ca.crt", "peer-ca.crt"),
    ] {
        assert!(
            files
                .iter()
                .any(|(s, k, p)| (s.as_str(), k.as_str(), p.as_str()) == want),
            "{want:?} not in {files:?}"
        );
    }
    let cm = volume(
        "  replicas: 3\n  tls:\n    enabled: true\n    provider: CertManager\n    certManager:\n      issuerName: ca-issuer\n",
    )
    .expect("tls volume");
    let files = mapped(cm);
    assert!(
        files
            .iter()
            .any(|(s, _, p)| s == "main-server-tls" && p == "server.crt")
    );
    assert!(
        files
            .iter()
            .any(|(s, _, p)| s == "main-peer-tls" && p == "peer.crt")
    );
}

#[test]
fn cert_manager_certificates_name_every_member_and_the_issuer() {
    let c = validated(&cluster(
        "  replicas: 3\n  tls:\n    enabled: true\n    provider: CertManager\n    validity: 2160h\n    extraSANs: [etcd.example.com, 10.1.2.3]\n    certManager:\n      issuerName: ca-issuer\n      issuerKind: ClusterIssuer\n",
    ));
    let tls = c.spec.tls.clone().expect("tls");
    let issuer = tls.cert_manager.clone().expect("issuer");
    let certs = etcd_operator::build::certmanager::build(&c, &tls, &issuer);
    let names: Vec<String> = certs.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["main-server", "main-peer", "main-client"]);
    let spec = |i: usize| &certs[i].data["spec"];
    assert_eq!(spec(0)["secretName"], "main-server-tls");
    assert_eq!(spec(0)["issuerRef"]["kind"], "ClusterIssuer");
    assert_eq!(spec(0)["duration"], "2160h");
    let dns: Vec<&str> = spec(0)["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        dns.contains(&"*.main-peer.db.svc") && dns.contains(&"etcd.example.com"),
        "{dns:?}"
    );
    assert!(dns.contains(&"main-client.db.svc"), "{dns:?}");
    assert!(
        spec(0)["ipAddresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "10.1.2.3"))
    );
    let usages = spec(1)["usages"].as_array().expect("usages");
    assert!(usages.iter().any(|u| u == "client auth") && usages.iter().any(|u| u == "server auth"));
    assert_eq!(spec(2)["commonName"], "root");
    assert_eq!(
        certs[0].metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
}

/// `spec.bootstrap.fromBackup` (or `spec.backup`): each pod gets an init container from the
/// same image that runs `etcd-operator backup restore` on its own configuration file and the
/// ConfigMap's restore source, with the S3 credentials from the named Secret (optional, so a
/// pod with nothing to restore starts without it); without either, no init container. The
/// source is in the ConfigMap only once the operator chose the backup (every member
/// restores the same one), and never before.
#[test]
fn a_cluster_from_a_backup_restores_in_an_init_container() {
    use etcd_operator::backup::in_place::{BOOTSTRAP_REQUEST, SOURCE_FILE};
    use etcd_operator::backup::restore::Source;
    use etcd_operator::crd::{EtcdClusterStatus, RestorePhase, RestoreStatus};
    assert!(
        objects("  replicas: 3\n")
            .statefulset
            .spec
            .expect("test fixture")
            .template
            .spec
            .expect("test fixture")
            .init_containers
            .is_none()
    );
    let spec = concat!(
        "  replicas: 3\n  image: registry.example/etcd:1\n",
        "  bootstrap:\n    fromBackup:\n      cluster: old\n      key: etcd/db/old/x.snap.zst\n",
        "      s3:\n        bucket: backups\n        prefix: etcd/\n        endpoint: http://s3.example:9000\n",
        "        forcePathStyle: true\n        credentialsSecretRef: {name: s3-creds}\n",
    );
    let build_with = |status: Option<EtcdClusterStatus>| {
        let mut c = cluster(spec);
        c.status = status;
        let v = etcd_operator::validate::validate(&c).expect("valid");
        let desired = plan(Ok(&v), &Observed::default()).desired;
        (v, desired)
    };
    // Not chosen yet: nothing is created.
    let (v, desired) = build_with(None);
    assert!(v.backup_to_choose);
    assert!(
        desired.is_none(),
        "a cluster from a backup waits for the choice"
    );
    // Chosen: the objects, with the source in the ConfigMap.
    let chosen = EtcdClusterStatus {
        restore: Some(RestoreStatus {
            request: BOOTSTRAP_REQUEST.into(),
            phase: RestorePhase::Restoring,
            id: Some("1800000000".into()),
            key: Some("etcd/db/old/x.snap.zst".into()),
            members_restarted: true,
            ..RestoreStatus::default()
        }),
        ..EtcdClusterStatus::default()
    };
    let (v, desired) = build_with(Some(chosen));
    assert!(!v.backup_to_choose);
    let o = build(&v, &desired.expect("bootstraps")).expect("builds");
    let source: Source =
        serde_json::from_str(&o.config_map.data.as_ref().expect("test fixture")[SOURCE_FILE])
            .expect("source");
    assert_eq!(source.cluster, "old");
    assert_eq!(source.namespace, "db");
    assert_eq!(source.key.as_deref(), Some("etcd/db/old/x.snap.zst"));
    assert_eq!(source.s3.bucket, "backups");
    assert!(source.s3.force_path_style);
    let source_env = source.credentials_env.clone();
    let target = source.in_place.expect("restore target");
    assert!(target.token.ends_with("-restore-1800000000"));
    assert_eq!(target.initial_cluster.split(',').count(), 3);

    let p = o
        .statefulset
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod");
    let init = p.init_containers.expect("init containers");
    assert_eq!(init.len(), 1);
    let c = &init[0];
    assert_eq!(c.name, "restore");
    assert_eq!(c.image.as_deref(), Some("registry.example/etcd:1"));
    assert_eq!(
        c.command.clone().expect("test fixture"),
        ["etcd-operator", "backup", "restore"]
    );
    assert_eq!(
        c.args.clone().expect("test fixture"),
        [
            "--config-file=/etc/etcd/$(POD_NAME).yaml",
            "--in-place=/etc/etcd/restore.json"
        ]
    );
    let env = c.env.clone().expect("test fixture");
    let get = |name: &str| env.iter().find(|e| e.name == name).cloned();
    assert!(get("ETCD_OPERATOR_RESTORE_SOURCE").is_none());
    assert!(
        get("POD_NAME")
            .expect("test fixture")
            .value_from
            .expect("test fixture")
            .field_ref
            .is_some()
    );
    // fromBackup's own Secret, under the prefix its source names (spec.backup's would be AWS_*).
    assert_eq!(source_env.as_deref(), Some("BOOTSTRAP_"));
    assert!(get("AWS_ACCESS_KEY_ID").is_none());
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        let r = get(&format!("BOOTSTRAP_{key}"))
            .and_then(|e| e.value_from)
            .and_then(|v| v.secret_key_ref)
            .unwrap_or_else(|| panic!("{key} from the Secret"));
        assert_eq!(
            (r.name.as_str(), r.key.as_str(), r.optional),
            ("s3-creds", key, Some(true))
        );
    }
    let mounts: Vec<(String, String)> = c
        .volume_mounts
        .clone()
        .expect("test fixture")
        .into_iter()
        .map(|m| (m.name, m.mount_path))
        .collect();
    assert!(
        mounts.contains(&("config".into(), "/etc/etcd".into())),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&("data".into(), "/var/lib/etcd".into())),
        "{mounts:?}"
    );
    assert_eq!(
        c.security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem),
        Some(true)
    );
    // Once the cluster formed, the source leaves the ConfigMap: a member that loses its
    // volume later must not come back from the backup.
    let formed = EtcdClusterStatus {
        cluster_id: Some("c1".into()),
        ..EtcdClusterStatus::default()
    };
    let (v, _) = build_with(Some(formed));
    assert!(!v.backup_to_choose && v.restore.is_none());
    let o = objects_of(&v);
    assert!(
        !o.config_map
            .data
            .expect("test fixture")
            .contains_key(SOURCE_FILE)
    );
}

fn objects_of(v: &etcd_operator::validate::ValidatedCluster) -> Objects {
    let desired = etcd_operator::plan::bootstrap(v);
    build(v, &desired).expect("builds")
}

/// A fromBackup with nowhere to look is a spec error, not a pod that fails to start.
#[test]
fn a_backup_source_without_a_bucket_is_refused() {
    let c = cluster("  replicas: 3\n  bootstrap:\n    fromBackup: {key: x}\n");
    match etcd_operator::validate::validate(&c) {
        Err(etcd_operator::validate::Error::InvalidSpec(p)) => {
            assert!(p.iter().any(|p| p.contains("fromBackup needs s3")), "{p:?}")
        }
        other => panic!("accepted: {:?}", other.map(|_| ())),
    }
}
