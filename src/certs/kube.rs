//! The Kubernetes side of the lifecycle's state: the authority lives in the `<cluster>-ca`
//! Secret (the Secrets themselves are built in `build::secret` and applied with the rest).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::Authority;
use crate::build::secret;
use crate::names::ClusterNames;

/// The authority recorded in `<cluster>-ca`: `None` when the Secret does not exist (the
/// cluster gets a new CA). A Secret that exists but cannot be read is an error, never a
/// reason to make a new CA over the one the members trust.
pub async fn read_authority(
    client: &Client,
    names: &ClusterNames,
) -> Result<Option<Authority>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    let name = names.ca_secret();
    match api.get_opt(&name).await {
        Ok(None) => Ok(None),
        Ok(Some(s)) => secret::authority(&s)
            .map(Some)
            .ok_or_else(|| format!("Secret {name} holds no readable {}", secret::AUTHORITY_KEY)),
        Err(e) => Err(format!("failed to read Secret {name}: {e}")),
    }
}

/// A client certificate Secret (`tls.crt`, `tls.key`, `ca.crt`) as the operator's client TLS;
/// `None` while it does not exist (cert-manager has not issued it yet).
pub async fn read_client_tls(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<crate::etcd::ClientTls>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(name).await {
        Ok(None) => return Ok(None),
        Ok(Some(s)) => s,
        Err(e) => return Err(format!("failed to read Secret {name}: {e}")),
    };
    let get = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| format!("Secret {name} has no {k}"))
    };
    Ok(Some(crate::etcd::ClientTls::Pem {
        ca: get("ca.crt")?,
        cert: get("tls.crt")?,
        key: get("tls.key")?,
    }))
}

/// `tls.crt` and `ca.crt` of a certificate Secret the operator does not issue, for
/// `status.tls`; both `None` while the Secret does not exist.
pub async fn read_external(
    client: &Client,
    namespace: &str,
    role: &'static str,
    name: &str,
) -> Result<super::status::ExternalSecret, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| format!("failed to read Secret {name}: {e}"))?;
    let get = |k: &str| {
        secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Ok(super::status::ExternalSecret {
        role,
        name: name.to_owned(),
        cert: get("tls.crt"),
        ca: get("ca.crt"),
    })
}
