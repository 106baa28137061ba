//! The certificate lifecycle of `spec.tls` with the `Auto` provider: the operator is the
//! cluster's CA. `issue` makes certificates, `rotation` decides the next step; this module
//! carries a step out on an [`Authority`] (pure: the caller stores the result and writes the
//! files) and reads what members have loaded from their metrics.
//!
//! Files, the same in a pod's TLS volume and in the local runtime's `<state-dir>/tls/`:
//! `ca.crt` (the trust bundle, every CA), `server.crt`/`server.key` (the client port),
//! `peer.crt`/`peer.key` (between members, both directions), `client.crt`/`client.key`
//! (CN `root`: the operator's and the users' client certificate).

pub mod issue;
pub mod kube;
pub mod provider;
pub mod rotation;
pub mod status;

use std::time::{Duration, SystemTime};

use crate::crd::{EtcdCluster, KeyAlgorithm, MAX_REPLICAS, TlsProvider, TlsSpec};
use crate::etcd::EtcdAdmin;
use crate::names::{Addressing, ClusterNames};
pub use issue::{CertInfo, Issued, LeafKind};
pub use rotation::{Authority, CertStep, Loaded, Phase, Policy, Requests, Stored};

/// The annotation that asks for new leaf certificates (any new value).
pub const ROTATE_CERTS_ANNOTATION: &str = "etcd.rustops.dev/rotate-certs";
/// The annotation that asks for a CA rotation (any new value).
pub const ROTATE_CA_ANNOTATION: &str = "etcd.rustops.dev/rotate-ca";

/// Default leaf validity: one year.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default CA validity: five years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Default renewal margin: 30 days.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen or the certificate parser failed.
    #[error("failed to issue a certificate: {0}")]
    Issue(String),
    /// A duration in `spec.tls` is not a Go duration.
    #[error("spec.tls.{field}: {reason}")]
    Duration {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// What the certificates must name and how long they live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// SANs of the client port's certificate.
    pub server: Vec<String>,
    /// SANs of the peer certificate.
    pub peer: Vec<String>,
}

/// `spec.tls` resolved: timing and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Timing and which ports.
    pub policy: Policy,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
}

