//! End to end on the simulated fleet: four hosts (containers running systemd, two zones),
//! real etcd, a real registry, the real Docker Engine, the real downloader job and the
//! real agent — and the orchestrator, in-process, driven only through its REST API.
//!
//! 1. Fresh hosts (no agent) are upgraded to bundle 1.0.0 all at once: the orchestrator runs
//!    the downloader job on each host (which installs agent 1.0.0), waits for the agents,
//!    then has every host install 1.0.0 (kernel reboot included).
//! 2. Bundle 2.0.0, rolling: a canary, a pause for approval, then one host at a time, zone
//!    by zone; the agents update themselves to 2.0.0 before anything else changes.
//!
//! Afterwards every host runs 2.0.0 everywhere, was told once per upgrade, and the etcd
//! requests the upgrade cost are printed per host (docs/operations.md).
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{Orchestrator, SimFleet, keys_under, until};
use baton_protocol::api::Command;
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{HostOutcomeState, Upgrade, UpgradeHost};
use baton_protocol::etcd;
use baton_protocol::{HostState, Keyspace, UpgradeId, UpgradePhase};
use baton_tests::bundles::{RemoveImages, binaries, build_bundle, prepare_source};
use baton_tests::etcd::EtcdServer;
use baton_tests::registration::registration;
use baton_tests::simhost_image::BOOTED_KERNEL_PATH;
use batonctl::client::ApiClient;
use batonctl::display;
use serde_json::json;

/// Longest an upgrade of the fleet may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(600);

/// Range reads one poll of [`follow`] costs the API: the upgrade (its record and its hosts'
/// keys) and `active`, the hosts and the groups prefixes.
const READS_PER_POLL: u64 = 5;

