//! TLS for `https://` endpoints: etcd benchmark's `--cacert`, `--cert` and `--key`, as a rustls
//! configuration for the bench's own client and as `etcd-client`'s TLS options; and the
//! certificate set `compare --tls` gives both servers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Client TLS files (all optional: plain endpoints need none).
#[derive(Debug, Clone, Default, clap::Args, serde::Serialize)]
pub struct ClientCerts {
    /// CA that signs the servers' certificates, for `https://` endpoints.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate, for servers that require one.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Key of `--cert`.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        action: "read a TLS file",
        path: path.to_owned(),
        source,
    })
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidOptions(format!("{}: {e}", path.display()))
}

impl ClientCerts {
    /// Whether any file is given.
    pub fn is_set(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// The rustls configuration of the bench's own client (ALPN h2).
    pub fn rustls(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        let Some(ca) = &self.cacert else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(ca)?) {
            roots
                .add(c.map_err(|e| bad(ca, e))?)
                .map_err(|e| bad(ca, e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidOptions(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad(cert, e))?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| bad(key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad(cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::InvalidOptions("--cert and --key go together".into()));
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// `etcd-client`'s TLS options.
    pub fn etcd_client(&self) -> Result<Option<etcd_client::TlsOptions>> {
        let Some(ca) = &self.cacert else {
            return Ok(None);
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(tls))
    }
}

/// The certificates `compare --tls` gives both servers under `dir`: a CA, a certificate for
/// 127.0.0.1 that both servers use for clients and peers, and the bench's client certificate.
pub fn make_cert_set(dir: &Path) -> Result<ClientCerts> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let fail = |e: rcgen::Error| Error::InvalidOptions(format!("making certificates: {e}"));
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create the certificate directory",
        path: dir.to_owned(),
        source,
    })?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io {
            action: "write a certificate",
            path: path.clone(),
            source,
        })?;
        Ok::<_, Error>(path)
    };
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "etcd-bench-ca");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
    let cacert = write("ca.crt", ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, cn: &str, sans: Vec<String>| -> Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::new(sans).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;
        Ok((
            write(&format!("{name}.crt"), cert.pem())?,
            write(&format!("{name}.key"), key.serialize_pem())?,
        ))
    };
    leaf(
        "server",
        "etcd-bench-server",
        vec!["127.0.0.1".into(), "localhost".into()],
    )?;
    let (cert, key) = leaf("client", "root", Vec::new())?;
    Ok(ClientCerts {
        cacert: Some(cacert),
        cert: Some(cert),
        key: Some(key),
    })
}
