//! What a failing host does to an upgrade, on the simulated fleet with the real agents:
//! three hosts (containers running systemd), real etcd (TLS and authentication on), a real
//! registry, the real Docker Engine, downloader job and agent; the orchestrator in-process,
//! driven through its REST API. The hosts are put on bundle 1.0.0; then a 2.0.0 bundle
//! whose utility's health check fails on a host carrying `/etc/baton-break` (`gated.rs`;
//! the agent rolls that host back by itself) is rolled out one host at a time with
//! `max_failures: 0`:
//!
//! 1. `on_failure` left at `halt`, host 1 breaking: the upgrade ends `Failed` at host 1 and
//!    no other host is touched (their `desired`, `status` and `installed` unchanged).
//! 2. `on_failure: revert`, host 3 breaking, a 2 s soak with an HTTP gate (that passes)
//!    after each batch: hosts 1 and 2 upgrade to 2.0.0, host 3 fails, and the upgrade
//!    reverts host 2 then host 1 to the exact 1.0.0 bundle they ran: phase `Reverted`, and
//!    each host's `installed` and its running services (the utility, the daemon, the
//!    platform container) say 1.0.0 again. Each reverted batch soaked, with the gate, before
//!    the batch before it was reverted (the upgrade's events, in order), its host's agent
//!    re-running the health checks of 1.0.0 for the revert (its `status.health`).
//! 3. The same on a daisy chain, host 2 breaking: host 1 goes back to 1.0.0, and host 3 —
//!    told up front to follow host 2 — never starts: `Reverted`, every host on 1.0.0.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::Instant;

use crate::gated::{BREAK, Gated, ended, read, sh};
use crate::support::GateEndpoint;
use baton_protocol::api::{EventInfo, UpgradeInfo};
use baton_protocol::documents::{Desired, HostStatus, Installed, RevertState};
use baton_protocol::etcd::Client;
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradePhase};
use baton_tests::docker;
use baton_tests::fleet::Host;
use serde_json::json;

/// What the host's running services say their version is: the utility's output, the
/// daemon's version file, the platform container's image.
async fn running_versions(host: &Host) -> (String, String, String) {
    let hello = sh(host, "/usr/local/bin/baton-hello").await;
    let echo = sh(host, "cat /run/baton-echo/version").await;
    let kv = format!("{}baton-kv", host.sibling_name(""));
    let image = docker::run(&["inspect", "--format", "{{.Config.Image}}", &kv])
        .await
        .unwrap_or_else(|e| panic!("inspect {kv}: {e}"))
        .trim()
        .to_owned();
    (hello, echo, image)
}

/// Asserts the host runs 1.0.0: its `installed` key, and its running services.
async fn on_v1(client: &Client, host: &Host) {
    let id = HostId::new(host.name()).expect("id");
    let installed = read::<Installed>(client, &Keyspace::default().host(&id, HostKey::Installed))
        .await
        .expect("installed");
    assert_eq!(installed.bundle_version.as_deref(), Some("1.0.0"), "{id}");
    for (component, version) in &installed.components {
        assert_eq!(version, "1.0.0", "{id}: {component}");
    }
    let (hello, echo, image) = running_versions(host).await;
    assert!(hello.ends_with("1.0.0"), "{id}: baton-hello says {hello:?}");
    assert_eq!(echo, "1.0.0", "{id}: baton-echo");
    assert!(image.ends_with(":1.0.0"), "{id}: baton-kv runs {image}");
}

/// A host's `desired` and `status` as read now.
async fn told(client: &Client, host: &Host) -> (Option<Desired>, Option<HostStatus>) {
    let id = HostId::new(host.name()).expect("id");
    let keys = Keyspace::default();
    (
        read::<Desired>(client, &keys.host(&id, HostKey::Desired)).await,
        read::<HostStatus>(client, &keys.host(&id, HostKey::Status)).await,
    )
}

