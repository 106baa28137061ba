//! Unit tests of flag, environment and config-file parsing.

use super::*;

#[test]
fn https_client_urls_need_a_certificate_pair() {
    let parse = |args: &[&str]| {
        let mut all = vec!["etcd-server"];
        all.extend_from_slice(args);
        Flags::parse_from(all).into_config()
    };
    let https = "--listen-client-urls=https://127.0.0.1:2379";
    let e = parse(&[https]).expect_err("no cert").to_string();
    assert!(e.contains("--cert-file"), "{e}");
    let e = parse(&[https, "--cert-file=a.crt"])
        .expect_err("no key")
        .to_string();
    assert!(e.contains("needs --key-file"), "{e}");
    let c = parse(&[
        https,
        "--cert-file=a.crt",
        "--key-file=a.key",
        "--client-cert-auth",
    ])
    .expect("valid");
    let tls = c.client_tls.expect("tls");
    assert!(tls.client_cert_auth && c.listen_client[0].tls);
    // TLS flags without an https URL are ignored, as in etcd.
    let c = parse(&["--cert-file=a.crt", "--key-file=a.key"]).expect("valid");
    assert!(c.client_tls.is_none());
    // The peer port: an https listener needs the peer pair; a peer pair alone is loaded
    // (it dials https members); a trusted CA file requires client certificates.
    let peer = "--listen-peer-urls=https://127.0.0.1:2380";
    let e = parse(&[peer]).expect_err("peer tls").to_string();
    assert!(e.contains("--peer-cert-file and --peer-key-file"), "{e}");
    let e = parse(&["--peer-key-file=p.key"])
        .expect_err("no cert")
        .to_string();
    assert!(e.contains("--peer-key-file: needs --peer-cert-file"), "{e}");
    let c = parse(&[
        peer,
        "--peer-cert-file=p.crt",
        "--peer-key-file=p.key",
        "--peer-trusted-ca-file=ca.crt",
        "--peer-cert-allowed-cn=etcd-peer",
        "--experimental-peer-skip-client-san-verification",
    ])
    .expect("valid");
    let tls = c.peer_tls.expect("peer tls");
    assert_eq!(tls.role, crate::tls::Role::Peer);
    assert!(c.listen_peer[0].tls && tls.skip_san_verification);
    assert_eq!(tls.allowed_cn.as_deref(), Some("etcd-peer"));
    let c = parse(&["--peer-cert-file=p.crt", "--peer-key-file=p.key"]).expect("valid");
    assert!(c.peer_tls.is_some() && c.client_tls.is_none());
    let e = parse(&[
        https,
        "--cert-file=a",
        "--key-file=b",
        "--tls-min-version=TLS1.0",
    ])
    .expect_err("old tls")
    .to_string();
    assert!(e.contains("--tls-min-version"), "{e}");
}

#[test]
fn config_file_transport_security_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("etcd.yaml");
    let write = |text: &str| std::fs::write(&file, text).expect("write");
    write(
        "listen-client-urls: https://127.0.0.1:2379\nclient-transport-security:\n  cert-file: s.crt\n  key-file: s.key\n  client-cert-auth: true\n  trusted-ca-file: ca.crt\npeer-transport-security:\n  cert-file:\n  client-cert-auth: false\n",
    );
    let c = Flags::from_config_file(&file)
        .and_then(Flags::into_config)
        .expect("valid");
    let tls = c.client_tls.expect("tls");
    assert_eq!(tls.cert, PathBuf::from("s.crt"));
    assert_eq!(tls.trusted_ca, Some(PathBuf::from("ca.crt")));
    assert!(tls.client_cert_auth);
    write(
        "listen-peer-urls: https://127.0.0.1:2380\npeer-transport-security:\n  cert-file: p.crt\n  key-file: p.key\n  trusted-ca-file: ca.crt\n  client-cert-auth: true\n  allowed-cn: etcd-peer\n  crl-file: p.crl\n",
    );
    let c = Flags::from_config_file(&file)
        .and_then(Flags::into_config)
        .expect("valid");
    let tls = c.peer_tls.expect("peer tls");
    assert_eq!(tls.cert, PathBuf::from("p.crt"));
    assert_eq!(tls.crl, Some(PathBuf::from("p.crl")));
    assert!(tls.client_cert_auth && c.listen_peer[0].tls);
    assert_eq!(tls.allowed_cn.as_deref(), Some("etcd-peer"));
    write("peer-transport-security:\n  bogus: 1\n");
    let e = Flags::from_config_file(&file)
        .expect_err("unknown key")
        .to_string();
    assert!(e.contains("peer-transport-security"), "{e}");
}

