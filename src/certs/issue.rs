//! Issuing certificates with rcgen (pure: no I/O but the clock passed in): the cluster's CA,
//! and the server, peer and client leaves it signs, plus reading back a certificate's
//! fingerprint, expiry and names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::Digest;

use super::Error;
use crate::crd::KeyAlgorithm;

/// A certificate and its private key, PEM, with what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// What the certificate says about itself.
    pub info: CertInfo,
}

/// What the operator tracks of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// SHA-256 of the DER certificate, lowercase hex (what the server's expiry metric shows).
    pub sha256: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Its Common Name.
    pub common_name: String,
}

/// What a leaf is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// The client port's certificate (server authentication).
    Server,
    /// A member's peer certificate: served on the peer port and presented when dialing
    /// another member, so it authenticates both ways.
    Peer,
    /// A client certificate (the operator's, the users').
    Client,
}

fn rc(e: rcgen::Error) -> Error {
    Error::Issue(e.to_string())
}

fn key_pair(alg: KeyAlgorithm) -> Result<KeyPair, Error> {
    let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(rc);
    let alg = match alg {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        KeyAlgorithm::Rsa2048 => return rsa(rcgen::RsaKeySize::_2048),
        KeyAlgorithm::Rsa4096 => return rsa(rcgen::RsaKeySize::_4096),
    };
    KeyPair::generate_for(alg).map_err(rc)
}

fn window(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    // A little backdating absorbs clock skew between the operator and the members.
    let from = now.checked_sub(Duration::from_secs(300)).unwrap_or(now);
    params.not_before = from.into();
    params.not_after = (now + validity).into();
}

/// A new CA named `cn`, valid for `validity` from `now`.
pub fn new_ca(
    cn: &str,
    alg: KeyAlgorithm,
    validity: Duration,
    now: SystemTime,
) -> Result<Issued, Error> {
    let key = key_pair(alg)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    window(&mut params, now, validity);
    let cert = params.self_signed(&key).map_err(rc)?;
    let cert_pem = cert.pem();
    Ok(Issued {
        info: inspect(&cert_pem)?,
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// A leaf for `kind` named `cn` with `sans` (DNS names, wildcards or IP addresses), signed by
/// `ca`.
pub fn leaf(
    ca: &Issued,
    kind: LeafKind,
    cn: &str,
    sans: &[String],
    alg: KeyAlgorithm,
    validity: Duration,
    now: SystemTime,
) -> Result<Issued, Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(rc)?;
    let key = key_pair(alg)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    for s in sans {
        let san = match s.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(s.clone().try_into().map_err(rc)?),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match kind {
        LeafKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        LeafKind::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        LeafKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    window(&mut params, now, validity);
    let cert = params.signed_by(&key, &issuer).map_err(rc)?;
    let cert_pem = cert.pem();
    Ok(Issued {
        info: inspect(&cert_pem)?,
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// Reads the first certificate of a PEM text.
pub fn inspect(pem: &str) -> Result<CertInfo, Error> {
    let all = inspect_all(pem)?;
    all.into_iter()
        .next()
        .ok_or_else(|| Error::Issue("no certificate in the PEM text".into()))
}

/// Reads every certificate of a PEM text (a trust bundle).
pub fn inspect_all(pem: &str) -> Result<Vec<CertInfo>, Error> {
    use x509_parser::pem::Pem;
    let mut out = Vec::new();
    for p in Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| Error::Issue(format!("bad PEM: {e}")))?;
        if p.label != "CERTIFICATE" {
            continue;
        }
        let (_, cert) = x509_parser::parse_x509_certificate(&p.contents)
            .map_err(|e| Error::Issue(format!("bad certificate: {e}")))?;
        out.push(CertInfo {
            sha256: hex(&sha2::Sha256::digest(&p.contents)),
            not_after: cert.validity().not_after.timestamp(),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok(out)
}

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
