//! Maintenance modes and autohealing on the simulated fleet with the real agent: three
//! hosts (containers running systemd), real etcd, a real registry, the real Docker Engine,
//! the real downloader job and agent, and the orchestrator in-process, driven through its
//! REST API. The hosts are put on bundle 1.0.0 by an upgrade; then, on one fleet:
//!
//! 1. `restart` on host-1: its managed services are restarted (the daemon's main pid and the
//!    platform container's start time change), the mode clears itself, the task's
//!    `host-succeeded` event says the host resumed.
//! 2. `restart` with `reboot` on host-1: the host reboots (its boot id changes), the agent
//!    reports `Done` saying it resumed in the new boot, the mode clears, the resume event.
//! 3. `replace` on host-1 after its utility was deleted: the downloader job runs again, every
//!    component is reinstalled (the utility is back), the mode clears.
//! 4. Autohealing: `systemctl disable --now baton-agent` on host-2 and host-3, host-3 being
//!    `autohealing-off`: host-2's agent is back (alive, unit enabled again by the downloader
//!    job) after the grace period, with a heal record; host-3's stays gone.
//!
//! etcd credentials: the replace's downloader job finds host-1's agent alive and leaves its
//! credential as it is (it still signs in); the heal's job finds host-2's agent gone and
//! delivers a fresh one (the previous one no longer signs in).
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::SimFleet;
use baton_protocol::api::HostInfo;
use baton_protocol::api::SetMaintenance;
use baton_protocol::api::{EventInfo, UpgradeInfo};
use baton_protocol::documents::{DesiredAction, MaintenanceMode, Upgrade};
use baton_protocol::etcd::Credential;
use baton_protocol::etcd::identity::DEFAULT_CREDENTIAL_FILE;
use baton_protocol::{HostState, UpgradePhase};
use baton_tests::bundles::systemctl;
use baton_tests::docker;
use baton_tests::fleet::Host;
use batonctl::client::ApiClient;
use serde_json::json;

/// The orchestrator's `--heal-grace` here.
const HEAL_GRACE: Duration = Duration::from_secs(5);
/// Longest the upgrade to 1.0.0 (downloads, agents, a kernel reboot per host) may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest one maintenance task (a reboot included) may take to end.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);
/// How much longer than the grace period an `autohealing-off` host is watched staying dead
/// (the negative check: a heal would have started within the grace period plus a pass).
const NOT_HEALED_MARGIN: Duration = Duration::from_secs(5);

/// Polls `probe` every 250 ms until it gives a value; fails naming `what` after `timeout`.
pub(crate) async fn wait_for<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the record `id` exists and ended; returns it.
async fn ended(api: &ApiClient, id: &str, timeout: Duration) -> Upgrade {
    wait_for(&format!("{id} ended"), timeout, || async {
        api.upgrade(id)
            .await
            .ok()
            .map(|u| u.upgrade)
            .filter(|u| u.phase.is_terminal())
    })
    .await
}

async fn host_info(api: &ApiClient, host: &str) -> HostInfo {
    api.host(host).await.expect("show host")
}

/// `host` as a task left it: told `action` and `Done`; its view and its status message.
async fn told_and_done(api: &ApiClient, host: &str, action: DesiredAction) -> (HostInfo, String) {
    let info = host_info(api, host).await;
    assert_eq!(info.desired.as_ref().map(|d| d.action), Some(action));
    let status = info.status.clone().expect("status");
    assert_eq!(status.state, HostState::Done, "{status:?}");
    (info, status.message)
}

/// Waits until the orchestrator cleared `host`'s own maintenance mode.
async fn wait_cleared(api: &ApiClient, host: &str, record: &str) {
    let m = wait_for(&format!("{host}'s mode cleared"), TASK_TIMEOUT, || async {
        host_info(api, host)
            .await
            .maintenance
            .filter(|m| m.mode == MaintenanceMode::None)
    })
    .await;
    assert!(
        m.reason.contains(record),
        "{host}: cleared for another reason: {m:?}"
    );
    assert!(!m.reboot, "{m:?}");
}

/// Sets `host`'s own mode (`reboot` with `restart`), waits for the task record `id` it
/// creates to succeed and for the orchestrator to clear the mode; returns the record's
/// events.
async fn carry_out(
    api: &ApiClient,
    host: &str,
    mode: MaintenanceMode,
    reboot: bool,
    id: &str,
) -> Vec<EventInfo> {
    let asked = Instant::now();
    let req = SetMaintenance {
        mode,
        reason: "agent_maintenance test".into(),
        reboot,
    };
    api.host_maintenance(host, &req)
        .await
        .expect("set maintenance");
    let u = ended(api, id, TASK_TIMEOUT).await;
    assert_eq!(u.phase, UpgradePhase::Succeeded, "{id}: {:?}", u.reason);
    wait_cleared(api, host, id).await;
    eprintln!("TIMING {id} done and cleared in {:?}", asked.elapsed());
    api.events(id).await.expect("events")
}

