//! The local runtime's cluster file: an EtcdCluster in YAML, read as strictly as `kubectl
//! apply` reads it, and completed with what an apiserver would fill in.

use std::path::Path;

use kube::Resource;

use super::{Error, io};
use crate::crd::EtcdCluster;

/// Why a cluster file was refused by [`parse_strict`].
#[derive(Debug)]
enum Strict {
    /// Not YAML, or not an EtcdCluster.
    Yaml(serde_yaml_ng::Error),
    /// Fields the EtcdCluster type does not have, by path.
    Unknown(Vec<String>),
}

/// The type of an object in a file.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeHead {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parses an EtcdCluster and refuses fields it does not have, as `kubectl apply` does with
/// strict field validation: a typo such as `replica: 5` must not be silently ignored.
fn parse_strict(text: &str) -> Result<EtcdCluster, Strict> {
    let mut unknown = Vec::new();
    let cluster = serde_ignored::deserialize(serde_yaml_ng::Deserializer::from_str(text), |p| {
        // `?` marks an optional field's value (`spec.tls.?.enable`): not part of the path
        // a user wrote.
        unknown.push(p.to_string().replace(".?", ""))
    })
    .map_err(Strict::Yaml)?;
    // The type keeps no `apiVersion` or `kind` (they are its constants): check them here.
    let head: TypeHead = serde_yaml_ng::from_str(text).map_err(Strict::Yaml)?;
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    let want = (EtcdCluster::api_version(&()), EtcdCluster::kind(&()));
    if (head.api_version.as_str(), head.kind.as_str()) != (want.0.as_ref(), want.1.as_ref()) {
        unknown.push(format!(
            "apiVersion/kind {}/{} (expected {}/{})",
            head.api_version, head.kind, want.0, want.1
        ));
    }
    if unknown.is_empty() {
        Ok(cluster)
    } else {
        Err(Strict::Unknown(unknown))
    }
}

/// Reads the cluster file, filling in what an apiserver would (namespace, UID, generation).
pub(super) fn load_spec(path: &Path, uid: &str, generation: i64) -> Result<EtcdCluster, Error> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    let mut cluster = parse_strict(&text).map_err(|e| match e {
        Strict::Yaml(source) => Error::Parse {
            path: path.to_owned(),
            source,
        },
        Strict::Unknown(fields) => Error::UnknownFields {
            path: path.to_owned(),
            fields: fields.join(", "),
        },
    })?;
    let meta = &mut cluster.metadata;
    meta.namespace.get_or_insert_with(|| "default".to_owned());
    meta.uid = Some(uid.to_owned());
    meta.generation = Some(generation);
    if meta.name.is_none() {
        meta.name = Some("etcd".to_owned());
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_by_path() {
        let table = [
            (
                "metadata:\n  name: a\nspec:\n  replica: 5\n",
                vec!["spec.replica"],
            ),
            (
                "metadata:\n  name: a\nspec:\n  replicas: 3\n  tls:\n    enable: true\n",
                vec!["spec.tls.enable"],
            ),
            (
                "metadata:\n  name: a\n  nmae: b\nspec:\n  server:\n    snapshotCont: 5\n",
                vec!["metadata.nmae", "spec.server.snapshotCont"],
            ),
        ];
        for (yaml, want) in table {
            let text = format!("apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\n{yaml}");
            match parse_strict(&text) {
                Err(Strict::Unknown(got)) => assert_eq!(got, want, "{yaml}"),
                other => panic!("{yaml}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_example_files_are_accepted() {
        for f in ["examples/cluster.yaml", "deploy/example/etcdcluster.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            parse_strict(&text).unwrap_or_else(|e| panic!("{f}: {e:?}"));
        }
    }

    #[test]
    fn another_kind_is_refused() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\nspec:\n  replicas: 3\n";
        assert!(matches!(parse_strict(text), Err(Strict::Unknown(_))));
    }

    #[test]
    fn not_yaml_is_a_parse_error() {
        assert!(matches!(parse_strict("spec: [1"), Err(Strict::Yaml(_))));
    }
}
