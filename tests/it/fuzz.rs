//! Fuzzing the operator's spec handling (property tests on stable Rust): specs generated from
//! the CRD's own OpenAPI schema, with every field present or absent and values drawn from
//! edge cases (empty, negative, huge, malformed durations, schedules and quantities, other
//! types), go through deserialization, validation, the planner and the builders. Each must
//! give objects or a clear error, never a panic. `PROPTEST_CASES` lengthens a run.

use proptest::prelude::*;
use serde_json::{Value, json};

use etcd_operator::crd::EtcdCluster;
use etcd_operator::observe::Observed;

/// Strings a user might write, or get wrong.
const STRINGS: &[&str] = &[
    "",
    "0",
    "-1",
    "5m",
    "-1s",
    "1h30m",
    "0s",
    "99999999999999h",
    "1.5m",
    "5 m",
    "abc",
    "Automatic",
    "Manual",
    "auto",
    "certManager",
    "secrets",
    "periodic",
    "revision",
    "*/5 * * * *",
    "61 * * * *",
    "@hourly",
    "0 0 31 2 *",
    "https://s3.example:9000",
    "http://",
    "ecdsa-p256",
    "rsa-2048",
    "rsa-4096",
    "ed25519",
    "10Gi",
    "-1Gi",
    "1e400",
    "1Ei",
    "名前",
    "UPPER",
    "a.b",
    "local",
    "etcd-operator:dev",
    ":",
    "x/y",
    "Retain",
    "Delete",
    "latest",
    "3.5.17",
];

fn string() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::sample::select(STRINGS).prop_map(Value::from),
        1 => "[a-zA-Z0-9./:*@ -]{0,20}".prop_map(Value::from),
        1 => Just(Value::from("x".repeat(300))),
    ]
    .boxed()
}

fn integer() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (-3i64..10).prop_map(Value::from),
        1 => Just(Value::from(i64::from(i32::MAX))),
        1 => Just(Value::from(i64::MAX)),
        1 => Just(Value::from(i64::MIN)),
        1 => any::<i64>().prop_map(Value::from),
    ]
    .boxed()
}

/// Any scalar, for fields of the wrong type and schemaless ones.
fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        string(),
        integer(),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!(1.5)),
    ]
    .boxed()
}

/// Values for the schema node `s`: mostly of its type, sometimes not.
fn value_for(s: &Value, depth: u32) -> BoxedStrategy<Value> {
    let typed = typed_value(s, depth);
    prop_oneof![40 => typed, 1 => scalar()].boxed()
}

fn typed_value(s: &Value, depth: u32) -> BoxedStrategy<Value> {
    if let Some(values) = s
        .get("enum")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
    {
        return prop_oneof![4 => prop::sample::select(values.clone()), 1 => string()].boxed();
    }
    if s.get("x-kubernetes-int-or-string").is_some() {
        return prop_oneof![integer(), string()].boxed();
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        if depth > 6 {
            return Just(json!({})).boxed();
        }
        let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = props
            .iter()
            .map(|(k, sub)| {
                let k = k.clone();
                prop::option::weighted(0.3, value_for(sub, depth + 1))
                    .prop_map(move |v| v.map(|v| (k.clone(), v)))
                    .boxed()
            })
            .collect();
        return fields
            .prop_map(|fs| Value::Object(fs.into_iter().flatten().collect()))
            .boxed();
    }
    match s.get("type").and_then(Value::as_str) {
        Some("integer") | Some("number") => integer(),
        Some("boolean") => any::<bool>().prop_map(Value::from).boxed(),
        Some("string") => string(),
        Some("array") => {
            let items = s.get("items").cloned().unwrap_or(Value::Null);
            prop::collection::vec(value_for(&items, depth + 1), 0..3)
                .prop_map(Value::from)
                .boxed()
        }
        Some("object") => prop::collection::btree_map("[a-z]{1,8}", scalar(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
        _ => scalar(),
    }
}

/// The CRD's schema for `spec`.
fn spec_schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/etcdcluster.yaml"
    ))
    .expect("read the CRD");
    let crd: Value = serde_yaml_ng::from_str(&text).expect("parse the CRD");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn fuzz_specs_never_panic_the_operator() {
    let schema = spec_schema();
    assert!(
        schema.get("properties").is_some(),
        "the CRD has a spec schema"
    );
    let mut runner = proptest::test_runner::TestRunner::default();
    let reached: [std::cell::Cell<usize>; 3] = Default::default();
    runner
        .run(&typed_value(&schema, 0), |spec| {
            let object = json!({
                "apiVersion": "etcd.rustops.dev/v1alpha1",
                "kind": "EtcdCluster",
                "metadata": {"name": "main", "namespace": "db", "uid": "u-1", "generation": 1},
                "spec": spec,
            });
            let Ok(cluster) = serde_json::from_value::<EtcdCluster>(object) else {
                return Ok(());
            };
            reached[0].set(reached[0].get() + 1);
            let validated = etcd_operator::validate::validate(&cluster);
            let plan = match &validated {
                Ok(v) => etcd_operator::plan::plan(Ok(v), &Observed::default()),
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    return Ok(());
                }
            };
            reached[1].set(reached[1].get() + 1);
            if let (Ok(v), Some(desired)) = (&validated, &plan.desired)
                && etcd_operator::build::build(v, desired).is_ok()
            {
                reached[2].set(reached[2].get() + 1);
            }
            Ok(())
        })
        .expect("no spec panics the operator");
    // The generator must reach every stage, or it tests nothing.
    let reached = reached.map(|c| c.get());
    println!(
        "deserialized {}, valid {}, built {}",
        reached[0], reached[1], reached[2]
    );
    assert!(reached.iter().all(|n| *n > 0), "{reached:?}");
}

/// Found by the fuzzer: a heartbeat near `i32::MAX` overflowed the election-timeout check.
#[test]
fn a_huge_heartbeat_is_refused_not_a_panic() {
    let cluster = crate::fixtures::cluster("  server:\n    heartbeatIntervalMs: 2147483647\n");
    let err = etcd_operator::validate::validate(&cluster)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("must be at least 5 times server.heartbeatIntervalMs")),
        "{err:?}"
    );
}