fn kinds_for<'a>(events: &'a [EventInfo], host: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.event.host.as_ref().map(|h| h.as_str()) == Some(host))
        .map(|e| e.event.kind.as_str())
        .collect()
}

#[tokio::test]
async fn a_failing_host_halts_the_upgrade_or_reverts_the_hosts_it_changed() {
    let g = Gated::start(3).await;
    let (api, client, v2, first) = (&g.api, &g.client, &g.v2, &g.v1);
    let hosts = g.hosts();
    let names: Vec<&str> = hosts.iter().map(|h| h.name()).collect();
    let one_at_a_time = json!({"kind": "rolling", "batch": {"count": 1}, "max_failures": 0});

    // --- 1. halt (the default): host 1 fails, nobody else is touched.
    sh(&hosts[0], &format!("touch {BREAK}")).await;
    let mut before = Vec::new();
    for h in [&hosts[1], &hosts[2]] {
        before.push(told(client, h).await);
    }
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-halt", "image": v2, "strategy": one_at_a_time}),
    )
    .await
    .expect("start u-halt");
    let halted = ended(api, "u-halt").await;
    eprintln!("TIMING halted after {:?}", t.elapsed());
    assert_eq!(halted.phase, UpgradePhase::Failed, "{:?}", halted.reason);
    let reason = halted.reason.clone().unwrap_or_default();
    assert!(reason.contains(names[0]), "{reason}");
    let (_, status) = told(client, &hosts[0]).await;
    let status = status.expect("host 1 status");
    assert_eq!(status.state, HostState::RolledBack, "{status:?}");
    assert!(status.message.contains(BREAK), "{status:?}");
    for (i, h) in [&hosts[1], &hosts[2]].into_iter().enumerate() {
        let outcome = &halted.hosts[&HostId::new(h.name()).expect("id")];
        assert!(outcome.dispatched_at.is_none(), "{}: {outcome:?}", h.name());
        assert_eq!(told(client, h).await, before[i], "{} was told", h.name());
    }
    for h in hosts {
        on_v1(client, h).await;
    }

    // --- 2. revert: hosts 1 and 2 upgrade, host 3 fails, 2 then 1 go back to 1.0.0,
    // each batch soaking (installed, then reverted) with a gate.
    sh(&hosts[0], &format!("rm -f {BREAK}")).await;
    sh(&hosts[2], &format!("touch {BREAK}")).await;
    let gate = GateEndpoint::start(200).await;
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-revert", "image": v2, "strategy": one_at_a_time, "on_failure": "revert",
                "soak": "2s", "gates": [{"kind": "http", "url": gate.url}]}),
    )
    .await
    .expect("start u-revert");
    let reverted = ended(api, "u-revert").await;
    eprintln!("TIMING failed and reverted after {:?}", t.elapsed());
    assert_eq!(
        reverted.phase,
        UpgradePhase::Reverted,
        "{:?} {:?}",
        reverted.reason,
        reverted.hosts
    );
    let events = api.events("u-revert").await.expect("events");
    for h in &names[..2] {
        let outcome = &reverted.hosts[&HostId::new(*h).expect("id")];
        // It did reach 2.0.0 before it went back.
        let kinds = kinds_for(&events, h);
        assert!(kinds.contains(&"host-succeeded"), "{h}: {kinds:?}");
        assert_eq!(
            outcome.revert.as_ref().map(|r| r.state),
            Some(RevertState::Reverted),
            "{h}: {outcome:?}"
        );
        let previous = outcome.previous.as_ref().expect("previous bundle");
        assert_eq!(previous.bundle, first.bundle, "{h}: the exact digest");
        assert_eq!(previous.version, "1.0.0");
        let host = &hosts[names.iter().position(|n| n == h).expect("host")];
        let (desired, status) = told(client, host).await;
        let desired = desired.expect("desired");
        assert_eq!(desired.upgrade_id, reverted.id.revert(), "{h}");
        assert_eq!(desired.bundle, first.bundle, "{h}");
        assert!(desired.allow_downgrade, "{h}");
        let status = status.expect("status");
        assert_eq!(status.state, HostState::Done, "{h}");
        // Its agent re-ran the health checks of 1.0.0 while its reverted batch soaked.
        let health = status
            .health
            .as_ref()
            .expect("health re-checked for the revert");
        assert!(health.healthy, "{h}: {health:?}");
        assert_eq!(status.upgrade_id, Some(reverted.id.revert()), "{h}");
    }
    // Batch by batch in reverse order, each reverted batch soaking before the batch before
    // it is reverted: host 2's revert soaked and passed before host 1's was written.
    let seq = |what: &str, found: &dyn Fn(&EventInfo) -> bool| {
        events
            .iter()
            .position(found)
            .unwrap_or_else(|| panic!("no event: {what}: {events:#?}"))
    };
    let soaked = |batch: u32, host: &str| {
        let head = format!("revert of batch {batch} ({host}) soaked 2s");
        move |e: &EventInfo| {
            e.event.kind == "soak"
                && e.event.message.starts_with(&head)
                && e.event.message.ends_with("health checks and gates passing")
        }
    };
    let reverting_host = |host: &str| {
        let host = host.to_owned();
        move |e: &EventInfo| {
            e.event.kind == "host-reverting"
                && e.event.host.as_ref().map(|h| h.as_str()) == Some(host.as_str())
        }
    };
    let host_2_soaked = seq("host 2's revert soaked", &soaked(1, names[1]));
    let host_1_reverting = seq("host 1's revert written", &reverting_host(names[0]));
    let host_1_soaked = seq("host 1's revert soaked", &soaked(0, names[0]));
    assert!(
        seq("host 2's revert written", &reverting_host(names[1])) < host_2_soaked
            && host_2_soaked < host_1_reverting
            && host_1_reverting < host_1_soaked,
        "{events:#?}"
    );
    // Batch by batch in reverse order: host 2 before host 1.
    let reverting: Vec<&str> = events
        .iter()
        .filter(|e| e.event.kind == "host-reverting")
        .filter_map(|e| e.event.host.as_ref().map(|h| h.as_str()))
        .collect();
    assert_eq!(reverting, [names[1], names[0]], "{events:?}");
    // Host 3 was rolled back by its agent: nothing to revert.
    let third = &reverted.hosts[&HostId::new(names[2]).expect("id")];
    assert!(third.revert.is_none(), "{third:?}");
    for h in hosts {
        on_v1(client, h).await;
    }

    // --- 3. revert on a daisy chain: host 2 fails, host 1 goes back, host 3 never starts.
    sh(&hosts[2], &format!("rm -f {BREAK}")).await;
    sh(&hosts[1], &format!("touch {BREAK}")).await;
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-chain", "image": v2, "strategy": {"kind": "daisy-chain"}, "on_failure": "revert"}),
    )
    .await
    .expect("start u-chain");
    let chain = ended(api, "u-chain").await;
    eprintln!("TIMING chain failed and reverted after {:?}", t.elapsed());
    assert_eq!(
        chain.phase,
        UpgradePhase::Reverted,
        "{:?} {:?}",
        chain.reason,
        chain.hosts
    );
    let first_host = &chain.hosts[&HostId::new(names[0]).expect("id")];
    assert_eq!(
        first_host.revert.as_ref().map(|r| r.state),
        Some(RevertState::Reverted),
        "{first_host:?}"
    );
    // Host 3 was told up front to follow host 2, which never got done: it never started.
    let (desired, status) = told(client, &hosts[2]).await;
    let desired = desired.expect("desired");
    assert_eq!(desired.upgrade_id, chain.id, "host 3 told up front");
    assert_eq!(desired.after.as_ref().map(|a| a.as_str()), Some(names[1]));
    assert_ne!(
        status.and_then(|s| s.upgrade_id),
        Some(chain.id.clone()),
        "host 3 started the chain"
    );
    for h in hosts {
        on_v1(client, h).await;
    }
    g.stop().await;
}
