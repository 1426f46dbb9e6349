//! The configuration's flags, file and checks.

use super::*;

#[test]
fn tls_flags_go_together_and_exclude_plain_http() {
    assert!(Config::try_parse_from(["x", "--api-tls-cert-file", "/c.pem"]).is_err());
    assert!(
        Config::try_parse_from([
            "x",
            "--insecure-http",
            "--api-tls-cert-file=/c",
            "--api-tls-key-file=/k"
        ])
        .is_err()
    );
    let c = Config::try_parse_from(["x"]).expect("defaults");
    let err = c
        .api_transport(c.listen)
        .expect_err("not asked")
        .to_string();
    assert!(err.contains("--insecure-http"), "{err}");
}

#[test]
fn defaults_and_overrides() {
    let c = Config::try_parse_from(["baton-orchestrator"]).expect("defaults");
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.engine().agent_etcd, [DEFAULT_ETCD]);
    assert_eq!(c.download_timeout, Duration::from_secs(600));
    let c = Config::try_parse_from([
        "baton-orchestrator",
        "--etcd",
        "http://127.0.0.1:1",
        "--agent-etcd",
        "http://10.0.0.1:1,http://10.0.0.2:1",
        "--health-timeout",
        "90s",
        "--job-label",
        "baton.run=abc",
    ])
    .expect("flags");
    let e = c.engine();
    assert_eq!(e.agent_etcd, ["http://10.0.0.1:1", "http://10.0.0.2:1"]);
    assert_eq!(e.limits.health_timeout, Duration::from_secs(90));
    assert_eq!(
        e.job_labels.get("baton.run").map(String::as_str),
        Some("abc")
    );
    assert!(Config::try_parse_from(["x", "--job-label", "nolabel"]).is_err());
    assert!(Config::try_parse_from(["x", "--agent-timeout", "soon"]).is_err());
    let c = Config::try_parse_from([
        "x",
        "--agent-etcd-ca-file",
        "/etc/baton/ca.pem",
        "--agent-etcd-cert-file",
        "/etc/baton/c.pem",
    ])
    .expect("flags");
    let err = c.agent_tls().expect_err("cert without key").to_string();
    assert!(
        err.starts_with("--agent-etcd-cert-file and --agent-etcd-key-file:"),
        "{err}"
    );
    assert_eq!(
        Config::try_parse_from(["x"])
            .expect("flags")
            .agent_install()
            .expect("default"),
        InstallPolicy::default()
    );
    let c =
        Config::try_parse_from(["x", "--agent-install-allow", "/usr/local/,srv/"]).expect("flags");
    let err = c.agent_install().expect_err("relative").to_string();
    assert!(err.starts_with("--agent-install-allow[1]: "), "{err}");
    let c = Config::try_parse_from(["x", "--etcd-ca-file", "ca.pem"]).expect("flags");
    let err = c.etcd_tls().expect_err("relative").to_string();
    assert!(err.starts_with("--etcd-ca-file:"), "{err}");
    assert!(Config::try_parse_from(["x", "--etcd-domain", "etcd"]).is_err());
    // The successor's file reproduces a configuration with every field set (but the
    // replica and the Docker Engine, which the successor is given by flag).
    let full = Config::try_parse_from([
        "x",
        "--etcd=https://10.0.0.1:2379,https://10.0.0.2:2379",
        "--agent-etcd=https://10.1.0.1:2379",
        "--etcd-ca-file=/etc/baton/ca.pem",
        "--etcd-cert-file=/etc/baton/o.pem",
        "--etcd-key-file=/etc/baton/o.key",
        "--etcd-domain=etcd.internal",
        "--agent-etcd-ca-file=/etc/baton/ca.pem",
        "--agent-etcd-cert-file=/etc/baton/a.pem",
        "--agent-etcd-key-file=/etc/baton/a.key",
        "--agent-etcd-domain=etcd.internal",
        "--prefix=/fleet",
        "--listen=0.0.0.0:7481",
        "--advertise=https://o1:7481",
        "--api-tls-cert-file=/etc/baton/api.pem",
        "--api-tls-key-file=/etc/baton/api.key",
        "--admin-token-file=/etc/baton/admin-token",
        "--api-allowed-host=baton.lan:7481",
        "--api-allowed-host=o1.lan:7481",
        "--api-allowed-origin=https://ui.example",
        "--replica=r1",
        "--docker=unix:///var/run/docker.sock",
        "--leader-ttl=7",
        "--download-concurrency=9",
        "--download-timeout=7m",
        "--download-attempts=5",
        "--agent-timeout=61s",
        "--health-timeout=1h 2m",
        "--install-timeout=45m",
        "--agent-install-allow=/usr/local/,/srv/app/",
        "--agent-install-setuid=/usr/local/bin/ping",
        "--heal-grace=45s",
        "--keep-finished=7",
        "--keep-finished-for=2d 3h",
        "--job-label=a=1",
        "--job-label=b=x=y",
        "--self-update-timeout=3m",
        "--log-json",
    ])
    .expect("every flag");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("orchestrator.toml");
    std::fs::write(&file, full.successor_file().expect("toml")).expect("write");
    let again = Config::load_from(["x", "--config", &file.display().to_string(), "--replica=r2"])
        .expect("file parses");
    let mut expected = full.clone();
    expected.config = Some(file.clone());
    expected.replica = Some("r2".into());
    expected.docker = None;
    assert_eq!(format!("{again:?}"), format!("{expected:?}"));
    let retention = again.engine().retention;
    assert_eq!(retention.keep, 7);
    assert_eq!(retention.keep_for, Duration::from_secs(51 * 3600));
    std::fs::write(&file, "download_timeout = \"soon\"\n").expect("write");
    let err = Config::load_from(["x", "--config", &file.display().to_string()])
        .expect_err("bad value")
        .to_string();
    assert!(
        err.starts_with(&format!("{}: download_timeout: ", file.display())),
        "{err}"
    );
    assert_eq!(
        full.api_transport(full.listen).expect("TLS").scheme(),
        "https"
    );
    assert!(
        full.mounted_files()
            .contains(&PathBuf::from("/etc/baton/admin-token"))
    );
    // The test constructor matches the command line's defaults.
    let parsed = Config::try_parse_from(["baton-orchestrator"]).expect("defaults");
    let built = Config::new(vec![DEFAULT_ETCD.to_owned()]);
    assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
}

