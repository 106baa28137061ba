//! An operator process killed mid-step.

use super::*;

// ---------------------------------------------------------------------------------------------

/// `etcd-operator local` as a process, and every member process it leaves behind, killed
/// when the test ends however it ends.
pub(super) struct OperatorProcess {
    pub(super) child: std::process::Child,
    pub(super) out: PathBuf,
    pub(super) state_dir: PathBuf,
}

impl OperatorProcess {
    pub(super) fn start(setup: &Setup, env: &[(&str, &str)]) -> Self {
        let out = setup.dir.path().join(format!(
            "out-{}.txt",
            std::time::UNIX_EPOCH
                .elapsed()
                .unwrap_or_default()
                .as_nanos()
        ));
        let state_dir = setup.dir.path().join("state");
        let a = setup.addressing;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
            .arg("local")
            .arg("-f")
            .arg(&setup.spec)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--base-ip", &a.base_ip.to_string()])
            .args(["--client-port", &a.client_port.to_string()])
            .args(["--peer-port", &a.peer_port.to_string()])
            .arg("--etcd-server")
            .arg(server_binary())
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start etcd-operator local");
        Self {
            child,
            out,
            state_dir,
        }
    }

    pub(super) fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit on its own.
    pub(super) async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd-operator local did not exit; output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for entry in std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("etcd.pid"))
                && let Ok(pid) = pid.trim().parse()
            {
                signal(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Waits (bounded) until member 0's list shows `voters` started voting members and no learner.
pub(super) async fn wait_voters(setup: &Setup, voters: usize, what: &str, op: &OperatorProcess) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(2));
        if let Ok(mut c) = etcd_client::Client::connect([setup.endpoint(0)], Some(options)).await
            && let Ok(list) = c.member_list().await
            && list.members().len() == voters
            && list
                .members()
                .iter()
                .all(|m| !m.is_learner() && !m.name().is_empty())
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not {voters} started voters; output:\n{}",
            op.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator dies right after `MemberAdd` (a failpoint), before the new member's process
/// exists. The member it left running keeps serving; a restarted operator adopts it, finds
/// the added learner without a process, starts it and promotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_after_member_add_completes_the_step_on_restart() {
    let setup = Setup::new(Ipv4Addr::new(127, 0, 0, 130));
    setup.set_replicas(1);
    let mut op = OperatorProcess::start(&setup, &[("ETCD_OPERATOR_EXIT_AFTER", "MemberAdded")]);
    wait_voters(&setup, 1, "bootstrap", &op).await;
    let member0 = pid_of(&setup, 0);

    setup.set_replicas(2);
    let status = op.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(86), "output:\n{}", op.output());
    assert!(
        !setup.member_dir(1).join("etcd.pid").exists(),
        "the new member never started"
    );
    let list = client(&setup.endpoint(0))
        .await
        .member_list()
        .await
        .expect("member 0 still serves");
    assert_eq!(list.members().len(), 2, "the learner was added");
    assert!(
        list.members()
            .iter()
            .any(|m| m.is_learner() && m.name().is_empty()),
        "an unstarted learner: {:?}",
        list.members()
    );

    let op2 = OperatorProcess::start(&setup, &[]);
    wait_voters(&setup, 2, "after the restart", &op2).await;
    let output = op2.output();
    assert!(
        output.contains(&format!("adopted local-0 (pid {member0})")),
        "member 0 is adopted, not restarted:\n{output}"
    );
    assert!(output.contains("started local-1"), "{output}");
    let mut c = client(&setup.endpoint(1)).await;
    c.put("after-crash", "ok", None)
        .await
        .expect("put via the new member");
    drop(op);
    drop(op2);
}
