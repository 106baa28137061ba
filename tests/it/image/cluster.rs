//! Three containers of the image on a private Docker network, each with its own address and
//! the DNS name its pod would have (`<pod>.<peer-service>.<ns>.svc`), started from exactly
//! what the builders make: the StatefulSet's member container (command, arguments with
//! `$(POD_NAME)` expanded, env, user, read-only root, dropped capabilities, mounts, probes) and
//! the ConfigMap's files. Then real faults: the leader's container stopped, the leader cut off
//! by `docker network disconnect`, and a member whose volume is lost replaced through the
//! membership API, with the planner's steps and the configuration file it writes for the
//! rejoining member.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, MemberAddOptions};
use etcd_operator::build::statefulset::TERMINATION_GRACE_SECONDS;
use etcd_operator::build::{Objects, build};
use etcd_operator::names::{CLIENT_PORT_NAME, CONFIG_VOLUME, DATA_VOLUME};
use etcd_operator::observe::{MemberHealth, MemberView, Observed};
use etcd_operator::plan::{Step, plan};
use etcd_operator::validate::ValidatedCluster;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{docker, image};
use crate::fixtures::{cluster, healthy, settled, unhealthy, validated, with_lost};
use crate::formation::{expand, member_container};

/// Prefix of every Docker object the test makes: leftovers of an earlier run are removed by it.
const PREFIX: &str = "eo-it-cluster";
/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// The containers, their volumes, the network and the configuration files; removes the Docker
/// objects when dropped, whatever happens.
struct Containers {
    cluster: ValidatedCluster,
    objects: Objects,
    /// Holds the ConfigMap's files, mounted read-only where the pod mounts the ConfigMap.
    config: tempfile::TempDir,
    /// Host port of each member's client port, by ordinal.
    client_ports: Vec<u16>,
    replicas: i32,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for i in 0..self.replicas {
            let _ = docker(&["rm", "-f", &container_name(i)]);
            let _ = docker(&["volume", "rm", "-f", &volume_name(i)]);
        }
        let _ = docker(&["network", "rm", &network()]);
    }
}

fn container_name(i: i32) -> String {
    format!("{PREFIX}-{i}")
}

fn volume_name(i: i32) -> String {
    format!("{PREFIX}-{i}-data")
}

fn network() -> String {
    PREFIX.to_owned()
}

fn must(args: &[&str]) -> String {
    let (ok, out) = docker(args);
    assert!(ok, "docker {}: {out}", args.join(" "));
    out
}

impl Containers {
    fn new(cluster: ValidatedCluster, objects: Objects) -> Self {
        let replicas = objects
            .statefulset
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .expect("replicas");
        let me = Self {
            cluster,
            objects,
            config: tempfile::tempdir().expect("tempdir"),
            client_ports: (0..replicas)
                .map(|_| etcd_test_kit::free_port_on(Ipv4Addr::LOCALHOST))
                .collect(),
            replicas,
        };
        // Leftovers of an interrupted run.
        for i in 0..replicas {
            let _ = docker(&["rm", "-f", &container_name(i)]);
            let _ = docker(&["volume", "rm", "-f", &volume_name(i)]);
        }
        let _ = docker(&["network", "rm", &network()]);
        must(&["network", "create", &network()]);
        me.write_config();
        me
    }

    /// Projects the ConfigMap into the directory the containers mount, readable by the pod's
    /// user (as the kubelet's projection is).
    fn write_config(&self) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.config.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for (file, text) in self.objects.config_map.data.iter().flatten() {
            let path = dir.join(file);
            std::fs::write(&path, text).expect("write config");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }

    fn container(&self) -> &Container {
        member_container(&self.objects)
    }

    fn mount_path(&self, volume: &str) -> String {
        self.container()
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .map(|m| m.mount_path.clone())
            .unwrap_or_else(|| panic!("the member container mounts {volume}"))
    }