#[test]
fn docker_tls_needs_all_three_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, "pem").expect("write");
        path.display().to_string()
    };
    let (ca, cert, key) = (file("ca.pem"), file("cert.pem"), file("key.pem"));
    let c = Config::try_parse_from(["x"]).expect("defaults");
    assert_eq!(c.docker_tls().expect("none"), None);
    let c = Config::try_parse_from([
        "x",
        "--docker-tls-ca-file",
        &ca,
        "--docker-tls-cert-file",
        &cert,
    ])
    .expect("flags");
    let err = c.docker_tls().expect_err("no key").to_string();
    assert!(err.contains("--docker-tls"), "{err}");
    let c = Config::try_parse_from([
        "x",
        "--docker-tls-ca-file",
        &ca,
        "--docker-tls-cert-file",
        &cert,
        "--docker-tls-key-file",
        &key,
    ])
    .expect("flags");
    let tls = c.docker_tls().expect("valid").expect("some");
    assert_eq!(tls.key_file.display().to_string(), key);
    assert_eq!(c.engine().docker_tcp, TcpAccess::Tls(tls));
}

#[test]
fn tcp_docker_engines_need_tls_unless_plain_is_asked_for() {
    let c = Config::try_parse_from(["x"]).expect("defaults");
    assert_eq!(c.docker_tcp().expect("valid"), TcpAccess::Refused);
    let c = Config::try_parse_from(["x", "--allow-plain-docker-tcp"]).expect("flag");
    assert_eq!(c.docker_tcp().expect("valid"), TcpAccess::Plain);
    let err = Config::try_parse_from([
        "x",
        "--allow-plain-docker-tcp",
        "--docker-tls-ca-file",
        "/ca.pem",
    ])
    .expect_err("both")
    .to_string();
    assert!(err.contains("--allow-plain-docker-tcp"), "{err}");
}
