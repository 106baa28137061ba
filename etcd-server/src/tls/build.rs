//! TLS files to rustls configurations: the server side of a port and, for peers, the client
//! side used to dial other members. Every problem names the flag and the file.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use sha2::Digest;

use super::verify::{AnyServer, NameCheck, PeerClientCheck, PeerServerCheck};
use super::{Material, RAFT_ALPN, Role, TlsError, TlsFiles, TlsVersion, hex};

/// Reads every input file; returns their combined digest and their bytes (cert, key, CA, CRL).
pub(super) fn read_inputs(files: &TlsFiles) -> Result<([u8; 32], [Vec<u8>; 4]), TlsError> {
    let flags = files.role.flags();
    let read = |flag: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            flag,
            path: path.to_owned(),
            source,
        })
    };
    let cert = read(flags.cert, &files.cert)?;
    let key = read(flags.key, &files.key)?;
    let ca = match &files.trusted_ca {
        Some(p) => read(flags.trusted_ca, p)?,
        None => Vec::new(),
    };
    let crl = match &files.crl {
        Some(p) => read(flags.crl, p)?,
        None => Vec::new(),
    };
    let mut h = sha2::Sha256::new();
    for part in [&cert, &key, &ca, &crl] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok((h.finalize().into(), [cert, key, ca, crl]))
}

pub(super) fn pem_error(
    flag: &'static str,
    path: &Path,
    reason: impl std::fmt::Display,
) -> TlsError {
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

/// The trusted CAs: the root store and each CA's fingerprint and expiry.
type Roots = (Arc<RootCertStore>, Vec<(String, i64)>);

fn roots(flag: &'static str, path: &Path, pem: &[u8]) -> Result<Roots, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut cas = Vec::new();
    for ca in CertificateDer::pem_slice_iter(pem) {
        let ca = ca.map_err(|e| pem_error(flag, path, e))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&ca).map_err(|e| pem_error(flag, path, e))?;
        cas.push((
            hex(&sha2::Sha256::digest(&ca)),
            parsed.validity().not_after.timestamp(),
        ));
        roots.add(ca).map_err(|e| pem_error(flag, path, e))?;
    }
    if roots.is_empty() {
        return Err(pem_error(flag, path, "no CA certificate in it"));
    }
    Ok((Arc::new(roots), cas))
}

/// Builds the configurations from the files' bytes.
pub(super) fn build(
    files: &TlsFiles,
    inputs: [u8; 32],
    bytes: &[Vec<u8>; 4],
) -> Result<Material, TlsError> {
    let flags = files.role.flags();
    let [cert_pem, key_pem, ca_pem, crl_pem] = bytes;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(flags.cert, &files.cert, e))?;
    let Some(leaf) = certs.first() else {
        return Err(pem_error(flags.cert, &files.cert, "no certificate in it"));
    };
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_error(flags.key, &files.key, e))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| pem_error(flags.cert, &files.cert, e))?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after <= now {
        return Err(TlsError::Expired {
            flag: flags.cert,
            path: files.cert.clone(),
            not_after,
        });
    }
    let provider = provider(files)?;
    let signer = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| pem_error(flags.key, &files.key, e))?;
    if signer
        .public_key()
        .is_some_and(|spki| spki.as_ref() != parsed.tbs_certificate.subject_pki.raw)
    {
        return Err(TlsError::KeyMismatch {
            cert_flag: flags.cert,
            cert: files.cert.clone(),
            key_flag: flags.key,
            key: files.key.clone(),
        });
    }
    if files.allowed_cn.is_some() && files.allowed_hostname.is_some() {
        return Err(TlsError::Setting {
            flag: flags.allowed_cn,
            reason: format!("cannot be used together with {}", flags.allowed_hostname),
        });
    }
    let names = NameCheck {
        cn: files.allowed_cn.clone(),
        hostname: files
            .allowed_hostname
            .as_deref()
            .map(str::to_ascii_lowercase),
    };
    let trusted = match &files.trusted_ca {
        Some(path) => Some(roots(flags.trusted_ca, path, ca_pem)?),
        None => None,
    };
    let cas = trusted.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
    // As in etcd, a trusted CA file alone already makes the other side's certificate
    // mandatory. Auto TLS on the peer port encrypts without authenticating, as etcd's does.
    let verifier = if files.self_signed && files.role == Role::Peer {
        if files.client_cert_auth {
            tracing::warn!(
                "ignoring --peer-client-cert-auth: --peer-auto-tls certificates are self-signed"
            );
        }
        WebPkiClientVerifier::no_client_auth()
    } else if files.trusted_ca.is_some() || files.client_cert_auth {
        let Some((roots, _)) = &trusted else {
            return Err(TlsError::Setting {
                flag: flags.client_cert_auth,
                reason: format!(
                    "needs {} (the CAs client certificates must be signed by)",
                    flags.trusted_ca
                ),
            });
        };
        let mut crls = Vec::new();
        if let Some(crl_path) = &files.crl {
            for crl in CertificateRevocationListDer::pem_slice_iter(crl_pem) {
                crls.push(crl.map_err(|e| pem_error(flags.crl, crl_path, e))?);
            }
        }
        // As in etcd, the CRL only refuses what it lists: a certificate of a trusted CA the
        // CRL does not speak for (the other CA of a rotation bundle) still gets in.
        let webpki = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls)
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| TlsError::Setting {
                flag: flags.trusted_ca,
                reason: e.to_string(),
            })?;
        if names.is_empty() {
            webpki
        } else {
            Arc::new(PeerClientCheck {
                inner: webpki,
                names: names.clone(),
            })
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
    let bad_setting = |e: rustls::Error| TlsError::Setting {
        flag: "--cipher-suites",
        reason: e.to_string(),
    };
    let fingerprint = hex(&sha2::Sha256::digest(leaf));
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(bad_setting)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| pem_error(flags.cert, &files.cert, e))?;
    server.alpn_protocols = match files.role {
        // gRPC needs h2; `/health` and `/metrics` also answer HTTP/1.1 clients (curl, probes).
        Role::Client => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Role::Peer => vec![b"h2".to_vec(), RAFT_ALPN.to_vec()],
    };
    let (raft_client, grpc_client) = if files.role == Role::Peer {
        // Dialing another member: its certificate must chain to the peer CAs and name the
        // host of its peer URL (the server name), as Go's HTTP transport checks in etcd.
        let server_verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
            if files.self_signed {
                Arc::new(AnyServer(provider.clone()))
            } else {
                let Some((roots, _)) = &trusted else {
                    return Err(TlsError::Setting {
                        flag: flags.trusted_ca,
                        reason: format!(
                            "is needed with {}: the CAs that sign the other members' certificates",
                            flags.cert
                        ),
                    });
                };
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| TlsError::Setting {
                            flag: flags.trusted_ca,
                            reason: e.to_string(),
                        })?;
                if names.is_empty() {
                    webpki
                } else {
                    Arc::new(PeerServerCheck {
                        inner: webpki,
                        names,
                    })
                }
            };
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(bad_setting)?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(certs, key)
            .map_err(|e| pem_error(flags.cert, &files.cert, e))?;
        let mut raft = client.clone();
        raft.alpn_protocols = vec![RAFT_ALPN.to_vec()];
        let mut grpc = client;
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        (Some(Arc::new(raft)), Some(Arc::new(grpc)))
    } else {
        (None, None)
    };
    Ok(Material {
        server: Arc::new(server),
        raft_client,
        grpc_client,
        inputs,
        fingerprint,
        not_after,
        cas,
    })
}
