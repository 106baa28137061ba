//! Formation: the StatefulSet and ConfigMap the builders produce really form a healthy etcd
//! cluster. Each pod is simulated by a real `etcd-server` process, started with the pod's own
//! command, arguments and environment (with `$(VAR)` expanded as Kubernetes does) and its
//! projected configuration file.
//!
//! What stands in for Kubernetes:
//!
//! - **DNS**: pod `i`'s names (`<pod>.<service>.<ns>.svc`, and the `.svc.cluster.local` form)
//!   map to its own loopback address `127.0.0.(20+i)`, as does a `0.0.0.0` listener in its
//!   file. Any other host name fails the test: a real pod could not resolve it either.
//! - **Ports**: each container port (client, peer) of pod `i` maps to a free port on its
//!   address, so tests running in parallel never collide. URLs are rewritten in the
//!   configuration files consistently, so every member sees the same peer URLs.
//! - **Volumes**: the ConfigMap is projected into a per-pod directory standing in for the
//!   config mount, and the data mount is a per-pod temporary directory; paths under the
//!   mounts in arguments and configuration values are rewritten to them.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_operator::build::{Objects, build};
use etcd_operator::names::{CLIENT_PORT_NAME, CONFIG_VOLUME, DATA_VOLUME, PEER_PORT_NAME};
use etcd_operator::observe::Observed;
use etcd_operator::plan::{Step, plan};
use k8s_openapi::api::core::v1::Container;
use serde_yaml_ng::Value;

use crate::fixtures::{cluster, validated};

/// How long a cluster may take to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

pub use etcd_test_kit::{free_port_on as free_port, server_binary};

/// One simulated pod: its address, its port mapping and its process.
struct Pod {
    name: String,
    ip: Ipv4Addr,
    /// Container port → host port.
    ports: BTreeMap<i32, u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Pod {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// The running pods of one StatefulSet; stops every process when dropped, whatever happens.
struct Pods {
    pods: Vec<Pod>,
    /// Container port numbers by port name.
    port_names: BTreeMap<String, i32>,
    /// Removed after the processes stop (fields drop after `Drop::drop`).
    tmp: tempfile::TempDir,
}

impl Drop for Pods {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            if let Some(mut c) = pod.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Pods {
    fn client_endpoint(&self, i: usize) -> String {
        let pod = &self.pods[i];
        let port = pod.ports[&self.port_names[CLIENT_PORT_NAME]];
        format!("http://{}:{port}", pod.ip)
    }

    fn peer_url(&self, i: usize) -> String {
        let pod = &self.pods[i];
        let port = pod.ports[&self.port_names[PEER_PORT_NAME]];
        format!("http://{}:{port}", pod.ip)
    }

    /// Panics with the member's log if its process has exited.
    fn assert_running(&mut self) {
        for pod in &mut self.pods {
            if let Some(c) = pod.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "pod {} exited with {status}; its log:\n{}",
                    pod.name,
                    pod.log()
                );
            }
        }
    }

    fn logs(&self) -> String {
        self.pods
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
            .collect()
    }
}

/// Expands `$(VAR)` references as the kubelet does: defined variables are replaced, `$$`
/// escapes a `$`, and references to undefined variables are left as written.
pub(crate) fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = rest.strip_prefix("$(")
            && let Some(end) = inner.find(')')
            && let Some(value) = env.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Where pod hosts resolve, and which container ports exist.
struct Network {
    /// Host names (and `0.0.0.0` per pod, keyed by pod index) to pod index.
    hosts: BTreeMap<String, usize>,
    ips: Vec<Ipv4Addr>,
    ports: Vec<BTreeMap<i32, u16>>,
}

impl Network {
    /// Rewrites every `http://host:port` in `value` as seen from pod `me`.
    fn rewrite_urls(&self, me: usize, value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(at) = rest.find("http://") {
            out.push_str(&rest[..at]);
            let url = &rest[at + "http://".len()..];
            let end = url.find([',', ' ']).unwrap_or(url.len());
            let (hostport, tail) = url.split_at(end);
            let (host, port) = hostport
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("URL http://{hostport} in {value:?} has no port"));
            let port: i32 = port
                .trim_end_matches('/')
                .parse()
                .unwrap_or_else(|_| panic!("bad port in {value:?}"));
            let pod = if host == "0.0.0.0" {
                me
            } else {
                *self.hosts.get(host).unwrap_or_else(|| {
                    panic!("{host} (in {value:?}) would not resolve to a member pod")
                })
            };
            let mapped = self.ports[pod].get(&port).unwrap_or_else(|| {
                panic!("port {port} (in {value:?}) is not a container port of the pod")
            });
            out.push_str(&format!("http://{}:{mapped}", self.ips[pod]));
            rest = tail;
        }
        out.push_str(rest);
        out
    }
}

/// Replaces a path under one of `mounts` (container path → host path) by its host path.
fn rewrite_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut v = value.to_owned();
    for (container, host) in mounts {
        v = v.replace(container.as_str(), &host.display().to_string());
    }
    v
}

