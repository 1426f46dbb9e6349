//! Real kernels on real boot loaders: two virtual machines — one UEFI with systemd-boot,
//! one BIOS with GRUB — each a Debian bookworm with the Docker Engine and systemd, driven
//! only through the orchestrator's REST API, as a real fleet is:
//!
//! 1. Bundle 1.0.0 (kernel 6.1.0-50, the one the disks boot; a daemon; a utility) is
//!    installed by the downloader job, which the orchestrator runs on each VM's Docker
//!    Engine over TCP with TLS and a client certificate; the job installs the agent under
//!    the VM's systemd. The kernel already runs: it only becomes the default, no reboot.
//! 2. Bundle 1.1.0 carries a kernel that cannot mount its root (6.1.0-51 without
//!    `virtio_blk`), rolling one host at a time with `max_failures: 0`: the first VM
//!    boots it once, panics, reboots by itself into 6.1.0-50, its agent reports
//!    `RolledBack` naming the kernel, the upgrade halts, and the other VM is untouched.
//! 3. Bundle 2.0.0 (kernel 6.1.0-51), rolling: both VMs end `Done`, and each one's serial
//!    console says its last boot was 6.1.0-51 — checked from the console, not from what
//!    the agent reports. The agent of one VM is killed (`kill -9`) during its kernel step;
//!    systemd restarts it and the run ends like an undisturbed one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use baton_protocol::api::{RegisterHost, UpgradeInfo};
use baton_protocol::documents::HostOutcomeState;
use baton_protocol::{HostState, UpgradePhase};
use baton_tests::bundles::{self, RemoveImages, binaries, build_bundle};
use baton_tests::etcd::EtcdServer;
use baton_tests::pki::{DockerClientTls, DockerTlsPki};
use baton_tests::registry::Registry;
use baton_tests::vm::{self, Firmware, Vm, VmConfig, VmSeed};
use batonctl::client::ApiClient;
use serde_json::json;

use crate::support::{Orchestrator, config};
use crate::{boot_checks, clock};

/// Longest one upgrade of the two VMs may take (a kernel package install and a reboot
/// under TCG take a few minutes each, and several times that while `make test` runs the
/// fleet tests beside this tier on two cores: one upgrade was seen taking 15 minutes).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(1800);

/// `kill -9` of the agent's process alone (not its unit's other processes), with the
/// guest's own `pkill` (busybox's lacks it), in the guest's namespaces.
const GUEST_KILL_AGENT: [&str; 13] = [
    "nsenter",
    "-t",
    "1",
    "-m",
    "-u",
    "-i",
    "-n",
    "-p",
    "--",
    "/usr/bin/pkill",
    "-9",
    "-x",
    "baton-agent",
];

/// Keeps each VM's serial console after the test, passed or not, in the test's target
/// folder (`target/tmp/vm-fleet-<name>.log`): the record of every boot.
struct KeepConsoles(Vec<(String, std::path::PathBuf)>);

impl Drop for KeepConsoles {
    fn drop(&mut self) {
        for (name, log) in &self.0 {
            let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-fleet-{name}.log"));
            if std::fs::copy(log, &kept).is_ok() {
                eprintln!("the serial console of {name}: {}", kept.display());
            }
        }
    }
}

