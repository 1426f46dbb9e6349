//! The agent's upgrade logic against a real etcd server, with a recording fake standing in
//! for the host (files, systemd, Docker, reboot). The same paths on real simulated hosts are
//! covered by the fleet tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_agent::agent::Agent;
use baton_agent::ops::{Call, RecordingHost};
use baton_protocol::agent_config::AgentConfig;
use baton_protocol::documents::{self, Desired, DesiredAction, HostStatus, Installed};
use baton_protocol::staged::{STAGED_RECORD_FILE, StagedBundle};
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId};
use baton_protocol::{digest, etcd};
use baton_tests::etcd::EtcdServer;

const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The image digest the test bundles are staged from.
fn digest() -> String {
    format!("sha256:{SHA}")
}

/// Stages bundle `version` in `dir` as the downloader job leaves it: every file (its
/// content is its name), the manifest naming their sizes and digests, and the record of
/// the image the bundle came from. The daemon's binary is the file `daemon_content`.
fn stage(dir: &Path, version: &str, daemon_content: &str) {
    std::fs::create_dir_all(dir).expect("dir");
    let file = |path: &str, dest: &str, mode: &str| {
        std::fs::write(dir.join(path), path).expect("staged file");
        serde_json::json!({"path": path, "dest": dest, "size": path.len(),
                           "sha256": digest::sha256_hex(path.as_bytes()), "mode": mode})
    };
    let manifest = serde_json::json!({
        "schema_version": 1, "version": version, "backward_compatible": true,
        "agent": {"version": version, "file": {"path": "agent/baton-agent", "size": 0, "sha256": SHA, "mode": "0755"}},
        "components": [
            {"name": "baton-hello", "version": version, "kind": "file", "order": 10,
             "files": [file("hello", "/usr/local/bin/baton-hello", "0755")]},
            {"name": "baton-echo", "version": version, "kind": "service", "unit": "baton-echo.service", "order": 20,
             "files": [file(daemon_content, "/usr/local/sbin/baton-echo", "0755"),
                       file("echo.service", "/etc/systemd/system/baton-echo.service", "0644")]}
        ]
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("manifest");
    let record = StagedBundle::new(version, &digest()).expect("record");
    std::fs::write(dir.join(STAGED_RECORD_FILE), record.to_json()).expect("record");
}

struct Setup {
    _etcd: EtcdServer,
    dir: tempfile::TempDir,
    config: AgentConfig,
    client: etcd::Client,
    ks: Keyspace,
    host: HostId,
    fake: Arc<RecordingHost>,
    task: tokio::task::JoinHandle<()>,
}

impl Setup {
    /// The host went down with its agent (in the same boot unless the boot id file was
    /// changed): a new agent process starts on the same state folder and fake host.
    fn restart_agent(&mut self) {
        self.task.abort();
        let agent = Agent::new(self.config.clone(), self.fake.clone()).expect("agent");
        self.task = tokio::spawn(async move { agent.run(std::future::pending()).await });
    }
}

async fn setup(daemon_content: &str) -> Setup {
    let etcd_server = EtcdServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("bundles/2.0.0")).expect("dir");
    stage(&state.join("bundles/2.0.0"), "2.0.0", daemon_content);
    std::fs::write(dir.path().join("boot-id"), "boot-1\n").expect("boot id");
    std::fs::write(dir.path().join("kernel"), "6.1.0-baton1\n").expect("kernel");
    let host = HostId::new("h1").expect("host");
    let config = AgentConfig {
        host_id: host.clone(),
        etcd_endpoints: etcd_server.endpoints(),
        prefix: "/baton".into(),
        lease_ttl_secs: 5,
        state_dir: state,
        boot_id_file: dir.path().join("boot-id"),
        kernel_release_file: dir.path().join("kernel"),
        container_prefix: "h1-".into(),
        // Short, so checks of the fake host need not wait the real default.
        health_settle_secs: 1,
        bootloader: baton_protocol::agent_config::Bootloader::Simulated,
        install_allow: baton_protocol::manifest::default_install_allow(),
        install_setuid: Vec::new(),
        tls: None,
        // None trusted: these tests write `desired` without signatures.
        trusted_keys_dir: dir.path().join("trusted-keys"),
        credential_file: None,
        maintenance_credential_file: None,
    };
    let fake = Arc::new(RecordingHost::default());
    let agent = Agent::new(config.clone(), fake.clone()).expect("agent");
    let task = tokio::spawn(async move { agent.run(std::future::pending()).await });
    Setup {
        client: etcd_server.client().await.expect("client"),
        _etcd: etcd_server,
        dir,
        config,
        ks: Keyspace::default(),
        host,
        fake,
        task,
    }
}

async fn wait_state(s: &Setup, want: &[HostState]) -> HostStatus {
    wait_state_of(s, "u1", want).await
}

async fn wait_state_of(s: &Setup, upgrade: &str, want: &[HostState]) -> HostStatus {
    let key = s.ks.host(&s.host, HostKey::Status);
    let start = Instant::now();
    loop {
        let current = etcd::read::<HostStatus>(&s.client, &key)
            .await
            .expect("read");
        if let Some(st) = current.filter(|st| {
            want.contains(&st.value.state)
                && st.value.upgrade_id.as_ref().map(UpgradeId::as_str) == Some(upgrade)
        }) {
            return st.value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "status never reached {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Desires upgrade u1 (install) and waits until the host settled on it.
async fn install(s: &Setup) -> HostStatus {
    desire(s).await;
    wait_state(
        s,
        &[HostState::Done, HostState::Failed, HostState::RolledBack],
    )
    .await
}

async fn desire(s: &Setup) {
    desire_action(s, "u1", DesiredAction::Install).await;
}

async fn desire_action(s: &Setup, id: &str, action: DesiredAction) {
    desire_full(s, id, action, None).await;
}

async fn desire_full(s: &Setup, id: &str, action: DesiredAction, after: Option<&str>) {
    let mut desired = desired(
        id,
        "2.0.0",
        &format!("127.0.0.1:5000/baton/bundle@{}", digest()),
    );
    desired.action = action;
    desired.after = after.map(|h| HostId::new(h).expect("host"));
    put_desired(s, &desired).await;
}

fn desired(id: &str, version: &str, bundle: &str) -> Desired {
    Desired {
        schema_version: documents::SCHEMA_VERSION,
        upgrade_id: UpgradeId::new(id).expect("id"),
        version: version.into(),
        bundle: bundle.into(),
        action: DesiredAction::Install,
        after: None,
        allow_downgrade: false,
        reverts: None,
        signature: None,
        issued_at: documents::now(),
    }
}

async fn put_desired(s: &Setup, desired: &Desired) {
    s.client
        .kv_client()
        .put(
            s.ks.host(&s.host, HostKey::Desired),
            documents::encode(desired),
            None,
        )
        .await
        .expect("put desired");
}

fn installs(s: &Setup) -> usize {
    count(&s.fake.calls(), |c| matches!(c, Call::Install(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_install_applies_every_component_in_order_and_reports_done() {
    let s = setup("echo-v2").await;
    // An old bundle nothing needs any more, and one staged for a later upgrade.
    let bundles = s.config.state_dir.join("bundles");
    stage(&bundles.join("0.5.0"), "0.5.0", "echo-v0");
    stage(&bundles.join("3.0.0"), "3.0.0", "echo-v3");
    let status = install(&s).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    assert!(!bundles.join("0.5.0").exists(), "the old bundle is pruned");
    assert!(bundles.join("2.0.0").exists() && bundles.join("3.0.0").exists());

    let installs: Vec<_> = s
        .fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Install(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        installs,
        [
            Path::new("/usr/local/bin/baton-hello"),
            Path::new("/usr/local/sbin/baton-echo"),
            Path::new("/etc/systemd/system/baton-echo.service")
        ]
    );
    assert!(
        s.fake
            .calls()
            .contains(&Call::Restart("baton-echo.service".into()))
    );
    let installed: Installed = etcd::read(&s.client, &s.ks.host(&s.host, HostKey::Installed))
        .await
        .expect("read")
        .expect("installed")
        .value;
    assert_eq!(installed.bundle_version.as_deref(), Some("2.0.0"));
    assert_eq!(
        installed.components.get("baton-echo").map(String::as_str),
        Some("2.0.0")
    );
    s.task.abort();
}

/// A host whose bundle's daemon fails to start (the fake reports the unit failed while a
/// file containing FAIL is installed), the daemon and the utility on their previous content.
async fn setup_failing_daemon() -> Setup {
    let s = setup("echo-v2-FAIL").await;
    s.fake.fail_unit("baton-echo.service");
    s.fake
        .set_file(Path::new("/usr/local/sbin/baton-echo"), "echo-v1");
    s.fake
        .set_file(Path::new("/usr/local/bin/baton-hello"), "hello-v1");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_fails_to_start_is_rolled_back() {
    let s = setup_failing_daemon().await;
    let status = install(&s).await;
    assert_eq!(status.state, HostState::RolledBack, "{status:?}");
    assert!(status.message.contains("baton-echo.service"), "{status:?}");
    // Both the daemon and the utility before it are back on their previous content.
    assert_eq!(
        s.fake
            .file(Path::new("/usr/local/sbin/baton-echo"))
            .as_deref(),
        Some("echo-v1")
    );
    assert_eq!(
        s.fake
            .file(Path::new("/usr/local/bin/baton-hello"))
            .as_deref(),
        Some("hello-v1")
    );
    // The unit file did not exist before, so it is removed again.
    assert_eq!(
        s.fake
            .file(Path::new("/etc/systemd/system/baton-echo.service")),
        None
    );
    s.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_daemons_start_limit_is_reset_before_its_previous_version_restarts() {
    let s = setup_failing_daemon().await;
    // The daemon ran before: the rollback restarts its previous version.
    s.fake.set_file(
        Path::new("/etc/systemd/system/baton-echo.service"),
        "[Service]\nExecStart=/usr/local/sbin/baton-echo\n",
    );
    let status = install(&s).await;
    assert_eq!(status.state, HostState::RolledBack, "{status:?}");
    let unit_calls: Vec<Call> = s
        .fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Restart(_) | Call::ResetFailed(_)))
        .collect();
    let unit = || "baton-echo.service".to_owned();
    assert_eq!(
        unit_calls,
        [
            Call::Restart(unit()),
            Call::ResetFailed(unit()),
            Call::Restart(unit())
        ],
        "the new version's restart, then the failed state cleared before the old one's"
    );
    s.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restarts_the_managed_services_and_reinstalls_nothing() {
    let s = setup("echo-v2").await;
    let status = install(&s).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    let installs_before = s
        .fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Install(_)))
        .count();
    let restarts_before = s
        .fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Restart(_)))
        .count();

    desire_action(&s, "r1", DesiredAction::Restart).await;
    let status = wait_state_of(&s, "r1", &[HostState::Done, HostState::Failed]).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    assert!(status.message.contains("restarted"), "{status:?}");
    let calls = s.fake.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Install(_)))
            .count(),
        installs_before,
        "a restart reinstalled files"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Restart(_)))
            .count(),
        restarts_before + 1
    );
    s.task.abort();
}

