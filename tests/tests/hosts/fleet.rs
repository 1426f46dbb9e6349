//! The simulated fleet is real: containers running systemd on a private
//! network, reboots that change the boot id, a bootloader honouring the
//! one-shot/default entries, network cuts that really cut etcd off, and a
//! cleanup that leaves nothing behind.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use baton_tests::docker;
use baton_tests::etcd::EtcdServer;
use baton_tests::fleet::{Fleet, FleetOptions, Host};
use baton_tests::simhost_image::{
    self, BASE_KERNEL_RELEASE, BOOT_LOG_PATH, BOOTED_ENTRY_PATH, DEFAULT_ENTRY_PATH,
    KERNEL_PANIC_MARK, ONESHOT_ENTRY_PATH,
};

async fn require_docker() {
    if let Err(e) = docker::ensure_available().await {
        panic!("this test needs a working Docker Engine: {e}");
    }
}

/// Whether `host` gets an answer from etcd's `GET /version` at `ip:port`
/// (bash's /dev/tcp: the image has no curl or etcdctl).
async fn reaches_etcd(host: &Host, ip: IpAddr, port: u16) -> bool {
    let script =
        r#"exec 3<>"/dev/tcp/$0/$1" && printf 'GET /version HTTP/1.0\r\n\r\n' >&3 && cat <&3"#;
    let out = host
        .exec(&[
            "timeout",
            "3",
            "bash",
            "-c",
            script,
            &ip.to_string(),
            &port.to_string(),
        ])
        .await
        .unwrap_or_else(|e| panic!("exec in {}: {e}", host.name()));
    out.success() && out.stdout.contains("etcdserver")
}

