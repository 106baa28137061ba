//! The delivery files agree with each other and with the builders: the image the chart,
//! `deploy/` and the CRD's default name; the user the Dockerfiles run as and the manifests and
//! pods require; where the binaries are and what the pods and the Deployment run; the
//! operator's port and probe path. Read from the files themselves, so a change to one that the
//! others miss fails here (the image tests then show the image works as they say).

use std::path::Path;
use std::process::Command;

use etcd_operator::build::build;
use etcd_operator::crd::DEFAULT_IMAGE;
use etcd_operator::names::{DATA_MOUNT, RUN_AS};
use etcd_operator::observe::Observed;
use etcd_operator::plan::plan;
use serde_yaml_ng::Value;

use crate::fixtures::{cluster, validated};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The instructions of a Dockerfile's last stage, as (instruction, rest) with continuation
/// lines joined.
fn last_stage(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    let instructions: Vec<(String, String)> = joined
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (i, rest) = l.split_once(' ').unwrap_or((&l, ""));
            (i.to_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    instructions[from..].to_vec()
}

fn instruction<'a>(stage: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, rest)| rest.as_str())
        .collect()
}

/// The operator's Deployment container in `deploy/`.
fn deploy_container() -> (Value, Value) {
    let text = read("deploy/03-deployment.yaml");
    let doc: Value = serde_yaml_ng::from_str(&text).expect("deployment YAML");
    let pod = doc["spec"]["template"]["spec"].clone();
    let container = pod["containers"][0].clone();
    (pod, container)
}

#[test]
fn the_image_reference_is_the_same_everywhere() {
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        DEFAULT_IMAGE,
        format!("ghcr.io/rustops/etcd-operator:{version}")
    );
    let (_, container) = deploy_container();
    assert_eq!(container["image"].as_str(), Some(DEFAULT_IMAGE), "deploy/");

    let chart: Value =
        serde_yaml_ng::from_str(&read("charts/etcd-operator/Chart.yaml")).expect("Chart.yaml");
    let values: Value =
        serde_yaml_ng::from_str(&read("charts/etcd-operator/values.yaml")).expect("values");
    assert_eq!(chart["appVersion"].as_str(), Some(version), "appVersion");
    let tag = values["image"]["tag"]
        .as_str()
        .filter(|t| !t.is_empty())
        .or(chart["appVersion"].as_str())
        .expect("a tag");
    let repository = values["image"]["repository"].as_str().expect("repository");
    assert_eq!(format!("{repository}:{tag}"), DEFAULT_IMAGE, "the chart");
    let template = read("charts/etcd-operator/templates/deployment.yaml");
    assert!(
        template.contains(
            r#"image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}""#
        ),
        "the chart's Deployment takes its image from values and appVersion"
    );
    // The Dockerfile's build comment tags what the manifests pull.
    assert!(read("Dockerfile").contains(&format!("docker build -t {DEFAULT_IMAGE} .")));
}

