//! An operator's pause and abort while hosts install, on the simulated fleet with the real
//! agents: three hosts, real etcd (TLS and authentication on), a real registry, the real
//! Docker Engine, downloader job and agent; the orchestrator in-process, driven through its
//! REST API. The hosts are put on bundle 1.0.0, then upgraded to a 2.0.0 bundle whose
//! install waits on a host while a file exists there (`gated.rs`), so each command lands
//! while a known host is `Installing`:
//!
//! 1. Rolling, one host at a time: paused while host 1 installs — host 1 finishes and is
//!    recorded `Succeeded`, and in that same pass no other host is told; resumed, host 2 is
//!    told; aborted while host 2 installs — host 2 finishes on its own, host 3 is never
//!    told, and the record ends `Aborted`.
//! 2. Daisy chain (every host told up front whom it follows): paused while host 1 installs
//!    — host 1 finishes, but host 2's agent does not start while the upgrade is paused;
//!    resumed, the chain goes on to the end and the upgrade `Succeeded`.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::Duration;

use crate::gated::{Gated, HELD_STEP, HOLD, ended, id_of, read, sh, until};
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{Desired, HostOutcomeState, HostStatus, Upgrade};
use baton_protocol::etcd::Client;
use baton_protocol::{HostKey, HostState, Keyspace, UpgradePhase};
use baton_tests::fleet::Host;
use batonctl::client::ApiClient;
use serde_json::json;

/// How long a host that must not start is watched after the moment it would have (its
/// agent reacts to the status it follows within milliseconds; the engine passes every
/// second).
const QUIET: Duration = Duration::from_secs(10);

async fn record(api: &ApiClient, id: &str) -> Upgrade {
    api.upgrade(id).await.expect("show upgrade").upgrade
}

/// The host's status, if it is about upgrade `id`.
async fn status_for(client: &Client, host: &Host, id: &str) -> Option<HostStatus> {
    read::<HostStatus>(
        client,
        &Keyspace::default().host(&id_of(host), HostKey::Status),
    )
    .await
    .filter(|s| s.upgrade_id.as_ref().map(|u| u.as_str()) == Some(id))
}

async fn desired(client: &Client, host: &Host) -> Option<Desired> {
    read::<Desired>(
        client,
        &Keyspace::default().host(&id_of(host), HostKey::Desired),
    )
    .await
}

/// Waits until the host's agent is held installing upgrade `id`.
async fn held_installing(client: &Client, host: &Host, id: &str) {
    until(&format!("{} held installing {id}", host.name()), || async {
        status_for(client, host, id)
            .await
            .filter(|s| s.state == HostState::Updating && s.step.as_deref() == Some(HELD_STEP))
    })
    .await;
}

/// Lets the held host finish upgrade `id`, waits until it is `Done`, then for [`QUIET`]
/// (what would follow it has had its chance).
async fn release(client: &Client, host: &Host, id: &str) {
    sh(host, &format!("rm {HOLD}")).await;
    until(&format!("{} done with {id}", host.name()), || async {
        status_for(client, host, id)
            .await
            .filter(|s| s.state == HostState::Done)
    })
    .await;
    tokio::time::sleep(QUIET).await;
}

async fn command(api: &ApiClient, id: &str, verb: &str) -> Upgrade {
    api.post::<_, UpgradeInfo>(
        &format!("/v1/upgrades/{id}/{verb}"),
        &json!({"reason": "pause_abort test"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{verb} {id}: {e}"))
    .upgrade
}

#[tokio::test]
async fn pause_and_abort_reach_a_rolling_upgrade_and_a_daisy_chain_while_hosts_install() {
    let g = Gated::start(3).await;
    let (api, client, v2) = (&g.api, &g.client, &g.v2);
    let hosts = g.hosts();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    // --- 1. Rolling: pause while host 1 installs.
    sh(h1, &format!("touch {HOLD}")).await;
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-roll", "image": v2,
                "strategy": {"kind": "rolling", "batch": {"count": 1}, "max_failures": 0}}),
    )
    .await
    .expect("start u-roll");
    held_installing(client, h1, "u-roll").await;
    let paused = command(api, "u-roll", "pause").await;
    assert_eq!(paused.phase, UpgradePhase::Paused);
    let later_told = (desired(client, h2).await, desired(client, h3).await);
    sh(h1, &format!("rm {HOLD}")).await;
    // Host 1 ends while paused: recorded in a pass that, unpaused, would tell host 2.
    let u = until("host 1 recorded Succeeded", || async {
        Some(record(api, "u-roll").await)
            .filter(|u| u.hosts[&id_of(h1)].state == HostOutcomeState::Succeeded)
    })
    .await;
    assert_eq!(u.phase, UpgradePhase::Paused, "{:?}", u.reason);
    for h in [h2, h3] {
        assert!(
            u.hosts[&id_of(h)].dispatched_at.is_none(),
            "{} told",
            h.name()
        );
    }
    assert_eq!(
        (desired(client, h2).await, desired(client, h3).await),
        later_told,
        "desired written while paused"
    );

    // Resumed: host 2 is told; aborted while it installs.
    sh(h2, &format!("touch {HOLD}")).await;
    let resumed = command(api, "u-roll", "resume").await;
    assert_eq!(resumed.phase, UpgradePhase::Installing);
    held_installing(client, h2, "u-roll").await;
    let aborted = command(api, "u-roll", "abort").await;
    assert_eq!(aborted.phase, UpgradePhase::Aborted);
    let h3_told = desired(client, h3).await;
    // The host told finishes on its own; nothing reaches the one not yet told.
    release(client, h2, "u-roll").await;
    assert_eq!(
        desired(client, h3).await,
        h3_told,
        "host 3 told after the abort"
    );
    assert!(status_for(client, h3, "u-roll").await.is_none());
    assert_eq!(record(api, "u-roll").await.phase, UpgradePhase::Aborted);

    // --- 2. Daisy chain: paused while host 1 installs, the chain holds at the hand-over.
    sh(h1, &format!("touch {HOLD}")).await;
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-chain", "image": v2, "strategy": {"kind": "daisy-chain"}}),
    )
    .await
    .expect("start u-chain");
    held_installing(client, h1, "u-chain").await;
    let paused = command(api, "u-chain", "pause").await;
    assert_eq!(paused.phase, UpgradePhase::Paused);
    // Every later host was told up front whom it follows.
    for (h, after) in [(h2, h1), (h3, h2)] {
        let d = desired(client, h).await.expect("desired");
        assert_eq!(d.upgrade_id.as_str(), "u-chain", "{}", h.name());
        assert_eq!(d.after, Some(id_of(after)), "{}", h.name());
    }
    release(client, h1, "u-chain").await;
    assert!(
        status_for(client, h2, "u-chain").await.is_none(),
        "host 2 started while the chain was paused"
    );
    let resumed = command(api, "u-chain", "resume").await;
    assert_eq!(resumed.phase, UpgradePhase::Installing);
    let done = ended(api, "u-chain").await;
    assert_eq!(done.phase, UpgradePhase::Succeeded, "{:?}", done.reason);
    for h in [h2, h3] {
        let s = status_for(client, h, "u-chain").await.expect("status");
        assert_eq!(s.state, HostState::Done, "{}", h.name());
    }
    g.stop().await;
}