impl Settings {
    /// Reads `spec.tls`, applying the defaults.
    pub fn of(spec: &TlsSpec) -> Result<Self, Error> {
        let dur = |field: &'static str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => etcd_api::duration::parse_interval(s)
                .map_err(|reason| Error::Duration { field, reason }),
        };
        let validity = dur("validity", &spec.validity, DEFAULT_VALIDITY)?;
        let ca_validity = dur("caValidity", &spec.ca_validity, DEFAULT_CA_VALIDITY)?;
        let renew_before = dur("renewBefore", &spec.renew_before, DEFAULT_RENEW_BEFORE)?;
        if renew_before >= validity {
            return Err(Error::Duration {
                field: "renewBefore",
                reason: "must be shorter than validity".into(),
            });
        }
        if renew_before >= ca_validity {
            return Err(Error::Duration {
                field: "renewBefore",
                reason: "must be shorter than caValidity".into(),
            });
        }
        Ok(Self {
            policy: Policy {
                validity: validity.as_secs(),
                ca_validity: ca_validity.as_secs(),
                renew_before: renew_before.as_secs(),
                client: spec.client,
                peer: spec.peer,
                client_cert_auth: spec.client && spec.client_cert_auth,
                subjects: 0,
            },
            algorithm: spec.key_algorithm,
        })
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Issues the three leaves from the signing CA.
fn issue_leaves(
    auth: &mut Authority,
    cluster: &str,
    subjects: &Subjects,
    settings: &Settings,
    now: SystemTime,
) -> Result<(), Error> {
    let Some(ca) = auth.signing_ca().cloned() else {
        return Err(Error::Issue("no CA to sign with".into()));
    };
    let v = secs(settings.policy.validity);
    let alg = settings.algorithm;
    let one = |kind, cn: &str, sans: &[String]| {
        issue::leaf(&ca.issued(), kind, cn, sans, alg, v, now).map(|i| Stored::of(i, Some(&ca)))
    };
    auth.issued_for = settings.policy.subjects;
    auth.server = Some(one(
        LeafKind::Server,
        &format!("{cluster}-server"),
        &subjects.server,
    )?);
    auth.peer = Some(one(
        LeafKind::Peer,
        &format!("{cluster}-peer"),
        &subjects.peer,
    )?);
    auth.client = Some(one(LeafKind::Client, "root", &[])?);
    auth.operator = Some(one(LeafKind::Client, "root", &[])?);
    Ok(())
}

fn new_ca(cluster: &str, settings: &Settings, now: SystemTime) -> Result<Stored, Error> {
    let cn = format!("{cluster}-ca-{}", issue::unix(now));
    issue::new_ca(
        &cn,
        settings.algorithm,
        secs(settings.policy.ca_validity),
        now,
    )
    .map(|i| Stored::of(i, None))
}

/// Carries out `step` on `auth`; returns whether anything changed (the caller then stores
/// the authority and rewrites the files). `requests` are marked handled when acted on.
pub fn apply(
    auth: &mut Authority,
    step: &CertStep,
    requests: &Requests,
    cluster: &str,
    subjects: &Subjects,
    settings: &Settings,
    now: SystemTime,
) -> Result<bool, Error> {
    match step {
        CertStep::Idle | CertStep::Wait { .. } => return Ok(false),
        CertStep::Bootstrap => {
            auth.cas = vec![new_ca(cluster, settings, now)?];
            auth.phase = Phase::Idle;
            issue_leaves(auth, cluster, subjects, settings, now)?;
        }
        CertStep::RenewLeaves { .. } => {
            issue_leaves(auth, cluster, subjects, settings, now)?;
        }
        CertStep::AddCa { .. } => {
            auth.cas.push(new_ca(cluster, settings, now)?);
            auth.phase = Phase::TrustBoth;
        }
        CertStep::ReissueFromNewCa => {
            issue_leaves(auth, cluster, subjects, settings, now)?;
            auth.phase = Phase::NewLeaves;
        }
        CertStep::DropOldCa => {
            let keep = auth.cas.len().saturating_sub(1);
            auth.cas.drain(..keep);
            auth.phase = Phase::Idle;
        }
        CertStep::Recover {
            new_ca: replace, ..
        } => {
            // Only the signing CA stays trusted: a rotation cut short by the expiry ends here.
            auth.cas = if *replace {
                vec![new_ca(cluster, settings, now)?]
            } else {
                auth.cas.last().cloned().into_iter().collect()
            };
            auth.phase = Phase::Idle;
            issue_leaves(auth, cluster, subjects, settings, now)?;
        }
    }
    // Requests are satisfied by the step they caused (a leaf renewal, the start of a CA
    // rotation) and by a bootstrap.
    if matches!(
        step,
        CertStep::RenewLeaves { .. } | CertStep::Bootstrap | CertStep::Recover { .. }
    ) {
        auth.rotated_certs = requests.rotate_certs.clone();
    }
    if matches!(step, CertStep::AddCa { .. } | CertStep::Bootstrap) {
        auth.rotated_ca = requests.rotate_ca.clone();
    }
    Ok(true)
}

/// The files members and clients read, by name.
pub fn files(auth: &Authority) -> Vec<(&'static str, String)> {
    // One bundle for both ports: the operator's CA signs clients and members alike.
    let mut out = vec![
        ("ca.crt", auth.bundle_pem()),
        ("peer-ca.crt", auth.bundle_pem()),
    ];
    for (name, leaf) in [
        ("server", &auth.server),
        ("peer", &auth.peer),
        ("client", &auth.client),
        ("operator", &auth.operator),
    ] {
        if let Some(l) = leaf {
            // Key first: a member that reloads between the two writes sees a mismatched pair,
            // refuses it and keeps its material until the certificate follows.
            out.push((key_name(name), l.key_pem.clone()));
            out.push((cert_name(name), l.cert_pem.clone()));
        }
    }
    out
}

fn key_name(name: &str) -> &'static str {
    match name {
        "server" => "server.key",
        "peer" => "peer.key",
        "operator" => "operator.key",
        _ => "client.key",
    }
}

