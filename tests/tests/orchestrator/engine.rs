//! The upgrade engine against a real etcd and the real Docker Engine, with stand-in agents:
//! each "host" is a folder (its `path_map`) and a task that plays the agent's part in etcd —
//! `alive` bound to a lease, reporting the bundle's agent version once the downloader job
//! has run on the host, and `status` moving `Updating` → `Done` (or `RolledBack`, or the
//! agent vanishing) when `desired` names a new upgrade. The downloader job is a real
//! container run through the Docker Engine API from a small bundle image (a static busybox
//! script that records its settings in the host's folder and prints a summary line).
//!
//! Covered: rolling with a canary and a pause for approval, zones and batches, a tolerated
//! failure, prompt progress on `Done`; a leader killed mid-upgrade and a successor that
//! continues without dispatching any host twice; a host that vanishes mid-update holding
//! its slot until the health timeout fails the upgrade; a failing download stopping an
//! all-at-once upgrade before any host is touched. The real agent on simulated hosts is
//! covered by `orchestrator_fleet.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Orchestrator, RemoveImages, keys_under, push_job_bundle};
use baton_orchestrator::config::Config;
use baton_protocol::api::Command;
use baton_protocol::api::RegisterHost;
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{
    self, Alive, Desired, HostOutcomeState, HostStatus, SCHEMA_VERSION, Upgrade,
};
use baton_protocol::etcd::{self, Client, KeptLease};
use baton_protocol::job::JobSettings;
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId, UpgradePhase};
use baton_tests::docker;
use baton_tests::etcd::EtcdServer;
use baton_tests::registry::Registry;
use batonctl::client::ApiClient;
use serde_json::json;

const BUNDLE_VERSION: &str = "9.0.0";

async fn require_docker() {
    if let Err(e) = docker::ensure_available().await {
        panic!("this test needs a working Docker Engine: {e}");
    }
}

/// The downloader job of the test bundle: records its settings, fails if the host holds a
/// `fail-download` file, else prints a summary line.
const JOB_SCRIPT: &str = r#"
B=/busybox
$B mkdir -p /host/var/lib/baton
echo "$BATON_JOB_SETTINGS" > /host/var/lib/baton/job-args
if [ -e /host/var/lib/baton/fail-download ]; then
    echo "baton-downloader: error: /bundle/manifest.json: this host was told to fail" >&2
    exit 1
fi
echo "staging bundle" >&2
echo '{"schema_version":1,"version":"9.0.0","files":2,"bytes":6,"bundle":"staged","agent":{"version":"9.0.0","action":"restarted","previous":"1.0.0"},"config":"written","unit":"unchanged","changed":true}'
"#;

/// Builds and pushes the test bundle; returns its tag reference.
async fn push_bundle(registry: &Registry, images: &mut RemoveImages) -> String {
    push_job_bundle(
        registry,
        "engine-bundle",
        BUNDLE_VERSION,
        JOB_SCRIPT,
        images,
    )
    .await
}

/// How a stand-in agent behaves when told to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Succeed,
    RollBack,
    /// Its lease is revoked (the agent dies) and it never comes back.
    Vanish,
}

/// What the stand-in agents saw: (host, dispatched seen at, settled at).
type Log = Arc<Mutex<Vec<(String, Instant, Option<Instant>)>>>;

