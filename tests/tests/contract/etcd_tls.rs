//! etcd over TLS with client certificates, for real: the shared helpers connect with the
//! configured files, refuse to talk without them, and an agent configured with a `[tls]`
//! section keeps its liveness key on a TLS-only etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_agent::agent::Agent;
use baton_agent::ops::RecordingHost;
use baton_protocol::agent_config::{self, AgentConfig};
use baton_protocol::documents::Alive;
use baton_protocol::etcd::{self, EtcdTls};
use baton_protocol::{HostId, HostKey, Keyspace};
use baton_tests::etcd::EtcdServer;

async fn tls_server() -> EtcdServer {
    EtcdServer::start_tls()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_the_ca_and_a_client_certificate() {
    let etcd = tls_server().await;
    let tls = etcd.client_tls().expect("tls").clone();
    assert!(
        etcd.endpoint().starts_with("https://"),
        "{}",
        etcd.endpoint()
    );

    let client = etcd::connect_tls(&etcd.endpoints(), Some(&tls))
        .await
        .expect("connect");
    client
        .kv_client()
        .put("/baton-test/tls", "ok", None)
        .await
        .expect("put over TLS");

    // Without a client certificate the server refuses the request.
    let no_identity = EtcdTls {
        cert_file: None,
        key_file: None,
        ..tls.clone()
    };
    let anonymous = etcd::connect_tls(&etcd.endpoints(), Some(&no_identity)).await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(c) => tokio::time::timeout(
            Duration::from_secs(10),
            c.kv_client().get("/baton-test/tls", None),
        )
        .await
        .map_or(true, |r| r.is_err()),
    };
    assert!(refused, "etcd served a client without a certificate");

    // A missing file is named in the error.
    let missing = EtcdTls {
        ca_file: "/nonexistent/ca.pem".into(),
        ..tls
    };
    let err = etcd::connect_tls(&etcd.endpoints(), Some(&missing))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_tls_section_keeps_its_alive_key() {
    let etcd = tls_server().await;
    let dir = tempfile::tempdir().expect("tmp");
    let host = HostId::new("h-tls").expect("host");
    let config = agent_config(dir.path(), &host, &etcd);
    // The same validation the agent's config file gets.
    AgentConfig::parse(std::path::Path::new("agent.toml"), &config.to_toml())
        .expect("valid config");
    let agent = Agent::new(config, Arc::new(RecordingHost::default())).expect("agent");
    let task = tokio::spawn(async move { agent.run(std::future::pending()).await });

    let client = etcd.client().await.expect("client");
    let key = Keyspace::default().host(&host, HostKey::Alive);
    let start = Instant::now();
    let alive = loop {
        if let Some(a) = etcd::read::<Alive>(&client, &key).await.expect("read") {
            break a.value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent never wrote {key} over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alive.boot_id, "boot-1");
    task.abort();
}

/// An agent configuration for `host` against `etcd` (its TLS files), with its boot id and
/// kernel files in `dir`.
pub(crate) fn agent_config(dir: &std::path::Path, host: &HostId, etcd: &EtcdServer) -> AgentConfig {
    std::fs::write(dir.join("boot-id"), "boot-1\n").expect("boot id");
    std::fs::write(dir.join("kernel"), "6.1.0-baton1\n").expect("kernel");
    AgentConfig {
        host_id: host.clone(),
        etcd_endpoints: etcd.endpoints(),
        prefix: "/baton".into(),
        lease_ttl_secs: 5,
        state_dir: dir.join("state"),
        boot_id_file: dir.join("boot-id"),
        kernel_release_file: dir.join("kernel"),
        container_prefix: String::new(),
        health_settle_secs: agent_config::DEFAULT_HEALTH_SETTLE_SECS,
        bootloader: agent_config::Bootloader::default(),
        install_allow: baton_protocol::manifest::default_install_allow(),
        install_setuid: Vec::new(),
        tls: etcd.client_tls().cloned(),
        credential_file: None,
        maintenance_credential_file: None,
        // None trusted: these agents are given no bundles.
        trusted_keys_dir: dir.join("trusted-keys"),
    }
}
