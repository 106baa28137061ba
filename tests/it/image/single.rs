//! One container: etcd-server in the image with etcd's env vars, a read-only root file
//! system and a named volume, answering a client on the host; `docker stop` stops it cleanly
//! within its grace period (SIGTERM to PID 1); the data survives a restart of the container.

use std::time::{Duration, Instant};

use super::{docker, image};

/// Removes the container and volume it names when dropped: the test stops what it starts.
struct Owned(&'static str, &'static str);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", self.0]);
        let _ = docker(&["volume", "rm", "-f", self.1]);
    }
}

async fn put_get(endpoint: &str, key: &str, value: Option<&str>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut c = etcd_client::Client::connect([endpoint], None).await?;
            if let Some(v) = value {
                c.put(key, v, None).await?;
            }
            let r = c.get(key, None).await?;
            Ok::<_, etcd_client::Error>(
                r.kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            )
        };
        match attempt.await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the container: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("the container's etcd-server did not answer: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs the image: run scripts/image.sh (and a Docker Engine)"]
async fn etcd_server_runs_in_the_image_and_keeps_its_data() {
    const NAME: &str = "etcd-operator-it-single";
    const VOLUME: &str = "etcd-operator-it-single-data";
    let _owned = Owned(NAME, VOLUME);
    let _ = docker(&["rm", "-f", NAME]);
    let _ = docker(&["volume", "rm", "-f", VOLUME]);
    let port = etcd_test_kit::free_port_on(std::net::Ipv4Addr::LOCALHOST);
    let endpoint = format!("http://127.0.0.1:{port}");
    let publish = format!("127.0.0.1:{port}:2379");
    let volume = format!("{VOLUME}:/var/lib/etcd");
    let advertise = format!("ETCD_ADVERTISE_CLIENT_URLS={endpoint}");
    let image = image();
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--name",
        NAME,
        "--read-only",
        "-p",
        &publish,
        "-v",
        &volume,
        "--entrypoint",
        "/usr/local/bin/etcd-server",
        "-e",
        "ETCD_NAME=single",
        "-e",
        "ETCD_DATA_DIR=/var/lib/etcd/data",
        "-e",
        "ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379",
        "-e",
        &advertise,
        &image,
    ]);
    assert!(ok, "docker run: {out}");
    assert_eq!(
        put_get(&endpoint, "image/key", Some("kept"))
            .await
            .as_deref(),
        Some("kept")
    );
    // Not root, both binaries where the StatefulSet and the Deployment expect them.
    let (_, labels) = docker(&["inspect", "-f", "{{json .Config.Labels}}", &image]);
    assert!(
        labels.contains("org.opencontainers.image.source"),
        "OCI labels: {labels}"
    );
    let (_, user) = docker(&["inspect", "-f", "{{.Config.User}}", &image]);
    assert_eq!(user.trim(), "65532:65532");
    let (ok, version) = docker(&["exec", NAME, "/usr/local/bin/etcd-operator", "--version"]);
    assert!(ok && version.contains("etcd-operator"), "{version}");

    // SIGTERM to PID 1: a clean stop well within the grace period, exit code 0.
    let (ok, out) = docker(&["stop", "-t", "30", NAME]);
    assert!(ok, "docker stop: {out}");
    let (_, code) = docker(&["inspect", "-f", "{{.State.ExitCode}}", NAME]);
    assert_eq!(code.trim(), "0", "exit code after docker stop");
    let (_, logs) = docker(&["logs", NAME]);
    assert!(logs.contains("shutting down"), "{logs}");

    // The data is in the volume: the container comes back with it.
    let (ok, out) = docker(&["start", NAME]);
    assert!(ok, "docker start: {out}");
    assert_eq!(
        put_get(&endpoint, "image/key", None).await.as_deref(),
        Some("kept")
    );
}