/// A stand-in agent; see the module doc.
async fn agent(
    client: Client,
    host: HostId,
    root: PathBuf,
    behaviour: Behaviour,
    work: Duration,
    log: Log,
) {
    let ks = Keyspace::default();
    let lease = KeptLease::grant(&client, 3).await.expect("lease");
    let alive = |version: &str| Alive {
        schema_version: SCHEMA_VERSION,
        agent_version: version.to_owned(),
        boot_id: "boot-1".into(),
        pid: 1,
        since: documents::now(),
    };
    let alive_key = ks.host(&host, HostKey::Alive);
    etcd::put_leased(&client, &alive_key, &alive("1.0.0"), lease.id())
        .await
        .expect("alive");
    let status_key = ks.host(&host, HostKey::Status);
    let status = |id: &UpgradeId, state: HostState, message: &str| HostStatus {
        schema_version: SCHEMA_VERSION,
        upgrade_id: Some(id.clone()),
        state,
        step: (state == HostState::Updating).then(|| "apply file baton-hello".to_owned()),
        message: message.to_owned(),
        started_at: None,
        updated_at: documents::now(),
        health: None,
    };
    let mut agent_updated = false;
    let mut handled: Option<UpgradeId> = None;
    loop {
        if !agent_updated && root.join("var/lib/baton/job-args").exists() {
            // The job restarted the agent on the bundle's version.
            etcd::put_leased(&client, &alive_key, &alive(BUNDLE_VERSION), lease.id())
                .await
                .expect("alive");
            agent_updated = true;
        }
        let desired = etcd::read::<Desired>(&client, &ks.host(&host, HostKey::Desired))
            .await
            .expect("read desired");
        // A daisy chain's host starts once the host it follows is done (as the agent does).
        let mut predecessor_done = true;
        if let Some(after) = desired.as_ref().and_then(|d| d.value.after.clone()) {
            let id = desired.as_ref().map(|d| d.value.upgrade_id.clone());
            predecessor_done = etcd::read::<HostStatus>(&client, &ks.host(&after, HostKey::Status))
                .await
                .expect("read status")
                .is_some_and(|s| s.value.upgrade_id == id && s.value.state == HostState::Done);
        }
        if let Some(d) = desired.map(|d| d.value)
            && predecessor_done
            && handled.as_ref() != Some(&d.upgrade_id)
        {
            handled = Some(d.upgrade_id.clone());
            let started = Instant::now();
            let put = |s: HostStatus| {
                let client = client.clone();
                let key = status_key.clone();
                async move {
                    client
                        .kv_client()
                        .put(key, documents::encode(&s), None)
                        .await
                        .expect("put status")
                }
            };
            if behaviour == Behaviour::Vanish {
                log.lock().unwrap().push((host.to_string(), started, None));
                put(status(&d.upgrade_id, HostState::Updating, "")).await;
                lease.revoke().await.expect("revoke");
                return;
            }
            put(status(&d.upgrade_id, HostState::Updating, "")).await;
            tokio::time::sleep(work).await;
            let done = match behaviour {
                Behaviour::RollBack => status(
                    &d.upgrade_id,
                    HostState::RolledBack,
                    "baton-hello check failed; rolled back",
                ),
                _ => status(&d.upgrade_id, HostState::Done, "on 9.0.0"),
            };
            // Settled before `Done` is visible: a chained host may start the moment it is.
            let settled = Instant::now();
            put(done).await;
            log.lock()
                .unwrap()
                .push((host.to_string(), started, Some(settled)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run: etcd, registry and bundle, hosts (folders + stand-in agents), an orchestrator.
struct World {
    etcd: EtcdServer,
    client: Client,
    run: String,
    bundle: String,
    hosts_dir: tempfile::TempDir,
    log: Log,
    agents: Vec<tokio::task::JoinHandle<()>>,
    _registry: Registry,
    _images: RemoveImages,
}

impl World {
    async fn new() -> World {
        require_docker().await;
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
            log: Arc::new(Mutex::new(Vec::new())),
            agents: Vec::new(),
            _registry: registry,
            _images: images,
        }
    }

    fn config(&self, replica: &str) -> Config {
        let mut c = crate::support::config(&self.etcd, replica);
        c.download_attempts = 2;
        c.health_timeout = Duration::from_secs(2);
        c.agent_timeout = Duration::from_secs(30);
        c.job_labels = vec![("baton.test.run".into(), self.run.clone())];
        c
    }

    fn root(&self, host: &str) -> PathBuf {
        self.hosts_dir.path().join(host)
    }

    /// Registers `host` (zone label) through `api` and starts its stand-in agent.
    async fn host(&mut self, api: &ApiClient, host: &str, zone: &str, behaviour: Behaviour) {
        let root = self.root(host);
        std::fs::create_dir_all(root.join("var/lib/baton")).expect("mkdir");
        api.register(&RegisterHost {
            id: host.to_owned(),
            labels: [
                ("zone".to_owned(), zone.to_owned()),
                ("group".to_owned(), "edge".to_owned()),
            ]
            .into(),
            docker: "unix:///var/run/docker.sock".into(),
            path_map: [(
                "/var/lib/baton".to_owned(),
                root.join("var/lib/baton").display().to_string(),
            )]
            .into(),
            boot_id_file: Some("/run/baton/boot-id".into()),
            ..Default::default()
        })
        .await
        .expect("register");
        self.agents.push(tokio::spawn(agent(
            self.client.clone(),
            HostId::new(host).unwrap(),
            root,
            behaviour,
            Duration::from_millis(400),
            self.log.clone(),
        )));
    }

    async fn upgrade(&self, api: &ApiClient, id: &str) -> Upgrade {
        api.upgrade(id).await.expect("show").upgrade
    }

    /// Waits until the upgrade reaches `phase`; returns it.
    async fn wait_phase(&self, api: &ApiClient, id: &str, phase: UpgradePhase) -> Upgrade {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let u = self.upgrade(api, id).await;
            if u.phase == phase {
                return u;
            }
            assert!(
                !u.phase.is_terminal() && Instant::now() < deadline,
                "upgrade {id} is {:?} ({:?}), expected {phase:?}; hosts {:?}",
                u.phase,
                u.reason,
                u.hosts
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many times each host's `desired` was written (etcd's per-key version).
    async fn desired_writes(&self) -> BTreeMap<String, i64> {
        let resp = self
            .client
            .kv_client()
            .get(
                "/baton/hosts/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("get");
        resp.kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let host = key.strip_suffix("/desired")?.rsplit('/').next()?.to_owned();
                Some((host, kv.version()))
            })
            .collect()
    }

    /// Every event of the upgrade as (host, kind, revision of the transaction that wrote it).
    async fn event_revisions(&self, id: &str) -> Vec<(String, String, i64)> {
        let resp = self
            .client
            .kv_client()
            .get(
                Keyspace::default().events_prefix(&UpgradeId::new(id).expect("upgrade id")),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("get events");
        resp.kvs()
            .iter()
            .map(|kv| {
                let event: documents::Event =
                    serde_json::from_slice(kv.value()).expect("event document");
                let host = event.host.map(|h| h.to_string()).unwrap_or_default();
                (host, event.kind.to_string(), kv.create_revision())
            })
            .collect()
    }

    async fn dispatch_events(&self, api: &ApiClient, id: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in api.events(id).await.expect("events") {
            if e.event.kind == "host-dispatched" {
                *out.entry(e.event.host.unwrap().to_string()).or_insert(0) += 1;
            }
        }
        out
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for a in &self.agents {
            a.abort();
        }
        // Job containers left by a failed run.
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

fn job_args(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/lib/baton/job-args")).unwrap_or_default()
}

#[tokio::test]
async fn rolling_upgrade_with_canary_pause_zones_and_a_tolerated_failure() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    for (h, zone, b) in [
        ("h1", "a", Behaviour::Succeed),
        ("h2", "a", Behaviour::Succeed),
        ("h3", "a", Behaviour::RollBack),
        ("h4", "b", Behaviour::Succeed),
        ("h5", "b", Behaviour::Succeed),
    ] {
        w.host(&api, h, zone, b).await;
    }
    let id = format!("u-{}", w.run);
    let started = Instant::now();
    let created: UpgradeInfo = api
        .post(
            "/v1/upgrades",
            &json!({"id": id, "image": w.bundle, "strategy": {"kind": "rolling", "batch": {"count": 2},
                    "canary": 1, "pause_after_canary": true, "zone_label": "zone", "max_failures": 1}}),
        )
        .await
        .expect("start");
    let plan: Vec<(String, u32)> = created
        .upgrade
        .hosts
        .iter()
        .map(|(h, o)| (h.to_string(), o.batch.unwrap()))
        .collect();
    assert_eq!(
        plan,
        [
            ("h1".to_owned(), 0),
            ("h2".to_owned(), 1),
            ("h3".to_owned(), 1),
            ("h4".to_owned(), 2),
            ("h5".to_owned(), 2)
        ]
    );

    // The canary goes first and alone, then the upgrade waits for approval.
    let paused = w.wait_phase(&api, &id, UpgradePhase::Paused).await;
    eprintln!(
        "TIMING download + agents + canary in {:?}",
        started.elapsed()
    );
    assert!(
        paused.reason.as_deref().unwrap().contains("canaries done"),
        "{:?}",
        paused.reason
    );
    assert_eq!(
        paused.hosts[&HostId::new("h1").unwrap()].state,
        HostOutcomeState::Succeeded
    );
    for h in ["h1", "h2", "h3", "h4", "h5"] {
        let text = job_args(&w.root(h));
        let settings = JobSettings::parse(text.trim()).expect("the job's settings");
        assert_eq!(settings.host_id.as_str(), h, "{text}");
        assert_eq!(settings.etcd_endpoints, [w.etcd.endpoint()], "{text}");
        assert_eq!(settings.prefix, "/baton", "{text}");
        assert_eq!(
            settings.boot_id_file,
            Path::new("/run/baton/boot-id"),
            "{text}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        w.desired_writes().await.keys().collect::<Vec<_>>(),
        ["h1"],
        "nothing else dispatched while paused"
    );
    // No job container is left behind.
    let left = docker::run(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=baton.test.run={}", w.run),
    ])
    .await
    .expect("docker ps");
    assert!(left.is_empty(), "job containers left: {left}");

    api.command(&id, Command::Resume, None)
        .await
        .expect("resume");
    let done = w.wait_phase(&api, &id, UpgradePhase::Succeeded).await;
    eprintln!(
        "TIMING whole rolling upgrade of 5 hosts in {:?}",
        started.elapsed()
    );
    let reason = done.reason.unwrap_or_default();
    assert!(
        reason.contains("tolerated 1 failed host(s): h3: RolledBack: baton-hello check failed"),
        "{reason}"
    );
    let states: Vec<(String, HostOutcomeState)> = done
        .hosts
        .iter()
        .map(|(h, o)| (h.to_string(), o.state))
        .collect();
    assert_eq!(
        states,
        [
            ("h1".to_owned(), HostOutcomeState::Succeeded),
            ("h2".to_owned(), HostOutcomeState::Succeeded),
            ("h3".to_owned(), HostOutcomeState::Failed),
            ("h4".to_owned(), HostOutcomeState::Succeeded),
            ("h5".to_owned(), HostOutcomeState::Succeeded)
        ]
    );
    assert!(keys_under(&w.client, "/baton/active").await.is_empty());

    // Every host was told once; batches never overlapped, spanned two zones or exceeded 2.
    let writes = w.desired_writes().await;
    assert!(writes.values().all(|v| *v == 1), "{writes:?}");
    assert_eq!(writes.len(), 5);
    assert!(w.dispatch_events(&api, &id).await.values().all(|n| *n == 1));
    let log = w.log.lock().unwrap().clone();
    let zone = |h: &str| if h == "h4" || h == "h5" { "b" } else { "a" };
    for (h, start, end) in &log {
        let end = end.unwrap();
        let overlapping: Vec<&String> = log
            .iter()
            .filter(|(_, s, e)| *s < end && e.unwrap() > *start)
            .map(|(o, _, _)| o)
            .collect();
        assert!(overlapping.len() <= 2, "{h} overlapped {overlapping:?}");
        assert!(
            overlapping.iter().all(|o| zone(o) == zone(h)),
            "{h} overlapped across zones: {overlapping:?}"
        );
    }
    // The next batch starts as soon as the last host of the previous one is done: h4 is
    // dispatched in the very transaction that records the outcome of the last of h2 and h3
    // (not on a later pass or tick).
    let revisions = w.event_revisions(&id).await;
    let at = |host: &str, kinds: &[&str]| -> Vec<i64> {
        revisions
            .iter()
            .filter(|(h, k, _)| h == host && kinds.contains(&k.as_str()))
            .map(|(_, _, r)| *r)
            .collect()
    };
    let outcomes = ["host-succeeded", "host-failed"];
    let last_done = at("h2", &outcomes)
        .into_iter()
        .chain(at("h3", &outcomes))
        .max()
        .expect("h2 and h3 have outcomes");
    assert_eq!(
        at("h4", &["host-dispatched"]),
        [last_done],
        "h4 dispatched with the previous batch's last outcome: {revisions:?}"
    );
    orch.stop().await;
}

#[tokio::test]
async fn daisy_chain_goes_host_by_host_each_told_the_next() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    for h in ["h1", "h2", "h3"] {
        w.host(&api, h, "a", Behaviour::Succeed).await;
    }
    let id = format!("u-{}", w.run);
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": id, "image": w.bundle, "strategy": {"kind": "daisy-chain"}}),
    )
    .await
    .expect("start");
    w.wait_phase(&api, &id, UpgradePhase::Succeeded).await;
    let mut after = Vec::new();
    for h in ["h1", "h2", "h3"] {
        let key = Keyspace::default().host(&HostId::new(h).unwrap(), HostKey::Desired);
        let d = etcd::read::<Desired>(&w.client, &key)
            .await
            .expect("read")
            .expect("desired");
        after.push(d.value.after.map(|n| n.to_string()));
    }
    assert_eq!(after, [None, Some("h1".to_owned()), Some("h2".to_owned())]);
    let mut log = w.log.lock().unwrap().clone();
    log.sort_by_key(|(_, s, _)| *s);
    let order: Vec<&str> = log.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(order, ["h1", "h2", "h3"]);
    for pair in log.windows(2) {
        assert!(pair[1].1 >= pair[0].2.unwrap(), "{pair:?} overlap");
    }
    orch.stop().await;
}

#[tokio::test]
async fn a_new_leader_continues_without_dispatching_any_host_twice() {
    let mut w = World::new().await;
    let a = Orchestrator::start(w.config("orch-a")).await;
    a.wait_role("leader", Duration::from_secs(20)).await;
    let b = Orchestrator::start(w.config("orch-b")).await;
    let api = a.api.clone();
    for h in ["h1", "h2", "h3", "h4"] {
        w.host(&api, h, "a", Behaviour::Succeed).await;
    }
    let id = format!("u-{}", w.run);
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": id, "image": w.bundle, "strategy": {"kind": "rolling", "batch": {"count": 1}}}),
    )
    .await
    .expect("start");
    // Kill the leader (no resignation: its lease has to expire) once h2 is dispatched.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w.desired_writes().await.contains_key("h2") {
        assert!(Instant::now() < deadline, "h2 never dispatched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Instant::now();
    drop(a);
    let took = b.wait_role("leader", Duration::from_secs(20)).await;
    eprintln!("TIMING successor elected {took:?} after the leader was killed (lease TTL 3 s)");
    let done = w.wait_phase(&b.api, &id, UpgradePhase::Succeeded).await;
    eprintln!(
        "TIMING upgrade finished {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        done.hosts
            .values()
            .all(|h| h.state == HostOutcomeState::Succeeded),
        "{:?}",
        done.hosts
    );
    let writes = w.desired_writes().await;
    assert_eq!(writes.len(), 4);
    assert!(
        writes.values().all(|v| *v == 1),
        "a host was dispatched twice: {writes:?}"
    );
    assert!(
        w.dispatch_events(&b.api, &id)
            .await
            .values()
            .all(|n| *n == 1)
    );
    b.stop().await;
}

#[tokio::test]
async fn a_vanished_host_holds_its_slot_then_fails_the_upgrade() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    w.host(&api, "h1", "a", Behaviour::Vanish).await;
    w.host(&api, "h2", "a", Behaviour::Succeed).await;
    let id = format!("u-{}", w.run);
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": id, "image": w.bundle, "strategy": {"kind": "rolling", "batch": {"count": 1}}}),
    )
    .await
    .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let u = w.upgrade(&api, &id).await;
        if u.phase.is_terminal() {
            assert_eq!(u.phase, UpgradePhase::Failed, "{:?}", u.reason);
            let reason = u.reason.unwrap_or_default();
            assert!(reason.contains("h1: agent not alive for"), "{reason}");
            assert!(reason.contains("while Updating"), "{reason}");
            assert_eq!(
                u.hosts[&HostId::new("h2").unwrap()].state,
                HostOutcomeState::Downloaded,
                "h2 was never dispatched"
            );
            break;
        }
        // While h1 is gone but within the health timeout, h2 waits.
        assert!(!w.desired_writes().await.contains_key("h2"));
        assert!(Instant::now() < deadline, "still {:?}", u.phase);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(keys_under(&w.client, "/baton/active").await.is_empty());
    orch.stop().await;
}

#[tokio::test]
async fn a_failed_download_stops_all_at_once_before_any_host_is_touched() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    for h in ["h1", "h2", "h3"] {
        w.host(&api, h, "a", Behaviour::Succeed).await;
    }
    std::fs::write(w.root("h2").join("var/lib/baton/fail-download"), "").expect("marker");
    let id = format!("u-{}", w.run);
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": id, "image": w.bundle, "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
    )
    .await
    .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let u = loop {
        let u = w.upgrade(&api, &id).await;
        if u.phase.is_terminal() {
            break u;
        }
        assert!(Instant::now() < deadline, "still {:?}", u.phase);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(u.phase, UpgradePhase::Failed);
    let reason = u.reason.unwrap_or_default();
    assert!(
        reason.contains("h2: downloader job: exit code 1: baton-downloader: error: /bundle/manifest.json: this host was told to fail (after 2 attempt(s))"),
        "{reason}"
    );
    assert!(
        w.desired_writes().await.is_empty(),
        "a host was told to install"
    );
    orch.stop().await;
}

#[tokio::test]
async fn max_failures_0_halts_at_the_first_rolled_back_host_and_touches_no_other() {
    let mut w = World::new().await;
    let orch = Orchestrator::start(w.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    // Every host would fail its health check: whichever goes first must be the only one.
    for h in ["h1", "h2", "h3"] {
        w.host(&api, h, "a", Behaviour::RollBack).await;
    }
    let id = format!("u-{}", w.run);
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": id, "image": w.bundle, "strategy": {"kind": "rolling", "batch": {"count": 1}, "max_failures": 0}}),
    )
    .await
    .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let u = loop {
        let u = w.upgrade(&api, &id).await;
        if u.phase.is_terminal() {
            break u;
        }
        assert!(Instant::now() < deadline, "still {:?}", u.phase);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(u.phase, UpgradePhase::Failed, "{:?}", u.reason);
    let told = w.desired_writes().await;
    assert_eq!(
        told.len(),
        1,
        "only the first host may be touched: {told:?}"
    );
    let first = told.keys().next().expect("one host").clone();
    let reason = u.reason.unwrap_or_default();
    assert!(reason.contains(&format!("{first}: RolledBack")), "{reason}");
    for (host, outcome) in &u.hosts {
        if host.as_str() == first {
            assert_eq!(outcome.state, HostOutcomeState::Failed, "{host}");
        } else {
            // Downloads run ahead of installs: another host's may or may not be done when
            // the first host fails; either way it was never told anything.
            assert!(
                matches!(
                    outcome.state,
                    HostOutcomeState::Pending | HostOutcomeState::Downloaded
                ),
                "{host} was touched: {:?}",
                outcome.state
            );
        }
    }
    assert!(keys_under(&w.client, "/baton/active").await.is_empty());
    orch.stop().await;
}
