//! The container image, run for real (ignored unless asked: `scripts/image.sh` builds it, and
//! `.ci/run` runs these when a Docker Engine answers), and the delivery files that name it.
//!
//! - `single`: one container, etcd's env vars, a read-only root, a volume, `docker stop`.
//! - `cluster`: three containers on a private network, started from the pod template and
//!   configuration files the builders make; leader stop, a partition, a member replaced.
//! - `agreement` (not ignored): the Dockerfiles, `deploy/`, the chart and the builders agree
//!   on the image, its user, paths, ports and probes.

mod agreement;
mod cluster;
mod single;

use std::process::Command;

/// The image under test: `$IMAGE`, else what `scripts/image.sh` tags.
pub(crate) fn image() -> String {
    std::env::var("IMAGE").unwrap_or_else(|_| "etcd-operator:dev".to_owned())
}

/// Runs `docker args…`: whether it succeeded, and what it printed (stdout then stderr).
pub(crate) fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
