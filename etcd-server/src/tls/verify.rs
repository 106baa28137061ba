//! etcd's checks beyond a certificate's chain: the allowed Common Name
//! (`--peer-cert-allowed-cn`) and hostname (`--client-cert-allowed-hostname`,
//! `--peer-cert-allowed-hostname`), applied to the other side's certificate in both
//! directions; the peer port's check of a member's address against its certificate's SANs
//! (skipped with `--experimental-peer-skip-client-san-verification`); and the verifier of
//! `--peer-auto-tls`, which accepts any certificate but still checks the handshake signatures.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

/// The names a certificate must carry.
#[derive(Debug, Clone, Default)]
pub(super) struct NameCheck {
    /// The Common Name.
    pub(super) cn: Option<String>,
    /// A host (lowercase) one of its SANs must cover.
    pub(super) hostname: Option<String>,
}

impl NameCheck {
    pub(super) fn is_empty(&self) -> bool {
        self.cn.is_none() && self.hostname.is_none()
    }

    fn check(&self, der: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let bad = |e| rustls::Error::InvalidCertificate(e);
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| bad(rustls::CertificateError::BadEncoding))?;
        if let Some(want) = &self.cn {
            let has = cert
                .subject()
                .iter_common_name()
                .any(|cn| cn.as_str().is_ok_and(|s| s == want));
            if !has {
                return Err(rustls::Error::General(format!(
                    "certificate's Common Name is not the allowed {want:?}"
                )));
            }
        }
        if let Some(host) = &self.hostname
            && !covers(&cert, host)
        {
            return Err(bad(rustls::CertificateError::NotValidForName));
        }
        Ok(())
    }
}

/// Whether SAN `name` covers `host` (both lowercase).
pub(super) fn san_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => name == host,
    }
}

/// Whether the certificate is valid for `host`: an IP address against its IP SANs, a name
/// against its DNS SANs (`*.` wildcards as in TLS).
fn covers(cert: &X509Certificate<'_>, host: &str) -> bool {
    let ip: Option<IpAddr> = host.parse().ok();
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|n| match (n, ip) {
        (GeneralName::DNSName(d), None) => san_matches(&d.to_ascii_lowercase(), host),
        (GeneralName::IPAddress(raw), Some(ip)) => ip_of(raw) == Some(ip),
        _ => false,
    })
}

fn ip_of(raw: &[u8]) -> Option<IpAddr> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(raw).ok().map(IpAddr::from),
        _ => None,
    }
}

/// etcd's check of a member connecting to the peer port: the address it connects from must
/// be one its certificate names. A certificate without SANs passes; with IP SANs, the address
/// must be among them (or, failing that, a DNS SAN must resolve to it); with DNS SANs only,
/// one of them must resolve to the address. Wildcard DNS SANs cannot be resolved (etcd
/// matches them with a reverse lookup): they pass when the certificate has no other DNS SAN.
pub async fn check_peer_address(cert: &CertificateDer<'_>, remote: IpAddr) -> Result<(), String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("bad certificate: {e}"))?;
    let mut ips = Vec::new();
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::IPAddress(raw) => ips.extend(ip_of(raw)),
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    let remote = canonical(remote);
    if ips.is_empty() && names.is_empty() || ips.iter().any(|ip| canonical(*ip) == remote) {
        return Ok(());
    }
    let (wild, exact): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| n.starts_with("*."));
    for name in &exact {
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::lookup_host((name.as_str(), 0)),
        )
        .await;
        if let Ok(Ok(addrs)) = lookup
            && addrs.into_iter().any(|a| canonical(a.ip()) == remote)
        {
            return Ok(());
        }
    }
    if exact.is_empty() && !wild.is_empty() && ips.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{remote} is not an address of the certificate (IP SANs {ips:?}, DNS SANs {exact:?})"
    ))
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A client certificate verifier with etcd's name checks on top.
#[derive(Debug)]
pub(super) struct PeerClientCheck {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) names: NameCheck,
}

impl ClientCertVerifier for PeerClientCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.names.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server certificate verifier with etcd's name checks on top (etcd applies
/// `--peer-cert-allowed-cn` and `--peer-cert-allowed-hostname` in both directions).
#[derive(Debug)]
pub(super) struct PeerServerCheck {
    pub(super) inner: Arc<dyn ServerCertVerifier>,
    pub(super) names: NameCheck,
}

impl ServerCertVerifier for PeerServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.names.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `--peer-auto-tls`: other members' certificates are self-signed, so any is accepted (etcd
/// skips verification the same way); the handshake signatures are still checked.
#[derive(Debug)]
pub(super) struct AnyServer(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
