//! The certificate planner (pure): from the authority the operator keeps, the policy, the
//! clock, the rotation requests and what every member has loaded, the next step of the
//! certificate lifecycle. One step at a time, each gated on every member confirming the
//! material on disk, so nothing a member still uses is ever removed:
//!
//! - leaves are re-issued `renewBefore` their expiry, or on request;
//! - a CA rotates through the trust bundle: (1) trust old and new, (2) re-issue every leaf
//!   from the new CA, (3) drop the old CA.

use serde::{Deserialize, Serialize};

use super::issue::{CertInfo, Issued};

/// A stored certificate with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM key.
    pub key_pem: String,
    /// Fingerprint, expiry, name.
    pub info: CertInfo,
    /// For a leaf: the fingerprint of the CA that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Stored {
    /// A stored copy of `issued`, signed by `issuer`.
    pub fn of(issued: Issued, issuer: Option<&Stored>) -> Self {
        Self {
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            info: issued.info,
            issuer: issuer.map(|ca| ca.info.sha256.clone()),
        }
    }

    /// Back to an [`Issued`] (to sign with it).
    pub fn issued(&self) -> Issued {
        Issued {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            info: self.info.clone(),
        }
    }
}

/// Where a CA rotation stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No rotation.
    #[default]
    Idle,
    /// The bundle holds the old and the new CA; the leaves are still the old CA's.
    TrustBoth,
    /// The leaves are the new CA's; the bundle still holds the old CA.
    NewLeaves,
}

/// Everything the operator keeps about a cluster's certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authority {
    /// The trusted CAs, oldest first; the last one signs new leaves.
    pub cas: Vec<Stored>,
    /// The client port's certificate.
    pub server: Option<Stored>,
    /// The members' peer certificate.
    pub peer: Option<Stored>,
    /// The client certificate for users (CN `root`), in `<cluster>-client-tls`.
    pub client: Option<Stored>,
    /// The operator's own client certificate (CN `root`): kept only in this record, never
    /// handed to users, so theirs can be shared without sharing the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Stored>,
    /// The CA rotation in progress.
    #[serde(default)]
    pub phase: Phase,
    /// The `rotate-certs` annotation value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_certs: Option<String>,
    /// The `rotate-ca` annotation value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_ca: Option<String>,
    /// What the leaves were issued for ([`Policy::subjects`]): new names or a new key
    /// algorithm re-issue them.
    #[serde(default)]
    pub issued_for: u64,
}

impl Authority {
    /// The CA that signs new leaves.
    pub fn signing_ca(&self) -> Option<&Stored> {
        self.cas.last()
    }

    /// The trust bundle: every CA, PEM, oldest first.
    pub fn bundle_pem(&self) -> String {
        self.cas.iter().map(|c| c.cert_pem.as_str()).collect()
    }

    /// Fingerprints of the bundle's CAs.
    pub fn bundle(&self) -> Vec<String> {
        self.cas.iter().map(|c| c.info.sha256.clone()).collect()
    }

    /// The leaves, in a fixed order.
    pub fn leaves(&self) -> impl Iterator<Item = &Stored> {
        [&self.server, &self.peer, &self.client, &self.operator]
            .into_iter()
            .flatten()
    }
}

/// What one member has loaded, from its TLS expiry metric (`None`: not answering).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// `role="client"`: the client port's certificate.
    pub server: Option<String>,
    /// `role="client-ca"`: the CAs the client port trusts.
    pub client_cas: Vec<String>,
    /// `role="peer"`: the peer certificate.
    pub peer: Option<String>,
    /// `role="peer-ca"`: the CAs the peer port trusts.
    pub peer_cas: Vec<String>,
}

/// The lifecycle's timing, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Leaf validity.
    pub validity: u64,
    /// CA validity.
    pub ca_validity: u64,
    /// Re-issue this long before expiry.
    pub renew_before: u64,
    /// The client port serves TLS (members load `server`, trust the bundle for clients).
    pub client: bool,
    /// The peer port serves TLS.
    pub peer: bool,
    /// The client port trusts the bundle for client certificates.
    pub client_cert_auth: bool,
    /// A digest of the names and key algorithm the leaves must have.
    pub subjects: u64,
}

/// Rotations asked for through annotations (their current values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// `etcd.rustops.dev/rotate-certs`.
    pub rotate_certs: Option<String>,
    /// `etcd.rustops.dev/rotate-ca`.
    pub rotate_ca: Option<String>,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStep {
    /// No CA yet: make the CA and every leaf (before any member starts).
    Bootstrap,
    /// Everything is current.
    Idle,
    /// Members have not all loaded what is on disk yet.
    Wait {
        /// Who and what.
        reason: String,
    },
    /// Re-issue every leaf from the signing CA.
    RenewLeaves {
        /// Why.
        reason: String,
    },
    /// Add a new CA to the bundle (rotation step 1).
    AddCa {
        /// Why.
        reason: String,
    },
    /// Re-issue every leaf from the new CA (rotation step 2).
    ReissueFromNewCa,
    /// Drop the old CA from the bundle (rotation step 3).
    DropOldCa,
    /// Something expired (the cluster was down past an expiry): re-issue at once, without
    /// waiting for members that cannot load expired material anyway; with the CA expired, a
    /// new CA replaces the bundle.
    Recover {
        /// Whether the CA is replaced too.
        new_ca: bool,
        /// What expired.
        reason: String,
    },
}

