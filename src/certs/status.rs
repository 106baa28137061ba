//! The certificates' part of the status (pure): `status.tls` and the `CertificatesReady`
//! condition, from the authority, the planner's step and how long it has waited.

use super::rotation::{Authority, CertStep, Phase};
use crate::crd::{CertificateStatus, TlsStatus};

/// A rotation that has waited this long for members is reported stuck.
pub const STUCK_AFTER_SECS: i64 = 600;

/// The `CertificatesReady` condition: status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether valid certificates are in use.
    pub ready: bool,
    /// `Ready`, `RotationInProgress`, `CertificateExpiringSoon`, `RotationStuck`,
    /// `Expired` or `NotIssued`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

fn rfc3339(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `status.tls` and the condition. `waiting_since` is when the current wait began (Unix
/// seconds), `renew_before` the renewal margin.
pub fn tls_status(
    auth: &Authority,
    step: &CertStep,
    waiting_since: Option<i64>,
    now: i64,
    renew_before: u64,
) -> (TlsStatus, Readiness) {
    let mut certificates: Vec<CertificateStatus> = auth
        .cas
        .iter()
        .map(|c| ("ca", c))
        .chain(
            [
                ("server", &auth.server),
                ("peer", &auth.peer),
                ("client", &auth.client),
                ("operator", &auth.operator),
            ]
            .into_iter()
            .filter_map(|(role, l)| l.as_ref().map(|l| (role, l))),
        )
        .map(|(role, c)| CertificateStatus {
            role: role.to_owned(),
            common_name: c.info.common_name.clone(),
            sha256: c.info.sha256.clone(),
            not_after: rfc3339(c.info.not_after),
        })
        .collect();
    certificates.sort_by_key(|c| c.role != "ca");
    let phase = match auth.phase {
        Phase::Idle => "Idle",
        Phase::TrustBoth => "TrustBoth",
        Phase::NewLeaves => "NewLeaves",
    }
    .to_owned();
    let earliest = auth
        .cas
        .iter()
        .chain(auth.leaves())
        .map(|c| c.info.not_after)
        .min();
    let readiness = match (step, earliest) {
        (CertStep::Bootstrap, _) | (_, None) => Readiness {
            ready: false,
            reason: "NotIssued",
            message: "the certificates are being issued".into(),
        },
        (_, Some(t)) if now >= t => Readiness {
            ready: false,
            reason: "Expired",
            message: format!("a certificate expired at {}", rfc3339(t)),
        },
        (CertStep::Wait { reason }, _)
            if waiting_since.is_some_and(|s| now - s >= STUCK_AFTER_SECS) =>
        {
            Readiness {
                ready: true,
                reason: "RotationStuck",
                message: format!("the rotation is paused: {reason}"),
            }
        }
        (CertStep::Wait { reason }, _) => Readiness {
            ready: true,
            reason: "RotationInProgress",
            message: reason.clone(),
        },
        _ if auth.phase != Phase::Idle => Readiness {
            ready: true,
            reason: "RotationInProgress",
            message: format!("CA rotation in progress ({phase})"),
        },
        (_, Some(t)) if now >= t - renew_before as i64 => Readiness {
            ready: true,
            reason: "CertificateExpiringSoon",
            message: format!("a certificate expires at {}", rfc3339(t)),
        },
        (_, Some(t)) => Readiness {
            ready: true,
            reason: "Ready",
            message: format!("certificates in use; the first expires at {}", rfc3339(t)),
        },
    };
    (
        TlsStatus {
            phase,
            certificates,
        },
        readiness,
    )
}

/// A certificate Secret the operator does not issue (provider `CertManager` or `Secrets`),
/// as read: `cert` is its `tls.crt`, `ca` its `ca.crt`, both `None` while it is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSecret {
    /// `server`, `peer` or `client`.
    pub role: &'static str,
    /// The Secret's name.
    pub name: String,
    /// `tls.crt`.
    pub cert: Option<String>,
    /// `ca.crt`.
    pub ca: Option<String>,
}

/// `status.tls` and the condition for certificates someone else issues: what the Secrets
/// hold (the CAs of their `ca.crt`, then each leaf) and whether every member has loaded the
/// server and peer certificates they hold now (`members`: what each member's metrics say it
/// loaded, `None` when it did not answer). The phase is `External`.
pub fn external_status(
    secrets: &[ExternalSecret],
    members: &[(String, Option<super::Loaded>)],
    now: i64,
    renew_before: u64,
) -> (TlsStatus, Readiness) {
    let mut certificates: Vec<CertificateStatus> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut cas: Vec<CertificateStatus> = Vec::new();
    let mut leaves: Vec<CertificateStatus> = Vec::new();
    let mut earliest: Option<i64> = None;
    let entry = |role: &str, info: &super::CertInfo| CertificateStatus {
        role: role.to_owned(),
        common_name: info.common_name.clone(),
        sha256: info.sha256.clone(),
        not_after: rfc3339(info.not_after),
    };
    for s in secrets {
        let Some(cert) = &s.cert else {
            problems.push(format!("Secret {} ({}) does not exist yet", s.name, s.role));
            continue;
        };
        match super::issue::inspect(cert) {
            Ok(info) => {
                earliest = Some(earliest.map_or(info.not_after, |e| e.min(info.not_after)));
                leaves.push(entry(s.role, &info));
            }
            Err(e) => problems.push(format!("Secret {}: tls.crt: {e}", s.name)),
        }
        for info in
            s.ca.as_deref()
                .map(super::issue::inspect_all)
                .and_then(Result::ok)
                .unwrap_or_default()
        {
            if !cas.iter().any(|c| c.sha256 == info.sha256) {
                earliest = Some(earliest.map_or(info.not_after, |e| e.min(info.not_after)));
                cas.push(entry("ca", &info));
            }
        }
    }
    certificates.extend(cas);
    certificates.extend(leaves);
    let sha = |role: &str| {
        certificates
            .iter()
            .find(|c| c.role == role)
            .map(|c| c.sha256.clone())
    };
    let (server, peer) = (sha("server"), sha("peer"));
    let behind: Vec<&str> = members
        .iter()
        .filter(|(_, loaded)| {
            !loaded.as_ref().is_some_and(|l| {
                (server.is_none() || l.server == server) && (peer.is_none() || l.peer == peer)
            })
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let readiness = match earliest {
        _ if !problems.is_empty() => Readiness {
            ready: false,
            reason: "NotIssued",
            message: problems.join("; "),
        },
        None => Readiness {
            ready: false,
            reason: "NotIssued",
            message: "no certificate Secret is named".into(),
        },
        Some(t) if now >= t => Readiness {
            ready: false,
            reason: "Expired",
            message: format!("a certificate expired at {}", rfc3339(t)),
        },
        Some(_) if !behind.is_empty() => Readiness {
            ready: true,
            reason: "RotationInProgress",
            message: format!(
                "{} have not loaded the certificates the Secrets hold",
                behind.join(", ")
            ),
        },
        Some(t) if now >= t - renew_before as i64 => Readiness {
            ready: true,
            reason: "CertificateExpiringSoon",
            message: format!("a certificate expires at {}", rfc3339(t)),
        },
        Some(t) => Readiness {
            ready: true,
            reason: "Ready",
            message: format!("certificates in use; the first expires at {}", rfc3339(t)),
        },
    };
    (
        TlsStatus {
            phase: "External".to_owned(),
            certificates,
        },
        readiness,
    )
}
