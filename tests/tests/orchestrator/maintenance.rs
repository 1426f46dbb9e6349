//! What the leader does by itself, against a real etcd and the real Docker Engine, with
//! stand-in agents (as in `orchestrator_engine.rs`): each "host" is a folder (its
//! `path_map`) and a task playing the agent's part in etcd — `alive` bound to a lease,
//! `status` `Updating` → `Done` for every new `desired` (install, restart or replace),
//! `installed` after an install or replace. The downloader job is a real container run
//! through the Docker Engine API from a small bundle image; it appends its flags to the
//! host's `job-log`, and a stand-in agent that was killed comes back only when the job
//! runs again (as the real job restarts the real agent).
//!
//! Covered: a host registered after an upgrade joins it by itself (without holding
//! `active`); maintenance `restart` (with and without `reboot`) on a host
//! and `replace` on a group carried out and cleared, a restart's resume event; a dead agent healed within the grace period, and not healed
//! while its host is `autohealing-off`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Orchestrator, RemoveImages, push_job_bundle};
use baton_orchestrator::config::Config;
use baton_protocol::api::{EventInfo, UpgradeInfo};
use baton_protocol::api::{RegisterHost, SetMaintenance};
use baton_protocol::documents::{
    self, Alive, Desired, DesiredAction, HostOutcomeState, HostStatus, Installed, Maintenance,
    MaintenanceMode, SCHEMA_VERSION, TaskKind, Upgrade,
};
use baton_protocol::etcd::{self, Client, KeptLease};
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId, UpgradePhase};
use baton_tests::docker;
use baton_tests::etcd::EtcdServer;
use baton_tests::registry::Registry;
use batonctl::client::ApiClient;
use serde_json::json;

const BUNDLE_VERSION: &str = "9.0.0";
/// The leader's autohealing grace period in these tests.
const GRACE: Duration = Duration::from_secs(2);

/// The downloader job of the test bundle: appends its flags to the host's job log and prints
/// a summary line.
const JOB_SCRIPT: &str = r#"
B=/busybox
$B mkdir -p /host/var/lib/baton
echo "$@" >> /host/var/lib/baton/job-log
echo '{"schema_version":1,"version":"9.0.0","files":2,"bytes":6,"bundle":"staged","agent":{"version":"9.0.0","action":"restarted","previous":"1.0.0"},"config":"written","unit":"unchanged","changed":true}'
"#;

async fn push_bundle(registry: &Registry, images: &mut RemoveImages) -> String {
    push_job_bundle(registry, "maint-bundle", BUNDLE_VERSION, JOB_SCRIPT, images).await
}

