//! Where a cluster's certificates come from, by `spec.tls.provider` (pure): which Secrets the
//! pods mount and under which file names, and where the operator's own client certificate is.
//!
//! Every member sees the same files in `/etc/etcd-tls`: `ca.crt` (CAs for clients),
//! `server.crt`/`server.key`, `peer-ca.crt` (CAs for members), `peer.crt`/`peer.key`.

use crate::crd::{TlsProvider, TlsSpec};
use crate::names::ClusterNames;

/// How the TLS volume is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// One Secret whose keys are already the file names (the operator's own, `Auto`).
    Whole {
        /// The Secret.
        secret: String,
    },
    /// Two `kubernetes.io/tls` Secrets (`tls.crt`, `tls.key`, `ca.crt`) mapped onto the file
    /// names (cert-manager's, or yours).
    Mapped {
        /// The client port's certificate.
        server: String,
        /// The peer certificate.
        peer: String,
    },
}

/// The enabled TLS spec, if any.
pub fn enabled(spec: Option<&TlsSpec>) -> Option<&TlsSpec> {
    spec.filter(|t| t.enabled && (t.client || t.peer))
}

/// The TLS settings in effect for `names`' cluster: the enabled spec, or while the cluster
/// moves between plain and TLS (either way, see [`ClusterNames::tls_moving`]) the spec's
/// settings with both sides on (defaults when `spec.tls` is gone), since members then serve
/// both. `None` when TLS is off and settled.
pub fn effective(names: &ClusterNames, spec: Option<&TlsSpec>) -> Option<TlsSpec> {
    if let Some(tls) = enabled(spec) {
        let mut tls = tls.clone();
        if names.tls_moving {
            (tls.client, tls.peer) = (true, true);
        }
        return Some(tls);
    }
    names.tls_moving.then(|| {
        let mut tls = spec.cloned().unwrap_or_else(|| {
            serde_json::from_str("{}").expect("every TlsSpec field has a default")
        });
        (tls.enabled, tls.client, tls.peer) = (true, true, true);
        tls
    })
}

/// The volume for `spec`; `None` with TLS off.
pub fn mount(names: &ClusterNames, spec: Option<&TlsSpec>) -> Option<Mount> {
    let tls = effective(names, spec)?;
    Some(match tls.provider {
        TlsProvider::Auto => Mount::Whole {
            secret: names.tls_secret(),
        },
        TlsProvider::CertManager => Mount::Mapped {
            server: cert_manager_secret(names, "server"),
            peer: cert_manager_secret(names, "peer"),
        },
        TlsProvider::Secrets => {
            let s = tls.secrets.as_ref()?;
            Mount::Mapped {
                server: s.server_secret.clone(),
                peer: s.peer_secret.clone(),
            }
        }
    })
}

/// The Secret cert-manager writes for certificate `role` (`server`, `peer`, `client`).
pub fn cert_manager_secret(names: &ClusterNames, role: &str) -> String {
    format!("{}-{role}-tls", names.cluster)
}

/// Where the operator finds its client certificate (`tls.crt`, `tls.key`, `ca.crt`) for
/// providers other than `Auto` (which keeps it in its authority).
pub fn client_secret(names: &ClusterNames, spec: Option<&TlsSpec>) -> Option<String> {
    let tls = spec?;
    match tls.provider {
        TlsProvider::Auto => None,
        TlsProvider::CertManager => Some(cert_manager_secret(names, "client")),
        TlsProvider::Secrets => tls.secrets.as_ref()?.client_secret.clone(),
    }
}