fn cert_name(name: &str) -> &'static str {
    match name {
        "server" => "server.crt",
        "peer" => "peer.crt",
        "operator" => "operator.crt",
        _ => "client.crt",
    }
}

/// The names the certificates must carry: every member's host (all `MAX_REPLICAS`
/// ordinals, so scaling needs no new certificate; in Kubernetes, the wildcard of the headless
/// Service), the client Service, localhost, and `extra` for the client port.
pub fn subjects(names: &ClusterNames, extra: &[String]) -> Subjects {
    let mut hosts: Vec<String> = match names.addressing {
        Addressing::Dns => {
            let wildcard = names.members_wildcard();
            vec![wildcard.clone(), format!("{wildcard}.cluster.local")]
        }
        Addressing::Local(_) => (0..MAX_REPLICAS).map(|i| names.member_host(i)).collect(),
    };
    let peer = hosts.clone();
    if names.addressing == Addressing::Dns {
        let svc = names.client_service_host();
        hosts.extend([svc.clone(), format!("{svc}.cluster.local")]);
    }
    hosts.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    hosts.extend(extra.iter().cloned());
    hosts.dedup();
    Subjects {
        server: hosts,
        peer,
    }
}

/// A step for people: the log line and the Event.
pub fn describe(step: &CertStep) -> String {
    match step {
        CertStep::Bootstrap => "issued the CA and every certificate".into(),
        CertStep::Idle => "certificates are current".into(),
        CertStep::Wait { reason } => reason.clone(),
        CertStep::RenewLeaves { reason } => format!("re-issued the certificates ({reason})"),
        CertStep::AddCa { reason } => {
            format!("CA rotation 1/3: the bundle trusts a new CA ({reason})")
        }
        CertStep::ReissueFromNewCa => {
            "CA rotation 2/3: certificates re-issued by the new CA".into()
        }
        CertStep::DropOldCa => "CA rotation 3/3: the old CA left the bundle".into(),
        CertStep::Recover { reason, new_ca } => format!(
            "recovered from expired material ({reason}): {}",
            if *new_ca {
                "a new CA and new certificates"
            } else {
                "new certificates"
            }
        ),
    }
}

/// The Event reason of a step that changed something.
pub fn event_reason(step: &CertStep) -> &'static str {
    match step {
        CertStep::Bootstrap => "CertificatesIssued",
        CertStep::AddCa { .. } | CertStep::ReissueFromNewCa | CertStep::DropOldCa => "CARotation",
        CertStep::Recover { .. } => "CertificatesRecovered",
        _ => "CertificatesRenewed",
    }
}

/// What one pass of the lifecycle did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The authority after the step (store it, and publish its files, when `changed`).
    pub authority: Authority,
    /// Whether the step changed the authority.
    pub changed: bool,
    /// A line for logs and the terminal (a step taken, or what it waits for).
    pub message: Option<String>,
    /// `status.tls` and the `CertificatesReady` condition.
    pub status: (crate::crd::TlsStatus, status::Readiness),
    /// The step taken, as an Event.
    pub change: Option<crate::runtime::Change>,
}

