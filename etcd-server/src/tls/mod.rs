//! TLS on the client and peer ports, configured with etcd's flags (`--cert-file`,
//! `--peer-cert-file` and the rest, `--cipher-suites`, `--tls-min-version`,
//! `--tls-max-version`), and reloaded without a restart: the files are checked every
//! [`RELOAD_INTERVAL`], and new connections get new material (the certificate, its key and the
//! trusted CAs alike: etcd cannot reload the latter) while established connections keep
//! theirs. Bad material never replaces good material: at start-up it stops the member with the
//! flag and file named; later it is logged and the last good material stays in use.
//!
//! Submodules: `build` (files to rustls configurations), `verify` (etcd's extra checks on
//! certificates: allowed CN and hostname, the peer's address against its SANs), `listener`
//! (the metrics port's TLS listener and `--auto-tls`).

mod build;
mod listener;
mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};

pub use listener::{METRICS_HANDSHAKE, TlsListener, auto_tls, opens_with_handshake};
pub use verify::check_peer_address;

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol of a Raft stream on a TLS peer port (gRPC peer calls offer `h2`), so the
/// port tells the two apart right after the handshake.
pub const RAFT_ALPN: &[u8] = b"etcd-rs-raft";

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

/// Which port the material is for: the flags that name its files differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client port (`--cert-file`, ...).
    Client,
    /// The peer port and the connections to other members (`--peer-cert-file`, ...).
    Peer,
}

/// The flags of one role, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
    pub(crate) trusted_ca: &'static str,
    pub(crate) client_cert_auth: &'static str,
    pub(crate) crl: &'static str,
    pub(crate) auto_tls: &'static str,
    pub(crate) allowed_cn: &'static str,
    pub(crate) allowed_hostname: &'static str,
}

impl Role {
    /// The metric and log label: `client` or `peer`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Peer => "peer",
        }
    }

    /// The label of the trusted CAs' expiry series.
    fn ca_label(self) -> &'static str {
        match self {
            Self::Client => "client-ca",
            Self::Peer => "peer-ca",
        }
    }

    pub(crate) fn flags(self) -> Flags {
        match self {
            Self::Client => Flags {
                cert: "--cert-file",
                key: "--key-file",
                trusted_ca: "--trusted-ca-file",
                client_cert_auth: "--client-cert-auth",
                crl: "--client-crl-file",
                auto_tls: "--auto-tls",
                allowed_cn: "--client-cert-allowed-cn",
                allowed_hostname: "--client-cert-allowed-hostname",
            },
            Self::Peer => Flags {
                cert: "--peer-cert-file",
                key: "--peer-key-file",
                trusted_ca: "--peer-trusted-ca-file",
                client_cert_auth: "--peer-client-cert-auth",
                crl: "--peer-crl-file",
                auto_tls: "--peer-auto-tls",
                allowed_cn: "--peer-cert-allowed-cn",
                allowed_hostname: "--peer-cert-allowed-hostname",
            },
        }
    }
}

