//! TLS on the client port, configured with etcd's flags (`--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`, `--auto-tls`,
//! `--cipher-suites`, `--tls-min-version`, `--tls-max-version`), and reloaded without a
//! restart: the files are checked every [`RELOAD_INTERVAL`], and new connections get new
//! material (the certificate, its key and the trusted CAs alike: etcd cannot reload the
//! latter) while established connections keep theirs. Bad material never replaces good
//! material: at start-up it stops the member with the flag and file named; later it is
//! logged and the last good material stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use sha2::Digest;

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS protocol version, as etcd's `--tls-min-version` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS1.2`.
    Tls12,
    /// `TLS1.3`.
    Tls13,
}

impl TlsVersion {
    /// Parses etcd's names (`TLS1.2`, `TLS1.3`; `TLS1.0`/`TLS1.1` are refused: rustls does
    /// not speak them).
    pub fn parse(flag: &'static str, s: &str) -> Result<Self, TlsError> {
        match s {
            "TLS1.2" => Ok(Self::Tls12),
            "TLS1.3" => Ok(Self::Tls13),
            other => Err(TlsError::Setting {
                flag,
                reason: format!("unsupported TLS version {other:?} (TLS1.2 or TLS1.3)"),
            }),
        }
    }
}

/// Where the client port's material comes from and how clients are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `--cert-file` (with `--auto-tls`, the generated one).
    pub cert: PathBuf,
    /// `--key-file`.
    pub key: PathBuf,
    /// `--trusted-ca-file`: clients must present a certificate signed by one of these CAs.
    pub trusted_ca: Option<PathBuf>,
    /// `--client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--client-crl-file`.
    pub crl: Option<PathBuf>,
    /// `--client-cert-allowed-hostname`: client certificates must name this host (a SAN).
    pub allowed_hostname: Option<String>,
    /// `--cipher-suites` (Go names; TLS 1.2 only, as in Go); empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// `--tls-min-version`.
    pub min_version: TlsVersion,
    /// `--tls-max-version`.
    pub max_version: TlsVersion,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("failed to read {flag} {path}: {source}")]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM data.
    #[error("failed to load {flag} {path}: {reason}")]
    Pem {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("failed to load --key-file {key}: it is not the key of --cert-file {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate expired.
    #[error(
        "failed to load --cert-file {path}: the certificate expired at {not_after} (Unix time)"
    )]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: i64,
    },
    /// A setting is invalid or incomplete.
    #[error("invalid {flag}: {reason}")]
    Setting {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Loaded material and what identifies it.
struct Material {
    config: Arc<ServerConfig>,
    /// SHA-256 of every input file's bytes: a change on disk shows up as a new digest.
    inputs: [u8; 32],
    /// SHA-256 of the leaf certificate (DER), lowercase hex.
    fingerprint: String,
    /// The leaf certificate's expiry, Unix seconds.
    not_after: i64,
    /// The trusted CAs: fingerprint and expiry of each.
    cas: Vec<(String, i64)>,
}

/// The client port's TLS configuration, reloaded when its files change.
pub struct ReloadingTls {
    role: &'static str,
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
    /// Digest of the last inputs that failed to load: not tried again until they change.
    last_failed: Mutex<Option<[u8; 32]>>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("role", &self.role)
            .field("files", &self.files)
            .finish()
    }
}

impl ReloadingTls {
    /// Loads the material; any problem is an error naming the flag and the file.
    pub fn load(role: &'static str, files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let (inputs, bytes) = read_inputs(&files)?;
        let material = build(&files, inputs, &bytes)?;
        publish(role, None, &material);
        Ok(Arc::new(Self {
            role,
            files,
            current: RwLock::new(Arc::new(material)),
            last_failed: Mutex::new(None),
        }))
    }