fn job_runs(root: &std::path::Path) -> usize {
    std::fs::read_to_string(root.join("var/lib/baton/job-log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A stand-in agent; see the module doc. `kill` set: it dies (its lease is revoked) and
/// comes back once the downloader job ran again.
async fn agent(client: Client, host: HostId, root: PathBuf, kill: Arc<AtomicBool>) {
    let ks = Keyspace::default();
    let alive_key = ks.host(&host, HostKey::Alive);
    let alive = |version: &str| Alive {
        schema_version: SCHEMA_VERSION,
        agent_version: version.to_owned(),
        boot_id: "boot-1".into(),
        pid: 1,
        since: documents::now(),
    };
    let mut lease = Some(KeptLease::grant(&client, 2).await.expect("lease"));
    let mut runs = job_runs(&root);
    let mut version = if runs > 0 { BUNDLE_VERSION } else { "1.0.0" };
    etcd::put_leased(
        &client,
        &alive_key,
        &alive(version),
        lease.as_ref().unwrap().id(),
    )
    .await
    .expect("alive");
    let mut handled: Option<UpgradeId> = None;
    loop {
        if kill.swap(false, Ordering::SeqCst)
            && let Some(l) = lease.take()
        {
            l.revoke().await.expect("revoke");
            runs = job_runs(&root);
        }
        let now_runs = job_runs(&root);
        if now_runs > runs {
            // The job (re)started the agent on the bundle's version.
            runs = now_runs;
            version = BUNDLE_VERSION;
            let l = match lease.take() {
                Some(l) => l,
                None => KeptLease::grant(&client, 2).await.expect("lease"),
            };
            etcd::put_leased(&client, &alive_key, &alive(version), l.id())
                .await
                .expect("alive");
            lease = Some(l);
        }
        if lease.is_some() {
            let desired = etcd::read::<Desired>(&client, &ks.host(&host, HostKey::Desired))
                .await
                .expect("read desired");
            if let Some(d) = desired.map(|d| d.value)
                && handled.as_ref() != Some(&d.upgrade_id)
            {
                handled = Some(d.upgrade_id.clone());
                let status = |state: HostState| HostStatus {
                    schema_version: SCHEMA_VERSION,
                    upgrade_id: Some(d.upgrade_id.clone()),
                    state,
                    step: None,
                    message: String::new(),
                    started_at: None,
                    updated_at: documents::now(),
                    health: None,
                };
                let put = |key: String, bytes: Vec<u8>| {
                    let client = client.clone();
                    async move { client.kv_client().put(key, bytes, None).await.expect("put") }
                };
                let status_key = ks.host(&host, HostKey::Status);
                put(
                    status_key.clone(),
                    documents::encode(&status(HostState::Updating)),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                if !matches!(d.action, DesiredAction::Restart | DesiredAction::Reboot) {
                    let installed = Installed {
                        schema_version: SCHEMA_VERSION,
                        bundle_version: Some(d.version.clone()),
                        agent_version: version.to_owned(),
                        kernel: None,
                        components: Default::default(),
                        updated_at: documents::now(),
                    };
                    put(
                        ks.host(&host, HostKey::Installed),
                        documents::encode(&installed),
                    )
                    .await;
                }
                put(status_key, documents::encode(&status(HostState::Done))).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct World {
    etcd: EtcdServer,
    client: Client,
    run: String,
    bundle: String,
    hosts_dir: tempfile::TempDir,
    kills: std::collections::BTreeMap<String, Arc<AtomicBool>>,
    agents: Vec<tokio::task::JoinHandle<()>>,
    _registry: Registry,
    _images: RemoveImages,
}

impl World {
    async fn new() -> World {
        if let Err(e) = docker::ensure_available().await {
            panic!("this test needs a working Docker Engine: {e}");
        }
        let etcd = EtcdServer::start().await.expect("etcd");
        let client = etcd.client().await.expect("client");
        let registry = Registry::start().await.expect("registry");
        let mut images = RemoveImages(Vec::new());
        let bundle = push_bundle(&registry, &mut images).await;
        let hosts_dir = tempfile::tempdir().expect("temp dir");
        let run = hosts_dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        World {
            etcd,
            client,
            run,
            bundle,
            hosts_dir,
            kills: Default::default(),
            agents: Vec::new(),
            _registry: registry,
            _images: images,
        }
    }

    fn config(&self) -> Config {
        let mut c = crate::support::config(&self.etcd, "orch-a");
        c.download_attempts = 1;
        c.health_timeout = Duration::from_secs(5);
        c.agent_timeout = Duration::from_secs(30);
        c.heal_grace = GRACE;
        c.job_labels = vec![("baton.test.run".into(), self.run.clone())];
        c
    }

    fn root(&self, host: &str) -> PathBuf {
        self.hosts_dir.path().join(host)
    }

    /// Registers `host` (group `edge`) and starts its stand-in agent.
    async fn host(&mut self, api: &ApiClient, host: &str) {
        let root = self.root(host);
        std::fs::create_dir_all(root.join("var/lib/baton")).expect("mkdir");
        api.register(&RegisterHost {
            id: host.to_owned(),
            labels: [("group".to_owned(), "edge".to_owned())].into(),
            docker: "unix:///var/run/docker.sock".into(),
            path_map: [(
                "/var/lib/baton".to_owned(),
                root.join("var/lib/baton").display().to_string(),
            )]
            .into(),
            ..Default::default()
        })
        .await
        .expect("register");
        let kill = Arc::new(AtomicBool::new(false));
        self.kills.insert(host.to_owned(), kill.clone());
        self.agents.push(tokio::spawn(agent(
            self.client.clone(),
            HostId::new(host).unwrap(),
            root,
            kill,
        )));
    }

    fn kill(&self, host: &str) {
        self.kills[host].store(true, Ordering::SeqCst);
    }

    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for record `id` to exist and end; returns it.
    async fn ended(&self, api: &ApiClient, id: &str) -> Upgrade {
        self.wait(
            &format!("{id} to end"),
            Duration::from_secs(60),
            async || {
                let u = api.upgrade(id).await.ok()?.upgrade;
                u.phase.is_terminal().then_some(u)
            },
        )
        .await
    }

    /// Sets `host`'s own mode with `req`, waits for the task record `id` to succeed and for
    /// the mode to be cleared; returns the record as first seen and the record's events.
    async fn carry_out(
        &self,
        api: &ApiClient,
        host: &str,
        req: &SetMaintenance,
        id: &str,
    ) -> (Upgrade, Vec<EventInfo>) {
        api.host_maintenance(host, req)
            .await
            .expect("set maintenance");
        let first = self
            .wait(id, Duration::from_secs(10), async || {
                api.upgrade(id).await.ok()
            })
            .await;
        let u = self.ended(api, id).await;
        assert_eq!(u.phase, UpgradePhase::Succeeded, "{id}: {:?}", u.reason);
        self.wait(
            &format!("{host}'s mode cleared"),
            Duration::from_secs(5),
            async || (self.maintenance(api, host).await.0 == MaintenanceMode::None).then_some(()),
        )
        .await;
        (first.upgrade, api.events(id).await.expect("events"))
    }

    async fn desired(&self, host: &str) -> Desired {
        let key = Keyspace::default().host(&HostId::new(host).unwrap(), HostKey::Desired);
        etcd::read::<Desired>(&self.client, &key)
            .await
            .expect("read")
            .expect("desired")
            .value
    }

    async fn maintenance(&self, api: &ApiClient, host: &str) -> (MaintenanceMode, MaintenanceMode) {
        let info = api.host(host).await.expect("host");
        let own = info.maintenance.map_or(MaintenanceMode::None, |m| m.mode);
        (own, info.effective_maintenance)
    }

    async fn task_ids(&self, api: &ApiClient, kind: TaskKind) -> Vec<String> {
        api.upgrades()
            .await
            .expect("upgrades")
            .into_iter()
            .filter(|u| u.upgrade.task.as_ref().is_some_and(|t| t.kind == kind))
            .map(|u| u.upgrade.id.to_string())
            .collect()
    }

    /// Upgrades every registered host to the test bundle.
    async fn upgrade_all(&self, api: &ApiClient) {
        let id = format!("u-{}", self.run);
        api.post::<_, UpgradeInfo>(
            "/v1/upgrades",
            &json!({"id": id, "image": self.bundle, "strategy": {"kind": "rolling", "batch": {"count": 1}}}),
        )
        .await
        .expect("start");
        let u = self.ended(api, &id).await;
        assert_eq!(u.phase, UpgradePhase::Succeeded, "{:?}", u.reason);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for a in &self.agents {
            a.abort();
        }
        if let Ok(ids) = docker::run_blocking(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=baton.test.run={}", self.run),
        ]) {
            for id in ids.lines() {
                let _ = docker::run_blocking(&["rm", "-f", id]);
            }
        }
    }
}

/// Whether a task's events hold its resume event (its `host-succeeded`) starting `with`.
fn resumed(events: &[EventInfo], with: &str) -> bool {
    events
        .iter()
        .any(|e| e.event.kind == "host-succeeded" && e.event.message.starts_with(with))
}

fn set(mode: MaintenanceMode) -> SetMaintenance {
    SetMaintenance {
        mode,
        reason: "test".into(),
        reboot: false,
    }
}

#[tokio::test]
async fn a_late_joiner_catches_up_and_restart_and_replace_clear_themselves() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config()).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    w.host(&api, "h1").await;
    w.host(&api, "h2").await;
    let started = Instant::now();
    w.upgrade_all(&api).await;
    eprintln!("TIMING upgrade of 2 hosts in {:?}", started.elapsed());

    // A host registered afterwards is brought to 9.0.0 without a request.
    let registered = Instant::now();
    w.host(&api, "h3").await;
    let join = w
        .wait("a join record", Duration::from_secs(10), async || {
            w.task_ids(&api, TaskKind::Join).await.into_iter().next()
        })
        .await;
    assert_eq!(join, "join-h3-1");
    // It does not hold `active`: an operator's upgrade would not be refused because of it.
    let info = api.upgrade(&join).await.expect("the join");
    assert!(!info.active, "a join holds active: {info:?}");
    assert!(
        etcd::read::<documents::Active>(&w.client, &Keyspace::default().active())
            .await
            .expect("read active")
            .is_none(),
        "a join wrote the active key"
    );
    let joined = w.ended(&api, &join).await;
    eprintln!(
        "TIMING late joiner on 9.0.0 {:?} after registering",
        registered.elapsed()
    );
    assert_eq!(joined.phase, UpgradePhase::Succeeded, "{:?}", joined.reason);
    assert_eq!(job_runs(&w.root("h3")), 1);
    let d = w.desired("h3").await;
    assert_eq!(
        (d.upgrade_id.as_str(), d.action),
        ("join-h3-1", DesiredAction::Install)
    );
    let events = api.events(&join).await.expect("events");
    assert!(
        events[0]
            .event
            .message
            .contains("h3 was not selected by upgrade u-"),
        "{:?}",
        events[0]
    );
    assert!(events.iter().any(|e| e.event.kind == "host-succeeded"));
    // Nothing else is started for anyone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.task_ids(&api, TaskKind::Join).await, ["join-h3-1"]);

    // `restart` on a host: desired restart, Done, mode cleared, resume event.
    let asked = Instant::now();
    let (restarted, events) = w
        .carry_out(&api, "h1", &set(MaintenanceMode::Restart), "restart-h1-1")
        .await;
    eprintln!(
        "TIMING restart done and cleared {:?} after it was set",
        asked.elapsed()
    );
    assert!(restarted.task.is_some_and(|t| !t.reboot));
    assert_eq!(w.desired("h1").await.action, DesiredAction::Restart);
    assert_eq!(
        job_runs(&w.root("h1")),
        1,
        "a restart runs no downloader job"
    );
    assert!(
        events.iter().any(|e| e.event.kind == "maintenance-cleared"),
        "{events:?}"
    );
    assert!(
        resumed(
            &events,
            "h1 resumed after its managed services were restarted"
        ),
        "no resume event: {events:?}"
    );

    // `restart` with `reboot` on a host: desired reboot, Done, mode cleared, resume event.
    let reboot = SetMaintenance {
        reboot: true,
        ..set(MaintenanceMode::Restart)
    };
    let (rebooted, events) = w.carry_out(&api, "h2", &reboot, "restart-h2-1").await;
    assert!(rebooted.task.is_some_and(|t| t.reboot));
    assert_eq!(w.desired("h2").await.action, DesiredAction::Reboot);
    assert!(
        events[0].event.message.contains("rebooting h2"),
        "{:?}",
        events[0]
    );
    assert!(
        resumed(&events, "h2 resumed after the reboot"),
        "no resume event: {events:?}"
    );

    // `replace` on the group: every host, one at a time, then the group's mode clears.
    let asked = Instant::now();
    let _: Maintenance = api
        .put(
            "/v1/groups/edge/maintenance",
            &set(MaintenanceMode::Replace),
        )
        .await
        .expect("set group replace");
    for h in ["h1", "h2", "h3"] {
        let id = format!("replace-{h}-1");
        w.wait(&id, Duration::from_secs(30), async || {
            api.upgrade(&id).await.ok()
        })
        .await;
        let u = w.ended(&api, &id).await;
        assert_eq!(u.phase, UpgradePhase::Succeeded, "{id}: {:?}", u.reason);
        assert_eq!(
            u.hosts.values().next().unwrap().state,
            HostOutcomeState::Succeeded
        );
        let d = w.desired(h).await;
        assert_eq!(
            (d.upgrade_id.as_str(), d.action),
            (id.as_str(), DesiredAction::Replace)
        );
        assert_eq!(job_runs(&w.root(h)), 2, "{h}: the job ran again");
    }
    let group: serde_json::Value = w
        .wait(
            "the group's mode cleared",
            Duration::from_secs(5),
            async || {
                let v = etcd::read::<Maintenance>(&w.client, "/baton/groups/edge/maintenance")
                    .await
                    .ok()??;
                (v.value.mode == MaintenanceMode::None).then(|| json!(v.value))
            },
        )
        .await;
    eprintln!(
        "TIMING group replace of 3 hosts done and cleared {:?} after it was set",
        asked.elapsed()
    );
    assert!(
        group["reason"].as_str().unwrap().contains("replace-"),
        "{group}"
    );
    // One at a time: each replace started after the previous ended.
    let mut spans = Vec::new();
    for h in ["h1", "h2", "h3"] {
        let u = api
            .upgrade(&format!("replace-{h}-1"))
            .await
            .unwrap()
            .upgrade;
        spans.push((u.created_at, u.updated_at));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlapping replaces: {pair:?}");
    }
    orch.stop().await;
}

#[tokio::test]
async fn a_dead_agent_is_healed_unless_autohealing_is_off() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config()).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    w.host(&api, "h1").await;
    w.host(&api, "h2").await;
    w.upgrade_all(&api).await;
    api.host_maintenance("h2", &set(MaintenanceMode::AutohealingOff))
        .await
        .expect("autohealing-off");

    let killed = Instant::now();
    w.kill("h1");
    w.kill("h2");
    let heal = w
        .wait("heal-h1-1", Duration::from_secs(20), async || {
            api.upgrade("heal-h1-1").await.ok()
        })
        .await;
    let noticed = killed.elapsed();
    assert!(
        noticed >= GRACE,
        "healed after {noticed:?}, before the grace period"
    );
    let u = w.ended(&api, &heal.upgrade.id.to_string()).await;
    assert_eq!(u.phase, UpgradePhase::Succeeded, "{:?}", u.reason);
    eprintln!(
        "TIMING heal started {noticed:?} after the kill (grace {GRACE:?}), agent back {:?} after",
        killed.elapsed()
    );
    assert_eq!(
        job_runs(&w.root("h1")),
        2,
        "the downloader job ran again on h1"
    );
    let info = api.host("h1").await.expect("h1");
    assert_eq!(
        info.alive.map(|a| a.agent_version).as_deref(),
        Some(BUNDLE_VERSION)
    );
    let events = api.events("heal-h1-1").await.expect("events");
    assert!(
        events[0].event.message.contains("agent of h1 gone for"),
        "{events:?}"
    );
    // Nothing was installed: a heal only revives the agent.
    assert_ne!(w.desired("h1").await.upgrade_id.as_str(), "heal-h1-1");

    // h2 (autohealing-off) stays dead well past the grace period.
    tokio::time::sleep(GRACE * 3).await;
    assert!(w.task_ids(&api, TaskKind::Heal).await == ["heal-h1-1"]);
    assert!(api.host("h2").await.unwrap().alive.is_none());
    assert_eq!(job_runs(&w.root("h2")), 1);

    // Autohealing back on: healed.
    api.host_maintenance("h2", &set(MaintenanceMode::None))
        .await
        .expect("none");
    let u = w.ended(&api, "heal-h2-1").await;
    assert_eq!(u.phase, UpgradePhase::Succeeded, "{:?}", u.reason);
    assert!(api.host("h2").await.unwrap().alive.is_some());
    orch.stop().await;
}
