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
