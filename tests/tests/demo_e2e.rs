//! `make demo` as a test: the demo's own code (`baton_tests::demo::up`) with free ports, its
//! own state folder, run-unique hostnames, and everything owned by the test process (so a
//! killed test is cleaned up by the next fleet) — a registry, four simulated hosts in two
//! zones, etcd, the `baton-orchestrator` binary; 1.0.0 installed on the empty hosts with
//! `batonctl`, then the rolling upgrade to 2.0.0 started with one `curl` and followed with
//! `batonctl upgrade watch` — the orchestrator first hands over to bundle 2.0.0's, in a
//! container. Every host must end on 2.0.0 everywhere, the orchestrator too; then
//! `demo::down` must leave no process, container, network or folder behind.
//!
//! Needs `make static bundle-agents bundle-orchestrators` and the orchestrator's binaries
//! (`make test` builds them first).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use baton_protocol::documents::{Alive, HostOutcomeState, HostStatus, Installed, Strategy};
use baton_protocol::etcd;
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradePhase};
use baton_tests::bundles::require_docker;
use baton_tests::demo::etcd_security;
use baton_tests::demo::{
    self, DemoConfig, DemoState, KERNEL_V2, ORCHESTRATOR_V2, UPGRADE_V1, UPGRADE_V2,
};
use baton_tests::docker;
use baton_tests::etcd::free_port;

/// Removes the demo if the test ends early (panic included).
struct Teardown(Option<PathBuf>);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && let Err(e) = demo::down(&dir)
        {
            eprintln!("demo teardown: {e}");
        }
    }
}