async fn wait_container_state(host: &Host, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = host
            .container_state()
            .await
            .unwrap_or_else(|e| panic!("inspect {}: {e}", host.container()));
        if state == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} stayed {state}, expected {wanted}",
            host.container()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fleet_hosts_boot_reboot_reach_etcd_and_clean_up() {
    require_docker().await;
    let image_started = Instant::now();
    let image = simhost_image::ensure_image().await.unwrap();
    eprintln!(
        "simulated-host image {image} ready in {:?}",
        image_started.elapsed()
    );

    let started = Instant::now();
    let fleet = Fleet::start(3, FleetOptions::default()).await.unwrap();
    eprintln!("3 hosts running in {:?}", started.elapsed());
    let run_id = fleet.run_id().to_owned();
    let root = fleet.root().to_owned();
    let hosts = fleet.hosts();
    assert_eq!(hosts.len(), 3);

    // systemd is PID 1 and the system is clean; each host is itself.
    let mut boot_ids = Vec::new();
    for host in hosts {
        let state = host
            .exec(&["systemctl", "is-system-running"])
            .await
            .unwrap();
        assert_eq!(
            state.stdout.trim(),
            "running",
            "{}: {state:?}, failed units {:?}",
            host.name(),
            host.failed_units().await.unwrap()
        );
        let pid1 = host.exec_ok(&["cat", "/proc/1/comm"]).await.unwrap();
        assert_eq!(pid1.trim(), "systemd", "{}", host.name());
        assert_eq!(
            host.exec_ok(&["hostname"]).await.unwrap().trim(),
            host.name()
        );
        let addr = host.exec_ok(&["ip", "-4", "-o", "addr"]).await.unwrap();
        assert!(
            addr.contains(&format!("{}/24", host.ip())),
            "{} lacks {}: {addr}",
            host.name(),
            host.ip()
        );
        assert_eq!(host.booted_kernel().await.unwrap(), BASE_KERNEL_RELEASE);
        assert_eq!(host.read_line(BOOTED_ENTRY_PATH).await.unwrap(), "default");
        host.exec_ok(&["test", "-S", "/var/run/docker.sock"])
            .await
            .unwrap();
        boot_ids.push(host.boot_id().await.unwrap());
    }
    boot_ids
        .iter()
        .for_each(|id| assert_eq!(id.len(), 36, "{id}"));
    assert!(
        boot_ids[0] != boot_ids[1] && boot_ids[1] != boot_ids[2] && boot_ids[0] != boot_ids[2],
        "boot ids are not distinct: {boot_ids:?}"
    );

    // Hosts see each other by name on the private network.
    hosts[0]
        .exec_ok(&["timeout", "5", "getent", "hosts", hosts[1].name()])
        .await
        .unwrap();

    // What the host writes is on the machine in its folder, and the reverse.
    let marker = hosts[0]
        .machine_path("/var/lib/baton/marker")
        .unwrap()
        .unwrap();
    hosts[0]
        .sh("echo from-host > /var/lib/baton/marker")
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "from-host\n");
    std::fs::write(hosts[0].root().join("etc/baton/agent.toml"), "x = 1\n").unwrap();
    assert_eq!(
        hosts[0]
            .exec_ok(&["cat", "/etc/baton/agent.toml"])
            .await
            .unwrap(),
        "x = 1\n"
    );

    // A sibling container mounting the host's folders sees the host: its
    // boot files and its system bus (the downloader job's view).
    let sibling = hosts[1].sibling_name("probe");
    let mut mounts = Vec::new();
    for (path, machine) in hosts[1].host_paths() {
        mounts.push("--volume".to_owned());
        mounts.push(format!("{}:{path}", machine.display()));
    }
    let mut args = vec!["run", "--rm", "--name", &sibling];
    args.extend(mounts.iter().map(String::as_str));
    args.extend([
        fleet.image(),
        "busctl",
        "--system",
        "get-property",
        "org.freedesktop.hostname1",
        "/org/freedesktop/hostname1",
        "org.freedesktop.hostname1",
        "Hostname",
    ]);
    let hostname = docker::run(&args).await.unwrap();
    assert_eq!(hostname, format!("s \"{}\"", hosts[1].name()));

    // Reboot one host: its boot id changes, the others keep theirs.
    let reboot_started = Instant::now();
    let new_id = hosts[0].reboot().await.unwrap();
    eprintln!(
        "reboot (docker restart) took {:?}",
        reboot_started.elapsed()
    );
    assert_ne!(new_id, boot_ids[0]);
    assert_eq!(hosts[0].boot_id().await.unwrap(), new_id);
    assert_eq!(hosts[1].boot_id().await.unwrap(), boot_ids[1]);
    assert_eq!(hosts[2].boot_id().await.unwrap(), boot_ids[2]);
    assert_eq!(hosts[0].booted_kernel().await.unwrap(), BASE_KERNEL_RELEASE);
    // The host's files survived the reboot.
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "from-host\n");
    let log = String::from_utf8(hosts[0].read_file(BOOT_LOG_PATH).await.unwrap()).unwrap();
    assert_eq!(log.lines().count(), 2, "boot log: {log}");
    assert!(log.contains(&format!("boot_id={new_id} kernel={BASE_KERNEL_RELEASE}")));

    // Reboot from inside, as the agent does: the restart policy brings it back.
    let reboot_started = Instant::now();
    let inside_id = hosts[1].systemctl_reboot().await.unwrap();
    eprintln!(
        "reboot (systemctl reboot) took {:?}",
        reboot_started.elapsed()
    );
    assert_ne!(inside_id, boot_ids[1]);
    assert_eq!(hosts[2].boot_id().await.unwrap(), boot_ids[2]);

    // etcd on the gateway: reachable from the hosts, lost when cut off.
    let gateway = IpAddr::V4(fleet.gateway_ip());
    let etcd = EtcdServer::start_on(gateway).await.unwrap();
    let endpoint = etcd.endpoints_on(gateway).swap_remove(0);
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    for host in hosts {
        assert!(
            reaches_etcd(host, gateway, port).await,
            "{} cannot reach etcd at {endpoint}",
            host.name()
        );
    }
    hosts[2].disconnect().await.unwrap();
    assert!(
        !reaches_etcd(&hosts[2], gateway, port).await,
        "{} still reaches etcd after disconnect",
        hosts[2].name()
    );
    assert!(reaches_etcd(&hosts[1], gateway, port).await);
    hosts[2].reconnect().await.unwrap();
    assert!(
        reaches_etcd(&hosts[2], gateway, port).await,
        "{} does not reach etcd after reconnect",
        hosts[2].name()
    );
    let addr = hosts[2].exec_ok(&["ip", "-4", "-o", "addr"]).await.unwrap();
    assert!(addr.contains(&format!("{}/24", hosts[2].ip())), "{addr}");

    // Power cut: the host stays down (no restart) until started again.
    hosts[2].kill().await.unwrap();
    wait_container_state(&hosts[2], "exited").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hosts[2].container_state().await.unwrap(), "exited");
    hosts[2].start().await.unwrap();
    assert_ne!(hosts[2].boot_id().await.unwrap(), boot_ids[2]);

    // Clean shutdown: also stays down.
    hosts[1].stop().await.unwrap();
    assert_eq!(hosts[1].container_state().await.unwrap(), "exited");
    drop(etcd);

    // Nothing is left once the fleet is dropped.
    let network = fleet.network().to_owned();
    drop(fleet);
    let name_filter = format!("name={run_id}");
    let containers = docker::run(&["ps", "--all", "--quiet", "--filter", &name_filter])
        .await
        .unwrap();
    assert_eq!(containers, "", "containers of run {run_id} left behind");
    let label_filter = format!("label=baton.run={run_id}");
    let labelled = docker::run(&["ps", "--all", "--quiet", "--filter", &label_filter])
        .await
        .unwrap();
    assert_eq!(
        labelled, "",
        "labelled containers of run {run_id} left behind"
    );
    let networks = docker::run(&["network", "ls", "--quiet", "--filter", &name_filter])
        .await
        .unwrap();
    assert_eq!(networks, "", "network {network} left behind");
    assert!(!root.exists(), "{} left behind", root.display());
}