/// One pass of the lifecycle for `cluster` with members `0..replicas`, shared by the
/// controller and the local runtime: asks each member what it has loaded (its metrics), plans
/// the next step and carries it out on `auth`. `waiting_since` tracks how long the planner
/// has been waiting. `None` when TLS is off or not the operator's to manage.
pub async fn pass(
    etcd: &dyn EtcdAdmin,
    cluster: &EtcdCluster,
    names: &ClusterNames,
    replicas: i32,
    mut auth: Authority,
    waiting_since: &mut Option<i64>,
) -> Result<Option<Outcome>, Error> {
    // `names` as planned: while the cluster moves between plain and TLS the material is
    // needed either way.
    let Some(spec) = provider::effective(names, cluster.spec.tls.as_ref()) else {
        return Ok(None);
    };
    let spec = &spec;
    if spec.provider != TlsProvider::Auto {
        return Ok(None);
    }
    let mut settings = Settings::of(spec)?;
    let subjects = subjects(names, &spec.extra_sans);
    settings.policy.subjects = {
        use sha2::Digest;
        let text = format!(
            "{:?}|{}|{}",
            settings.algorithm,
            subjects.server.join(","),
            subjects.peer.join(",")
        );
        let d = sha2::Sha256::digest(text.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_le_bytes(first)
    };
    // What each member has loaded, from its metrics (the plain metrics port, else the client
    // port in whichever scheme answers).
    let loaded = |i: i32| async move {
        let text = match etcd.metrics(&names.metrics_url(i)).await {
            Ok(text) => Ok(text),
            Err(_) => etcd.metrics(&names.client_url(i)).await,
        };
        text.ok().map(|text| loaded_from_metrics(&text))
    };
    if auth.signing_ca().is_none() && replicas > 0 {
        // Members exist: a new CA is fine only if none of them serves TLS yet (TLS being
        // turned on); members that trust some CA would be locked out of each other.
        let mut plain = true;
        for i in 0..replicas {
            plain &= loaded(i).await.is_some_and(|l| {
                l.server.is_none()
                    && l.peer.is_none()
                    && l.client_cas.is_empty()
                    && l.peer_cas.is_empty()
            });
        }
        if !plain {
            return Err(Error::Issue(format!(
                "no certificate authority is recorded for {}, whose members exist and serve TLS (or do not answer): restore its CA record ({}-ca Secret, or tls/authority.json locally); refusing to make a new CA the members would not trust",
                names.cluster, names.cluster
            )));
        }
    }
    let annotation = |key: &str| {
        cluster
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    let requests = Requests {
        rotate_certs: annotation(ROTATE_CERTS_ANNOTATION),
        rotate_ca: annotation(ROTATE_CA_ANNOTATION),
    };
    let mut members = Vec::new();
    if auth.signing_ca().is_some() {
        for i in 0..replicas {
            members.push((names.member(i), loaded(i).await));
        }
    }
    let now = SystemTime::now();
    let unix = issue::unix(now);
    let step = rotation::next(&auth, &settings.policy, &requests, &members, unix);
    match &step {
        CertStep::Wait { .. } => {
            waiting_since.get_or_insert(unix);
        }
        _ => *waiting_since = None,
    }
    let changed = apply(
        &mut auth,
        &step,
        &requests,
        &names.cluster,
        &subjects,
        &settings,
        now,
    )?;
    let message = match &step {
        CertStep::Wait { reason } => Some(format!("certificates: {reason}")),
        _ if changed => Some(format!("certificates: {}", describe(&step))),
        _ => None,
    };
    let change = changed.then(|| crate::runtime::Change::Certificates {
        reason: event_reason(&step),
        message: describe(&step),
    });
    // The status describes what is on disk after the step.
    let shown = if changed { CertStep::Idle } else { step };
    let status = status::tls_status(
        &auth,
        &shown,
        *waiting_since,
        unix,
        settings.policy.renew_before,
    );
    Ok(Some(Outcome {
        authority: auth,
        changed,
        message,
        status,
        change,
    }))
}

/// The client certificate and bundle of `auth`, for the operator's own calls.
pub fn client_tls(auth: &Authority) -> Option<crate::etcd::ClientTls> {
    // The operator's own; an authority recorded before it existed has only the users'.
    let client = auth.operator.as_ref().or(auth.client.as_ref())?;
    Some(crate::etcd::ClientTls::Pem {
        ca: auth.bundle_pem(),
        cert: client.cert_pem.clone(),
        key: client.key_pem.clone(),
    })
}

/// What a member has loaded, from the text of its `/metrics`.
pub fn loaded_from_metrics(text: &str) -> Loaded {
    let mut l = Loaded::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("etcd_server_tls_cert_expiry_seconds{") else {
            continue;
        };
        let field = |key: &str| {
            rest.split(&format!("{key}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .map(str::to_owned)
        };
        let (Some(role), Some(sha)) = (field("role"), field("sha256")) else {
            continue;
        };
        match role.as_str() {
            "client" => l.server = Some(sha),
            "client-ca" => l.client_cas.push(sha),
            "peer" => l.peer = Some(sha),
            "peer-ca" => l.peer_cas.push(sha),
            _ => {}
        }
    }
    l
}

#[cfg(test)]
mod tests;