async fn read<T: baton_protocol::documents::Document>(client: &etcd::Client, key: &str) -> T {
    etcd::read::<T>(client, key)
        .await
        .expect("etcd read")
        .unwrap_or_else(|| panic!("{key} is missing"))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_upgrades_an_empty_fleet_to_2_0_0_and_tears_down_without_a_trace() {
    require_docker().await;
    let parent = tempfile::Builder::new()
        .prefix("baton-demo-e2e-")
        .tempdir()
        .expect("temp dir");
    let state_dir = parent.path().join("demo");
    let mut teardown = Teardown(Some(state_dir.clone()));
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut config = DemoConfig::new();
    config.state_dir = state_dir.clone();
    config.etcd_port = free_port(loopback).expect("port");
    config.registry_port = free_port(loopback).expect("port");
    config.api_port = free_port(loopback).expect("port");
    config.unique_hostnames = true;
    config.detach = false;

    let report = demo::up(&config).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "TIMING demo: 1.0.0 installed in {:?}, rolled to 2.0.0 in {:?}, {:?} in all",
        report.install_took, report.upgrade_took, report.total
    );
    let state = report.state.clone();
    assert_eq!(state.hosts.len(), 4);
    assert_eq!(
        state.hosts.iter().filter(|h| h.zone == "a").count(),
        2,
        "{:?}",
        state.hosts
    );

    // The rolling upgrade succeeded on every host, after 1.0.0 did, and began with the
    // orchestrator upgrading itself: the demo's process handed over to bundle 2.0.0's.
    assert_eq!(report.upgrade.upgrade.phase, UpgradePhase::Succeeded);
    // Asked for `auto`: the backward-compatible bundle made it rolling, and the record says so.
    assert!(
        matches!(report.upgrade.upgrade.strategy, Strategy::Rolling { .. }),
        "{:?}",
        report.upgrade.upgrade.strategy
    );
    let why = report
        .upgrade
        .upgrade
        .strategy_reason
        .clone()
        .unwrap_or_default();
    assert!(why.contains("backward compatible"), "{why:?}");
    // Every batch soaked before the next started: one passed soak per batch.
    let soak = report
        .upgrade
        .upgrade
        .soak
        .clone()
        .expect("the demo asks for a soak");
    assert_eq!(soak.duration, baton_tests::demo::SOAK);
    assert_eq!(soak.batch, None, "no soak left under way");
    assert_eq!(
        report.soaks_passed,
        baton_tests::demo::batch_count(&report.upgrade),
        "{report:?}"
    );
    assert_eq!(
        report.orchestrator_before.version,
        baton_orchestrator::VERSION
    );
    assert_eq!(report.orchestrator_after.version, ORCHESTRATOR_V2);
    assert_eq!(report.orchestrator_after.role, "leader");
    let handover = report
        .upgrade
        .upgrade
        .orchestrator
        .clone()
        .expect("orchestrator");
    assert!(handover.handed_over_at.is_some(), "{handover:?}");
    assert_eq!(
        handover.container.as_deref(),
        Some(report.orchestrator_after.replica.as_str())
    );
    assert!(
        report
            .upgrade
            .upgrade
            .hosts
            .values()
            .all(|h| h.state == HostOutcomeState::Succeeded),
        "{:?}",
        report.upgrade.upgrade.hosts
    );
    for before in &report.before {
        let installed = before.installed.as_ref().expect("installed after 1.0.0");
        assert_eq!(installed.bundle_version.as_deref(), Some("1.0.0"));
        assert_eq!(installed.agent_version, "1.0.0");
    }

    // Every host's final state, read from etcd itself.
    let client = etcd_security::root_client(&state).await.expect("etcd");
    // etcd runs with TLS and authentication, and the printed etcdctl works as written with
    // the read-only identity the demo generated: it reads, and may not write.
    let env = state.state_dir.join(etcd_security::ETCDCTL_ENV);
    let etcdctl = |args: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -a; . {}; set +a; etcdctl {args}",
                env.display()
            ))
            .output()
            .expect("run etcdctl")
    };
    let listed = etcdctl("get --prefix --keys-only /baton/hosts/");
    let keys_listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert!(keys_listed.contains("/installed"), "{keys_listed}");
    let write = etcdctl("put /baton/active x");
    assert!(!write.status.success(), "{write:?}");
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("permission denied"),
        "{write:?}"
    );
    let keys = Keyspace::default();
    for host in &state.hosts {
        let id = HostId::new(&host.name).expect("host id");
        let installed: Installed = read(&client, &keys.host(&id, HostKey::Installed)).await;
        assert_eq!(
            installed.bundle_version.as_deref(),
            Some("2.0.0"),
            "{host:?}"
        );
        assert_eq!(installed.agent_version, "2.0.0", "{host:?}");
        assert_eq!(installed.kernel.as_deref(), Some(KERNEL_V2), "{host:?}");
        for component in ["baton-hello", "baton-echo", "baton-kv", "kernel"] {
            assert_eq!(
                installed.components.get(component).map(String::as_str),
                Some("2.0.0"),
                "{}: {component} in {installed:?}",
                host.name
            );
        }
        let status: HostStatus = read(&client, &keys.host(&id, HostKey::Status)).await;
        assert_eq!(status.state, HostState::Done, "{host:?}");
        assert_eq!(
            status.upgrade_id.as_ref().map(|u| u.as_str()),
            Some(UPGRADE_V2)
        );
        let alive: Alive = read(&client, &keys.host(&id, HostKey::Alive)).await;
        assert_eq!(alive.agent_version, "2.0.0", "{host:?}");
        let hello = docker::run(&["exec", &host.container, "/usr/local/bin/baton-hello"])
            .await
            .expect("baton-hello");
        assert_eq!(hello, "baton-hello 2.0.0");
    }
    for id in [UPGRADE_V1, UPGRADE_V2] {
        let upgrade: baton_protocol::documents::Upgrade = read(
            &client,
            &keys.upgrade(&baton_protocol::UpgradeId::new(id).unwrap()),
        )
        .await;
        assert_eq!(upgrade.phase, UpgradePhase::Succeeded, "{id}");
    }
    drop(client);

    // The demo is recorded and complete: everything `down` needs is in the state file.
    assert_eq!(
        DemoState::load(&state_dir).expect("state"),
        Some(state.clone())
    );
    assert!(
        demo::status(&state_dir).await.expect("status"),
        "demo status reports a part missing"
    );

    // Down leaves nothing behind.
    teardown.0 = None;
    let done = demo::down(&state_dir).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("down: {done:?}");
    let run = state.run_id.clone().expect("run id");
    let leftovers = docker::run(&[
        "ps",
        "--all",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={run}"),
    ])
    .await
    .expect("docker ps");
    assert_eq!(leftovers, "", "containers left behind");
    // The new orchestrator's container carries the run's label instead.
    let labelled = docker::run(&[
        "ps",
        "--all",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=baton.run={run}"),
    ])
    .await
    .expect("docker ps");
    assert_eq!(labelled, "", "labelled containers left behind");
    let networks = docker::run(&["network", "ls", "--format", "{{.Name}}"])
        .await
        .expect("docker network ls");
    assert!(
        !networks.lines().any(|n| n.contains(&run)),
        "network left behind: {networks}"
    );
    for daemon in &state.processes {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", daemon.pid)).unwrap_or_default();
        // Gone, or a zombie of this test process (it started them) waiting to be reaped.
        let after_command = stat.rsplit(')').next().unwrap_or_default();
        assert!(
            stat.is_empty() || after_command.trim_start().starts_with('Z'),
            "{} (pid {}) still runs: {stat}",
            daemon.name,
            daemon.pid
        );
    }
    assert!(!state_dir.exists(), "{} left behind", state_dir.display());
    let root = state.fleet_root.clone().expect("fleet root");
    assert!(!root.exists(), "{} left behind", root.display());
    for image in &state.images {
        assert!(
            !docker::image_exists(image).await.expect("docker"),
            "{image} left tagged"
        );
    }
}