/// The task's resume event: its `host-succeeded` event, which says the host resumed.
fn resume_event<'a>(events: &'a [EventInfo], host: &str) -> Option<&'a EventInfo> {
    events.iter().find(|e| {
        e.event.kind == "host-succeeded"
            && e.event.host.as_ref().map(|h| h.as_str()) == Some(host)
            && e.event
                .message
                .starts_with(&format!("{host} resumed after"))
    })
}

/// The host's etcd credential file, as its downloader job left it.
async fn credential(host: &Host) -> Credential {
    let text = host
        .read_file(DEFAULT_CREDENTIAL_FILE)
        .await
        .unwrap_or_else(|e| panic!("{}: {DEFAULT_CREDENTIAL_FILE}: {e}", host.name()));
    Credential::parse(&String::from_utf8_lossy(&text)).unwrap_or_else(|| {
        panic!(
            "{}: {DEFAULT_CREDENTIAL_FILE}: not user:password",
            host.name()
        )
    })
}

async fn main_pid(host: &Host, unit: &str) -> String {
    systemctl(host, &["show", "--property", "MainPID", "--value", unit]).await
}

async fn container_started_at(name: &str) -> String {
    docker::run(&["inspect", "--format", "{{.State.StartedAt}}", name])
        .await
        .unwrap_or_else(|e| panic!("inspect {name}: {e}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn restart_reboot_replace_and_autohealing_with_the_real_agent() {
    let started = Instant::now();
    let sim = SimFleet::start(3).await;
    let fleet = &sim.fleet;

    let (tag, images) = sim.sample_bundle("1.0.0").await;

    let mut cfg = sim.config("orch-a");
    cfg.heal_grace = HEAL_GRACE;
    let orch = sim.leader(cfg).await;
    let api = orch.api.clone();
    eprintln!(
        "TIMING fleet of 3, etcd, registry and bundle 1.0.0 ready in {:?}",
        started.elapsed()
    );

    // --- Hosts on bundle 1.0.0.
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-v1", "image": tag, "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
    )
    .await
    .expect("start 1.0.0");
    let v1 = ended(&api, "u-v1", UPGRADE_TIMEOUT).await;
    assert_eq!(
        v1.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        v1.reason,
        v1.hosts
    );
    eprintln!("TIMING 1.0.0 on 3 fresh hosts: {:?}", t.elapsed());

    let h1 = &fleet.hosts()[0];
    let name = h1.name();
    let kv = format!("{}baton-kv", h1.sibling_name(""));

    // --- 1. restart: the managed services are restarted, nothing else.
    let pid_before = main_pid(h1, "baton-echo.service").await;
    let kv_before = container_started_at(&kv).await;
    let boot_before = h1.boot_id().await.expect("boot id");
    let id = format!("restart-{name}-1");
    let events = carry_out(&api, name, MaintenanceMode::Restart, false, &id).await;
    let (_, message) = told_and_done(&api, name, DesiredAction::Restart).await;
    assert!(
        message.contains("managed services of 1.0.0 restarted"),
        "{message}"
    );
    let pid_after = main_pid(h1, "baton-echo.service").await;
    assert!(
        pid_after != pid_before && pid_after != "0",
        "baton-echo was not restarted: MainPID {pid_before} -> {pid_after}"
    );
    let kv_after = container_started_at(&kv).await;
    assert_ne!(kv_after, kv_before, "{kv} was not restarted");
    assert_eq!(
        h1.boot_id().await.expect("boot id"),
        boot_before,
        "a restart without reboot rebooted the host"
    );
    let resumed = resume_event(&events, name).unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        resumed
            .event
            .message
            .contains("managed services were restarted"),
        "{resumed:?}"
    );

    // --- 2. restart with reboot: the host reboots, the agent resumes in the new boot.
    let id = format!("restart-{name}-2");
    let events = carry_out(&api, name, MaintenanceMode::Restart, true, &id).await;
    let boot_after = h1.boot_id().await.expect("boot id");
    assert_ne!(boot_after, boot_before, "the host did not reboot");
    let (info, message) = told_and_done(&api, name, DesiredAction::Reboot).await;
    for want in [
        "resumed after the reboot",
        boot_after.as_str(),
        boot_before.as_str(),
    ] {
        assert!(message.contains(want), "{want:?} not in {message:?}");
    }
    assert_eq!(
        info.alive.map(|a| a.boot_id).as_deref(),
        Some(boot_after.as_str()),
        "the agent is not alive in the new boot"
    );
    assert!(
        events[0]
            .event
            .message
            .contains(&format!("rebooting {name}")),
        "{:?}",
        events[0]
    );
    let resumed = resume_event(&events, name).unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        resumed.event.message.contains("after the reboot")
            && resumed.event.message.contains(&boot_after),
        "{resumed:?}"
    );

    // --- 3. replace: every component reinstalled from the current bundle. The agent is
    // alive: the downloader job carries no new credential, the host keeps its own.
    let h1_credential = credential(h1).await;
    h1.remove_file("/usr/local/bin/baton-hello")
        .await
        .expect("delete the utility");
    let id = format!("replace-{name}-1");
    let events = carry_out(&api, name, MaintenanceMode::Replace, false, &id).await;
    let (_, message) = told_and_done(&api, name, DesiredAction::Replace).await;
    assert_eq!(message, "on 1.0.0");
    let hello = h1
        .exec_ok(&["/usr/local/bin/baton-hello"])
        .await
        .expect("the utility is back");
    assert!(hello.contains("1.0.0"), "{hello}");
    assert!(
        events.iter().any(|e| e.event.kind == "host-downloaded"),
        "a replace runs the downloader job: {events:?}"
    );
    assert_eq!(
        credential(h1).await,
        h1_credential,
        "a job for a host with a live agent changed its etcd credential"
    );
    sim.etcd
        .client_as(&h1_credential)
        .await
        .expect("host-1's credential still signs in after its job");

    // --- 4. Autohealing: host-2 is healed, host-3 (autohealing-off) is not.
    let (h2, h3) = (&fleet.hosts()[1], &fleet.hosts()[2]);
    let off = SetMaintenance {
        mode: MaintenanceMode::AutohealingOff,
        reason: "agent_maintenance test".into(),
        reboot: false,
    };
    let h2_credential = credential(h2).await;
    api.host_maintenance(h3.name(), &off)
        .await
        .expect("set autohealing-off");
    for h in [h2, h3] {
        h.exec_ok(&["systemctl", "disable", "--now", "baton-agent"])
            .await
            .expect("disable the agent");
    }
    let killed = Instant::now();
    // The agents' alive keys go with them (or with their lease).
    for h in [h2, h3] {
        wait_for(
            &format!("{}'s alive key gone", h.name()),
            Duration::from_secs(30),
            || async {
                host_info(&api, h.name())
                    .await
                    .alive
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }
    let gone_at = Instant::now();
    let heal_id = format!("heal-{}-1", h2.name());
    let heal = ended(&api, &heal_id, TASK_TIMEOUT).await;
    assert_eq!(heal.phase, UpgradePhase::Succeeded, "{:?}", heal.reason);
    eprintln!(
        "TIMING agent disabled -> healed in {:?} (alive gone after {:?}, grace {HEAL_GRACE:?})",
        killed.elapsed(),
        gone_at.duration_since(killed)
    );
    let alive = wait_for(
        &format!("{}'s agent alive again", h2.name()),
        Duration::from_secs(30),
        || async { host_info(&api, h2.name()).await.alive },
    )
    .await;
    assert_eq!(alive.agent_version, "1.0.0");
    assert_eq!(
        systemctl(h2, &["is-enabled", "baton-agent"]).await,
        "enabled",
        "the downloader job did not enable the agent again"
    );
    assert_eq!(systemctl(h2, &["is-active", "baton-agent"]).await, "active");
    // The heal's job found no live agent: it delivered a fresh credential, with which the
    // agent is back, and the previous one no longer signs in.
    let h2_fresh = credential(h2).await;
    assert_eq!(h2_fresh.user, h2_credential.user);
    assert_ne!(
        h2_fresh.password, h2_credential.password,
        "a heal kept the credential of a host whose agent was gone"
    );
    assert!(
        sim.etcd.client_as(&h2_credential).await.is_err(),
        "{}'s previous credential still signs in",
        h2.name()
    );
    let events = api.events(&heal_id).await.expect("events");
    // The grace period, as the leader counted it (not a wall-clock race with this test's
    // polling): the heal says how long the agent had been gone when it started.
    let message = &events[0].event.message;
    let gone_for: u64 = message
        .strip_prefix(&format!("agent of {} gone for ", h2.name()))
        .and_then(|rest| rest.split('s').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no 'gone for Ns' in the heal's first event: {events:?}"));
    assert!(
        gone_for >= HEAL_GRACE.as_secs(),
        "healed after {gone_for}s, before the grace period of {HEAL_GRACE:?}: {message}"
    );

    // host-3 stays dead. Bounded negative check: watched until its alive key has been gone
    // for the grace period plus NOT_HEALED_MARGIN (host-2's heal above started within the
    // grace period plus a pass).
    let watch_until = gone_at + HEAL_GRACE + NOT_HEALED_MARGIN;
    while Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let heals: Vec<String> = api
        .upgrades()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.upgrade.id.to_string())
        .filter(|id| id.starts_with("heal-"))
        .collect();
    assert_eq!(heals, [heal_id], "only host-2 is healed");
    assert!(
        host_info(&api, h3.name()).await.alive.is_none(),
        "{}'s agent came back although autohealing is off",
        h3.name()
    );
    assert_eq!(
        systemctl(h3, &["is-enabled", "baton-agent"]).await,
        "disabled"
    );

    orch.stop().await;
    drop(images);
    let SimFleet { fleet, .. } = sim;
    fleet.destroy().expect("fleet cleanup");
    eprintln!("TIMING whole test {:?}", started.elapsed());
}
