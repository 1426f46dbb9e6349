//! The orchestrator upgrades itself, on the simulated fleet with real etcd, registry, Docker
//! and agents. The orchestrator under test runs in-process (this build's version); bundle
//! 2.0.0 carries an orchestrator image built as 2.0.0 (`images/orchestrator`), pushed to the
//! registry.
//!
//! 1. A bundle whose orchestrator image exits at once: the new version never campaigns, the
//!    old leader stops it and the upgrade fails saying why; no host was touched and the old
//!    orchestrator still leads.
//! 2. The real one: the leader starts it, hands leadership over and exits; the new version
//!    (in its container, serving the same address) continues the same upgrade record to
//!    `Succeeded`, every host ends on 2.0.0, and `/healthz` reports 2.0.0.
//!
//! Needs `make static bundle-agents bundle-orchestrators` (which `make test` runs first).

use std::time::{Duration, Instant};

use crate::support::{SimFleet, keys_under};
use baton_protocol::api::UpgradeInfo;
use baton_protocol::{HostState, UpgradePhase};
use baton_tests::bundles::{
    RemoveImages, binaries, build_bundle, build_orchestrator_image, orchestrator_binary,
    prepare_source, set_orchestrator_image,
};
use baton_tests::docker;
use batonctl::client::ApiClient;
use serde_json::json;

/// Longest the upgrade of the fleet may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(600);

/// Polls `GET /v1/upgrades/{id}` until it ends, riding out the moment the API's address
/// passes from one process to the other.
async fn ended(api: &ApiClient, id: &str) -> UpgradeInfo {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match api.upgrade(id).await {
            Ok(u) if u.upgrade.phase.is_terminal() => return u,
            Ok(u) => {
                let now = format!("{:?} {:?}", u.upgrade.phase, u.counts);
                if now != last {
                    eprintln!("[{:>6.1}s] {id}: {now}", started.elapsed().as_secs_f64());
                    last = now;
                }
            }
            Err(e) => eprintln!("[{:>6.1}s] {id}: {e}", started.elapsed().as_secs_f64()),
        }
        assert!(
            started.elapsed() < UPGRADE_TIMEOUT,
            "upgrade {id} not over after {UPGRADE_TIMEOUT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The containers of this run started for `upgrade`'s self-update: (name, running).
fn successor_containers(run: &str, upgrade: &str) -> Vec<(String, bool)> {
    let out = docker::run_blocking(&[
        "ps",
        "--all",
        "--filter",
        &format!("label=baton.run={run}"),
        "--filter",
        "label=io.baton.purpose=orchestrator",
        "--filter",
        &format!("label=io.baton.upgrade={upgrade}"),
        "--format",
        "{{.Names}} {{.State}}",
    ])
    .expect("docker ps");
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, state)| (name.to_owned(), state == "running"))
        .collect()
}