#[test]
fn the_user_paths_and_command_agree() {
    let user = format!("{RUN_AS}:{RUN_AS}");
    for file in ["Dockerfile", "Dockerfile.local"] {
        let text = read(file);
        let stage = last_stage(&text);
        assert_eq!(instruction(&stage, "USER"), [user.as_str()], "{file}: USER");
        assert_eq!(
            instruction(&stage, "ENTRYPOINT"),
            [r#"["/usr/local/bin/etcd-operator"]"#],
            "{file}: ENTRYPOINT"
        );
        assert_eq!(instruction(&stage, "CMD"), [r#"["run"]"#], "{file}: CMD");
        let labels = instruction(&stage, "LABEL").join(" ");
        for label in [
            "org.opencontainers.image.title=",
            "org.opencontainers.image.description=",
            "org.opencontainers.image.licenses=",
            "org.opencontainers.image.source=",
        ] {
            assert!(labels.contains(label), "{file}: LABEL {label}");
        }
    }
    // Both binaries land in /usr/local/bin, which is on the image's PATH (the pods run
    // `etcd-server` and `etcd-operator` by name).
    let stage = last_stage(&read("Dockerfile"));
    let copy = instruction(&stage, "COPY").join(" ");
    for bin in ["etcd-operator", "etcd-server"] {
        assert!(
            copy.contains(&format!("/usr/local/bin/{bin}")),
            "Dockerfile copies {bin}: {copy}"
        );
    }
    let local = last_stage(&read("Dockerfile.local"));
    assert!(
        instruction(&local, "ENV")
            .iter()
            .any(|e| e.starts_with("PATH=") && e.split(':').any(|d| d.ends_with("/usr/local/bin"))),
        "Dockerfile.local puts /usr/local/bin on the PATH"
    );
    let script = read("scripts/image.sh");
    assert!(script.contains(r#"mkdir -p "$root/usr/local/bin""#));
    assert!(script.contains("target/release/etcd-operator target/release/etcd-server"));
    assert!(script.contains(&format!("nonroot:x:{RUN_AS}:{RUN_AS}:")));
    // The data mount belongs to the image's user, so an empty volume there is writable.
    assert!(script.contains(&format!(r#""$ctx/owned{DATA_MOUNT}""#)));

    // The operator's Deployment (deploy/ and the chart) runs `run` as the same user, on a
    // read-only root.
    let (pod, container) = deploy_container();
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(RUN_AS));
    assert_eq!(pod["securityContext"]["runAsGroup"].as_i64(), Some(RUN_AS));
    assert_eq!(container["args"][0].as_str(), Some("run"));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    let template = read("charts/etcd-operator/templates/deployment.yaml");
    for line in [
        format!("runAsUser: {RUN_AS}"),
        format!("runAsGroup: {RUN_AS}"),
        "- run".to_owned(),
        "readOnlyRootFilesystem: true".to_owned(),
    ] {
        assert!(template.contains(&line), "the chart's Deployment: {line}");
    }

    // The member pods: the same user, the binaries by the names the image puts on its PATH.
    let c = validated(&cluster(
        "  replicas: 3\n  backup:\n    schedule: \"@hourly\"\n    s3:\n      bucket: b\n      endpoint: http://s3.local:8333\n",
    ));
    let desired = plan(Ok(&c), &Observed::default())
        .desired
        .expect("bootstrap objects");
    let objects = build(&c, &desired).expect("builds");
    let pod = objects
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    let security = pod.security_context.as_ref().expect("pod security");
    assert_eq!(security.run_as_user, Some(RUN_AS));
    assert_eq!(security.run_as_group, Some(RUN_AS));
    assert_eq!(security.fs_group, Some(RUN_AS));
    let mut commands: Vec<String> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .map(|c| c.command.clone().expect("a command")[0].clone())
        .collect();
    commands.sort();
    assert_eq!(commands, ["etcd-operator", "etcd-server"]);
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE), "{}", c.name);
    }
}

#[test]
fn the_operator_port_and_probes_agree() {
    // The binary's own default for --metrics-addr.
    let help = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["run", "--help"])
        .output()
        .expect("etcd-operator runs");
    let help = String::from_utf8_lossy(&help.stdout);
    let default = help
        .split("[default: ")
        .skip(1)
        .find_map(|s| {
            let value = s.split(']').next()?;
            value.contains(':').then(|| value.to_owned())
        })
        .filter(|_| help.contains("--metrics-addr"))
        .expect("--metrics-addr has a default");
    let port: i64 = default
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");

    let (_, container) = deploy_container();
    assert_eq!(container["ports"][0]["containerPort"].as_i64(), Some(port));
    let port_name = container["ports"][0]["name"].as_str().expect("named port");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some(port_name),
            "{probe}"
        );
    }
    let values: Value =
        serde_yaml_ng::from_str(&read("charts/etcd-operator/values.yaml")).expect("values");
    assert_eq!(values["metricsPort"].as_i64(), Some(port));
    let template = read("charts/etcd-operator/templates/deployment.yaml");
    assert!(template.contains("--metrics-addr=0.0.0.0:{{ .Values.metricsPort }}"));
    assert!(template.contains("containerPort: {{ .Values.metricsPort }}"));
    assert_eq!(template.matches("path: /healthz").count(), 2);
}
