//! The committed CRD must be what `etcd-operator crd` prints; deploy/ and the chart link to it.

use std::path::Path;

use etcd_operator::crd::crd_yaml;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_crd_is_current() {
    let generated = crd_yaml().expect("CRD renders");
    let committed = std::fs::read_to_string(root().join("crds/etcdcluster.yaml"))
        .expect("crds/etcdcluster.yaml");
    assert!(
        committed == generated,
        "crds/etcdcluster.yaml is stale: run `cargo run -p etcd-operator -- crd > crds/etcdcluster.yaml`"
    );
    // deploy/ and the chart carry the same file (symlinks to crds/).
    for copy in [
        "deploy/01-crd.yaml",
        "charts/etcd-operator/crds/etcdcluster.yaml",
    ] {
        let text =
            std::fs::read_to_string(root().join(copy)).unwrap_or_else(|e| panic!("{copy}: {e}"));
        assert!(text == generated, "{copy} differs from the generated CRD");
    }
}

#[test]
fn crd_has_scale_printer_columns_and_cel_rules() {
    let crd: serde_json::Value =
        serde_yaml_ng::from_str(&crd_yaml().expect("renders")).expect("yaml");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "etcd.rustops.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["shortNames"][0], "etcd");
    let v = &spec["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(
        v["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
    assert_eq!(
        v["subresources"]["scale"]["statusReplicasPath"],
        ".status.readyReplicas"
    );
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        vec!["Desired", "Ready", "Leader", "Version", "Age"]
    );
    let props = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(props["replicas"]["default"], 3);
    assert_eq!(props["replicas"]["minimum"], 1.0);
    assert_eq!(props["replicas"]["maximum"], 9.0);
    assert_eq!(props["storage"]["properties"]["emptyDir"]["default"], false);
    let rules = props["storage"]["x-kubernetes-validations"].to_string();
    assert!(rules.contains("self == oldSelf"), "{rules}");
    // Every spec field is documented.
    for (name, field) in props.as_object().expect("properties") {
        assert!(
            field["description"].as_str().is_some_and(|d| !d.is_empty()),
            "spec.{name} lacks a description"
        );
    }
}
