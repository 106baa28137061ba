//! The Helm chart, as rendered by `scripts/check-chart.sh` (a real Helm engine through the
//! `helm-sdkpy` package), must consist of well-formed Kubernetes objects: each document is
//! parsed into its k8s-openapi type and must survive the round trip unchanged, so a misspelt or
//! misplaced field fails the test instead of being silently dropped.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    // Every field of the document must come back (serde defaults may add fields).
    match first_loss(&strip_nulls(back), &strip_nulls(doc.clone()), "") {
        None => Ok(()),
        Some(path) => Err(format!(
            "{path} was lost in the round trip (misspelt or misplaced?)"
        )),
    }
}

/// The first path of `part` that `whole` lacks or holds differently.
fn first_loss(whole: &Value, part: &Value, at: &str) -> Option<String> {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p.iter().find_map(|(k, v)| match w.get(k) {
            Some(wv) => first_loss(wv, v, &format!("{at}.{k}")),
            None => Some(format!("{at}.{k}")),
        }),
        (Value::Array(w), Value::Array(p)) if w.len() == p.len() => w
            .iter()
            .zip(p)
            .enumerate()
            .find_map(|(i, (a, b))| first_loss(a, b, &format!("{at}[{i}]"))),
        (Value::Number(w), Value::Number(p)) if w.as_f64() == p.as_f64() => None,
        (w, p) if w == p => None,
        _ => Some(at.to_owned()),
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Checks one manifest file (all its documents); returns the kinds found.
pub fn check_manifests(text: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let doc: Value = serde::Deserialize::deserialize(doc).expect("YAML document");
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(!name.is_empty(), "{kind} without a name");
        let checked = match kind.as_str() {
            "Namespace" => round_trips::<Namespace>(&doc),
            "ServiceAccount" => round_trips::<ServiceAccount>(&doc),
            "ClusterRole" => round_trips::<ClusterRole>(&doc),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(&doc),
            "Role" => round_trips::<Role>(&doc),
            "RoleBinding" => round_trips::<RoleBinding>(&doc),
            "Deployment" => round_trips::<Deployment>(&doc),
            "Service" => round_trips::<Service>(&doc),
            "CustomResourceDefinition" => round_trips::<CustomResourceDefinition>(&doc),
            "EtcdCluster" => round_trips::<etcd_operator::crd::EtcdCluster>(&doc),
            // A prometheus-operator type; not in k8s-openapi: check its shape by hand.
            "ServiceMonitor" => {
                let ok = doc["spec"]["endpoints"].is_array() && doc["spec"]["selector"].is_object();
                if ok {
                    Ok(())
                } else {
                    Err("needs spec.endpoints and spec.selector".to_owned())
                }
            }
            other => Err(format!("unexpected kind {other:?}")),
        };
        if let Err(e) = checked {
            panic!("{kind} {name}: {e}");
        }
        kinds.push(kind);
    }
    kinds
}

#[test]
fn deploy_manifests_are_kubernetes_objects() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut kinds = Vec::new();
    for dir in ["deploy", "deploy/example"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("deploy/")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            kinds.extend(check_manifests(&std::fs::read_to_string(&f).expect("read")));
        }
    }
    for want in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "CustomResourceDefinition",
        "EtcdCluster",
    ] {
        assert!(kinds.iter().any(|k| k == want), "deploy/ lacks a {want}");
    }
}

#[test]
#[ignore = "needs the rendered chart: run scripts/check-chart.sh"]
fn rendered_chart_is_kubernetes_objects() {
    let dir = std::env::var("RENDERED_CHART_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/chart").to_owned());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (run scripts/check-chart.sh)"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rendered manifests in {dir}");
    for f in files {
        let kinds = check_manifests(&std::fs::read_to_string(&f).expect("read"));
        for want in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ] {
            assert!(
                kinds.iter().any(|k| k == want),
                "{}: lacks a {want}",
                f.display()
            );
        }
    }
}

/// The verbs a ClusterRole in `text` grants on core-group `resource`.
fn core_verbs(text: &str, resource: &str) -> Vec<String> {
    let mut verbs = Vec::new();
    for doc in text.split("\n---") {
        let Ok(role) = serde_yaml_ng::from_str::<ClusterRole>(doc) else {
            continue;
        };
        for rule in role.rules.unwrap_or_default() {
            let core = rule
                .api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g.is_empty()));
            let covers = rule
                .resources
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r == resource));
            if core && covers {
                verbs.extend(rule.verbs);
            }
        }
    }
    verbs
}

/// The operator lists pods, deletes a pod to restart a member and deletes a claim to wipe a
/// lost one: both the plain manifests and the chart must allow it.
#[test]
fn rbac_allows_restarting_and_wiping_members() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "deploy/02-rbac.yaml",
        "charts/etcd-operator/templates/rbac.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("read");
        // The chart's template lines ({{ … }}) are not YAML values; the rules are plain.
        let text: String = text
            .lines()
            .filter(|l| !l.contains("{{"))
            .collect::<Vec<_>>()
            .join("\n");
        let pods = core_verbs(&text, "pods");
        for verb in ["list", "delete"] {
            assert!(
                pods.iter().any(|v| v == verb),
                "{file}: pods {verb}: {pods:?}"
            );
        }
        let claims = core_verbs(&text, "persistentvolumeclaims");
        assert!(
            claims.iter().any(|v| v == "delete"),
            "{file}: persistentvolumeclaims delete: {claims:?}"
        );
    }
}