fn count(calls: &[Call], what: impl Fn(&Call) -> bool) -> usize {
    calls.iter().filter(|c| what(c)).count()
}

/// Waits until the fake host was asked to reboot `n` times in all.
async fn wait_reboots(s: &Setup, n: usize) {
    let start = Instant::now();
    while count(&s.fake.calls(), |c| *c == Call::Reboot) < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent did not ask for reboot #{n}: {:?}",
            s.fake.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_is_journaled_asked_again_in_the_same_boot_and_done_in_the_next() {
    let mut s = setup("echo-v2").await;
    let status = install(&s).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    let before = s.fake.calls();

    desire_action(&s, "r1", DesiredAction::Reboot).await;
    let status = wait_state_of(
        &s,
        "r1",
        &[HostState::Rebooting, HostState::Done, HostState::Failed],
    )
    .await;
    assert_eq!(status.state, HostState::Rebooting, "{status:?}");
    assert!(status.message.contains("boot-1"), "{status:?}");
    wait_reboots(&s, 1).await;
    // The boot it was asked in is on disk before the reboot was asked for.
    let journal = baton_agent::journal::load(&s.config.state_dir)
        .expect("journal")
        .expect("a journal");
    assert_eq!(journal.upgrade_id.as_str(), "r1");
    assert_eq!(
        journal
            .reboot
            .as_ref()
            .and_then(|r| r.requested_in.as_deref()),
        Some("boot-1"),
        "{journal:?}"
    );
    assert_eq!(journal.outcome, None);

    // Killed before the host went down (still boot-1): the new agent asks again.
    s.restart_agent();
    wait_reboots(&s, 2).await;
    let status = wait_state_of(&s, "r1", &[HostState::Rebooting]).await;
    assert_eq!(status.step.as_deref(), Some("reboot host"), "{status:?}");

    // The host comes back in another boot: nothing is restarted or installed, the managed
    // services are checked, and the agent reports Done saying it resumed.
    std::fs::write(s.dir.path().join("boot-id"), "boot-2\n").expect("boot id");
    s.restart_agent();
    let status = wait_state_of(&s, "r1", &[HostState::Done, HostState::Failed]).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    for want in ["resumed after the reboot", "boot-2", "boot-1"] {
        assert!(status.message.contains(want), "{want:?} not in {status:?}");
    }
    let calls = s.fake.calls();
    let is_work = |c: &Call| matches!(c, Call::Install(_) | Call::Restart(_) | Call::Recreate(..));
    assert_eq!(
        count(&calls, is_work),
        count(&before, is_work),
        "a reboot reinstalled or restarted something: {calls:?}"
    );
    assert_eq!(count(&calls, |c| *c == Call::Reboot), 2);
    let journal = baton_agent::journal::load(&s.config.state_dir)
        .expect("journal")
        .expect("a journal");
    assert_eq!(
        journal
            .reboot
            .as_ref()
            .and_then(|r| r.resumed_in.as_deref()),
        Some("boot-2")
    );

    // Yet another agent start (same desired) only re-reports: no third reboot.
    s.restart_agent();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = wait_state_of(&s, "r1", &[HostState::Done]).await;
    assert!(status.message.contains("boot-2"), "{status:?}");
    assert_eq!(count(&s.fake.calls(), |c| *c == Call::Reboot), 2);
    s.task.abort();
}

/// Puts upgrade record `id` (daisy chain, h0 then h1) in `phase`.
async fn put_chain_upgrade(s: &Setup, id: &str, phase: &str) {
    let upgrade = serde_json::json!({
        "schema_version": 1, "id": id, "bundle": "127.0.0.1:5000/baton/bundle@sha256:x",
        "version": "2.0.0", "strategy": {"kind": "daisy-chain"}, "phase": phase,
        "hosts": {"h0": {"state": "Dispatched", "batch": 0}, "h1": {"state": "Downloaded", "batch": 1}},
        "created_at": "t", "updated_at": "t"
    });
    s.client
        .kv_client()
        .put(
            s.ks.upgrade(&UpgradeId::new(id).expect("id")),
            upgrade.to_string(),
            None,
        )
        .await
        .expect("put upgrade");
}

/// Writes h0's (the predecessor's) status: `state` for upgrade `id`.
async fn put_h0_status(s: &Setup, id: &str, state: HostState) {
    let status = HostStatus {
        schema_version: documents::SCHEMA_VERSION,
        upgrade_id: Some(UpgradeId::new(id).expect("id")),
        state,
        step: None,
        message: String::new(),
        started_at: None,
        updated_at: documents::now(),
        health: None,
    };
    let key = s.ks.host(&HostId::new("h0").expect("h0"), HostKey::Status);
    s.client
        .kv_client()
        .put(key, documents::encode(&status), None)
        .await
        .expect("put status");
}

/// For `for_`, the agent never reports having started upgrade `id`.
async fn assert_not_started(s: &Setup, id: &str, for_: Duration) {
    let key = s.ks.host(&s.host, HostKey::Status);
    let start = Instant::now();
    while start.elapsed() < for_ {
        let status = etcd::read::<HostStatus>(&s.client, &key)
            .await
            .expect("read")
            .map(|v| v.value);
        assert!(
            status
                .as_ref()
                .is_none_or(|st| st.upgrade_id.as_ref().map(UpgradeId::as_str) != Some(id)),
            "started {id}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_host_starts_once_the_host_before_is_done_and_never_after_an_abort() {
    let s = setup("echo-v2").await;
    let wait = Duration::from_secs(2);
    // u1: h1 follows h0, which is still updating; then done with an older upgrade.
    put_chain_upgrade(&s, "u1", "Installing").await;
    put_h0_status(&s, "u1", HostState::Updating).await;
    desire_full(&s, "u1", DesiredAction::Install, Some("h0")).await;
    assert_not_started(&s, "u1", wait).await;
    put_h0_status(&s, "u0", HostState::Done).await;
    assert_not_started(&s, "u1", wait).await;
    // Paused: h0 done, still no start until the upgrade is resumed.
    put_chain_upgrade(&s, "u1", "Paused").await;
    put_h0_status(&s, "u1", HostState::Done).await;
    assert_not_started(&s, "u1", wait).await;
    put_chain_upgrade(&s, "u1", "Installing").await;
    let status = wait_state(
        &s,
        &[HostState::Done, HostState::Failed, HostState::RolledBack],
    )
    .await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    // Nothing of another host's was written: h0's keys are as the test left them.
    let h0 = HostId::new("h0").expect("h0");
    for key in [HostKey::Desired, HostKey::Alive, HostKey::Installed] {
        let kvs = s
            .client
            .kv_client()
            .get(s.ks.host(&h0, key), None)
            .await
            .expect("get");
        assert!(kvs.kvs().is_empty(), "{key}: {:?}", kvs.kvs());
    }

    // u2 is aborted while h0 works: h0's Done afterwards starts nothing on h1.
    let calls = s.fake.calls().len();
    put_chain_upgrade(&s, "u2", "Installing").await;
    put_h0_status(&s, "u2", HostState::Updating).await;
    desire_full(&s, "u2", DesiredAction::Install, Some("h0")).await;
    put_chain_upgrade(&s, "u2", "Aborted").await;
    put_h0_status(&s, "u2", HostState::Done).await;
    assert_not_started(&s, "u2", wait).await;
    assert_eq!(s.fake.calls().len(), calls, "{:?}", s.fake.calls());
    s.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_naming_no_staged_verified_bundle_fails_with_nothing_installed() {
    let s = setup("echo-v2").await;
    // A bundle someone put outside bundles/, reachable from it by `..`, with a manifest and
    // a record naming the right digest: a traversing version must not reach it.
    stage(&s.dir.path().join("planted"), "2.0.0", "echo-evil");
    // A bundle staged without the record of its image (a job not told its digest).
    let unrecorded = s.config.state_dir.join("bundles/3.0.0");
    stage(&unrecorded, "3.0.0", "echo-v3");
    std::fs::remove_file(unrecorded.join(STAGED_RECORD_FILE)).expect("remove record");
    // A bundle installing the agent's own configuration.
    let hostile = s.config.state_dir.join("bundles/4.0.0");
    stage(&hostile, "4.0.0", "echo-v4");
    let manifest = std::fs::read_to_string(hostile.join("manifest.json")).expect("manifest");
    std::fs::write(
        hostile.join("manifest.json"),
        manifest.replace("/usr/local/bin/baton-hello", "/etc/baton/agent.toml"),
    )
    .expect("manifest");
    let pinned = format!("127.0.0.1:5000/baton/bundle@{}", digest());
    let other = format!("127.0.0.1:5000/baton/bundle@sha256:{}", "0".repeat(64));
    let cases = [
        (
            "f-own-path",
            "4.0.0",
            pinned.as_str(),
            "components[0].files[0].dest: \"/etc/baton/agent.toml\" is Baton's own",
        ),
        (
            "f-traverse",
            "../../planted",
            pinned.as_str(),
            "desired.version",
        ),
        ("f-absolute", "/tmp", pinned.as_str(), "desired.version"),
        (
            "f-unstaged",
            "9.9.9",
            pinned.as_str(),
            "bundle 9.9.9 is not staged",
        ),
        (
            "f-unrecorded",
            "3.0.0",
            pinned.as_str(),
            "no record of the image",
        ),
        (
            "f-other-image",
            "2.0.0",
            other.as_str(),
            "not from desired.bundle's sha256:0000",
        ),
        (
            "f-tag",
            "2.0.0",
            "127.0.0.1:5000/baton/bundle:2.0.0",
            "desired.bundle",
        ),
    ];
    for (id, version, bundle, reason) in cases {
        put_desired(&s, &desired(id, version, bundle)).await;
        let status = wait_state_of(
            &s,
            id,
            &[HostState::Done, HostState::Failed, HostState::RolledBack],
        )
        .await;
        assert_eq!(status.state, HostState::Failed, "{id}: {status:?}");
        assert!(
            status.message.contains(reason),
            "{id}: {reason:?} not in {status:?}"
        );
        assert_eq!(installs(&s), 0, "{id}: {:?}", s.fake.calls());
        assert!(
            baton_agent::journal::load(&s.config.state_dir)
                .expect("journal")
                .is_none(),
            "{id}: a journal was started"
        );
    }
    // The staged, recorded bundle named by its digest still installs.
    let status = install(&s).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    assert_eq!(installs(&s), 3);
    s.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_staged_file_rolls_back_naming_the_file() {
    let s = setup("echo-v2").await;
    s.fake
        .set_file(Path::new("/usr/local/sbin/baton-echo"), "echo-v1");
    s.fake
        .set_file(Path::new("/usr/local/bin/baton-hello"), "hello-v1");
    // The staged daemon binary, one byte changed after the job verified it.
    let staged = s.config.state_dir.join("bundles/2.0.0/echo-v2");
    std::fs::write(&staged, "echo-v3").expect("flip a byte");
    let status = install(&s).await;
    assert_eq!(status.state, HostState::RolledBack, "{status:?}");
    let named = format!("{}: sha256 ", staged.display());
    assert!(
        status.message.contains(&named),
        "{named:?} not in {status:?}"
    );
    assert!(
        status.message.contains("does not match the manifest"),
        "{status:?}"
    );
    // The utility applied before it is back on its previous content; the daemon and its
    // unit were never replaced, and the daemon was not restarted.
    assert_eq!(
        s.fake
            .file(Path::new("/usr/local/bin/baton-hello"))
            .as_deref(),
        Some("hello-v1")
    );
    assert_eq!(
        s.fake
            .file(Path::new("/usr/local/sbin/baton-echo"))
            .as_deref(),
        Some("echo-v1")
    );
    assert_eq!(
        s.fake
            .file(Path::new("/etc/systemd/system/baton-echo.service")),
        None
    );
    let calls = s.fake.calls();
    assert!(
        !calls.contains(&Call::Install("/usr/local/sbin/baton-echo".into())),
        "{calls:?}"
    );
    assert!(
        !calls.contains(&Call::Restart("baton-echo.service".into())),
        "{calls:?}"
    );
    s.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_is_installed_only_when_desired_allows_it() {
    let s = setup("echo-v2").await;
    let status = install(&s).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    stage(
        &s.config.state_dir.join("bundles/1.0.0"),
        "1.0.0",
        "echo-v1",
    );
    let before = installs(&s);
    let pinned = format!("127.0.0.1:5000/baton/bundle@{}", digest());

    put_desired(&s, &desired("u-down", "1.0.0", &pinned)).await;
    let settled = [HostState::Done, HostState::Failed, HostState::RolledBack];
    let status = wait_state_of(&s, "u-down", &settled).await;
    assert_eq!(status.state, HostState::Failed, "{status:?}");
    for want in ["downgrade from 2.0.0 to 1.0.0", "allow_downgrade"] {
        assert!(status.message.contains(want), "{want:?} not in {status:?}");
    }
    assert_eq!(installs(&s), before, "{:?}", s.fake.calls());

    let mut allowed = desired("u-down-allowed", "1.0.0", &pinned);
    allowed.allow_downgrade = true;
    put_desired(&s, &allowed).await;
    let status = wait_state_of(&s, "u-down-allowed", &settled).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    assert_eq!(
        s.fake
            .file(Path::new("/usr/local/sbin/baton-echo"))
            .as_deref(),
        Some("echo-v1")
    );
    s.task.abort();
}
