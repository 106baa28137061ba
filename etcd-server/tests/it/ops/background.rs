//! Background etcdctl processes.

use super::*;

/// An etcdctl process running in the background (watch, lock, elect), with stdout and stderr in
/// files so they can be read while it runs. Killed when dropped.
pub(super) struct Bg {
    pub(super) child: Child,
    pub(super) dir: tempfile::TempDir,
    pub(super) status: Option<ExitStatus>,
}

impl Bg {
    pub(super) fn etcdctl(endpoint: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(etcdctl().expect("etcdctl installed"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn etcdctl");
        Self {
            child,
            dir,
            status: None,
        }
    }

    pub(super) fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub(super) fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub(super) fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.status = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// SIGINT: etcdctl unlocks / resigns and closes its session before exiting.
    pub(super) fn interrupt(&self) {
        signal(self.child.id(), "INT");
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub(super) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || !self.running());
        self.status
    }

    /// Waits until stdout satisfies `f`; returns whether it did.
    pub(super) fn wait_stdout(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || f(&self.stdout()))
    }

    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.status.get_or_insert(s);
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.kill();
    }
}
