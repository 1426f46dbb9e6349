//! The host agent on simulated hosts with real systemd, real etcd, a real registry and
//! bundles staged by the downloader job: a `desired` key written with `etcdctl` upgrades a
//! host's utility, daemon, platform container and kernel (with a reboot) from 1.0.0 to
//! 2.0.0; a kernel that does not boot and a daemon that does not start are rolled back; an
//! agent killed in the middle of each step, or a host rebooted in the middle of the daemon
//! step, ends in the same state as an undisturbed run.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use baton_protocol::documents::{self, Desired, DesiredAction, HostStatus, Installed};
use baton_protocol::etcd::{self, Client, ResumableWatch, WatchUpdate};
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId};
use baton_tests::bundles::{
    RemoveImages, binaries, build_bundle, prepare_source, require_docker, run_job, systemctl,
    wait_alive,
};
use baton_tests::etcd::EtcdServer;
use baton_tests::fleet::{Fleet, FleetOptions, Host};
use baton_tests::registry::Registry;

/// How long one host may take to settle after `desired` is written (two reboots at most).
const SETTLE: Duration = Duration::from_secs(180);

/// Everything a scenario needs: the fleet, etcd on its gateway, the registry and the
/// bundles pushed to it.
pub(crate) struct World {
    pub(crate) fleet: Fleet,
    pub(crate) etcd: EtcdServer,
    pub(crate) agent_endpoints: Vec<String>,
    client: Client,
    keys: Keyspace,
    pub(crate) registry: Registry,
    _sources: tempfile::TempDir,
    _images: RemoveImages,
    /// Pushed bundle references by name (`1.0.0`, `2.0.0`, and variants).
    pub(crate) bundles: std::collections::BTreeMap<String, String>,
}

/// Sample bundle sources with an optional edit of one file (path in the source, content).
pub(crate) struct Variant {
    name: &'static str,
    version: &'static str,
    edit: Option<(&'static str, &'static str)>,
}

pub(crate) async fn world(hosts: usize, variants: &[Variant]) -> World {
    require_docker().await;
    let bins = binaries();
    let registry = Registry::start().await.expect("start registry");
    let fleet = Fleet::start(hosts, FleetOptions::default())
        .await
        .expect("start fleet");
    let gateway = IpAddr::V4(fleet.gateway_ip());
    let etcd = EtcdServer::start_on(gateway)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sources = tempfile::tempdir().expect("tmp");
    let mut bundles = std::collections::BTreeMap::new();
    let mut images = RemoveImages(Vec::new());
    for v in variants {
        let dir = sources.path().join(v.name);
        prepare_source(v.version, &dir).await;
        if let Some((path, content)) = v.edit {
            std::fs::write(dir.join(path), content).expect("edit bundle source");
        }
        let agent = &bins.agents[usize::from(v.version == "2.0.0")];
        let tag = registry.reference(&format!("baton/bundle:{}", v.name));
        let built = build_bundle(v.version, &dir, &tag, agent, &bins.downloader).await;
        images.0.push(tag);
        let pinned = built.pushed.clone().expect("pushed reference");
        bundles.insert(v.name.to_owned(), pinned);
    }
    World {
        client: etcd.client().await.expect("client"),
        agent_endpoints: etcd.endpoints_on(gateway),
        etcd,
        fleet,
        keys: Keyspace::default(),
        registry,
        _sources: sources,
        _images: images,
        bundles,
    }
}

impl World {
    fn key(&self, host: &Host, doc: HostKey) -> String {
        self.keys
            .host(&HostId::new(host.name()).expect("host id"), doc)
    }

    /// Runs bundle `name` as the downloader job on `host` and waits for its agent.
    async fn stage(&self, host: &Host, name: &str, agent_version: &str) {
        let run = run_job(host, &self.bundles[name], &self.agent_endpoints).await;
        run.summary();
        wait_alive(&self.etcd, host, agent_version).await;
    }

    pub(crate) fn desired(&self, upgrade: &str, version: &str, name: &str) -> Desired {
        Desired {
            schema_version: documents::SCHEMA_VERSION,
            upgrade_id: UpgradeId::new(upgrade).expect("id"),
            version: version.to_owned(),
            bundle: self.bundles[name].clone(),
            action: DesiredAction::Install,
            after: None,
            allow_downgrade: false,
            reverts: None,
            signature: None,
            issued_at: documents::now(),
        }
    }