    fn port(&self, name: &str) -> i32 {
        self.container()
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("the member container has a {name} port"))
    }

    /// `docker run` for the pod of ordinal `i`, translated from the pod template.
    fn run(&self, i: i32) {
        let sts = self.objects.statefulset.spec.as_ref().expect("spec");
        let pod_spec = sts.template.spec.as_ref().expect("pod spec");
        let c = self.container();
        let names = &self.cluster.names;
        let pod = names.member(i);

        // The downward API and literal values, as the kubelet sets them.
        let mut env = BTreeMap::new();
        for e in c.env.iter().flatten() {
            let value = match (
                &e.value,
                e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()),
            ) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) if f.field_path == "metadata.name" => pod.clone(),
                (None, Some(f)) if f.field_path == "metadata.namespace" => names.namespace.clone(),
                other => panic!("env {} from {other:?}: not simulated", e.name),
            };
            env.insert(e.name.clone(), value);
        }
        let security = pod_spec.security_context.as_ref().expect("pod security");
        let user = format!(
            "{}:{}",
            security.run_as_user.expect("runAsUser"),
            security.run_as_group.expect("runAsGroup")
        );
        let restricted = c.security_context.as_ref().expect("container security");
        let command = c.command.as_ref().expect("command");
        assert_eq!(command.len(), 1, "one command word: {command:?}");
        let config_mount = format!(
            "{}:{}:ro",
            self.config.path().display(),
            self.mount_path(CONFIG_VOLUME)
        );
        let data_mount = format!("{}:{}", volume_name(i), self.mount_path(DATA_VOLUME));
        let publish = format!(
            "127.0.0.1:{}:{}",
            self.client_ports[i as usize],
            self.port(CLIENT_PORT_NAME)
        );
        let host = names.member_host(i);
        let name = container_name(i);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &pod,
            "--network",
            &network(),
            "--network-alias",
            &host,
            "--user",
            &user,
            "-v",
            &config_mount,
            "-v",
            &data_mount,
            "-p",
            &publish,
            "--entrypoint",
            &command[0],
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if restricted.read_only_root_filesystem == Some(true) {
            args.push("--read-only".into());
        }
        if restricted.allow_privilege_escalation == Some(false) {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for cap in restricted
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.as_ref())
            .into_iter()
            .flatten()
        {
            args.extend(["--cap-drop".into(), cap.clone()]);
        }
        for (k, v) in &env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        args.push(image());
        args.extend(c.args.iter().flatten().map(|a| expand(a, &env)));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        must(&refs);
    }

    fn endpoint(&self, i: i32) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i as usize])
    }

    fn logs(&self) -> String {
        (0..self.replicas)
            .map(|i| {
                let (_, out) = docker(&["logs", "--tail", "30", &container_name(i)]);
                format!("--- {}\n{out}", container_name(i))
            })
            .collect()
    }

    /// A client of member `i` alone.
    async fn client(&self, i: i32) -> Result<Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        Client::connect([self.endpoint(i)], Some(options)).await
    }

    /// Retries `f` against member `i` until it succeeds, for at most [`WAIT`].
    async fn until<T, F>(&self, i: i32, what: &str, mut f: F) -> T
    where
        F: AsyncFnMut(&mut Client) -> Result<Option<T>, etcd_client::Error>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.client(i).await {
                Ok(mut c) => match f(&mut c).await {
                    Ok(Some(v)) => return v,
                    Ok(None) => "not yet".to_owned(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "{what} through member {i}: {last}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Puts `key` through member `i`, retrying while the cluster settles.
    async fn put(&self, i: i32, key: &str, value: &str) -> i64 {
        self.until(i, &format!("put {key}"), async |c| {
            let r = c.put(key, value, None).await?;
            Ok(r.header().map(|h| h.revision()))
        })
        .await
    }

    /// Waits until member `i` serves `key` = `value` from its own store (a serializable read).
    async fn wait_value(&self, i: i32, key: &str, value: &str) {
        self.until(i, &format!("read {key}"), async |c| {
            let r = c
                .get(key, Some(GetOptions::new().with_serializable()))
                .await?;
            Ok(r.kvs()
                .first()
                .filter(|kv| kv.value() == value.as_bytes())
                .map(|_| ()))
        })
        .await
    }

    /// Member `i`'s ID and the leader it follows, once it knows one.
    async fn status(&self, i: i32) -> (u64, u64) {
        self.until(i, "status", async |c| {
            let s = c.status().await?;
            let id = s.header().map(|h| h.member_id()).unwrap_or_default();
            Ok((s.leader() != 0).then_some((id, s.leader())))
        })
        .await
    }

    /// Members by name, with their IDs, once `n` are listed and each has published its name
    /// and client URLs (a member does so just after it starts).
    async fn members(&self, i: i32, n: usize) -> Vec<etcd_client::Member> {
        self.until(i, "member list", async |c| {
            let r = c.member_list().await?;
            let published = r
                .members()
                .iter()
                .all(|m| !m.name().is_empty() && !m.client_urls().is_empty());
            Ok((r.members().len() == n && published).then(|| r.members().to_vec()))
        })
        .await
    }

    /// The ordinal of the member that leads, as `among` agree.
    async fn leader(&self, among: &[i32]) -> i32 {
        let members = self.members(among[0], self.replicas as usize).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let mut leaders = Vec::new();
            for i in among {
                leaders.push(self.status(*i).await.1);
            }
            if leaders.windows(2).all(|w| w[0] == w[1]) {
                let m = members
                    .iter()
                    .find(|m| m.id() == leaders[0])
                    .expect("the leader is a member");
                return self
                    .cluster
                    .names
                    .ordinal_of_name(m.name())
                    .expect("an ordinal name");
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The probe's HTTP answer from member `i` (its port published on the host when it is the
    /// client port).
    fn probe(&self, i: i32, probe: &Probe) -> u16 {
        let get = probe.http_get.as_ref().expect("an HTTP probe");
        let port = match &get.port {
            IntOrString::String(name) => self.port(name),
            IntOrString::Int(n) => *n,
        };
        assert_eq!(
            port,
            self.port(CLIENT_PORT_NAME),
            "plain clusters probe the client port"
        );
        let path = get.path.as_deref().expect("path");
        let host_port = self.client_ports[i as usize];
        let mut s = TcpStream::connect(("127.0.0.1", host_port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

/// The member views the planner sees for a healthy cluster, with the members' real IDs.
fn views(
    names: &etcd_operator::names::ClusterNames,
    members: &[etcd_client::Member],
) -> Vec<MemberView> {
    let leader = members.first().map(|m| m.id()).unwrap_or_default();
    members
        .iter()
        .map(|m| {
            let i = names.ordinal_of_name(m.name()).expect("ordinal");
            let mut v = healthy(i);
            v.id = m.id();
            if let MemberHealth::Healthy { leader: l, .. } = &mut v.health {
                *l = leader;
            }
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image: run scripts/image.sh (and a Docker Engine)"]
async fn three_containers_from_the_built_pods_survive_faults_and_replace_a_member() {
    let c = validated(&cluster("  replicas: 3\n"));
    let p = plan(Ok(&c), &Observed::default());
    assert_eq!(p.step, Step::Bootstrap);
    let objects = build(&c, &p.desired.expect("bootstrap objects")).expect("builds");
    assert_eq!(
        objects
            .statefulset
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.termination_grace_period_seconds),
        Some(TERMINATION_GRACE_SECONDS)
    );
    let mut cl = Containers::new(c.clone(), objects);
    let all = [0, 1, 2];
    for i in all {
        cl.run(i);
    }

    // Formed, each member under its pod's name and DNS addresses.
    let members = cl.members(0, 3).await;
    for i in all {
        let m = members
            .iter()
            .find(|m| m.name() == c.names.member(i))
            .unwrap_or_else(|| panic!("no member {}: {members:?}", c.names.member(i)));
        assert_eq!(m.peer_urls(), [c.names.peer_url(i)]);
        assert_eq!(m.client_urls(), [c.names.client_url(i)]);
    }
    let rev = cl.put(0, "image/formed", "yes").await;
    for i in all {
        cl.wait_value(i, "image/formed", "yes").await;
    }
    // The pod's probes answer 200 where the template points them.
    let container = cl.container().clone();
    for i in all {
        for (what, probe) in [
            ("readiness", container.readiness_probe.as_ref()),
            ("liveness", container.liveness_probe.as_ref()),
            ("startup", container.startup_probe.as_ref()),
        ] {
            let probe = probe.unwrap_or_else(|| panic!("a {what} probe"));
            assert_eq!(cl.probe(i, probe), 200, "{what} probe of member {i}");
        }
    }

    // 1. The leader's container stops (SIGTERM, within the pod's grace period): the others
    //    elect a leader and take writes; the stopped member comes back with its data.
    let leader = cl.leader(&all).await;
    let grace = TERMINATION_GRACE_SECONDS.to_string();
    must(&["stop", "-t", &grace, &container_name(leader)]);
    let (_, code) = docker(&[
        "inspect",
        "-f",
        "{{.State.ExitCode}}",
        &container_name(leader),
    ]);
    assert_eq!(code.trim(), "0", "the leader's exit code after docker stop");
    let others: Vec<i32> = all.into_iter().filter(|i| *i != leader).collect();
    let after = cl.put(others[0], "image/leader-stopped", "written").await;
    assert!(after > rev);
    must(&["start", &container_name(leader)]);
    cl.wait_value(leader, "image/leader-stopped", "written")
        .await;
    cl.wait_value(leader, "image/formed", "yes").await;

    // 2. A real partition: the leader's container leaves the network. The majority elects
    //    another leader and takes writes; back on the network (under the same DNS name), the
    //    old leader follows and catches up.
    let leader = cl.leader(&all).await;
    must(&["network", "disconnect", &network(), &container_name(leader)]);
    let majority: Vec<i32> = all.into_iter().filter(|i| *i != leader).collect();
    cl.put(majority[0], "image/partitioned", "majority").await;
    let new_leader = cl.leader(&majority).await;
    assert_ne!(new_leader, leader, "the majority elects one of its own");
    let alias = c.names.member_host(leader);
    must(&[
        "network",
        "connect",
        "--alias",
        &alias,
        &network(),
        &container_name(leader),
    ]);
    cl.wait_value(leader, "image/partitioned", "majority").await;
    let agreed = cl.leader(&all).await;
    assert!(majority.contains(&agreed) || agreed == leader);

    // 3. A member loses its volume. The planner names the lost member for removal (with its
    //    real ID), then re-adds it with a configuration file that joins the running cluster;
    //    it comes back as a learner on an empty volume, catches up and is promoted.
    let leader = cl.leader(&all).await;
    let victim = (leader + 1) % 3;
    must(&["rm", "-f", &container_name(victim)]);
    must(&["volume", "rm", &volume_name(victim)]);
    let survivor = (victim + 1) % 3;
    let members = cl.members(survivor, 3).await;
    let victim_id = members
        .iter()
        .find(|m| m.name() == c.names.member(victim))
        .map(|m| m.id())
        .expect("the victim is listed");
    let mut seen = views(&c.names, &members);
    for v in &mut seen {
        if v.ordinal == Some(victim) {
            let id = v.id;
            *v = unhealthy(victim);
            v.id = id;
        }
    }
    let observed = with_lost(settled(&c, 3, seen), victim);
    let step = plan(Ok(&c), &observed).step;
    assert_eq!(
        step,
        Step::RemoveLostMember {
            name: c.names.member(victim),
            id: victim_id
        }
    );
    cl.until(survivor, "member remove", async |client| {
        client.member_remove(victim_id).await.map(|_| Some(()))
    })
    .await;
    let remaining = cl.members(survivor, 2).await;
    let mut observed = settled(&c, 3, views(&c.names, &remaining));
    if let etcd_operator::observe::EtcdState::Reachable(view) = &mut observed.etcd {
        view.members.retain(|m| m.ordinal != Some(victim));
    }
    let p = plan(Ok(&c), &observed);
    let peer_url = c.names.peer_url(victim);
    assert_eq!(
        p.step,
        Step::ReAddMember {
            name: c.names.member(victim),
            peer_url: peer_url.clone()
        }
    );
    cl.objects = build(&c, &p.desired.expect("objects to apply")).expect("builds");
    cl.write_config();
    let file = Path::new(cl.config.path()).join(format!("{}.yaml", c.names.member(victim)));
    let text = std::fs::read_to_string(&file).expect("the victim's file");
    assert!(
        text.contains("initial-cluster-state: existing"),
        "the rejoining member joins: {text}"
    );
    let added = cl
        .until(survivor, "member add", async |client| {
            let r = client
                .member_add(
                    [peer_url.as_str()],
                    Some(MemberAddOptions::new().with_is_learner()),
                )
                .await?;
            Ok(r.member().map(|m| m.id()))
        })
        .await;
    cl.run(victim);
    cl.until(survivor, "promote the learner", async |client| {
        client.member_promote(added).await.map(|_| Some(()))
    })
    .await;
    let members = cl.members(victim, 3).await;
    assert!(members.iter().all(|m| !m.is_learner()), "{members:?}");
    for key in [
        ("image/formed", "yes"),
        ("image/leader-stopped", "written"),
        ("image/partitioned", "majority"),
    ] {
        cl.wait_value(victim, key.0, key.1).await;
    }
    cl.put(victim, "image/replaced", "rejoined").await;
    for i in all {
        cl.wait_value(i, "image/replaced", "rejoined").await;
    }
}
