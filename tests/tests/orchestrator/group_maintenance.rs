//! Maintenance modes set on a group, on the simulated fleet with the real agents: two hosts
//! of group `edge`, real etcd (TLS and authentication on), a real registry, the real Docker
//! Engine, downloader job and agent; the orchestrator in-process, driven through its REST
//! API. The hosts are put on bundle 1.0.0; then:
//!
//! 1. `paused` on the group: an upgrade to 2.0.0 holds both hosts — no downloader job runs
//!    (nothing staged, agents still 1.0.0), no `desired` is written — until the group's mode
//!    is lifted; then both are upgraded.
//! 2. `restart` on the group: the orchestrator restarts each host's managed services in a
//!    task of its own (the daemon's main pid changes on both), one host at a time, and
//!    clears the group's mode once both are done.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::Instant;

use crate::gated::{Gated, ended, id_of, read, sh, until};
use baton_protocol::api::{SetMaintenance, UpgradeInfo};
use baton_protocol::documents::{HostOutcomeState, Maintenance, MaintenanceMode, TaskKind};
use baton_protocol::{GroupName, Keyspace, UpgradePhase};
use baton_tests::bundles::systemctl;
use baton_tests::fleet::Host;
use batonctl::client::ApiClient;
use serde_json::json;

async fn set_group(api: &ApiClient, mode: MaintenanceMode) {
    api.group_maintenance(
        "edge",
        &SetMaintenance {
            mode,
            reason: "group_maintenance test".to_owned(),
            reboot: false,
        },
    )
    .await
    .expect("group maintenance");
}

async fn echo_pid(host: &Host) -> String {
    systemctl(
        host,
        &[
            "show",
            "--property",
            "MainPID",
            "--value",
            "baton-echo.service",
        ],
    )
    .await
}

#[tokio::test]
async fn paused_and_restart_on_a_group_of_two_real_hosts() {
    let g = Gated::start(2).await;
    let (api, client, v2) = (&g.api, &g.client, &g.v2);
    let hosts = g.hosts();

    // --- 1. paused: the upgrade holds both hosts, untouched, until the mode is lifted.
    set_group(api, MaintenanceMode::Paused).await;
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-v2", "image": v2,
                "strategy": {"kind": "rolling", "batch": {"count": 1}}}),
    )
    .await
    .expect("start u-v2");
    let held = until("both hosts held", || async {
        Some(api.upgrade("u-v2").await.expect("upgrade").upgrade)
            .filter(|u| u.hosts.values().all(|h| h.state == HostOutcomeState::Held))
    })
    .await;
    assert_eq!(held.phase, UpgradePhase::Downloading, "{:?}", held.reason);
    for h in hosts {
        let info = api.host(h.name()).await.expect("host");
        let desired = info.desired.expect("desired");
        assert_eq!(desired.upgrade_id.as_str(), "u-v1", "{}: told", h.name());
        let alive = info.alive.expect("alive");
        assert_eq!(alive.agent_version, "1.0.0", "{}: agent updated", h.name());
        let staged = sh(h, "ls /var/lib/baton/bundles").await;
        assert!(!staged.contains("2.0.0"), "{}: staged {staged}", h.name());
    }
    set_group(api, MaintenanceMode::None).await;
    let v2_done = ended(api, "u-v2").await;
    assert_eq!(
        v2_done.phase,
        UpgradePhase::Succeeded,
        "{:?}",
        v2_done.reason
    );
    for h in hosts {
        let info = api.host(h.name()).await.expect("host");
        let installed = info.installed.expect("installed");
        assert_eq!(
            installed.bundle_version.as_deref(),
            Some("2.0.0"),
            "{}",
            h.name()
        );
    }

    // --- 2. restart: each host's services restarted, one task per host, then cleared.
    let mut pids = Vec::new();
    for h in hosts {
        pids.push(echo_pid(h).await);
    }
    let asked = Instant::now();
    set_group(api, MaintenanceMode::Restart).await;
    let group_key = Keyspace::default().group_maintenance(&GroupName::new("edge").expect("group"));
    let cleared = until("the group's mode cleared", || async {
        read::<Maintenance>(client, &group_key)
            .await
            .filter(|m| m.mode == MaintenanceMode::None)
    })
    .await;
    assert!(
        cleared
            .reason
            .starts_with("cleared by the orchestrator: restart-"),
        "{cleared:?}"
    );
    eprintln!("TIMING group restart done after {:?}", asked.elapsed());
    let upgrades = api.upgrades().await.expect("upgrades");
    for (h, before) in hosts.iter().zip(&pids) {
        let task = upgrades
            .iter()
            .map(|u| &u.upgrade)
            .find(|u| {
                u.task
                    .as_ref()
                    .is_some_and(|t| t.kind == TaskKind::Restart && t.host == id_of(h))
            })
            .unwrap_or_else(|| panic!("{}: no restart task", h.name()));
        assert_eq!(
            task.phase,
            UpgradePhase::Succeeded,
            "{}: {:?}",
            h.name(),
            task.reason
        );
        let after = echo_pid(h).await;
        assert_ne!(&after, before, "{}: baton-echo not restarted", h.name());
        assert_eq!(
            sh(h, "systemctl is-active baton-echo.service").await,
            "active",
            "{}",
            h.name()
        );
    }
    g.stop().await;
}