    /// An acceptor with the current material, for one new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(current.config.clone())
    }

    /// An acceptor for HTTP/1.1 only (the metrics port's server speaks no HTTP/2).
    pub fn acceptor_http1(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let mut config = (*current.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// SHA-256 of the certificate in use (lowercase hex).
    pub fn fingerprint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fingerprint
            .clone()
    }

    /// Loads the files again if they changed. Returns whether new material is in use; a
    /// failure leaves the current material in place, and the same refused bytes are not tried
    /// again until they change.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (inputs, bytes) = read_inputs(&self.files)?;
        let old = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut refused = self.last_failed.lock().unwrap_or_else(|p| p.into_inner());
        if old.inputs == inputs || *refused == Some(inputs) {
            return Ok(false);
        }
        match build(&self.files, inputs, &bytes) {
            Ok(material) => {
                *refused = None;
                publish(self.role, Some(&old), &material);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
                Ok(true)
            }
            Err(e) => {
                *refused = Some(inputs);
                Err(e)
            }
        }
    }

    /// Checks the files every [`RELOAD_INTERVAL`] until the process ends, logging each
    /// distinct problem once.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged: Option<String> = None;
        loop {
            tick.tick().await;
            let this = self.clone();
            let Ok(result) = tokio::task::spawn_blocking(move || this.reload()).await else {
                continue;
            };
            match result {
                Ok(true) => logged = None,
                Ok(false) => {}
                Err(e) => {
                    let text = e.to_string();
                    if logged.as_deref() != Some(text.as_str()) {
                        tracing::error!(role = self.role, error = %text, "kept the TLS material in use: the files on disk are not valid");
                        logged = Some(text);
                    }
                }
            }
        }
    }
}

/// Reads every input file; returns their combined digest and their bytes (cert, key, CA, CRL).
fn read_inputs(files: &TlsFiles) -> Result<([u8; 32], [Vec<u8>; 4]), TlsError> {
    let read = |flag: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            flag,
            path: path.to_owned(),
            source,
        })
    };
    let cert = read("--cert-file", &files.cert)?;
    let key = read("--key-file", &files.key)?;
    let ca = match &files.trusted_ca {
        Some(p) => read("--trusted-ca-file", p)?,
        None => Vec::new(),
    };
    let crl = match &files.crl {
        Some(p) => read("--client-crl-file", p)?,
        None => Vec::new(),
    };
    let mut h = sha2::Sha256::new();
    for part in [&cert, &key, &ca, &crl] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok((h.finalize().into(), [cert, key, ca, crl]))
}

fn pem_error(flag: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        flag,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The crypto provider with the cipher suites `--cipher-suites` names (TLS 1.3 suites stay,
/// as in Go, where the flag only restricts TLS 1.2).
fn provider(files: &TlsFiles) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !files.cipher_suites.is_empty() {
        let mut keep = Vec::new();
        for name in &files.cipher_suites {
            let want = name.trim().trim_end_matches("_SHA256");
            let found = provider.cipher_suites.iter().find(|s| {
                let have = format!("{:?}", s.suite());
                have.trim_end_matches("_SHA256") == want && s.version() == &rustls::version::TLS12
            });
            match found {
                Some(s) => keep.push(*s),
                None => {
                    return Err(TlsError::Setting {
                        flag: "--cipher-suites",
                        reason: format!("unsupported cipher suite {name:?}"),
                    });
                }
            }
        }
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13 || keep.contains(s));
    }
    Ok(Arc::new(provider))
}

/// Builds a server configuration from the files' bytes.
fn build(files: &TlsFiles, inputs: [u8; 32], bytes: &[Vec<u8>; 4]) -> Result<Material, TlsError> {
    let [cert_pem, key_pem, ca_pem, crl_pem] = bytes;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("--cert-file", &files.cert, e))?;
    let Some(leaf) = certs.first() else {
        return Err(pem_error(
            "--cert-file",
            &files.cert,
            "no certificate in it",
        ));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error("--key-file", &files.key, e))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| pem_error("--cert-file", &files.cert, e))?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after <= now {
        return Err(TlsError::Expired {
            path: files.cert.clone(),
            not_after,
        });
    }
    let provider = provider(files)?;
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| pem_error("--key-file", &files.key, e))?;
    if signer
        .public_key()
        .is_some_and(|spki| spki.as_ref() != parsed.tbs_certificate.subject_pki.raw)
    {
        return Err(TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    }
    let mut cas = Vec::new();
    let verifier = if files.trusted_ca.is_some() || files.client_cert_auth {
        let Some(ca_path) = &files.trusted_ca else {
            return Err(TlsError::Setting {
                flag: "--client-cert-auth",
                reason: "needs --trusted-ca-file (the CAs client certificates must be signed by)"
                    .into(),
            });
        };
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| pem_error("--trusted-ca-file", ca_path, e))?;
            let (_, parsed) = x509_parser::parse_x509_certificate(&ca)
                .map_err(|e| pem_error("--trusted-ca-file", ca_path, e))?;
            cas.push((
                hex(&sha2::Sha256::digest(&ca)),
                parsed.validity().not_after.timestamp(),
            ));
            roots
                .add(ca)
                .map_err(|e| pem_error("--trusted-ca-file", ca_path, e))?;
        }
        if roots.is_empty() {
            return Err(pem_error(
                "--trusted-ca-file",
                ca_path,
                "no CA certificate in it",
            ));
        }
        let mut crls = Vec::new();
        if let Some(crl_path) = &files.crl {
            for crl in CertificateRevocationListDer::pem_slice_iter(crl_pem) {
                crls.push(crl.map_err(|e| pem_error("--client-crl-file", crl_path, e))?);
            }
        }
        let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| TlsError::Setting {
                flag: "--trusted-ca-file",
                reason: e.to_string(),
            })?;
        match &files.allowed_hostname {
            Some(host) => Arc::new(AllowedHostname {
                inner: webpki,
                host: host.to_ascii_lowercase(),
            }),
            None => webpki,
        }
    } else {
        WebPkiClientVerifier::no_client_auth()
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= files.min_version && *v <= files.max_version)
    .map(|(_, p)| p)
    .collect();
    if versions.is_empty() {
        return Err(TlsError::Setting {
            flag: "--tls-min-version",
            reason: "is above --tls-max-version".into(),
        });
    }
    let fingerprint = hex(&sha2::Sha256::digest(leaf));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Setting {
            flag: "--cipher-suites",
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| pem_error("--cert-file", &files.cert, e))?;
    // gRPC needs h2; `/health` and `/metrics` also answer HTTP/1.1 clients (curl, probes).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Material {
        config: Arc::new(config),
        inputs,
        fingerprint,
        not_after,
        cas,
    })
}