/// The member container, checked for what the simulation relies on.
pub(crate) fn member_container(objects: &Objects) -> &Container {
    let pod_spec = objects
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the StatefulSet has a pod template");
    assert_eq!(pod_spec.containers.len(), 1, "one container per member pod");
    &pod_spec.containers[0]
}

/// Starts the pods of `objects`' StatefulSet as `etcd-server` processes.
fn start(objects: &Objects, namespace: &str, first_ip: u8) -> Pods {
    let sts = &objects.statefulset;
    let sts_name = sts.metadata.name.clone().expect("StatefulSet name");
    let spec = sts.spec.as_ref().expect("StatefulSet spec");
    let replicas = spec.replicas.expect("replicas") as usize;
    let service = spec.service_name.clone().expect("serviceName");
    assert_eq!(
        objects.peer_service.metadata.name.as_deref(),
        Some(service.as_str()),
        "the StatefulSet's serviceName must be the headless peer Service, or pods get no DNS names"
    );
    let pod_spec = spec.template.spec.as_ref().expect("pod spec");
    let container = member_container(objects);
    let port_names: BTreeMap<String, i32> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().expect("named port"), p.container_port))
        .collect();

    // The config volume must come from the ConfigMap that was built.
    let config_map_name = objects.config_map.metadata.name.clone().expect("name");
    let config_volume = pod_spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == CONFIG_VOLUME)
        .expect("a config volume");
    assert_eq!(
        config_volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some(config_map_name.as_str()),
        "the config volume projects the ConfigMap"
    );
    let mount_of = |volume: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("the container mounts the {volume} volume"))
            .mount_path
            .clone()
    };
    let config_mount = mount_of(CONFIG_VOLUME);
    let data_mount = mount_of(DATA_VOLUME);
    let files = objects.config_map.data.clone().unwrap_or_default();

    let names: Vec<String> = (0..replicas).map(|i| format!("{sts_name}-{i}")).collect();
    let ips: Vec<Ipv4Addr> = (0..replicas)
        .map(|i| Ipv4Addr::new(127, 0, 0, first_ip + i as u8))
        .collect();
    let mut hosts = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        for form in [
            format!("{name}.{service}.{namespace}.svc"),
            format!("{name}.{service}.{namespace}.svc.cluster.local"),
        ] {
            hosts.insert(form, i);
        }
    }
    let ports: Vec<BTreeMap<i32, u16>> = ips
        .iter()
        .map(|ip| port_names.values().map(|p| (*p, free_port(*ip))).collect())
        .collect();
    let net = Network {
        hosts,
        ips: ips.clone(),
        ports: ports.clone(),
    };

    let binary = server_binary();
    let mut pods = Pods {
        pods: Vec::new(),
        port_names,
        tmp: tempfile::tempdir().expect("tempdir"),
    };
    let root = pods.tmp.path().to_owned();
    for (i, name) in names.iter().enumerate() {
        let dir = root.join(name);
        let config_dir = dir.join("config");
        let data_dir = dir.join("data-volume");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mounts = vec![
            (config_mount.clone(), config_dir.clone()),
            (data_mount.clone(), data_dir.clone()),
        ];
        // The kubelet projects every key of the ConfigMap into the mount.
        for (file, text) in &files {
            let doc: Value = serde_yaml_ng::from_str(text).expect("member file is YAML");
            let map = doc.as_mapping().expect("member file is a mapping");
            let mut rewritten = serde_yaml_ng::Mapping::new();
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => {
                        Value::String(rewrite_paths(&net.rewrite_urls(i, s), &mounts))
                    }
                    other => other.clone(),
                };
                rewritten.insert(k.clone(), v);
            }
            let text = serde_yaml_ng::to_string(&rewritten).expect("yaml");
            std::fs::write(config_dir.join(file), text).expect("write config file");
        }

        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), None) => expand(v, &env),
                (None, Some(from)) => {
                    let field = from
                        .field_ref
                        .as_ref()
                        .unwrap_or_else(|| panic!("env {} needs a source the test knows", var.name))
                        .field_path
                        .as_str();
                    match field {
                        "metadata.name" => name.clone(),
                        "metadata.namespace" => namespace.to_owned(),
                        other => panic!("env {} reads {other}, unknown to the test", var.name),
                    }
                }
                _ => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        let command = container.command.clone().expect("command");
        assert_eq!(
            command,
            ["etcd-server"],
            "the test runs etcd-server in place of the command"
        );
        let args: Vec<String> = container
            .args
            .iter()
            .flatten()
            .map(|a| rewrite_paths(&net.rewrite_urls(i, &expand(a, &env)), &mounts))
            .collect();

        let log = File::create(dir.join("log")).expect("log file");
        let child = Command::new(&binary)
            .args(&args)
            .env_clear()
            .envs(&env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", binary.display()));
        pods.pods.push(Pod {
            name: name.clone(),
            ip: ips[i],
            ports: ports[i].clone(),
            dir,
            child: Some(child),
        });
    }
    pods
}

async fn connect(endpoint: &str) -> Option<etcd_client::Client> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    etcd_client::Client::connect([endpoint], Some(options))
        .await
        .ok()
}

