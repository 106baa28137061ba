//! The TLS flags: the client port's (`--cert-file`, ...) and the peer port's
//! (`--peer-cert-file`, ...) into [`TlsFiles`], and the config file's
//! `client-transport-security:` and `peer-transport-security:` blocks into those flags.

use std::path::{Path, PathBuf};

use super::{ConfigError, Flags, ListenUrl};
use crate::tls::{Role, TlsFiles, TlsVersion};

/// etcd's config file nests the TLS settings: `client-transport-security:` and
/// `peer-transport-security:` hold `cert-file`, `key-file`, `client-cert-auth`,
/// `trusted-ca-file`, `auto-tls`, `crl-file`, `allowed-hostname` (and, for peers,
/// `allowed-cn`); they become the matching flags.
pub(super) fn security_block(
    key: &str,
    block: &serde_yaml_ng::Value,
    args: &mut Vec<String>,
) -> Result<(), String> {
    let Some(map) = block.as_mapping() else {
        return match block {
            serde_yaml_ng::Value::Null => Ok(()),
            _ => Err(format!("{key} must be a mapping")),
        };
    };
    let peer = key == "peer-transport-security";
    for (k, v) in map {
        let Some(name) = k.as_str() else { continue };
        let value = match v {
            serde_yaml_ng::Value::Null => continue,
            serde_yaml_ng::Value::Bool(false) => continue,
            serde_yaml_ng::Value::String(s) if s.is_empty() => continue,
            serde_yaml_ng::Value::String(s) => s.clone(),
            serde_yaml_ng::Value::Bool(true) => "true".to_owned(),
            other => return Err(format!("{key}.{name}: unsupported value {other:?}")),
        };
        let flag = match (name, peer) {
            (
                "cert-file" | "key-file" | "client-cert-auth" | "trusted-ca-file" | "auto-tls",
                false,
            ) => name.to_owned(),
            ("crl-file", false) => "client-crl-file".to_owned(),
            ("allowed-hostname", false) => "client-cert-allowed-hostname".to_owned(),
            (
                "cert-file" | "key-file" | "client-cert-auth" | "trusted-ca-file" | "auto-tls",
                true,
            ) => {
                format!("peer-{name}")
            }
            ("crl-file", true) => "peer-crl-file".to_owned(),
            ("allowed-cn", true) => "peer-cert-allowed-cn".to_owned(),
            ("allowed-hostname", true) => "peer-cert-allowed-hostname".to_owned(),
            (other, _) => return Err(format!("{key}.{other} is not a known setting")),
        };
        args.push(format!("--{flag}={value}"));
    }
    Ok(())
}

/// One port's TLS flags, whichever role.
struct PortFlags<'a> {
    role: Role,
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    trusted_ca: &'a Option<PathBuf>,
    client_cert_auth: bool,
    auto_tls: bool,
    crl: &'a Option<PathBuf>,
    allowed_cn: &'a Option<String>,
    allowed_hostname: &'a Option<String>,
    skip_san_verification: bool,
}

impl Flags {
    /// The client port's TLS settings, when a client (or metrics) URL is `https://`: the
    /// certificate and key (or `--auto-tls`'s, made under `<data-dir>/fixtures/client` as etcd
    /// does) and how clients are checked. TLS flags without an `https://` URL are ignored, as
    /// in etcd.
    pub(super) fn client_tls(
        &self,
        data_dir: &Path,
        listen: &[ListenUrl],
    ) -> Result<Option<TlsFiles>, ConfigError> {
        let port = PortFlags {
            role: Role::Client,
            cert: &self.cert_file,
            key: &self.key_file,
            trusted_ca: &self.trusted_ca_file,
            client_cert_auth: self.client_cert_auth,
            auto_tls: self.auto_tls,
            crl: &self.client_crl_file,
            allowed_cn: &None,
            allowed_hostname: &self.client_cert_allowed_hostname,
            skip_san_verification: true,
        };
        let wanted = listen.iter().any(|l| l.tls);
        self.port_tls(port, data_dir, listen, wanted, "--listen-client-urls")
    }

    /// The peer TLS settings: needed when a peer listener is `https://`, and loaded whenever
    /// a peer certificate is given, since this member dials `https://` peer URLs with it (a
    /// cluster moving from http to https peers has both kinds at once).
    pub(super) fn peer_tls(
        &self,
        data_dir: &Path,
        listen: &[ListenUrl],
        advertised_https: bool,
    ) -> Result<Option<TlsFiles>, ConfigError> {
        let port = PortFlags {
            role: Role::Peer,
            cert: &self.peer_cert_file,
            key: &self.peer_key_file,
            trusted_ca: &self.peer_trusted_ca_file,
            client_cert_auth: self.peer_client_cert_auth,
            auto_tls: self.peer_auto_tls,
            crl: &self.peer_crl_file,
            allowed_cn: &self.peer_cert_allowed_cn,
            allowed_hostname: &self.peer_cert_allowed_hostname,
            skip_san_verification: self.experimental_peer_skip_client_san_verification,
        };
        let wanted = listen.iter().any(|l| l.tls)
            || self.peer_cert_file.is_some()
            || (self.peer_auto_tls && advertised_https);
        self.port_tls(port, data_dir, listen, wanted, "--listen-peer-urls")
    }

    fn port_tls(
        &self,
        port: PortFlags<'_>,
        data_dir: &Path,
        listen: &[ListenUrl],
        wanted: bool,
        listen_flag: &'static str,
    ) -> Result<Option<TlsFiles>, ConfigError> {
        let flags = port.role.flags();
        let invalid = |flag: &'static str, reason: &str| ConfigError::Invalid {
            flag,
            reason: reason.to_owned(),
        };
        let pair = match (port.cert, port.key) {
            (Some(_), None) => return Err(invalid(flags.cert, &format!("needs {}", flags.key))),
            (None, Some(_)) => return Err(invalid(flags.key, &format!("needs {}", flags.cert))),
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
        };
        if !wanted {
            return Ok(None);
        }
        // Auto TLS makes its certificate only when something will use it.
        let self_signed = pair.is_none() && port.auto_tls;
        let (cert, key) = match pair {
            Some(pair) => pair,
            None if port.auto_tls => {
                let hosts: Vec<String> = listen.iter().map(|l| l.addr.ip().to_string()).collect();
                let dir = data_dir.join("fixtures").join(port.role.label());
                crate::tls::auto_tls(port.role, &dir, &hosts)
                    .map_err(|e| invalid(flags.auto_tls, &e.to_string()))?
            }
            None => {
                return Err(invalid(
                    listen_flag,
                    &format!(
                        "https URLs need {} and {} (or {})",
                        flags.cert, flags.key, flags.auto_tls
                    ),
                ));
            }
        };
        let version =
            |flag, v: &str| TlsVersion::parse(flag, v).map_err(|e| invalid(flag, &e.to_string()));
        let text = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Ok(Some(TlsFiles {
            role: port.role,
            cert,
            key,
            trusted_ca: port.trusted_ca.clone(),
            client_cert_auth: port.client_cert_auth,
            crl: port.crl.clone(),
            allowed_cn: text(port.allowed_cn),
            allowed_hostname: text(port.allowed_hostname),
            skip_san_verification: port.skip_san_verification,
            self_signed,
            cipher_suites: self
                .cipher_suites
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            min_version: version("--tls-min-version", &self.tls_min_version)?,
            max_version: version("--tls-max-version", &self.tls_max_version)?,
        }))
    }
}
