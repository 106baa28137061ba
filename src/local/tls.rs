//! The local runtime's certificates (`spec.tls`, provider `Auto`): the operator's authority in
//! `<state-dir>/tls/authority.json` (CA keys included, mode 0600) and the files members and
//! users read beside it (`ca.crt`, `server.*`, `peer.*`, `client.*`), every one replaced
//! atomically, so a reader never sees half a file. Each pass asks every member what it has
//! loaded (its expiry metric) and takes the planner's next step.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Error, io};
use crate::certs::{self, Authority};
use crate::crd::EtcdCluster;
use crate::etcd::EtcdClient;
use crate::names::ClusterNames;

/// The local certificate store.
pub(super) struct LocalCerts {
    dir: PathBuf,
    /// When the planner started waiting for members (to report a stuck rotation).
    waiting_since: Option<i64>,
}

/// What one pass did and what the status says.
#[derive(Default)]
pub(super) struct CertsPass {
    /// A line for the terminal when something changed (or a wait began).
    pub(super) message: Option<String>,
    /// `status.tls` and the `CertificatesReady` condition; `None` with TLS off.
    pub(super) status: Option<(crate::crd::TlsStatus, certs::status::Readiness)>,
    /// The step taken, as the Event a controller would record.
    pub(super) change: Option<crate::runtime::Change>,
}

/// Writes `text` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, text: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io("write", &tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))
}

impl LocalCerts {
    pub(super) fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("tls"),
            waiting_since: None,
        }
    }

    /// The directory of the files.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&self) -> Result<Authority, Error> {
        let path = self.dir.join("authority.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::State {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Authority::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Records `auth` and publishes its files as one atomic change, the way a kubelet
    /// updates a Secret volume: the files go into a new `..v<n>` directory, the `..data`
    /// symlink is swapped to it with a rename, and `ca.crt`, `server.crt`, ... are symlinks
    /// through `..data`. A reader never sees a key from one version and a certificate from
    /// another, as long as it reads both through one resolution of `..data`... and even when
    /// it does not, the next read gets a consistent pair.
    fn save(&self, auth: &Authority) -> Result<(), Error> {
        use std::os::unix::fs::symlink;
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let json = serde_json::to_string_pretty(auth).map_err(|source| Error::State {
            path: self.dir.join("authority.json"),
            source,
        })?;
        // The authority first: files on disk never run ahead of what the operator recorded.
        write_atomically(&self.dir.join("authority.json"), &json, true)?;
        let stamp = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let version = format!("..v{stamp}");
        let vdir = self.dir.join(&version);
        std::fs::create_dir_all(&vdir).map_err(io("create", &vdir))?;
        let files = certs::files(auth);
        for (name, text) in &files {
            write_atomically(&vdir.join(name), text, name.ends_with(".key"))?;
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&version, &tmp).map_err(io("link", &tmp))?;
        let data = self.dir.join("..data");
        let previous = std::fs::read_link(&data).ok();
        std::fs::rename(&tmp, &data).map_err(io("rename", &tmp))?;
        for (name, _) in &files {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), &link).map_err(io("link", &link))?;
            }
        }
        // Older versions go; the one just replaced stays a moment for readers that hold it.
        let keep = [Some(PathBuf::from(&version)), previous];
        for entry in std::fs::read_dir(&self.dir)
            .map_err(io("read", &self.dir))?
            .flatten()
        {
            let name = PathBuf::from(entry.file_name());
            let is_version = name.to_str().is_some_and(|n| n.starts_with("..v"));
            if is_version && !keep.contains(&Some(name)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Whether the published files are exactly `auth`'s (a crash between recording the
    /// authority and publishing its files leaves them behind).
    fn published(&self, auth: &Authority) -> bool {
        certs::files(auth).iter().all(|(name, text)| {
            std::fs::read_to_string(self.dir.join(name)).is_ok_and(|t| t == *text)
        })
    }

    /// One pass of the certificate lifecycle for the members `0..replicas`.
    pub(super) async fn pass(
        &mut self,
        etcd: &EtcdClient,
        cluster: &EtcdCluster,
        names: &ClusterNames,
        replicas: i32,
    ) -> Result<CertsPass, Error> {
        let auth = self.load()?;
        let outcome = certs::pass(
            etcd,
            cluster,
            names,
            replicas,
            auth,
            &mut self.waiting_since,
        )
        .await
        .map_err(Error::Certs)?;
        let Some(o) = outcome else {
            return Ok(CertsPass::default());
        };
        if o.changed || !self.published(&o.authority) {
            self.save(&o.authority)?;
        }
        Ok(CertsPass {
            message: o.message,
            status: Some(o.status),
            change: o.change,
        })
    }
}