/// Follows an upgrade (printing what `batonctl upgrade watch` prints) until it reaches
/// `until` or ends; returns it and how many times it polled.
async fn follow(api: &ApiClient, id: &str, until: UpgradePhase) -> (UpgradeInfo, u64) {
    let started = Instant::now();
    let mut seen = display::Watched::default();
    let mut polls = 0;
    loop {
        polls += 1;
        let u = api.upgrade(id).await.expect("show upgrade");
        let hosts = api.hosts().await.expect("hosts");
        let (lines, now) = display::watch_lines(&seen, &u, &hosts);
        for line in lines {
            eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64());
        }
        seen = now;
        if u.upgrade.phase == until || u.upgrade.phase.is_terminal() {
            return (u, polls);
        }
        assert!(
            started.elapsed() < UPGRADE_TIMEOUT,
            "upgrade {id} still {:?} after {UPGRADE_TIMEOUT:?}",
            u.upgrade.phase
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// etcd's own request counters (`grpc_server_handled_total` by method), from its metrics.
async fn etcd_requests(etcd: &EtcdServer) -> BTreeMap<String, f64> {
    let api = ApiClient::new(&etcd.metrics_endpoint()).expect("etcd url");
    let (_, body) = api
        .raw("GET".parse().unwrap(), "/metrics", None)
        .await
        .expect("etcd metrics");
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&body).lines() {
        let Some(rest) = line.strip_prefix("grpc_server_handled_total{") else {
            continue;
        };
        let method = rest
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("?")
            .to_owned();
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(method).or_insert(0.0) += value;
    }
    out
}

/// The engine's counters (`baton_engine_*`) from the orchestrator's metrics.
async fn engine_counters(api: &ApiClient) -> BTreeMap<String, u64> {
    let (_, body) = api
        .raw("GET".parse().unwrap(), "/metrics", None)
        .await
        .expect("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("baton_engine_"))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn fleet_is_upgraded_to_1_then_rolled_to_2_through_the_api() {
    let bins = binaries();
    let started = Instant::now();
    let sim = SimFleet::start(4).await;
    let (registry, fleet, etcd) = (&sim.registry, &sim.fleet, &sim.etcd);
    let client = etcd.client().await.expect("client");
    eprintln!(
        "TIMING fleet of 4, etcd and registry up in {:?}",
        started.elapsed()
    );

    let sources = tempfile::tempdir().expect("tmp");
    let mut images = RemoveImages(Vec::new());
    let mut tags = BTreeMap::new();
    for (i, version) in ["1.0.0", "2.0.0"].iter().enumerate() {
        let dir = sources.path().join(version);
        prepare_source(version, &dir).await;
        let tag = format!("{}:{version}", registry.reference("baton/bundle"));
        build_bundle(version, &dir, &tag, &bins.agents[i], &bins.downloader).await;
        images.0.push(tag.clone());
        tags.insert(*version, tag);
    }

    // Registered below with their zones (not `SimFleet::leader`'s group only).
    let orch = Orchestrator::start(sim.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();

    for (i, host) in fleet.hosts().iter().enumerate() {
        let zone = if i < 2 { "a" } else { "b" };
        api.register(&registration(host, &[("group", "edge"), ("zone", zone)]))
            .await
            .expect("register");
    }

    // --- 1. Fresh hosts to 1.0.0, all at once.
    let t1 = Instant::now();
    let v1: UpgradeInfo = api
        .post(
            "/v1/upgrades",
            &json!({"id": "u-v1", "image": tags["1.0.0"], "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
        )
        .await
        .expect("start 1.0.0");
    assert!(
        v1.upgrade.bundle.contains("@sha256:"),
        "{}",
        v1.upgrade.bundle
    );
    let (v1, _) = follow(&api, "u-v1", UpgradePhase::Succeeded).await;
    assert_eq!(
        v1.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        v1.upgrade.reason,
        v1.upgrade.hosts
    );
    eprintln!(
        "TIMING 1.0.0 on 4 fresh hosts, all at once: {:?}",
        t1.elapsed()
    );

    // --- 2. Rolling to 2.0.0 with a canary and a pause.
    let engine_before = engine_counters(&api).await;
    let requests_before = etcd_requests(etcd).await;
    let t2 = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-v2", "image": tags["2.0.0"], "strategy": {"kind": "rolling", "batch": {"count": 1},
                "canary": 1, "pause_after_canary": true, "zone_label": "zone"}}),
    )
    .await
    .expect("start 2.0.0");
    let (paused, polls_1) = follow(&api, "u-v2", UpgradePhase::Paused).await;
    assert_eq!(
        paused.upgrade.phase,
        UpgradePhase::Paused,
        "{:?}",
        paused.upgrade.reason
    );
    eprintln!(
        "TIMING 2.0.0: downloads, agent updates and the canary in {:?}",
        t2.elapsed()
    );
    // Downloads ran ahead of the canary's install, and the pause stops none already
    // running: every host gets downloaded and its agent updated; only the canary installed.
    let paused = until(
        "the other hosts downloaded, on agent 2.0.0, while paused",
        || async {
            let u = api.upgrade("u-v2").await.expect("u-v2");
            let hosts = api.hosts().await.expect("hosts");
            let agents = hosts
                .iter()
                .all(|h| h.alive.as_ref().is_some_and(|a| a.agent_version == "2.0.0"));
            (u.count(HostOutcomeState::Downloaded) == 3 && agents).then_some(u)
        },
    )
    .await;
    assert_eq!(paused.upgrade.phase, UpgradePhase::Paused);
    for host in api.hosts().await.expect("hosts") {
        assert_eq!(
            host.alive.as_ref().expect("alive").agent_version,
            "2.0.0",
            "{}",
            host.id
        );
    }
    assert_eq!(paused.count(HostOutcomeState::Succeeded), 1);
    assert_eq!(paused.count(HostOutcomeState::Downloaded), 3);
    api.command("u-v2", Command::Resume, None)
        .await
        .expect("resume");
    let (v2, polls_2) = follow(&api, "u-v2", UpgradePhase::Succeeded).await;
    let requests_after = etcd_requests(etcd).await;
    assert_eq!(
        v2.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        v2.upgrade.reason,
        v2.upgrade.hosts
    );
    let took = t2.elapsed();
    eprintln!("TIMING 2.0.0 rolling over 4 hosts (pause included): {took:?}");

    // --- Everything runs 2.0.0; each host was told once per upgrade.
    for host in fleet.hosts() {
        let info = api.host(host.name()).await.expect("host");
        let installed = info.installed.expect("installed");
        assert_eq!(
            installed.bundle_version.as_deref(),
            Some("2.0.0"),
            "{}",
            host.name()
        );
        assert_eq!(installed.agent_version, "2.0.0");
        assert_eq!(info.status.expect("status").state, HostState::Done);
        let hello = host
            .exec_ok(&["/usr/local/bin/baton-hello"])
            .await
            .expect("baton-hello");
        assert_eq!(hello.trim(), "baton-hello 2.0.0");
        assert_eq!(
            host.read_line(BOOTED_KERNEL_PATH).await.expect("kernel"),
            "6.1.0-baton2"
        );
    }
    assert!(
        v2.upgrade
            .hosts
            .values()
            .all(|h| h.state == HostOutcomeState::Succeeded)
    );
    let resp = client
        .kv_client()
        .get(
            "/baton/hosts/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if key.ends_with("/desired") {
            assert_eq!(kv.version(), 2, "{key}: one write per upgrade");
        }
    }
    assert!(keys_under(&client, "/baton/active").await.is_empty());
    // Each host's outcome is a key of its own; the record holds the upgrade-wide fields.
    let ks = Keyspace::default();
    let id = UpgradeId::new("u-v2").expect("id");
    let record = etcd::read::<Upgrade>(&client, &ks.upgrade(&id))
        .await
        .expect("read the record")
        .expect("the record");
    assert!(record.value.hosts.is_empty(), "outcomes out of the record");
    assert_eq!(
        keys_under(&client, &ks.upgrade_hosts_prefix(&id))
            .await
            .len(),
        v2.upgrade.hosts.len()
    );
    for host in v2.upgrade.hosts.keys() {
        let key = ks.upgrade_host(&id, host);
        let own = etcd::read::<UpgradeHost>(&client, &key)
            .await
            .expect("read the host's outcome")
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(
            own.value.outcome.state,
            HostOutcomeState::Succeeded,
            "{key}"
        );
    }

    // --- What the rolling upgrade cost in etcd requests, per host. The test's own API calls
    // in the window: creating (3 reads, 1 txn), the hosts check (2 reads), resuming (2 reads,
    // 1 txn) and the polls.
    let engine = engine_counters(&api).await;
    let delta = |name: &str| {
        engine.get(name).copied().unwrap_or(0) - engine_before.get(name).copied().unwrap_or(0)
    };
    eprintln!(
        "ETCD orchestrator engine during u-v2: {} txns, {} conflicts, {} reads, {} watch events (per host: {:.1} txns, {:.1} reads, {:.1} watch events)",
        delta("baton_engine_commits_total"),
        delta("baton_engine_conflicts_total"),
        delta("baton_engine_etcd_reads_total"),
        delta("baton_engine_watch_events_total"),
        delta("baton_engine_commits_total") as f64 / 4.0,
        delta("baton_engine_etcd_reads_total") as f64 / 4.0,
        delta("baton_engine_watch_events_total") as f64 / 4.0,
    );
    let api_reads = 3 + 2 + 2 + READS_PER_POLL * (polls_1 + polls_2);
    let api_txns = 2;
    for (method, after) in &requests_after {
        let mut d = after - requests_before.get(method).copied().unwrap_or(0.0);
        let mut note = String::new();
        if method == "Range" {
            d -= api_reads as f64;
            note = format!(" (after removing {api_reads} reads of the test's API calls)");
        }
        if method == "Txn" {
            d -= (api_txns + delta("baton_engine_commits_total")) as f64;
            note = " (agents: engine and API transactions removed)".to_owned();
        }
        if d > 0.0 {
            eprintln!(
                "ETCD {method}: {d} during u-v2{note}: {:.1} per host, {:.2}/s",
                d / 4.0,
                d / took.as_secs_f64()
            );
        }
    }
    let events = api.events("u-v2").await.expect("events");
    eprintln!("u-v2 wrote {} events", events.len());
    orch.stop().await;
    drop(images);
    sim.fleet.destroy().expect("fleet cleanup");
}
