//! etcd with TLS and authentication on, and Baton's roles (docs/security.md, "etcd
//! identities"), for real: a host's identity writes only its own `alive`, `status` and
//! `installed`; the orchestrator's role writes what the orchestrator writes and nothing of a
//! host's reports, and cannot manage users; the reader only reads; no credential is stored
//! in etcd; removing a host's identity ends its agent's writes at once; and only a member
//! host's maintenance user (etcd's `root` role) may take a snapshot, until the host is
//! removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_agent::agent::Agent;
use baton_agent::ops::RecordingHost;
use baton_protocol::agent_config::AgentConfig;
use baton_protocol::documents::{Alive, HostStatus};
use baton_protocol::etcd::identity::{ORCHESTRATOR_ROLE, READER_ROLE};
use baton_protocol::etcd::{self, Client, Credential, Election, KeptLease, auth};
use baton_protocol::{HostId, HostKey, Keyspace, UpgradeId};
use baton_tests::etcd::{EtcdCluster, EtcdServer, assert_no_key_holds, random_password};

async fn secure() -> (EtcdServer, Client, Keyspace) {
    let etcd = EtcdServer::start_secure(&[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        etcd.endpoint().starts_with("https://"),
        "{}",
        etcd.endpoint()
    );
    let admin = etcd.client().await.expect("root client");
    let ks = Keyspace::default();
    auth::ensure_roles(&admin, &ks).await.expect("roles");
    (etcd, admin, ks)
}

fn host(h: &str) -> HostId {
    HostId::new(h).expect("host")
}

async fn issue(admin: &Client, ks: &Keyspace, h: &str) -> Credential {
    auth::issue_host_credential(admin, ks, &host(h), random_password())
        .await
        .expect("issue credential")
}

/// A put as `client`; `Err(text)` when etcd refused it.
async fn put(client: &Client, key: &str) -> Result<(), String> {
    client
        .kv_client()
        .put(key, "{}", None)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn assert_denied(client: &Client, who: &str, key: &str) {
    let err = put(client, key).await.err();
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("permission denied")),
        "{who} writing {key}: {err:?}"
    );
}

