//! The StatefulSet of etcd-server pods.
//!
//! Each pod runs `etcd-server --config-file=/etc/etcd/$(POD_NAME).yaml`, its own file from the
//! ConfigMap; data lives in a PersistentVolumeClaim per member (or an explicit emptyDir).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ProjectedVolumeSource, SeccompProfile, SecretProjection,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{config_hash, meta, spec_hash};
use crate::certs::provider::Mount;
use crate::model::Desired;
use crate::names::{
    CLIENT_PORT, CLIENT_PORT_NAME, CONFIG_DIR, CONFIG_HASH_ANNOTATION, CONFIG_VOLUME, CONTAINER,
    DATA_MOUNT, DATA_VOLUME, METRICS_PORT, METRICS_PORT_NAME, PEER_PORT, PEER_PORT_NAME, RUN_AS,
    SPEC_HASH_ANNOTATION, TLS_DIR, TLS_VOLUME,
};
use crate::validate::ValidatedCluster;

/// Seconds a member gets to stop: enough to finish in-flight requests and fsync.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// The startup probe allows this long (5 s × 60) for WAL replay or a snapshot transfer
/// before liveness takes over.
pub const STARTUP_FAILURE_THRESHOLD: i32 = 60;

/// Builds the StatefulSet for `desired.replicas` members.
pub fn build(cluster: &ValidatedCluster, desired: &Desired) -> StatefulSet {
    let names = &cluster.names;
    let spec = &cluster.spec;
    let mut metadata = meta(cluster, names.statefulset());
    metadata.annotations = Some(BTreeMap::from([
        (SPEC_HASH_ANNOTATION.to_owned(), spec_hash(cluster)),
        (
            crate::names::TLS_BUILT_ANNOTATION.to_owned(),
            crate::model::TlsBuilt::of(cluster).encode(),
        ),
    ]));

    let (mut volumes, claims) = if spec.storage.empty_dir {
        let data = Volume {
            name: DATA_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(spec.storage.size.clone()),
                ..Default::default()
            }),
            ..Volume::default()
        };
        (vec![config_volume(cluster), data], None)
    } else {
        (
            vec![config_volume(cluster)],
            Some(vec![claim_template(cluster)]),
        )
    };

    // The certificates; the kubelet updates the files in place (an atomic switch of the
    // volume's `..data` link) and the server reloads them.
    match crate::certs::provider::mount(names, spec.tls.as_ref()) {
        None => {}
        Some(Mount::Whole { secret }) => volumes.push(Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }),
        Some(Mount::Mapped { server, peer }) => {
            let source = |secret: String, items: &[(&str, &str)]| VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret,
                    items: Some(
                        items
                            .iter()
                            .map(|(key, path)| KeyToPath {
                                key: (*key).to_owned(),
                                path: (*path).to_owned(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    optional: Some(false),
                }),
                ..VolumeProjection::default()
            };
            volumes.push(Volume {
                name: TLS_VOLUME.to_owned(),
                projected: Some(ProjectedVolumeSource {
                    default_mode: Some(0o440),
                    sources: Some(vec![
                        source(
                            server,
                            &[
                                ("tls.crt", "server.crt"),
                                ("tls.key", "server.key"),
                                ("ca.crt", "ca.crt"),
                            ],
                        ),
                        source(
                            peer,
                            &[
                                ("tls.crt", "peer.crt"),
                                ("tls.key", "peer.key"),
                                ("ca.crt", "peer-ca.crt"),
                            ],
                        ),
                    ]),
                }),
                ..Volume::default()
            });
        }
    }

    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(desired.replicas),
            service_name: Some(names.peer_service()),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            },
            // Bootstrap needs every initial member running before any can become Ready (Ready
            // means quorum), so pods must not wait for each other.
            pod_management_policy: Some("Parallel".to_owned()),
            // The operator orders updates itself (followers first, the leader last after a
            // leader transfer, each member healthy and caught up before the next): the
            // StatefulSet replaces a pod only when the operator deletes it.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.pvc_retention_policy.when_deleted.as_str().to_owned()),
                    when_scaled: Some(spec.pvc_retention_policy.when_scaled.as_str().to_owned()),
                },
            ),
            template: pod_template(cluster, volumes),
            volume_claim_templates: claims,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn config_volume(cluster: &ValidatedCluster) -> Volume {
    Volume {
        name: CONFIG_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: cluster.names.config_map(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn claim_template(cluster: &ValidatedCluster) -> PersistentVolumeClaim {
    let storage = &cluster.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(cluster.names.labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_template(cluster: &ValidatedCluster, volumes: Vec<Volume>) -> PodTemplateSpec {
    let names = &cluster.names;
    let pod = &cluster.spec.pod;
    let mut labels = pod.labels.clone();
    labels.extend(names.labels());
    let mut annotations = pod.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash(cluster));

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            init_containers: restore_container(cluster).map(|c| vec![c]),
            containers: vec![container(cluster)],
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            affinity: Some(
                pod.affinity
                    .clone()
                    .unwrap_or_else(|| default_affinity(cluster)),
            ),
            tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
            node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
            topology_spread_constraints: (!pod.topology_spread_constraints.is_empty())
                .then(|| pod.topology_spread_constraints.clone()),
            priority_class_name: pod.priority_class_name.clone(),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                fs_group_change_policy: Some("OnRootMismatch".to_owned()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
    }
}

/// Prefer one member per node: losing a node then costs at most one member.
fn default_affinity(cluster: &ValidatedCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(cluster.names.selector_labels()),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn http_probe(port: &str, path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// `POD_NAME` from the downward API: each pod reads its own configuration file.
fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The configuration files (read-only) and the data volume, as every container of a member
/// mounts them.
fn member_mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: CONFIG_VOLUME.to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_MOUNT.to_owned(),
            ..VolumeMount::default()
        },
    ]
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// With `spec.bootstrap.fromBackup` or `spec.backup`, the init container that restores a
/// member's data dir from a backup before etcd-server starts (`etcd-operator backup restore`,
/// from the same image): only while the ConfigMap holds a restore's source (a new cluster
/// being made from a backup, or an in-place restore under way), once per restore, under the
/// member's own name and peer URL from its configuration file. Otherwise it does nothing.
fn restore_container(cluster: &ValidatedCluster) -> Option<Container> {
    let from = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.from_backup.as_ref());
    let backup = cluster.spec.backup.as_ref();
    // With spec.backup the container is always there, so that an in-place restore (which
    // puts its source into the ConfigMap) needs no change to the pods' template.
    // Nothing to restore from without a bucket.
    from.and_then(|f| f.s3.as_ref())
        .or_else(|| backup.map(|b| &b.s3))?;
    let mut env = vec![pod_name_env()];
    // The credentials of each bucket the container may restore from: spec.backup's as
    // AWS_* (an in-place restore), fromBackup's own as BOOTSTRAP_AWS_* (a new cluster; the
    // restore's source names the prefix). Optional: a pod with nothing to restore must start
    // even when a Secret is gone.
    let secrets = [
        (
            "",
            backup.and_then(|b| b.s3.credentials_secret_ref.as_ref()),
        ),
        (
            crate::backup::restore::BOOTSTRAP_CREDENTIALS,
            from.and_then(|f| f.s3.as_ref())
                .and_then(|s3| s3.credentials_secret_ref.as_ref()),
        ),
    ];
    for (prefix, secret) in secrets {
        let Some(secret) = secret else { continue };
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            env.push(EnvVar {
                name: format!("{prefix}{key}"),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                        name: secret.name.clone(),
                        key: key.to_owned(),
                        optional: Some(true),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    Some(Container {
        name: crate::names::RESTORE_CONTAINER.to_owned(),
        image: Some(cluster.spec.image().to_owned()),
        command: Some(vec![
            "etcd-operator".to_owned(),
            "backup".to_owned(),
            "restore".to_owned(),
        ]),
        args: Some(vec![
            format!("--config-file={CONFIG_DIR}/$(POD_NAME).yaml"),
            format!(
                "--in-place={CONFIG_DIR}/{}",
                crate::backup::in_place::SOURCE_FILE
            ),
        ]),
        env: Some(env),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        resources: cluster.spec.resources.clone(),
        volume_mounts: Some(member_mounts()),
        security_context: Some(restricted()),
        ..Container::default()
    })
}

fn container(cluster: &ValidatedCluster) -> Container {
    let names = &cluster.names;
    // With client TLS the probes use the plain metrics port.
    let probe_port = if names.serves_client_tls() {
        METRICS_PORT_NAME
    } else {
        CLIENT_PORT_NAME
    };
    let mut ports = vec![
        ContainerPort {
            name: Some(CLIENT_PORT_NAME.to_owned()),
            container_port: CLIENT_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some(PEER_PORT_NAME.to_owned()),
            container_port: PEER_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        },
    ];
    if names.serves_client_tls() {
        ports.push(ContainerPort {
            name: Some(METRICS_PORT_NAME.to_owned()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        });
    }
    let mut mounts = member_mounts();
    if names.serves_client_tls() || names.serves_peer_tls() {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.to_owned(),
            mount_path: TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Container {
        name: CONTAINER.to_owned(),
        image: Some(cluster.spec.image().to_owned()),
        command: Some(vec!["etcd-server".to_owned()]),
        // A member that cannot run on its data says why in its last log lines; this puts them
        // in the pod's status, where the operator looks for a lost member.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        // Kubernetes expands $(POD_NAME) from the env below: each pod reads its own file.
        args: Some(vec![format!("--config-file={CONFIG_DIR}/$(POD_NAME).yaml")]),
        env: Some(vec![pod_name_env()]),
        ports: Some(ports),
        // Ready means "serves linearizable requests", which needs quorum: the client Service
        // and the StatefulSet's rolling update both wait on it.
        readiness_probe: Some(http_probe(probe_port, "/readyz", 5, 3, 3)),
        // Alive must not depend on quorum, or losing quorum would restart every member.
        liveness_probe: Some(http_probe(probe_port, "/livez", 10, 5, 3)),
        startup_probe: Some(http_probe(
            probe_port,
            "/livez",
            5,
            3,
            STARTUP_FAILURE_THRESHOLD,
        )),
        resources: cluster.spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted()),
        ..Container::default()
    }
}