/// The shared flag table (`etcd_api::flags`, which the operator validates `extraArgs`
/// against) names exactly the flags this parser accepts, hidden ones marked test-only.
#[test]
fn shared_flag_table_matches_the_parser() {
    let cmd = <Flags as clap::CommandFactory>::command();
    let mut parsed: Vec<(String, bool)> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| (l.to_owned(), a.is_hide_set())))
        .filter(|(l, _)| l != "help" && l != "version")
        .collect();
    parsed.sort();
    let mut table: Vec<(String, bool)> = etcd_api::flags::SERVER_FLAGS
        .iter()
        .map(|f| (f.name.to_owned(), f.test_only))
        .collect();
    table.sort();
    assert_eq!(parsed, table);
}

#[test]
fn defaults_match_etcd() {
    let c = Flags::parse_from(["etcd-server"])
        .into_config()
        .expect("valid");
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
    assert_eq!(
        c.listen_client,
        vec![ListenUrl {
            addr: "127.0.0.1:2379".parse::<SocketAddr>().expect("addr"),
            tls: false
        }]
    );
    assert!(c.client_tls.is_none());
    assert_eq!(c.initial_cluster, "default=http://localhost:2380");
    assert_eq!(c.election_ticks, 10);
    assert_eq!(c.quota_backend_bytes, DEFAULT_QUOTA_BYTES);
}

#[test]
fn bad_values_are_rejected() {
    let table: &[&[&str]] = &[
        &["etcd-server", "--listen-client-urls", "nope"],
        &["etcd-server", "--listen-client-urls", "http://127.0.0.1"],
        &["etcd-server", "--election-timeout", "100"],
        &["etcd-server", "--auto-compaction-retention", "abc"],
        &[
            "etcd-server",
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ],
    ];
    for args in table {
        let flags = Flags::try_parse_from(*args).expect("parses");
        assert!(flags.into_config().is_err(), "{args:?} should be rejected");
    }
    assert!(Flags::try_parse_from(["etcd-server", "--no-such-flag"]).is_err());
    assert!(Flags::try_parse_from(["etcd-server", "--snapshot-count", "x"]).is_err());
}

#[test]
fn config_file_replaces_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m0.yaml");
    std::fs::write(
        &path,
        "name: m0\ndata-dir: /var/lib/etcd\ninitial-cluster: m0=http://10.0.0.1:2380,m1=http://10.0.0.2:2380\n\
         initial-cluster-state: existing\nlisten-client-urls: http://0.0.0.0:2379\nheartbeat-interval: 50\n\
         election-timeout: 500\nsnapshot-count: 5000\nauto-compaction-retention: \"1h\"\n",
    )
    .expect("write");
    let c = Flags::from_config_file(&path)
        .expect("parses")
        .into_config()
        .expect("valid");
    assert_eq!(c.name, "m0");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd"));
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert_eq!(
        (c.heartbeat, c.election_ticks, c.snapshot_count),
        (Duration::from_millis(50), 10, 5000)
    );
    assert_eq!(
        c.auto_compaction,
        AutoCompaction::Periodic(Duration::from_secs(3600))
    );
    std::fs::write(&path, "no-such-key: 1\n").expect("write");
    assert!(Flags::from_config_file(&path).is_err());
    std::fs::write(&path, "heartbeat-interval: fast\n").expect("write");
    assert!(Flags::from_config_file(&path).is_err());
}

#[test]
fn retention_forms() {
    use CompactionMode::*;
    assert_eq!(
        parse_retention(Periodic, "1").ok(),
        Some(AutoCompaction::Periodic(Duration::from_secs(3600)))
    );
    assert_eq!(
        parse_retention(Periodic, "30m").ok(),
        Some(AutoCompaction::Periodic(Duration::from_secs(1800)))
    );
    assert_eq!(
        parse_retention(Periodic, "0").ok(),
        Some(AutoCompaction::Off)
    );
    assert_eq!(
        parse_retention(Revision, "1000").ok(),
        Some(AutoCompaction::Revision(1000))
    );
}