async fn assert_allowed(client: &Client, who: &str, key: &str) {
    put(client, key)
        .await
        .unwrap_or_else(|e| panic!("{who} writing {key}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_writes_only_its_own_reports_and_no_credential_is_stored() {
    let (etcd, admin, ks) = secure().await;
    let h1 = issue(&admin, &ks, "host-1").await;
    let h2 = issue(&admin, &ks, "host-2").await;
    let h10 = issue(&admin, &ks, "host-10").await;
    let c1 = etcd.client_as(&h1).await.expect("host-1 client");
    let u1 = UpgradeId::new("u-1").expect("id");

    for key in [HostKey::Alive, HostKey::Status, HostKey::Installed] {
        assert_allowed(&c1, "host-1", &ks.host(&host("host-1"), key)).await;
    }
    let denied = [
        ks.host(&host("host-2"), HostKey::Desired),
        ks.host(&host("host-2"), HostKey::Status),
        ks.host(&host("host-2"), HostKey::Alive),
        // A prefix must not reach a longer host id.
        ks.host(&host("host-10"), HostKey::Status),
        // Its own instructions and registration are the orchestrator's.
        ks.host(&host("host-1"), HostKey::Desired),
        ks.host(&host("host-1"), HostKey::Spec),
        ks.host(&host("host-1"), HostKey::Maintenance),
        ks.upgrade(&u1),
        ks.active(),
        format!("{}/694d8a1c3f2e0b17", ks.leader()),
        ks.event(&u1, 0),
        ks.tokens_prefix() + "admin",
        ks.groups_prefix() + "edge/maintenance",
        "/elsewhere".to_owned(),
    ];
    for key in &denied {
        assert_denied(&c1, "host-1", key).await;
    }
    // What its agent reads: its desired, another host's status (daisy chain), the records.
    for key in [
        ks.host(&host("host-1"), HostKey::Desired),
        ks.host(&host("host-2"), HostKey::Status),
        ks.upgrade(&u1),
    ] {
        c1.kv_client()
            .get(key.as_str(), None)
            .await
            .unwrap_or_else(|e| panic!("host-1 reading {key}: {e}"));
    }
    // Nor can it manage users (no other host's credential can be set or read).
    let mut auth1 = c1.auth_client();
    assert!(auth1.user_get(h2.user.as_str()).await.is_err());
    assert!(
        auth1
            .user_change_password(h2.user.as_str(), "taken")
            .await
            .is_err()
    );

    // No password is stored anywhere in etcd's keyspace (etcd keeps only bcrypt hashes in
    // its own auth store, outside it).
    assert_no_key_holds(&admin, &[&h1.password, &h2.password, &h10.password]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_and_reader_roles_do_only_what_they_need() {
    let (etcd, admin, ks) = secure().await;
    let _h1 = issue(&admin, &ks, "host-1").await;
    let orchestrator = Credential {
        user: ORCHESTRATOR_ROLE.to_owned(),
        password: random_password(),
    };
    auth::ensure_user(&admin, &orchestrator, ORCHESTRATOR_ROLE)
        .await
        .expect("orchestrator user");
    let reader = Credential {
        user: "operator".to_owned(),
        password: random_password(),
    };
    auth::ensure_user(&admin, &reader, READER_ROLE)
        .await
        .expect("reader user");
    let o = etcd.client_as(&orchestrator).await.expect("orchestrator");
    let u1 = UpgradeId::new("u-1").expect("id");

    let allowed = [
        ks.upgrade(&u1),
        ks.active(),
        ks.event(&u1, 0),
        ks.tokens_prefix() + "admin",
        ks.groups_prefix() + "edge/maintenance",
        ks.host(&host("host-1"), HostKey::Spec),
        ks.host(&host("host-1"), HostKey::Desired),
        ks.host(&host("host-1"), HostKey::Maintenance),
    ];
    for key in &allowed {
        assert_allowed(&o, "orchestrator", key).await;
    }
    // It campaigns for leadership through the election API.
    let lease = KeptLease::grant(&o, 10).await.expect("lease");
    Election::new(o.clone(), ks.leader())
        .campaign(b"orch-a", &lease)
        .await
        .expect("campaign");
    let denied = [
        // A host's own reports: the orchestrator cannot fake a host's Done.
        ks.host(&host("host-1"), HostKey::Status),
        ks.host(&host("host-1"), HostKey::Alive),
        ks.host(&host("host-1"), HostKey::Installed),
        // A host not registered (no identity issued for it).
        ks.host(&host("host-2"), HostKey::Desired),
        "/elsewhere".to_owned(),
    ];
    for key in &denied {
        assert_denied(&o, "orchestrator", key).await;
    }
    // Users and roles are the administrative identity's alone.
    let mut oauth = o.auth_client();
    assert!(oauth.user_add("intruder", "pw", None).await.is_err());
    assert!(oauth.role_add("intruder").await.is_err());
    assert!(
        oauth
            .user_grant_role(ORCHESTRATOR_ROLE, "root")
            .await
            .is_err()
    );

    // The reader reads everything under the prefix and writes nothing.
    let r = etcd.client_as(&reader).await.expect("reader");
    let got = r
        .kv_client()
        .get(
            ks.root(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("reader get");
    assert!(got.kvs().len() >= allowed.len(), "{}", got.kvs().len());
    for key in allowed.iter().chain(denied.iter()) {
        assert_denied(&r, "reader", key).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_host_identity_denies_its_agents_next_write() {
    let (etcd, admin, ks) = secure().await;
    let h = host("host-1");
    let credential = issue(&admin, &ks, "host-1").await;
    let dir = tempfile::tempdir().expect("tmp");
    let credential_file = dir.path().join("etcd-credential");
    std::fs::write(&credential_file, credential.to_file_text()).expect("credential");
    let config = AgentConfig {
        credential_file: Some(credential_file),
        ..crate::etcd_tls::agent_config(dir.path(), &h, &etcd)
    };
    AgentConfig::parse(std::path::Path::new("agent.toml"), &config.to_toml())
        .expect("valid config");
    let agent = Agent::new(config, Arc::new(RecordingHost::default())).expect("agent");
    let task = tokio::spawn(async move { agent.run(std::future::pending()).await });

    // The agent works under its own identity: alive and an Idle status.
    let status_key = ks.host(&h, HostKey::Status);
    let start = Instant::now();
    loop {
        let alive = etcd::read::<Alive>(&admin, &ks.host(&h, HostKey::Alive))
            .await
            .expect("read");
        let status = etcd::read::<HostStatus>(&admin, &status_key)
            .await
            .expect("read");
        if alive.is_some() && status.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent never reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A desired the agent refuses (a path for a version) gets a `Failed` status: it writes.
    let refused = |id: &str| {
        format!(
            r#"{{"schema_version":1,"upgrade_id":"{id}","version":"../x","bundle":"r@sha256:00","action":"install","issued_at":"t"}}"#
        )
    };
    let desired_key = ks.host(&h, HostKey::Desired);
    admin
        .kv_client()
        .put(desired_key.as_str(), refused("u-0"), None)
        .await
        .expect("put desired");
    let start = Instant::now();
    while etcd::read::<HostStatus>(&admin, &status_key)
        .await
        .expect("read")
        .is_none_or(|s| s.value.upgrade_id.as_ref().map(UpgradeId::as_str) != Some("u-0"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "u-0 never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    auth::remove_host_identity(&admin, &ks, &h)
        .await
        .expect("remove identity");
    // Its next write (the status of a refused desired) is denied, and so is every session
    // it tries to open again.
    let status_revision = || async {
        let got = admin
            .kv_client()
            .get(status_key.as_str(), None)
            .await
            .expect("get");
        got.kvs()[0].mod_revision()
    };
    let before = status_revision().await;
    admin
        .kv_client()
        .put(desired_key.as_str(), refused("u-1"), None)
        .await
        .expect("put desired");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = status_revision().await;
    assert_eq!(before, after, "the removed host still wrote its status");
    assert!(
        etcd.client_as(&credential).await.is_err(),
        "the removed credential still authenticates"
    );
    task.abort();
}

/// With one of three members down, identity operations go to a member that answers: every
/// one of several issues succeeds (a client balancing over all three would send about one
/// request in three to the dead member and fail), and a user that exists with the right
/// password is left alone while a member is down (its sessions go on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_operations_use_a_member_that_answers() {
    let mut cluster = EtcdCluster::start_secure_cluster(3, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ks = Keyspace::default();
    let root = cluster.root().expect("root").clone();
    let endpoints = cluster.endpoints();
    let tls = cluster.client_tls().cloned();
    let first = etcd::connect_first_answering(&endpoints, tls.as_ref(), Some(&root))
        .await
        .expect("connect");
    auth::ensure_roles(&first, &ks).await.expect("roles");
    let own = Credential {
        user: "baton-orchestrator".to_owned(),
        password: random_password(),
    };
    auth::ensure_user(&first, &own, ORCHESTRATOR_ROLE)
        .await
        .expect("user");
    let session = cluster.client_as(&own).await.expect("own session");

    cluster.kill(0);
    for i in 0..6 {
        let admin = etcd::connect_first_answering(&endpoints, tls.as_ref(), Some(&root))
            .await
            .unwrap_or_else(|e| panic!("connect {i} with member 0 down: {e}"));
        let host = HostId::new(format!("h{i}")).expect("id");
        auth::issue_host_credential(&admin, &ks, &host, random_password())
            .await
            .unwrap_or_else(|e| panic!("issue {i} with member 0 down: {e}"));
        auth::ensure_user(&admin, &own, ORCHESTRATOR_ROLE)
            .await
            .unwrap_or_else(|e| panic!("ensure_user {i} with member 0 down: {e}"));
    }
    // The orchestrator's session still signs its requests: its password was not reset.
    let mut kv = session.kv_client();
    let mut answered = false;
    for _ in 0..6 {
        match kv.get(ks.active(), None).await {
            Ok(_) => answered = true,
            Err(e) => assert!(
                !e.to_string().contains("invalid auth token")
                    && !e.to_string().contains("authentication failed"),
                "the orchestrator's session was ended: {e}"
            ),
        }
    }
    assert!(answered, "no read answered with member 0 down");
}

/// The size of a snapshot taken through `client`; `Err(text)` when etcd refused it.
async fn snapshot_size(client: &mut Client) -> Result<usize, String> {
    let mut stream = client.snapshot().await.map_err(|e| e.to_string())?;
    let mut size = 0;
    while let Some(part) = stream.message().await.map_err(|e| e.to_string())? {
        size += part.blob().len();
    }
    Ok(size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_member_hosts_maintenance_user_takes_snapshots_until_the_host_is_removed() {
    let (etcd, admin, ks) = secure().await;
    let h = host("host-1");
    let own = issue(&admin, &ks, "host-1").await;
    let maintenance = auth::issue_maintenance_credential(&admin, &h, random_password())
        .await
        .expect("maintenance credential");
    assert_eq!(maintenance.user, "baton-maintenance-host-1");

    // etcd serves the snapshot to `root` only: not to the host's own identity.
    let mut as_host = etcd.client_as(&own).await.expect("host client");
    let refused = snapshot_size(&mut as_host).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("permission denied")),
        "the host's own identity took a snapshot: {refused:?}"
    );
    let mut as_maintenance = etcd
        .client_as(&maintenance)
        .await
        .expect("maintenance client");
    let size = snapshot_size(&mut as_maintenance)
        .await
        .expect("the maintenance user takes a snapshot");
    assert!(size > 0);
    assert_no_key_holds(&admin, &[maintenance.password.as_str()]).await;

    // Removing the host removes its maintenance user: it cannot sign in again.
    auth::remove_host_identity(&admin, &ks, &h)
        .await
        .expect("remove");
    assert!(
        etcd.client_as(&maintenance).await.is_err(),
        "the removed host's maintenance user still signs in"
    );
    // Idempotent, and harmless for a host that has none.
    auth::remove_maintenance_user(&admin, &h)
        .await
        .expect("removed again");
}