#[tokio::test]
async fn bootloader_honours_oneshot_and_default_entries() {
    require_docker().await;
    let fleet = Fleet::start(1, FleetOptions::default()).await.unwrap();
    let host = &fleet.hosts()[0];
    assert_eq!(host.booted_kernel().await.unwrap(), BASE_KERNEL_RELEASE);
    assert_eq!(
        host.read_line(DEFAULT_ENTRY_PATH).await.unwrap(),
        BASE_KERNEL_RELEASE
    );
    assert!(!host.file_exists(ONESHOT_ENTRY_PATH).await.unwrap());

    // A good kernel tried once boots once, then the default is back.
    let good = "6.2.0-baton-good";
    host.write_file(&simhost_image::kernel_path(good), b"simulated kernel\n")
        .await
        .unwrap();
    host.write_file(ONESHOT_ENTRY_PATH, format!("{good}\n").as_bytes())
        .await
        .unwrap();
    host.systemctl_reboot().await.unwrap();
    assert_eq!(host.booted_kernel().await.unwrap(), good);
    assert_eq!(host.read_line(BOOTED_ENTRY_PATH).await.unwrap(), "oneshot");
    assert!(
        !host.file_exists(ONESHOT_ENTRY_PATH).await.unwrap(),
        "one-shot entry not consumed"
    );
    host.reboot().await.unwrap();
    assert_eq!(host.booted_kernel().await.unwrap(), BASE_KERNEL_RELEASE);
    assert_eq!(host.read_line(BOOTED_ENTRY_PATH).await.unwrap(), "default");

    // A kernel that panics falls back to the default; the entry is consumed.
    let bad = "6.3.0-baton-bad";
    host.write_file(
        &simhost_image::kernel_path(bad),
        format!("simulated kernel\n{KERNEL_PANIC_MARK}\n").as_bytes(),
    )
    .await
    .unwrap();
    host.write_file(ONESHOT_ENTRY_PATH, bad.as_bytes())
        .await
        .unwrap();
    let boot_id = host.systemctl_reboot().await.unwrap();
    assert_eq!(host.booted_kernel().await.unwrap(), BASE_KERNEL_RELEASE);
    assert_eq!(host.read_line(BOOTED_ENTRY_PATH).await.unwrap(), "default");
    assert!(
        !host.file_exists(ONESHOT_ENTRY_PATH).await.unwrap(),
        "one-shot entry not consumed"
    );
    let log = String::from_utf8(host.read_file(BOOT_LOG_PATH).await.unwrap()).unwrap();
    let last = log.lines().last().unwrap();
    assert!(
        last.contains(&format!("boot_id={boot_id}"))
            && last.contains(&format!("rejected_oneshot={bad}")),
        "boot log: {log}"
    );

    // A missing kernel falls back too.
    host.write_file(ONESHOT_ENTRY_PATH, b"6.4.0-baton-missing\n")
        .await
        .unwrap();
    host.reboot().await.unwrap();
    assert_eq!(host.booted_kernel().await.unwrap(), BASE_KERNEL_RELEASE);
    assert!(!host.file_exists(ONESHOT_ENTRY_PATH).await.unwrap());

    // Making the good kernel the default sticks across reboots.
    host.write_file(DEFAULT_ENTRY_PATH, format!("{good}\n").as_bytes())
        .await
        .unwrap();
    host.reboot().await.unwrap();
    assert_eq!(host.booted_kernel().await.unwrap(), good);
    assert_eq!(host.read_line(BOOTED_ENTRY_PATH).await.unwrap(), "default");
    host.reboot().await.unwrap();
    assert_eq!(host.booted_kernel().await.unwrap(), good);
}