#[tokio::test]
async fn the_orchestrator_upgrades_itself_and_continues_the_same_upgrade() {
    let bins = binaries();
    let new_orchestrator = orchestrator_binary("2.0.0");
    assert_ne!(
        baton_orchestrator::VERSION,
        "2.0.0",
        "the test's orchestrator must run another version than the bundle's"
    );
    let started = Instant::now();
    let sim = SimFleet::start(2).await;
    let (registry, fleet, etcd) = (&sim.registry, &sim.fleet, &sim.etcd);
    let client = etcd.client().await.expect("client");
    let run = fleet.run_id().to_owned();
    eprintln!(
        "TIMING fleet of 2, etcd and registry up in {:?}",
        started.elapsed()
    );

    // The orchestrator image, 2.0.0, and one that exits at once (a flag it does not know).
    let mut images = RemoveImages(Vec::new());
    let local = format!("baton-test-orchestrator-{run}:2.0.0");
    build_orchestrator_image(&new_orchestrator, &local)
        .await
        .expect("orchestrator image");
    images.0.push(local.clone());
    // Bundles name the orchestrator image by digest.
    let good_image = registry
        .push(&local, "baton/orchestrator", "2.0.0")
        .await
        .expect("push orchestrator");
    images.0.push(good_image.clone());
    images.0.push(format!(
        "{}:2.0.0",
        registry.reference("baton/orchestrator")
    ));
    let broken_ctx = tempfile::tempdir().expect("tmp");
    std::fs::write(
        broken_ctx.path().join("Dockerfile"),
        format!("FROM {local}\nENTRYPOINT [\"/baton-orchestrator\", \"--no-such-flag\"]\n"),
    )
    .expect("Dockerfile");
    let broken_local = format!("baton-test-orchestrator-{run}:broken");
    docker::run_blocking(&[
        "build",
        "--quiet",
        "--tag",
        &broken_local,
        &broken_ctx.path().display().to_string(),
    ])
    .expect("build the broken orchestrator image");
    images.0.push(broken_local.clone());
    let broken_image = registry
        .push(&broken_local, "baton/orchestrator", "broken")
        .await
        .expect("push broken");
    images.0.push(broken_image.clone());
    images.0.push(format!(
        "{}:broken",
        registry.reference("baton/orchestrator")
    ));

    // Bundle 2.0.0 twice: carrying the broken image, and the real one.
    let sources = tempfile::tempdir().expect("tmp");
    let dir = sources.path().join("2.0.0");
    prepare_source("2.0.0", &dir).await;
    let mut bundles = Vec::new();
    for (tag, orchestrator_image) in [("2.0.0-broken", &broken_image), ("2.0.0", &good_image)] {
        set_orchestrator_image(&dir, orchestrator_image).expect("manifest template");
        let reference = format!("{}:{tag}", registry.reference("baton/bundle"));
        build_bundle("2.0.0", &dir, &reference, &bins.agents[1], &bins.downloader).await;
        images.0.push(reference.clone());
        bundles.push(reference);
    }

    let mut cfg = sim.config("orch-old");
    cfg.self_update_timeout = Duration::from_secs(60);
    let orch = sim.leader(cfg).await;
    let api = orch.api.clone();
    let rolling = json!({"kind": "rolling", "batch": {"count": 1}});

    // --- 1. The new version never campaigns: the upgrade fails, nothing else changes.
    let t1 = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-broken", "image": bundles[0], "strategy": rolling}),
    )
    .await
    .expect("start u-broken");
    let broken = ended(&api, "u-broken").await;
    eprintln!("TIMING failed self-update noticed in {:?}", t1.elapsed());
    assert_eq!(broken.upgrade.phase, UpgradePhase::Failed);
    let reason = broken.upgrade.reason.clone().unwrap_or_default();
    for part in [
        "orchestrator self-update to 2.0.0",
        "exit code 2",
        "--no-such-flag",
        "still leads and no host was touched",
    ] {
        assert!(
            reason.contains(part),
            "{part:?} not in the reason: {reason}"
        );
    }
    let health: serde_json::Value = api.get("/healthz").await.expect("healthz");
    assert_eq!(health["version"], baton_orchestrator::VERSION, "{health}");
    assert_eq!(health["role"], "leader", "{health}");
    for host in fleet.hosts() {
        let prefix = format!("/baton/hosts/{}/", host.name());
        assert_eq!(
            keys_under(&client, &prefix).await,
            [format!("{prefix}spec")],
            "{}: no downloader job ran and nothing was dispatched",
            host.name()
        );
    }
    let stopped = successor_containers(&run, "u-broken");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(!stopped[0].1, "the broken version is stopped: {stopped:?}");

    // --- 2. The real new version: hand-over, then the same upgrade on to the end.
    let t2 = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-self", "image": bundles[1], "strategy": rolling}),
    )
    .await
    .expect("start u-self");
    orch.wait_exit(Duration::from_secs(120)).await;
    eprintln!(
        "TIMING the old orchestrator handed over and exited {:?} after the request",
        t2.elapsed()
    );
    let done = ended(&api, "u-self").await;
    eprintln!("TIMING u-self (self-update included) in {:?}", t2.elapsed());
    assert_eq!(
        done.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        done.upgrade.reason,
        done.upgrade.hosts
    );
    let running = successor_containers(&run, "u-self");
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(running[0].1, "the new version runs: {running:?}");
    let handover = done.upgrade.orchestrator.clone().expect("orchestrator");
    assert_eq!(handover.image, good_image);
    assert_eq!(handover.container.as_deref(), Some(running[0].0.as_str()));
    assert!(handover.handed_over_at.is_some());

    // The same address now answers from the new version, which leads.
    let health: serde_json::Value = api.get("/healthz").await.expect("healthz");
    assert_eq!(health["version"], "2.0.0", "{health}");
    assert_eq!(health["role"], "leader", "{health}");
    assert_eq!(health["replica"], running[0].0.as_str(), "{health}");

    // One continuous record: its events number on without a gap, the old version's first.
    let events = api.events("u-self").await.expect("events");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    let handed = kinds
        .iter()
        .position(|k| *k == "orchestrator-handover")
        .unwrap_or_else(|| panic!("no hand-over event: {kinds:?}"));
    assert_eq!(kinds[0], "created");
    assert!(
        events[handed + 1..]
            .iter()
            .any(|e| e.event.message.contains("Pending -> Downloading")),
        "the new version continued from Pending: {kinds:?}"
    );
    assert_eq!(
        api.upgrades()
            .await
            .expect("upgrades")
            .iter()
            .map(|u| u.upgrade.id.to_string())
            .collect::<Vec<_>>(),
        ["u-broken", "u-self"]
    );

    // Every host on 2.0.0.
    for host in fleet.hosts() {
        let info = api.host(host.name()).await.expect("host");
        let installed = info.installed.expect("installed");
        assert_eq!(installed.bundle_version.as_deref(), Some("2.0.0"));
        assert_eq!(installed.agent_version, "2.0.0");
        assert_eq!(info.status.expect("status").state, HostState::Done);
    }
    assert!(keys_under(&client, "/baton/active").await.is_empty());
    drop(images);
    // Removes the new orchestrator's container too (it carries the run's label).
    sim.fleet.destroy().expect("fleet cleanup");
}