/// The sample daemon and utility of sample bundle `version`, and `kernel_deb` as the
/// kernel, in `dir`, ready for `bundle build`.
fn bundle_source(dir: &Path, version: &str, agent: &str, kernel_deb: &Path, release: &str) {
    let samples = bundles::workspace().join("images/sample-bundle");
    let packages = samples.join(agent).join("packages");
    for (from, to) in [
        ("hello/baton-hello", "packages/hello/baton-hello"),
        ("echo/baton-echo", "packages/echo/baton-echo"),
        (
            "echo/baton-echo.service",
            "packages/echo/baton-echo.service",
        ),
    ] {
        let to = dir.join(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(packages.join(from), &to).expect("copy sample package");
    }
    let deb_name = kernel_deb.file_name().expect("name").to_string_lossy();
    let kernel_dir = dir.join("packages/kernel");
    std::fs::create_dir_all(&kernel_dir).expect("mkdir");
    std::fs::copy(kernel_deb, kernel_dir.join(&*deb_name)).expect("copy kernel package");
    let manifest = json!({
        "schema_version": 1,
        "version": version,
        "backward_compatible": true,
        "agent": {"version": agent, "file": {"path": "agent/baton-agent", "mode": "0755"}},
        "components": [
            {"name": "baton-hello", "version": agent, "kind": "file", "order": 10,
             "files": [{"path": "packages/hello/baton-hello", "dest": "/usr/local/bin/baton-hello", "mode": "0755"}],
             "health": [{"check": "command", "argv": ["/usr/local/bin/baton-hello"]}]},
            {"name": "baton-echo", "version": agent, "kind": "service", "unit": "baton-echo.service", "order": 20,
             "files": [
                {"path": "packages/echo/baton-echo", "dest": "/usr/local/sbin/baton-echo", "mode": "0755"},
                {"path": "packages/echo/baton-echo.service", "dest": "/etc/systemd/system/baton-echo.service", "mode": "0644"}],
             "health": [{"check": "unit-active"}]},
            {"name": "kernel", "version": version, "kind": "kernel", "release": release, "order": 90, "reboot": true,
             "files": [{"path": format!("packages/kernel/{deb_name}")}]}
        ]
    });
    std::fs::write(
        dir.join("manifest.template.json"),
        serde_json::to_string_pretty(&manifest).expect("json"),
    )
    .expect("write manifest");
}

/// Waits until `host`'s agent is alive and its status at rest (not installing or
/// rebooting).
async fn wait_resting(api: &ApiClient, host: &str) {
    let started = Instant::now();
    loop {
        let hosts = api.hosts().await.expect("hosts");
        let h = hosts.iter().find(|h| h.id.as_str() == host).expect("host");
        let state = h.status.as_ref().map(|s| s.state);
        if h.alive.is_some()
            && matches!(
                state,
                Some(HostState::Idle | HostState::Done | HostState::Failed | HostState::RolledBack)
            )
        {
            eprintln!("{host} at rest ({state:?}) after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < UPGRADE_TIMEOUT,
            "{host} not back at rest after {UPGRADE_TIMEOUT:?}: alive {:?}, status {state:?}",
            h.alive
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Follows upgrade `id` until it ends, printing each host's changes.
async fn follow(api: &ApiClient, id: &str) -> UpgradeInfo {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let u = api.upgrade(id).await.expect("show upgrade");
        let hosts = api.hosts().await.expect("hosts");
        let now: Vec<String> = hosts
            .iter()
            .map(|h| {
                let s = h.status.as_ref();
                format!(
                    "{}={:?} {}",
                    h.id,
                    s.map(|s| s.state),
                    s.and_then(|s| s.step.clone()).unwrap_or_default()
                )
            })
            .collect();
        let line = format!("{:?} {}", u.upgrade.phase, now.join("; "));
        if line != last {
            eprintln!("[{:>6.1}s] {id}: {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        if u.upgrade.phase.is_terminal() {
            return u;
        }
        assert!(
            started.elapsed() < UPGRADE_TIMEOUT,
            "upgrade {id} still {:?} after {UPGRADE_TIMEOUT:?}",
            u.upgrade.phase
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn outcome(u: &UpgradeInfo, host: &str) -> (HostOutcomeState, String) {
    let o = u
        .upgrade
        .hosts
        .iter()
        .find(|(h, _)| h.as_str() == host)
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("{host} not in the upgrade: {:?}", u.upgrade.hosts));
    (o.state, o.reason.clone())
}

/// How the orchestrator registers a VM: its Docker Engine through the forwarded TLS port;
/// everything else as on any real host (host paths, the kernel's boot id and release).
fn registration(id: &str, machine: &Vm) -> RegisterHost {
    RegisterHost {
        id: id.to_owned(),
        labels: BTreeMap::from([("group".to_owned(), "vm".to_owned())]),
        docker: machine
            .docker_endpoint()
            .expect("the Docker TLS port is forwarded"),
        path_map: BTreeMap::new(),
        boot_id_file: None,
        kernel_release_file: None,
        container_prefix: None,
        quorum_member: false,
    }
}

/// Kills `host`'s agent (`kill -9`, in the VM) once it reports applying its kernel during
/// upgrade `id`; false if the upgrade ended first.
async fn kill_agent_in_kernel_step(
    api: &ApiClient,
    id: &str,
    host: &str,
    machine: &Vm,
    client: &DockerClientTls,
) -> bool {
    loop {
        let hosts = api.hosts().await.expect("hosts");
        let in_kernel = hosts.iter().any(|h| {
            h.id.as_str() == host
                && h.status.as_ref().is_some_and(|s| {
                    s.state == HostState::Updating
                        && s.step
                            .as_deref()
                            .is_some_and(|st| st.starts_with("apply kernel"))
                })
        });
        if in_kernel {
            let out = machine
                .guest_exec(client, &GUEST_KILL_AGENT)
                .await
                .unwrap_or_else(|e| panic!("kill the agent of {host}: {e}"));
            eprintln!("killed the agent of {host} in its kernel step {out}");
            return true;
        }
        if api
            .upgrade(id)
            .await
            .expect("upgrade")
            .upgrade
            .phase
            .is_terminal()
        {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn kernels_are_upgraded_on_systemd_boot_and_grub_and_a_bad_kernel_falls_back_by_itself() {
    let started = Instant::now();
    bundles::require_docker().await;
    let image = vm::ensure_image().await.unwrap_or_else(|e| panic!("{e}"));
    boot_checks::check_image(&image);
    let etcd = EtcdServer::start().await.expect("etcd");
    let registry = Registry::start().await.expect("registry");
    let tls_dir = tempfile::tempdir().expect("tmp");
    let docker_pki = DockerTlsPki::generate(tls_dir.path()).unwrap_or_else(|e| panic!("{e}"));
    // The guest's 127.0.0.1:<registry port> leads to the registry, so a bundle reference
    // means the same image to the test machine's Docker and to the VMs'.
    // And a listener of the test's own, which the boot checks reach from each guest.
    let (loopback_port, served) = boot_checks::serve_loopback().await;
    let seed = VmSeed::new()
        .docker_tls(docker_pki.server.clone())
        .loopback(registry.addr().port())
        .loopback(loopback_port);
    let (uefi, bios) = tokio::join!(
        Vm::start(
            &image,
            VmConfig::new("uefi")
                .firmware(Firmware::Uefi)
                .seed(seed.clone()),
        ),
        Vm::start(
            &image,
            VmConfig::new("bios")
                .firmware(Firmware::Bios)
                .seed(seed.clone()),
        ),
    );
    let (mut uefi, mut bios) = (
        uefi.unwrap_or_else(|e| panic!("{e}")),
        bios.unwrap_or_else(|e| panic!("{e}")),
    );

    let _consoles = KeepConsoles(
        [&uefi, &bios]
            .iter()
            .map(|m| (m.name().to_owned(), m.serial_log_path().to_owned()))
            .collect(),
    );

    // The bundles are built while the VMs boot.
    let bins = binaries();
    let sources = tempfile::tempdir().expect("tmp");
    let mut images = RemoveImages(Vec::new());
    let base = image
        .kernel_package(vm::BASE_KERNEL_RELEASE)
        .expect("base kernel");
    let next = image
        .kernel_package(vm::NEXT_KERNEL_RELEASE)
        .expect("next kernel");
    let broken = image.broken_kernel_package().expect("broken kernel");
    let mut tags = BTreeMap::new();
    for (version, agent, agent_bin, deb, release) in [
        (
            "1.0.0",
            "1.0.0",
            &bins.agents[0],
            &base,
            vm::BASE_KERNEL_RELEASE,
        ),
        (
            "1.1.0",
            "1.0.0",
            &bins.agents[0],
            &broken,
            vm::NEXT_KERNEL_RELEASE,
        ),
        (
            "2.0.0",
            "2.0.0",
            &bins.agents[1],
            &next,
            vm::NEXT_KERNEL_RELEASE,
        ),
    ] {
        let dir = sources.path().join(version);
        bundle_source(&dir, version, agent, deb, release);
        let tag = format!("{}:{version}", registry.reference("baton/vm-bundle"));
        build_bundle(version, &dir, &tag, agent_bin, &bins.downloader).await;
        images.0.push(tag.clone());
        tags.insert(version, tag);
    }
    tokio::join!(
        boot_checks::check_vm(&mut uefi, &docker_pki.client, loopback_port),
        boot_checks::check_vm(&mut bios, &docker_pki.client, loopback_port)
    );
    assert!(
        served.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the loopback listener served {} requests, not one per VM",
        served.load(std::sync::atomic::Ordering::SeqCst)
    );
    eprintln!(
        "TIMING vm fleet: two VMs up and three bundles built in {:?}",
        started.elapsed()
    );

    let mut config = config(&etcd, "orch-vm");
    // The guest reaches the test machine's loopback at 10.0.2.2 (QEMU's user network).
    let etcd_port = etcd.endpoint().rsplit(':').next().expect("port").to_owned();
    config.agent_etcd = vec![format!("http://10.0.2.2:{etcd_port}")];
    config.docker_tls_ca_file = Some(docker_pki.client.ca.clone());
    config.docker_tls_cert_file = Some(docker_pki.client.cert.clone());
    config.docker_tls_key_file = Some(docker_pki.client.key.clone());
    // Under TCG a kernel that cannot find its root disk waits for it, panics and boots the
    // previous kernel in minutes: the host is away longer than the default 3 minutes, and
    // what is tested is that it comes back by itself, not the orchestrator's patience.
    config.health_timeout = Duration::from_secs(600);
    let orch = Orchestrator::start(config).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = orch.api.clone();
    // Rolling goes in host order: the UEFI VM first.
    let (first, second) = ("vm-a-uefi", "vm-b-bios");
    api.register(&registration(first, &uefi))
        .await
        .expect("register");
    api.register(&registration(second, &bios))
        .await
        .expect("register");

    // --- 1. 1.0.0 on fresh hosts: the job installs the agent; the kernel already runs.
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "vm-1", "image": tags["1.0.0"],
                "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
    )
    .await
    .expect("start 1.0.0");
    let u = follow(&api, "vm-1").await;
    assert_eq!(
        u.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        u.upgrade.reason,
        u.upgrade.hosts
    );
    eprintln!(
        "TIMING vm fleet: 1.0.0 installed by the downloader job in {:?}",
        t.elapsed()
    );
    for machine in [&uefi, &bios] {
        assert_eq!(
            machine.booted_kernels(),
            [vm::BASE_KERNEL_RELEASE],
            "{}: the running kernel needs no reboot",
            machine.name()
        );
    }

    // --- 2. A kernel that cannot boot, one host at a time, no failure allowed.
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "vm-bad", "image": tags["1.1.0"],
                "strategy": {"kind": "rolling", "batch": {"count": 1}, "max_failures": 0}}),
    )
    .await
    .expect("start 1.1.0");
    let u = follow(&api, "vm-bad").await;
    eprintln!(
        "TIMING vm fleet: the bad kernel tried and abandoned in {:?}",
        t.elapsed()
    );
    assert_eq!(u.upgrade.phase, UpgradePhase::Failed, "{:?}", u.upgrade);
    let (state, reason) = outcome(&u, first);
    assert_eq!(state, HostOutcomeState::Failed, "{reason}");
    assert!(
        reason.contains(vm::NEXT_KERNEL_RELEASE),
        "the reason names the kernel that failed: {reason}"
    );
    // From the console: the bad kernel started once, failed, and the machine came back
    // on the previous kernel by itself.
    let boots = uefi.booted_kernels();
    assert_eq!(
        boots,
        [
            vm::BASE_KERNEL_RELEASE,
            vm::NEXT_KERNEL_RELEASE,
            vm::BASE_KERNEL_RELEASE
        ],
        "console of {}:\n{}",
        uefi.name(),
        uefi.serial_output()
    );
    let console = uefi.serial_output();
    assert!(
        console.contains("Rebooting automatically due to panic= boot argument"),
        "the failed boot panicked and rebooted by itself:\n{console}"
    );
    let (state, _) = outcome(&u, second);
    assert!(
        !matches!(
            state,
            HostOutcomeState::Dispatched | HostOutcomeState::Succeeded
        ),
        "the second host was never told: {state:?}"
    );
    assert_eq!(
        bios.booted_kernels(),
        [vm::BASE_KERNEL_RELEASE],
        "the second VM is untouched"
    );
    let hosts = api.hosts().await.expect("hosts");
    for h in &hosts {
        let installed = h.installed.as_ref().expect("installed");
        assert_eq!(
            installed.bundle_version.as_deref(),
            Some("1.0.0"),
            "{}",
            h.id
        );
    }

    // The first VM is back on its previous kernel; under a loaded machine the engine may
    // have failed it (health timeout) before its agent reported again: the next upgrade
    // starts once it has.
    wait_resting(&api, first).await;

    // --- 3. The good kernel, rolling; the second VM's clock jumps an hour forward and back
    // while it waits for its turn, and its agent is killed in its kernel step.
    let t = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "vm-2", "image": tags["2.0.0"],
                "strategy": {"kind": "rolling", "batch": {"count": 1}, "max_failures": 0}}),
    )
    .await
    .expect("start 2.0.0");
    let client = docker_pki.client.clone();
    let etcd_client = etcd.client().await.expect("etcd client");
    let (u, killed, ()) = tokio::join!(
        follow(&api, "vm-2"),
        kill_agent_in_kernel_step(&api, "vm-2", second, &bios, &client),
        clock::jump_while_waiting(&api, &etcd_client, "vm-2", first, second, &bios, &client),
    );
    eprintln!(
        "TIMING vm fleet: 2.0.0 rolled over both VMs in {:?}",
        t.elapsed()
    );
    assert!(
        killed,
        "the agent of {second} was never seen in its kernel step"
    );
    assert_eq!(
        u.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        u.upgrade.reason,
        u.upgrade.hosts
    );
    for machine in [&uefi, &bios] {
        let boots = machine.booted_kernels();
        assert_eq!(
            boots.last().map(String::as_str),
            Some(vm::NEXT_KERNEL_RELEASE),
            "console of {}:\n{}",
            machine.name(),
            machine.serial_output()
        );
    }
    eprintln!("TIMING vm fleet: whole test {:?}", started.elapsed());
}