    pub(crate) async fn put_desired(&self, host: &Host, desired: &Desired) {
        self.client
            .kv_client()
            .put(
                self.key(host, HostKey::Desired),
                documents::encode(desired),
                None,
            )
            .await
            .expect("put desired");
    }

    pub(crate) async fn status(&self, host: &Host) -> Option<HostStatus> {
        etcd::read(&self.client, &self.key(host, HostKey::Status))
            .await
            .expect("read status")
            .map(|v| v.value)
    }

    async fn installed(&self, host: &Host) -> Installed {
        etcd::read(&self.client, &self.key(host, HostKey::Installed))
            .await
            .expect("read installed")
            .expect("installed is published")
            .value
    }

    /// Waits until the host's status for `upgrade` is settled; returns it.
    pub(crate) async fn settled(&self, host: &Host, upgrade: &str) -> HostStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status(host).await {
                let ours = s.upgrade_id.as_ref().map(UpgradeId::as_str) == Some(upgrade);
                if ours && s.state.is_settled() {
                    eprintln!(
                        "TIMING {} {upgrade}: {} after {:?}",
                        host.name(),
                        s.state,
                        start.elapsed()
                    );
                    return s;
                }
            }
            if start.elapsed() > SETTLE {
                let log = host
                    .exec(&["journalctl", "-u", "baton-agent", "--no-pager", "-n", "60"])
                    .await
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                panic!(
                    "{} did not settle {upgrade} within {SETTLE:?}; status {:?}; agent log:\n{log}",
                    host.name(),
                    self.status(host).await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stages and installs 1.0.0 on `host` (from nothing: the first kernel reboot too).
    async fn on_v1(&self, host: &Host) {
        self.stage(host, "1.0.0", "1.0.0").await;
        self.put_desired(host, &self.desired("u-v1", "1.0.0", "1.0.0"))
            .await;
        let status = self.settled(host, "u-v1").await;
        assert_eq!(status.state, HostState::Done, "{status:?}");
        assert_on(self, host, "1.0.0", "6.1.0-baton1").await;
    }
}

/// Checks, on the host itself and in `installed`, that every component runs `version`.
async fn assert_on(world: &World, host: &Host, version: &str, kernel: &str) {
    let hello = host
        .exec_ok(&["/usr/local/bin/baton-hello"])
        .await
        .expect("baton-hello");
    assert_eq!(hello.trim(), format!("baton-hello {version}"));
    assert_eq!(
        systemctl(host, &["is-active", "baton-echo"]).await,
        "active"
    );
    assert_eq!(
        host.read_line("/run/baton-echo/version")
            .await
            .expect("echo version"),
        version
    );
    // The image it runs, by ID: a rollback recreates the container from the image ID it
    // ran, not from a tag.
    let image = baton_tests::docker::output(&[
        "inspect",
        "--format",
        "{{.Image}} {{.State.Running}}",
        &host.sibling_name("baton-kv"),
    ])
    .await
    .expect("docker inspect");
    let want = baton_tests::docker::output(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("baton/kv:{version}"),
    ])
    .await
    .expect("docker image inspect");
    assert_eq!(
        String::from_utf8_lossy(&image.stdout).trim(),
        format!("{} true", String::from_utf8_lossy(&want.stdout).trim())
    );
    assert_eq!(host.booted_kernel().await.expect("booted kernel"), kernel);
    assert_eq!(
        host.read_line("/boot/baton/default")
            .await
            .expect("default entry"),
        kernel
    );
    let installed = world.installed(host).await;
    assert_eq!(
        installed.bundle_version.as_deref(),
        Some(version),
        "{installed:?}"
    );
    assert_eq!(installed.kernel.as_deref(), Some(kernel), "{installed:?}");
    for component in ["baton-hello", "baton-echo", "baton-kv", "kernel"] {
        assert_eq!(
            installed.components.get(component).map(String::as_str),
            Some(version),
            "{installed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_written_with_etcdctl_upgrades_every_kind_with_a_reboot() {
    let world = world(
        1,
        &[
            Variant {
                name: "1.0.0",
                version: "1.0.0",
                edit: None,
            },
            Variant {
                name: "2.0.0",
                version: "2.0.0",
                edit: None,
            },
        ],
    )
    .await;
    let host = &world.fleet.hosts()[0];
    world.on_v1(host).await;

    world.stage(host, "2.0.0", "2.0.0").await;
    let status_key = world.key(host, HostKey::Status);
    let mut watch = ResumableWatch::new(world.client.clone(), status_key.clone());
    let WatchUpdate::Snapshot { revision, .. } = watch.next().await.expect("snapshot") else {
        panic!("snapshot first")
    };

    // The operator's way: etcdctl put.
    let desired = String::from_utf8(documents::encode(&world.desired("u-v2", "2.0.0", "2.0.0")))
        .expect("utf8");
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &world.etcd.endpoint(),
            "put",
            &world.key(host, HostKey::Desired),
            &desired,
        ])
        .output()
        .await
        .expect("etcdctl (Debian package etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl put: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = world.settled(host, "u-v2").await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    assert_on(&world, host, "2.0.0", "6.1.0-baton2").await;
    assert_eq!(world.installed(host).await.agent_version, "2.0.0");

    // The recorded history went through Updating, Rebooting and Verifying to Done.
    let history = state_history(&world, &status_key, revision).await;
    for state in [
        HostState::Updating,
        HostState::Rebooting,
        HostState::Verifying,
        HostState::Done,
    ] {
        assert!(history.contains(&state), "{state} missing from {history:?}");
    }

    // Idle: nothing of the host's is rewritten while nothing changes.
    let before = host_revisions(&world, host).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        host_revisions(&world, host).await,
        before,
        "an idle agent rewrote its keys"
    );
}

/// The states `key` went through since `revision`, from etcd's history.
async fn state_history(world: &World, key: &str, revision: i64) -> Vec<HostState> {
    let mut watch = ResumableWatch::resume(world.client.clone(), key.to_owned(), revision + 1);
    let mut states = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
        let Ok(update) = next else { return states };
        if let WatchUpdate::Changes(changes) = update.expect("watch") {
            for c in changes {
                if let Some(v) = c.value {
                    let s: HostStatus = documents::decode(key, &v).expect("status");
                    if states.last() != Some(&s.state) {
                        states.push(s.state);
                    }
                }
            }
        }
    }
}

