//! Soaks and maintenance windows on the simulated fleet, with real etcd, registry, Docker,
//! downloader job and agents; the orchestrator in-process, driven through its REST API
//! (TLS and authentication on).
//!
//! 1. A rolling upgrade of two hosts, one per batch, soaking after each batch with an HTTP
//!    gate: once the first host is done and its agent reports its re-run health checks
//!    passing, the gate starts answering 503 — the batch's host fails, the upgrade halts,
//!    and the second host is never told anything (no `desired` in etcd, nothing installed
//!    on it).
//! 2. An upgrade created while its group's maintenance window is closed waits, nothing
//!    dispatched, the record saying until when; the window is then set to open a few
//!    seconds ahead, and the hosts are dispatched only from its opening on (their
//!    `desired` keys are written after the revision read before, their `dispatched_at`
//!    after the opening).
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{GateEndpoint, SimFleet, keys_under, until};
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{HostOutcomeState, Windows};
use baton_protocol::{HostId, UpgradePhase};
use baton_tests::fleet::Host;
use batonctl::client::ApiClient;
use serde_json::json;

fn id(host: &Host) -> HostId {
    HostId::new(host.name()).expect("host id")
}

async fn ended(api: &ApiClient, id: &str) -> UpgradeInfo {
    until(&format!("{id} ended"), || async {
        let u = api.upgrade(id).await.expect("upgrade");
        u.upgrade.phase.is_terminal().then_some(u)
    })
    .await
}

/// What `baton-hello` on the host prints (`None`: it is not installed).
async fn hello(host: &Host) -> Option<String> {
    host.exec_ok(&["/usr/local/bin/baton-hello"])
        .await
        .ok()
        .map(|s| s.trim().to_owned())
}

#[tokio::test]
async fn a_gate_failing_during_the_soak_halts_before_the_next_batch() {
    let sim = SimFleet::start(2).await;
    let client = sim.etcd.client().await.expect("client");
    let (bundle, _images) = sim.sample_bundle("1.0.0").await;
    let gate = GateEndpoint::start(200).await;
    let orch = sim.leader(sim.config("orch")).await;
    let api = orch.api.clone();

    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-soak", "image": bundle,
                "strategy": {"kind": "rolling", "batch": {"count": 1}},
                "soak": "5m", "gates": [{"kind": "http", "url": gate.url}]}),
    )
    .await
    .expect("start u-soak");
    // Batch 0 is done and soaks; its agent re-ran its health checks and reported them.
    let soaking = until(
        "batch 0 soaks, its host's health checks reported passing",
        || async {
            let u = api.upgrade("u-soak").await.expect("upgrade");
            let soak = u.upgrade.soak.clone().expect("the record keeps the soak");
            let first = u
                .upgrade
                .hosts
                .iter()
                .find(|(_, h)| h.batch == Some(0))
                .map(|(id, _)| id.clone())
                .expect("batch 0");
            let info = api.host(first.as_str()).await.expect("host");
            let healthy = info
                .status
                .and_then(|s| s.health)
                .is_some_and(|h| h.healthy);
            (soak.batch == Some(0) && healthy).then_some(u)
        },
    )
    .await;
    assert_eq!(soaking.upgrade.phase, UpgradePhase::Installing);
    let host_in = |b: u32| {
        let id = soaking
            .upgrade
            .hosts
            .iter()
            .find(|(_, h)| h.batch == Some(b))
            .map(|(id, _)| id.clone())
            .expect("a host per batch");
        sim.fleet
            .hosts()
            .iter()
            .find(|h| h.name() == id.as_str())
            .expect("fleet host")
    };
    let (first, second) = (host_in(0), host_in(1));
    // Done, but not succeeded while it soaks; the next batch waits.
    assert_eq!(
        soaking.upgrade.hosts[&id(first)].state,
        HostOutcomeState::Dispatched
    );
    assert_eq!(
        soaking.upgrade.hosts[&id(second)].state,
        HostOutcomeState::Downloaded
    );

    gate.set(503);
    let halted = ended(&api, "u-soak").await;
    assert_eq!(halted.upgrade.phase, UpgradePhase::Failed, "{halted:?}");
    let reason = halted.upgrade.reason.clone().unwrap_or_default();
    assert!(reason.contains("answered 503, expected 200"), "{reason}");
    let failed = &halted.upgrade.hosts[&id(first)];
    assert_eq!(failed.state, HostOutcomeState::Failed);
    assert!(
        failed.reason.contains("soak of batch 0 failed: gate http"),
        "{}",
        failed.reason
    );
    assert_eq!(
        halted.upgrade.hosts[&id(second)].state,
        HostOutcomeState::Downloaded,
        "the next batch was never dispatched"
    );
    // etcd: the second host was never told to install; the first was.
    let desired = |h: &Host| format!("/baton/hosts/{}/desired", h.name());
    assert!(keys_under(&client, &desired(second)).await.is_empty());
    assert_eq!(keys_under(&client, &desired(first)).await.len(), 1);
    // The hosts: the first installed 1.0.0, the second nothing (its agent only).
    assert_eq!(hello(first).await.as_deref(), Some("baton-hello 1.0.0"));
    assert_eq!(hello(second).await, None);
    let events = api.events("u-soak").await.expect("events");
    let soak_events: Vec<&str> = events
        .iter()
        .filter(|e| e.event.kind == "soak")
        .map(|e| e.event.message.as_str())
        .collect();
    assert_eq!(soak_events.len(), 2, "{soak_events:?}");
    assert!(soak_events[0].contains("soaks 5m"), "{soak_events:?}");

    orch.stop().await;
    sim.fleet.destroy().expect("fleet cleanup");
}