/// Logs newly loaded material and moves the expiry metric to it: one series for the
/// certificate (`role`) and one per trusted CA (`role` + `-ca`), so that whoever rotates a CA
/// can see a member trust the new bundle.
fn publish(role: &'static str, old: Option<&Material>, new: &Material) {
    let ca_role = format!("{role}-ca");
    let metric = &crate::metrics::TLS_CERT_EXPIRY;
    if let Some(old) = old {
        if old.fingerprint != new.fingerprint {
            let _ = metric.remove_label_values(&[role, &old.fingerprint]);
        }
        for (fp, _) in &old.cas {
            if !new.cas.iter().any(|(n, _)| n == fp) {
                let _ = metric.remove_label_values(&[&ca_role, fp]);
            }
        }
    }
    metric
        .with_label_values(&[role, &new.fingerprint])
        .set(new.not_after as f64);
    for (fp, not_after) in &new.cas {
        metric
            .with_label_values(&[&ca_role, fp])
            .set(*not_after as f64);
    }
    tracing::info!(
        role,
        sha256 = %new.fingerprint,
        not_after = new.not_after,
        reloaded = old.is_some(),
        "loaded TLS material"
    );
}

/// An `https://` `--listen-metrics-urls` listener for axum: the client port's material, the
/// handshake done before the connection is handed over (bounded by [`METRICS_HANDSHAKE`], so a
/// stalled client delays the next scrape at most that long).
pub struct TlsListener {
    /// The socket.
    pub inner: tokio::net::TcpListener,
    /// The material.
    pub tls: Arc<ReloadingTls>,
}

/// How long a metrics client may take to finish its handshake.
pub const METRICS_HANDSHAKE: Duration = Duration::from_secs(3);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shake = self.tls.acceptor_http1().accept(tcp);
            match tokio::time::timeout(METRICS_HANDSHAKE, shake).await {
                Ok(Ok(stream)) => return (stream, addr),
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// etcd's `--client-cert-allowed-hostname`: a client certificate that chains to a trusted CA
/// is accepted only if one of its DNS SANs matches the host (`*.` wildcards as in TLS).
#[derive(Debug)]
struct AllowedHostname {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    host: String,
}

/// Whether SAN `name` covers `host` (both lowercase).
fn san_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => name == host,
    }
}

impl rustls::server::danger::ClientCertVerifier for AllowedHostname {
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
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let allowed = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .is_some_and(|san| {
                san.value.general_names.iter().any(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        san_matches(&d.to_ascii_lowercase(), &self.host)
                    }
                    _ => false,
                })
            });
        if !allowed {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--auto-tls`: a self-signed certificate for `hosts` under `dir` (etcd keeps its own under
/// `<data-dir>/fixtures/client`), made once and reused on restart.
pub fn auto_tls(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let fail = |reason: String| TlsError::Setting {
        flag: "--auto-tls",
        reason,
    };
    let mut names: Vec<String> = hosts.to_vec();
    names.push("localhost".into());
    names.sort();
    names.dedup();
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    std::fs::write(&key, made.signing_key.serialize_pem())
        .and_then(|()| std::fs::write(&cert, made.cert.pem()))
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests;
