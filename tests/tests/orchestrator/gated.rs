//! What the tests of upgrade control share (`revert.rs`, `pause_abort.rs`,
//! `group_maintenance.rs`): a simulated fleet put on bundle 1.0.0 through the orchestrator,
//! and a 2.0.0 bundle whose install a test steers host by host with files on the host: its
//! utility's health checks wait while [`HOLD`] exists (so an upgrade can be paused or
//! aborted while a host is known to be installing) and fail while [`BREAK`] exists (the
//! agent then rolls the host back). No kernel: no reboot, the tests are about the upgrade.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Orchestrator, SimFleet};
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{Document, Upgrade};
use baton_protocol::etcd::{self, Client};
use baton_protocol::{HostId, UpgradePhase};
use baton_tests::bundles::{RemoveImages, binaries, build_bundle, prepare_source};
use baton_tests::fleet::Host;
use batonctl::client::ApiClient;
use serde_json::json;

/// While this file exists on a host, its install waits in the utility's health check.
pub const HOLD: &str = "/etc/baton-hold";
/// While this file exists on a host, the utility's health check fails there.
pub const BREAK: &str = "/etc/baton-break";
/// The step a held host reports meanwhile.
pub const HELD_STEP: &str = "check file baton-hello";
/// Longest any awaited condition may take (downloads, agents, installs, a kernel reboot).
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// The fleet on 1.0.0, its orchestrator, and the 2.0.0 bundle.
pub struct Gated {
    /// Registry, hosts (group `edge`), etcd.
    pub sim: SimFleet,
    /// The leader, which registered the hosts.
    pub orch: Orchestrator,
    /// Its API, as an operator.
    pub api: ApiClient,
    /// etcd, as the tests' reader.
    pub client: Client,
    /// The upgrade that put the fleet on 1.0.0 (`u-v1`), as it ended.
    pub v1: Upgrade,
    /// The 2.0.0 bundle's tag.
    pub v2: String,
    /// When the test started.
    pub started: Instant,
    images: RemoveImages,
}

impl Gated {
    /// Starts `hosts` simulated hosts, builds both bundles and puts the hosts on 1.0.0.
    pub async fn start(hosts: usize) -> Gated {
        let bins = binaries();
        let started = Instant::now();
        let sim = SimFleet::start(hosts).await;
        let client = sim.etcd.client().await.expect("client");
        let sources = tempfile::tempdir().expect("tmp");
        let mut images = RemoveImages(Vec::new());
        let bundle = sim.registry.reference("baton/bundle");
        let (v1, v2) = (format!("{bundle}:1.0.0"), format!("{bundle}:2.0.0-gated"));
        let v1_dir = sources.path().join("1.0.0");
        prepare_source("1.0.0", &v1_dir).await;
        build_bundle("1.0.0", &v1_dir, &v1, &bins.agents[0], &bins.downloader).await;
        images.0.push(v1.clone());
        let v2_dir = sources.path().join("2.0.0");
        source(&v2_dir).await;
        build_bundle("2.0.0", &v2_dir, &v2, &bins.agents[1], &bins.downloader).await;
        images.0.push(v2.clone());

        let orch = sim.leader(sim.config("orch-a")).await;
        let api = orch.api.clone();
        api.post::<_, UpgradeInfo>(
            "/v1/upgrades",
            &json!({"id": "u-v1", "image": v1, "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
        )
        .await
        .expect("start 1.0.0");
        let v1 = ended(&api, "u-v1").await;
        assert_eq!(v1.phase, UpgradePhase::Succeeded, "{:?}", v1.reason);
        eprintln!(
            "TIMING fleet of {hosts} on 1.0.0 after {:?}",
            started.elapsed()
        );
        Gated {
            sim,
            orch,
            api,
            client,
            v1,
            v2,
            started,
            images,
        }
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        self.sim.fleet.hosts()
    }

    /// Stops the orchestrator, removes the bundles and the hosts.
    pub async fn stop(self) {
        eprintln!("TIMING whole test {:?}", self.started.elapsed());
        self.orch.stop().await;
        drop(self.images);
        self.sim.fleet.destroy().expect("fleet cleanup");
    }
}

/// Prepares the 2.0.0 bundle's source in `dir`.
async fn source(dir: &Path) {
    prepare_source("2.0.0", dir).await;
    let path = dir.join("manifest.template.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read manifest")).expect("json");
    let components = manifest["components"].as_array_mut().expect("components");
    components.retain(|c| c["kind"] != "kernel");
    let hello = components
        .iter_mut()
        .find(|c| c["name"] == "baton-hello")
        .expect("baton-hello");
    hello["health"] = json!([
        {"check": "command", "argv": ["/usr/local/bin/baton-hello"]},
        {"check": "command", "argv": ["sh", "-c", format!("while test -e {HOLD}; do sleep 0.2; done")],
         "timeout_secs": 600},
        {"check": "command", "argv": ["sh", "-c", format!("test ! -e {BREAK}")]}
    ]);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

/// Polls `probe` until it gives a value; fails naming `what` after [`TIMEOUT`].
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    probe: impl FnMut() -> F,
) -> T {
    crate::agent_maintenance::wait_for(what, TIMEOUT, probe).await
}

/// Waits until the record `id` ended; returns it.
pub async fn ended(api: &ApiClient, id: &str) -> Upgrade {
    until(&format!("{id} ended"), || async {
        Some(api.upgrade(id).await.expect("show upgrade").upgrade).filter(|u| u.phase.is_terminal())
    })
    .await
}

/// The document at `key`, if any.
pub async fn read<T: Document>(client: &Client, key: &str) -> Option<T> {
    etcd::read::<T>(client, key)
        .await
        .expect("etcd read")
        .map(|v| v.value)
}

/// The host's id.
pub fn id_of(host: &Host) -> HostId {
    HostId::new(host.name()).expect("id")
}

/// Runs `script` on the host; fails naming it unless it exits 0. Returns its output.
pub async fn sh(host: &Host, script: &str) -> String {
    let out = host.exec(&["sh", "-c", script]).await.expect("exec");
    assert_eq!(out.status, 0, "{script} on {}: {}", host.name(), out.stderr);
    out.stdout.trim().to_owned()
}
