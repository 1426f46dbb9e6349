//! Maintenance mode `paused` and late joiners on the simulated fleet, with real etcd,
//! registry, Docker, downloader job and agents; the orchestrator in-process, driven through
//! its REST API. Hosts h1 and h2 are registered, h2 paused.
//!
//! 1. An upgrade to 2.0.0 with `skip_paused`: h1 is upgraded, h2 is reported `Skipped` and
//!    nothing touched it (no downloader job, no agent, no `desired`).
//! 2. An upgrade of h2 without it waits: the host is held, still untouched, until its mode
//!    is lifted; then it is upgraded.
//! 3. A third host registered afterwards joins the fleet's version by itself.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::Duration;

use crate::support::{Orchestrator, SimFleet, keys_under, until};
use baton_protocol::api::{SetMaintenance, UpgradeInfo};
use baton_protocol::documents::{HostOutcomeState, MaintenanceMode};
use baton_protocol::{HostId, HostState, UpgradePhase};
use baton_tests::fleet::Host;
use baton_tests::registration::registration;
use batonctl::client::ApiClient;
use serde_json::json;

async fn ended(api: &ApiClient, id: &str) -> UpgradeInfo {
    until(&format!("{id} ended"), || async {
        let u = api.upgrade(id).await.expect("upgrade");
        u.upgrade.phase.is_terminal().then_some(u)
    })
    .await
}

/// Nothing but its registration (and maintenance mode) is in etcd for the host, and no
/// bundle was staged on it.
async fn untouched(client: &etcd_client::Client, host: &Host) {
    let prefix = format!("/baton/hosts/{}/", host.name());
    assert_eq!(
        keys_under(client, &prefix).await,
        [format!("{prefix}maintenance"), format!("{prefix}spec")],
        "{}: no agent, no desired, no status",
        host.name()
    );
    // `ls` fails on a missing folder and lists nothing: either way no bundle.
    let staged = host
        .exec(&["ls", "/var/lib/baton/bundles"])
        .await
        .expect("exec")
        .stdout;
    assert!(
        staged.trim().is_empty(),
        "{}: a bundle was staged: {staged}",
        host.name()
    );
}

async fn set_mode(api: &ApiClient, host: &Host, mode: MaintenanceMode) {
    api.host_maintenance(
        host.name(),
        &SetMaintenance {
            mode,
            reason: "diagnostics".to_owned(),
            reboot: false,
        },
    )
    .await
    .expect("maintenance");
}

#[tokio::test]
async fn a_paused_host_is_skipped_or_waited_for_and_a_late_host_joins() {
    let sim = SimFleet::start(3).await;
    let client = sim.etcd.client().await.expect("client");
    let [h1, h2, h3] = sim.fleet.hosts() else {
        panic!("three hosts")
    };

    let (bundle, images) = sim.sample_bundle("2.0.0").await;

    // Only h1 and h2 are registered for now.
    let orch = Orchestrator::start(sim.config("orch")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    for host in [h1, h2] {
        api.register(&registration(host, &[("group", "edge")]))
            .await
            .expect("register");
    }
    set_mode(&api, h2, MaintenanceMode::Paused).await;
    let rolling = json!({"kind": "rolling", "batch": {"count": 1}});

    // --- 1. skip_paused: h2 is reported skipped and never touched.
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-skip", "image": bundle, "strategy": rolling, "skip_paused": true}),
    )
    .await
    .expect("start u-skip");
    let skip = ended(&api, "u-skip").await;
    assert_eq!(skip.upgrade.phase, UpgradePhase::Succeeded, "{skip:?}");
    let outcome =
        |u: &UpgradeInfo, h: &Host| u.upgrade.hosts[&HostId::new(h.name()).unwrap()].clone();
    assert_eq!(outcome(&skip, h1).state, HostOutcomeState::Succeeded);
    let skipped = outcome(&skip, h2);
    assert_eq!(skipped.state, HostOutcomeState::Skipped);
    assert_eq!(skipped.reason, "maintenance mode paused");
    untouched(&client, h2).await;

    // --- 2. Without it the upgrade waits for h2, untouched, until the mode is lifted.
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-wait", "image": bundle, "strategy": rolling, "hosts": [h2.name()]}),
    )
    .await
    .expect("start u-wait");
    let held = until("h2 held", || async {
        let u = api.upgrade("u-wait").await.expect("upgrade");
        (outcome(&u, h2).state == HostOutcomeState::Held).then_some(u)
    })
    .await;
    assert_eq!(held.upgrade.phase, UpgradePhase::Downloading);
    assert_eq!(
        outcome(&held, h2).held_from,
        Some(HostOutcomeState::Pending)
    );
    let events = api.events("u-wait").await.expect("events");
    assert!(
        events.iter().any(|e| e.event.kind == "host-held"),
        "{events:?}"
    );
    // Held for as long as the mode stays: look again after several engine passes (one a
    // second), then lift it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = api.upgrade("u-wait").await.expect("upgrade");
    assert_eq!(still.upgrade.phase, UpgradePhase::Downloading);
    assert_eq!(outcome(&still, h2).state, HostOutcomeState::Held);
    untouched(&client, h2).await;
    set_mode(&api, h2, MaintenanceMode::None).await;
    let waited = ended(&api, "u-wait").await;
    assert_eq!(waited.upgrade.phase, UpgradePhase::Succeeded, "{waited:?}");
    assert_eq!(outcome(&waited, h2).state, HostOutcomeState::Succeeded);

    // --- 3. h3, registered now, joins 2.0.0 without a request.
    api.register(&registration(h3, &[("group", "edge")]))
        .await
        .expect("register h3");
    until("h3 joined 2.0.0", || async {
        let info = api.host(h3.name()).await.expect("host");
        let on_2 = info
            .installed
            .as_ref()
            .is_some_and(|i| i.bundle_version.as_deref() == Some("2.0.0"));
        let done = info
            .status
            .as_ref()
            .is_some_and(|s| s.state == HostState::Done);
        (on_2 && done).then_some(())
    })
    .await;
    let records = api.upgrades().await.expect("upgrades");
    let joins: Vec<&UpgradeInfo> = records
        .iter()
        .filter(|u| u.upgrade.id.as_str().starts_with("join-"))
        .collect();
    assert_eq!(joins.len(), 1, "{records:?}");
    let join = ended(&api, joins[0].upgrade.id.as_str()).await;
    assert_eq!(join.upgrade.phase, UpgradePhase::Succeeded);

    for host in [h1, h2, h3] {
        let hello = host
            .exec_ok(&["/usr/local/bin/baton-hello"])
            .await
            .expect("baton-hello");
        assert_eq!(hello.trim(), "baton-hello 2.0.0", "{}", host.name());
    }
    orch.stop().await;
    drop(images);
    sim.fleet.destroy().expect("fleet cleanup");
}