/// The weekday (`mon` …) and UTC time of day (`HH:MM:SS`) of `t`.
fn utc_day_and_time(t: SystemTime) -> (&'static str, String) {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    // 1970-01-01 was a Thursday.
    let day = DAYS[((secs / 86_400 + 3) % 7) as usize];
    let s = secs % 86_400;
    (
        day,
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
    )
}

/// `PUT /v1/groups/edge/window`: one window opening at `opening` (UTC), open `duration`.
async fn set_edge_window(api: &ApiClient, opening: SystemTime, duration: &str) -> Windows {
    let (day, start) = utc_day_and_time(opening);
    api.set_windows(
        Some("edge"),
        &serde_json::from_value(json!({"windows": [
            {"days": [day], "start": start, "duration": duration, "time_zone": "UTC"}
        ], "reason": "test"}))
        .expect("body"),
    )
    .await
    .expect("set the window")
}

#[tokio::test]
async fn an_upgrade_outside_its_window_starts_when_the_window_opens() {
    let sim = SimFleet::start(2).await;
    let client = sim.etcd.client().await.expect("client");
    let (bundle, _images) = sim.sample_bundle("1.0.0").await;
    let orch = sim.leader(sim.config("orch")).await;
    let api = orch.api.clone();

    // A bad window is refused naming the field, and nothing is written.
    let before = keys_under(&client, "/baton/groups/").await;
    let err = api
        .set_windows(
            Some("edge"),
            &serde_json::from_value(json!({"windows": [
                {"days": ["mon"], "start": "10:00", "duration": "1h", "time_zone": "Mars/Base"}
            ]}))
            .expect("body"),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("windows[0].time_zone"), "{err}");
    assert_eq!(keys_under(&client, "/baton/groups/").await, before);

    // The edge group's window opens in three days: the upgrade must wait.
    let far = SystemTime::now() + Duration::from_secs(3 * 86_400);
    set_edge_window(&api, far, "10m").await;
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-window", "image": bundle,
                "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
    )
    .await
    .expect("start u-window");
    let waiting = until("u-window waits for its window", || async {
        let u = api.upgrade("u-window").await.expect("upgrade");
        u.upgrade.waiting_for_window.is_some().then_some(u)
    })
    .await;
    assert_eq!(waiting.upgrade.phase, UpgradePhase::Installing);
    let next = waiting
        .upgrade
        .waiting_for_window
        .as_ref()
        .and_then(|w| w.next_opening.clone())
        .expect("the next opening");
    let next = humantime::parse_rfc3339(&next).expect("a time");
    let off = next.duration_since(far).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(1),
        "next opening {next:?}, window at {far:?}"
    );
    for host in sim.fleet.hosts() {
        let key = format!("/baton/hosts/{}/desired", host.name());
        assert!(keys_under(&client, &key).await.is_empty(), "{key}");
        assert_eq!(
            waiting.upgrade.hosts[&id(host)].state,
            HostOutcomeState::Downloaded
        );
    }
    // The revision etcd is at now: every `desired` must be written after it.
    let revision = client
        .kv_client()
        .get("/baton/active", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();

    // The window now opens a few seconds ahead (to the second).
    let opening = SystemTime::now() + Duration::from_secs(6);
    let opening =
        UNIX_EPOCH + Duration::from_secs(opening.duration_since(UNIX_EPOCH).expect("t").as_secs());
    set_edge_window(&api, opening, "30m").await;
    let done = ended(&api, "u-window").await;
    assert_eq!(done.upgrade.phase, UpgradePhase::Succeeded, "{done:?}");
    assert!(done.upgrade.waiting_for_window.is_none());
    for host in sim.fleet.hosts() {
        let outcome = &done.upgrade.hosts[&id(host)];
        let dispatched =
            humantime::parse_rfc3339(outcome.dispatched_at.as_deref().expect("dispatched"))
                .expect("time");
        assert!(
            dispatched >= opening,
            "{}: dispatched at {dispatched:?}, the window opened at {opening:?}",
            host.name()
        );
        let key = format!("/baton/hosts/{}/desired", host.name());
        let kv = client
            .kv_client()
            .get(key.as_str(), None)
            .await
            .expect("get desired");
        let created = kv.kvs().first().expect("desired written").create_revision();
        assert!(
            created > revision,
            "{key} created at {created}, before {revision}"
        );
        assert_eq!(hello(host).await.as_deref(), Some("baton-hello 1.0.0"));
    }
    let events = api.events("u-window").await.expect("events");
    assert!(
        events.iter().any(|e| e.event.kind == "window"
            && e.event
                .message
                .starts_with("hosts are ready: waiting for window")),
        "{events:?}"
    );

    orch.stop().await;
    sim.fleet.destroy().expect("fleet cleanup");
}