/// Whether every member runs on exactly the material on disk.
fn unconfirmed(
    auth: &Authority,
    policy: &Policy,
    members: &[(String, Option<Loaded>)],
) -> Vec<String> {
    let bundle = {
        let mut b = auth.bundle();
        b.sort();
        b
    };
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let fp = |s: &Option<Stored>| s.as_ref().map(|c| c.info.sha256.clone());
    let mut out = Vec::new();
    for (name, loaded) in members {
        let Some(l) = loaded else {
            out.push(format!("{name} (not answering)"));
            continue;
        };
        let mut what = Vec::new();
        if policy.client {
            if l.server != fp(&auth.server) {
                what.push("server certificate");
            }
            if policy.client_cert_auth && sorted(&l.client_cas) != bundle {
                what.push("client CA bundle");
            }
        }
        if policy.peer {
            if l.peer != fp(&auth.peer) {
                what.push("peer certificate");
            }
            if sorted(&l.peer_cas) != bundle {
                what.push("peer CA bundle");
            }
        }
        if !what.is_empty() {
            out.push(format!("{name} ({})", what.join(", ")));
        }
    }
    out
}

/// The next step of the certificate lifecycle at `now` (Unix seconds).
pub fn next(
    auth: &Authority,
    policy: &Policy,
    requests: &Requests,
    members: &[(String, Option<Loaded>)],
    now: i64,
) -> CertStep {
    let Some(signing) = auth.signing_ca() else {
        return CertStep::Bootstrap;
    };
    if auth.leaves().count() < 4 {
        return CertStep::RenewLeaves {
            reason: "a certificate is missing".into(),
        };
    }
    if now >= signing.info.not_after {
        return CertStep::Recover {
            new_ca: true,
            reason: format!("the CA expired at {}", signing.info.not_after),
        };
    }
    // A leaf is no better than the CA that signed it.
    let expires = |l: &Stored| {
        let ca = auth
            .cas
            .iter()
            .find(|c| l.issuer.as_deref() == Some(c.info.sha256.as_str()));
        l.info
            .not_after
            .min(ca.map_or(i64::MAX, |c| c.info.not_after))
    };
    if let Some(leaf) = auth.leaves().find(|l| now >= expires(l)) {
        return CertStep::Recover {
            new_ca: false,
            reason: format!("{} expired at {}", leaf.info.common_name, expires(leaf)),
        };
    }
    let waiting = unconfirmed(auth, policy, members);
    let wait = || CertStep::Wait {
        reason: format!(
            "waiting for {} to load the new material",
            waiting.join("; ")
        ),
    };
    // The rotation's later steps take trust away from what members may still use: each
    // waits until every member runs on the files on disk.
    match auth.phase {
        Phase::TrustBoth if waiting.is_empty() => return CertStep::ReissueFromNewCa,
        Phase::NewLeaves if waiting.is_empty() => return CertStep::DropOldCa,
        Phase::TrustBoth | Phase::NewLeaves => return wait(),
        Phase::Idle => {}
    }
    // Adding trust and renewing leaves from a trusted CA are safe with members behind (a
    // member that is down reads the current files when it comes back): they do not wait, so
    // one stuck member cannot let the others' certificates expire.
    let renew_at = |info: &CertInfo| info.not_after - policy.renew_before as i64;
    if now >= renew_at(&signing.info)
        || (requests.rotate_ca.is_some() && requests.rotate_ca != auth.rotated_ca)
    {
        let reason = if now >= renew_at(&signing.info) {
            format!("the CA expires at {}", signing.info.not_after)
        } else {
            "requested by the rotate-ca annotation".to_owned()
        };
        return CertStep::AddCa { reason };
    }
    if let Some(leaf) = auth.leaves().find(|l| now >= renew_at(&l.info)) {
        return CertStep::RenewLeaves {
            reason: format!(
                "{} expires at {}",
                leaf.info.common_name, leaf.info.not_after
            ),
        };
    }
    if auth
        .leaves()
        .any(|l| l.issuer.as_deref() != Some(signing.info.sha256.as_str()))
    {
        return CertStep::RenewLeaves {
            reason: "a certificate is not signed by the current CA".into(),
        };
    }
    if requests.rotate_certs.is_some() && requests.rotate_certs != auth.rotated_certs {
        return CertStep::RenewLeaves {
            reason: "requested by the rotate-certs annotation".into(),
        };
    }
    if auth.issued_for != policy.subjects {
        return CertStep::RenewLeaves {
            reason: "the names or the key algorithm changed".into(),
        };
    }
    if !waiting.is_empty() {
        return wait();
    }
    CertStep::Idle
}

#[cfg(test)]
mod tests;