/// Where one port's material comes from and how the other side is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Client or peer.
    pub role: Role,
    /// `--cert-file` / `--peer-cert-file` (with auto TLS, the generated one).
    pub cert: PathBuf,
    /// `--key-file` / `--peer-key-file`.
    pub key: PathBuf,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`: the other side must present a
    /// certificate signed by one of these CAs (and, for peers, the members we dial too).
    pub trusted_ca: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--client-crl-file` / `--peer-crl-file`.
    pub crl: Option<PathBuf>,
    /// `--peer-cert-allowed-cn`: certificates of other members must carry this Common Name.
    pub allowed_cn: Option<String>,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`: certificates must be
    /// valid for this host (a DNS or IP SAN).
    pub allowed_hostname: Option<String>,
    /// `--experimental-peer-skip-client-san-verification`: do not check a member's address
    /// against the SANs of its client certificate.
    pub skip_san_verification: bool,
    /// The certificate is self-signed (`--auto-tls`, `--peer-auto-tls`): encryption without
    /// authentication, as in etcd, so the members' certificates are not verified when dialing.
    pub self_signed: bool,
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
    #[error("failed to load {key_flag} {key}: it is not the key of {cert_flag} {cert}")]
    KeyMismatch {
        /// The certificate's flag.
        cert_flag: &'static str,
        /// The certificate file.
        cert: PathBuf,
        /// The key's flag.
        key_flag: &'static str,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate expired.
    #[error("failed to load {flag} {path}: the certificate expired at {not_after} (Unix time)")]
    Expired {
        /// The certificate's flag.
        flag: &'static str,
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
    server: Arc<ServerConfig>,
    /// For peers: dialing other members' Raft streams (ALPN [`RAFT_ALPN`]) and their gRPC
    /// peer service (ALPN `h2`), presenting our certificate.
    raft_client: Option<Arc<ClientConfig>>,
    grpc_client: Option<Arc<ClientConfig>>,
    /// SHA-256 of every input file's bytes: a change on disk shows up as a new digest.
    inputs: [u8; 32],
    /// SHA-256 of the leaf certificate (DER), lowercase hex.
    fingerprint: String,
    /// The leaf certificate's expiry, Unix seconds.
    not_after: i64,
    /// The trusted CAs: fingerprint and expiry of each.
    cas: Vec<(String, i64)>,
}

/// One port's TLS configuration, reloaded when its files change.
pub struct ReloadingTls {
    files: TlsFiles,
    current: RwLock<Arc<Material>>,
    /// Digest of the last inputs that failed to load: not tried again until they change.
    last_failed: Mutex<Option<[u8; 32]>>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish()
    }
}

/// What a peer connection is dialed for (its ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerUse {
    /// A Raft stream.
    Raft,
    /// gRPC peer calls.
    Grpc,
}

impl ReloadingTls {
    /// Loads the material; any problem is an error naming the flag and the file.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let (inputs, bytes) = build::read_inputs(&files)?;
        let material = build::build(&files, inputs, &bytes)?;
        publish(files.role, None, &material);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(material)),
            last_failed: Mutex::new(None),
        }))
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The files and checks in use.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// An acceptor with the current material, for one new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.material().server.clone())
    }

    /// An acceptor for HTTP/1.1 only (the metrics port's server speaks no HTTP/2).
    pub fn acceptor_http1(&self) -> tokio_rustls::TlsAcceptor {
        let mut config = (*self.material().server).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A connector to another member with the current material (peer material only).
    pub fn connector(&self, what: PeerUse) -> Option<tokio_rustls::TlsConnector> {
        let m = self.material();
        let config = match what {
            PeerUse::Raft => m.raft_client.clone(),
            PeerUse::Grpc => m.grpc_client.clone(),
        };
        config.map(tokio_rustls::TlsConnector::from)
    }

    /// SHA-256 of the certificate in use (lowercase hex).
    pub fn fingerprint(&self) -> String {
        self.material().fingerprint.clone()
    }

    /// Loads the files again if they changed. Returns whether new material is in use; a
    /// failure leaves the current material in place, and the same refused bytes are not tried
    /// again until they change.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (inputs, bytes) = build::read_inputs(&self.files)?;
        let old = self.material();
        let mut refused = self.last_failed.lock().unwrap_or_else(|p| p.into_inner());
        if old.inputs == inputs || *refused == Some(inputs) {
            return Ok(false);
        }
        match build::build(&self.files, inputs, &bytes) {
            Ok(material) => {
                *refused = None;
                publish(self.files.role, Some(&old), &material);
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
        let role = self.files.role.label();
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
                        tracing::error!(role, error = %text, "kept the TLS material in use: the files on disk are not valid");
                        logged = Some(text);
                    }
                }
            }
        }
    }
}

/// Logs newly loaded material and moves the expiry metric to it: one series for the
/// certificate (`client`, `peer`) and one per trusted CA (`client-ca`, `peer-ca`), so that
/// whoever rotates a CA can see a member trust the new bundle.
fn publish(role: Role, old: Option<&Material>, new: &Material) {
    let (label, ca_label) = (role.label(), role.ca_label());
    let metric = &crate::metrics::TLS_CERT_EXPIRY;
    if let Some(old) = old {
        if old.fingerprint != new.fingerprint {
            let _ = metric.remove_label_values(&[label, &old.fingerprint]);
        }
        for (fp, _) in &old.cas {
            if !new.cas.iter().any(|(n, _)| n == fp) {
                let _ = metric.remove_label_values(&[ca_label, fp]);
            }
        }
    }
    metric
        .with_label_values(&[label, &new.fingerprint])
        .set(new.not_after as f64);
    for (fp, not_after) in &new.cas {
        metric
            .with_label_values(&[ca_label, fp])
            .set(*not_after as f64);
    }
    tracing::info!(
        role = label,
        sha256 = %new.fingerprint,
        not_after = new.not_after,
        reloaded = old.is_some(),
        "loaded TLS material"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