/// Waits until the cluster is formed: every member listed, started (named) and voting, and
/// every member agrees on one leader that is in the list.
async fn wait_formed(pods: &mut Pods) -> (Vec<etcd_client::Member>, u64) {
    let n = pods.pods.len();
    let deadline = Instant::now() + FORM_TIMEOUT;
    let mut last = String::new();
    loop {
        pods.assert_running();
        assert!(
            Instant::now() < deadline,
            "the cluster did not form in {FORM_TIMEOUT:?} (last: {last}); logs:\n{}",
            pods.logs()
        );
        let attempt = async {
            let mut c = connect(&pods.client_endpoint(0))
                .await
                .ok_or("member 0 is not reachable")?;
            let list = c.member_list().await.map_err(|e| e.to_string())?;
            let members = list.members().to_vec();
            if members.len() != n {
                return Err(format!("{} members listed", members.len()));
            }
            if members
                .iter()
                .any(|m| m.name().is_empty() || m.client_urls().is_empty() || m.is_learner())
            {
                return Err("not every member has started as a voter".to_owned());
            }
            let mut leaders = Vec::new();
            for i in 0..n {
                let mut c = connect(&pods.client_endpoint(i))
                    .await
                    .ok_or_else(|| format!("member {i} is not reachable"))?;
                let s = c.status().await.map_err(|e| e.to_string())?;
                leaders.push(s.leader());
            }
            let leader = leaders[0];
            if leader == 0 || leaders.iter().any(|l| *l != leader) {
                return Err(format!("leaders disagree: {leaders:x?}"));
            }
            if !members.iter().any(|m| m.id() == leader) {
                return Err(format!("leader {leader:x} is not a member"));
            }
            Ok::<_, String>((members, leader))
        };
        match attempt.await {
            Ok(formed) => return formed,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Builds an N-member cluster from `spec`, runs its pods and checks that they form a healthy
/// cluster that replicates writes.
async fn forms_a_cluster(spec: &str, first_ip: u8) {
    let c = validated(&cluster(spec));
    let p = plan(Ok(&c), &Observed::default());
    assert_eq!(p.step, Step::Bootstrap);
    let objects = build(&c, &p.desired.expect("bootstrap applies objects")).expect("builds");
    let n = objects
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .expect("replicas") as usize;
    assert_eq!(n as i32, c.spec.replicas);

    let mut pods = start(&objects, &c.names.namespace, first_ip);
    let (members, _leader) = wait_formed(&mut pods).await;

    // Each pod is the member of its name, with the addresses the builders gave it.
    for (i, pod) in pods.pods.iter().enumerate() {
        let m = members
            .iter()
            .find(|m| m.name() == pod.name)
            .unwrap_or_else(|| panic!("no member named {}: {members:?}", pod.name));
        assert_eq!(m.peer_urls(), [pods.peer_url(i)], "{}", pod.name);
        assert_eq!(m.client_urls(), [pods.client_endpoint(i)], "{}", pod.name);
    }

    // A write through one member is readable, linearizably, through every member.
    let mut writer = connect(&pods.client_endpoint(n - 1))
        .await
        .expect("connect");
    let put = writer
        .put("formation", format!("{n} members"), None)
        .await
        .expect("put");
    let revision = put.header().expect("header").revision();
    for i in 0..n {
        let mut reader = connect(&pods.client_endpoint(i)).await.expect("connect");
        let got = reader
            .get("formation", None)
            .await
            .expect("linearizable get");
        let kv = got
            .kvs()
            .first()
            .unwrap_or_else(|| panic!("member {i} lacks the key"));
        assert_eq!(kv.value_str().expect("utf-8"), format!("{n} members"));
        assert_eq!(kv.mod_revision(), revision, "member {i}");
    }
    pods.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_from_the_built_objects_form_a_cluster() {
    // Every server option the builders can write, so the test also proves each reaches the
    // server in a form its flag parser accepts.
    const SPEC: &str = r#"
  replicas: 3
  server:
    quotaBackendBytes: 4294967296
    autoCompactionMode: revision
    autoCompactionRetention: "1000"
    snapshotCount: 5000
    heartbeatIntervalMs: 50
    electionTimeoutMs: 500
    extraArgs:
      max-txn-ops: "256"
      max-request-bytes: "2097152"
      log-level: warn
      experimental-watch-progress-notify-interval: 5m
"#;
    forms_a_cluster(SPEC, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_from_the_built_objects_forms_a_cluster() {
    // Same addresses as the 3-member test: free ports keep the two apart.
    forms_a_cluster("  replicas: 1\n", 20).await;
}

#[test]
fn expansion_follows_kubernetes() {
    let env = BTreeMap::from([("POD_NAME".to_owned(), "main-0".to_owned())]);
    assert_eq!(
        expand("/etc/etcd/$(POD_NAME).yaml", &env),
        "/etc/etcd/main-0.yaml"
    );
    assert_eq!(expand("$$(POD_NAME)", &env), "$(POD_NAME)");
    assert_eq!(expand("$(OTHER)", &env), "$(OTHER)");
    assert_eq!(expand("a$b", &env), "a$b");
}