async fn host_revisions(world: &World, host: &Host) -> Vec<i64> {
    let mut revs = Vec::new();
    for doc in [HostKey::Status, HostKey::Installed, HostKey::Desired] {
        let resp = world
            .client
            .kv_client()
            .get(world.key(host, doc), None)
            .await
            .expect("get");
        revs.push(resp.kvs().first().map_or(0, |kv| kv.mod_revision()));
    }
    revs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_does_not_boot_and_a_daemon_that_does_not_start_are_rolled_back() {
    let world = world(
        2,
        &[
            Variant {
                name: "1.0.0",
                version: "1.0.0",
                edit: None,
            },
            Variant {
                name: "2.0.0-bad-kernel",
                version: "2.0.0",
                edit: Some((
                    "packages/kernel/vmlinuz-6.1.0-baton2",
                    "simulated kernel 6.1.0-baton2\nBATON_SIMULATED_PANIC\n",
                )),
            },
            Variant {
                name: "2.0.0-bad-daemon",
                version: "2.0.0",
                edit: Some((
                    "packages/echo/baton-echo",
                    "#!/bin/bash\necho 'baton-echo 2.0.0: cannot start'\nexit 1\n",
                )),
            },
        ],
    )
    .await;
    let [kernel_host, daemon_host] = [&world.fleet.hosts()[0], &world.fleet.hosts()[1]];
    tokio::join!(world.on_v1(kernel_host), world.on_v1(daemon_host));
    tokio::join!(
        world.stage(kernel_host, "2.0.0-bad-kernel", "2.0.0"),
        world.stage(daemon_host, "2.0.0-bad-daemon", "2.0.0")
    );
    world
        .put_desired(
            kernel_host,
            &world.desired("u-bad", "2.0.0", "2.0.0-bad-kernel"),
        )
        .await;
    world
        .put_desired(
            daemon_host,
            &world.desired("u-bad", "2.0.0", "2.0.0-bad-daemon"),
        )
        .await;
    let (k, d) = tokio::join!(
        world.settled(kernel_host, "u-bad"),
        world.settled(daemon_host, "u-bad")
    );

    assert_eq!(k.state, HostState::RolledBack, "{k:?}");
    assert!(k.message.contains("6.1.0-baton2 did not boot"), "{k:?}");
    assert_on(&world, kernel_host, "1.0.0", "6.1.0-baton1").await;

    assert_eq!(d.state, HostState::RolledBack, "{d:?}");
    assert!(d.message.contains("baton-echo"), "{d:?}");
    assert_on(&world, daemon_host, "1.0.0", "6.1.0-baton1").await;
}

/// How a scenario disturbs the agent when the host's status shows `step`.
#[derive(Clone, Copy, Debug)]
enum Disturb {
    KillAgent(&'static str),
    RebootHost(&'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agents_and_a_reboot_mid_step_end_like_an_undisturbed_run() {
    let cases = [
        Disturb::KillAgent("apply file baton-hello"),
        Disturb::KillAgent("apply service baton-echo"),
        Disturb::KillAgent("apply container baton-kv"),
        Disturb::KillAgent("apply kernel kernel"),
        Disturb::RebootHost("apply service baton-echo"),
    ];
    let world = world(
        cases.len(),
        &[
            Variant {
                name: "1.0.0",
                version: "1.0.0",
                edit: None,
            },
            Variant {
                name: "2.0.0",
                version: "2.0.0",
                edit: None,
            },
        ],
    )
    .await;
    let hosts = world.fleet.hosts();
    futures::future::join_all(hosts.iter().map(|h| world.on_v1(h))).await;
    futures::future::join_all(hosts.iter().map(|h| world.stage(h, "2.0.0", "2.0.0"))).await;

    let runs = hosts.iter().zip(cases).map(|(host, case)| {
        let world = &world;
        async move {
            let key = world.key(host, HostKey::Status);
            let mut watch = ResumableWatch::new(world.client.clone(), key.clone());
            watch.next().await.expect("snapshot");
            let boot_before = host.boot_id().await.expect("boot id");
            world
                .put_desired(host, &world.desired("u-v2", "2.0.0", "2.0.0"))
                .await;
            let step = match case {
                Disturb::KillAgent(s) | Disturb::RebootHost(s) => s,
            };
            // Wait for the agent to report the step, then disturb it at once.
            'seen: loop {
                let update = tokio::time::timeout(SETTLE, watch.next())
                    .await
                    .expect("status changes")
                    .expect("watch");
                if let WatchUpdate::Changes(changes) = update {
                    for c in changes.into_iter().filter_map(|c| c.value) {
                        let s: HostStatus = documents::decode(&key, &c).expect("status");
                        if s.step.as_deref() == Some(step) {
                            break 'seen;
                        }
                    }
                }
            }
            match case {
                Disturb::KillAgent(_) => {
                    let killed = host
                        .exec_ok(&["systemctl", "kill", "--signal=KILL", "baton-agent"])
                        .await;
                    // The kernel step reboots the host right after applying: the kill may
                    // land while systemd is already going down. That is the same
                    // disturbance (the agent dies mid-step), so only a host that is not
                    // rebooting must have accepted the kill.
                    if let Err(e) = killed {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while host.boot_id().await.ok().as_ref() == Some(&boot_before)
                            || host.boot_id().await.is_err()
                        {
                            assert!(
                                Instant::now() < deadline,
                                "kill -9 the agent: {e}; and the host did not reboot"
                            );
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
                Disturb::RebootHost(_) => {
                    host.reboot().await.expect("reboot");
                }
            }
            eprintln!("{}: {case:?} done", host.name());
            let status = world.settled(host, "u-v2").await;
            assert_eq!(status.state, HostState::Done, "{case:?}: {status:?}");
            assert_on(world, host, "2.0.0", "6.1.0-baton2").await;
        }
    });
    futures::future::join_all(runs).await;
}
