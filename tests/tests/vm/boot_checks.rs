//! What every VM of the tier must show once booted, checked from its serial console and
//! through its seed: the disk of `images/vmhost/` booted under QEMU (TCG), UEFI firmware
//! and systemd-boot or a BIOS and GRUB, Debian's kernel, systemd's `multi-user.target`;
//! Docker's TLS answers the client certificate and refuses without one; the loopback
//! proxy reaches the test machine. The fleet test runs these on its two VMs before it
//! drives them, so the tier boots two VMs, not four.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_tests::pki::DockerClientTls;
use baton_tests::vm::{self, Firmware, Vm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A boot under TCG took 30 to 60 s on a 2-core machine (two VMs side by
/// side, the Docker Engine's start a quarter of it); this leaves room for a
/// slower, busier machine without hiding a hang for long.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the test machine's loopback listener answers, over HTTP/1.0.
const LOOPBACK_BODY: &str = "baton-loopback-ok";

/// The disk recipe and the harness name the same kernels, and their packages are there.
pub(crate) fn check_image(image: &vm::VmImage) {
    assert_eq!(
        image.kernel_releases().unwrap(),
        [vm::BASE_KERNEL_RELEASE, vm::NEXT_KERNEL_RELEASE],
        "images/vmhost/build.sh and tests/src/vm.rs name different kernels"
    );
    for release in [vm::BASE_KERNEL_RELEASE, vm::NEXT_KERNEL_RELEASE] {
        let deb = image.kernel_package(release).unwrap();
        assert!(
            std::fs::metadata(&deb).unwrap().len() > 1 << 20,
            "{} is too small",
            deb.display()
        );
    }
    check_broken_kernel_package(image);
}

/// The broken kernel is Debian's next kernel without `virtio_blk`.
fn check_broken_kernel_package(image: &vm::VmImage) {
    let broken = image
        .broken_kernel_package()
        .unwrap_or_else(|e| panic!("{e}"));
    let good = image
        .kernel_package(vm::NEXT_KERNEL_RELEASE)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(broken.file_name(), good.file_name());
    let list = |deb: &std::path::Path| {
        let out = std::process::Command::new("dpkg-deb")
            .arg("-c")
            .arg(deb)
            .output()
            .unwrap_or_else(|e| panic!("dpkg-deb (Debian's dpkg): {e}"));
        assert!(out.status.success(), "dpkg-deb -c {}", deb.display());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(list(&good).contains("/virtio_blk.ko"));
    let contents = list(&broken);
    assert!(
        !contents.contains("/virtio_blk.ko") && contents.contains("/virtio_net.ko"),
        "{} still has virtio_blk or lost other modules",
        broken.display()
    );
}

/// Serves [`LOOPBACK_BODY`] on the test machine's 127.0.0.1 and counts the
/// requests.
pub(crate) async fn serve_loopback() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the listener's address: {e}"))
        .port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{LOOPBACK_BODY}",
                    LOOPBACK_BODY.len()
                );
                if stream.write_all(response.as_bytes()).await.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, served)
}

pub(crate) async fn check_vm(machine: &mut Vm, tls: &DockerClientTls, loopback_port: u16) {
    let name = machine.name().to_owned();
    let firmware = machine.firmware();
    let ready = machine
        .wait_for_serial(vm::READY_MARKER, BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "vm: {name} ({firmware}) reached multi-user.target in {:.1} s",
        machine.uptime().as_secs_f64()
    );
    let console = machine.serial_output();

    // The firmware ran the boot loader, which booted Debian's kernel, once.
    assert_eq!(
        machine.booted_kernels(),
        [vm::BASE_KERNEL_RELEASE],
        "{name}: console:\n{console}"
    );
    assert!(
        ready.contains(&format!("{}{} ", vm::READY_MARKER, vm::BASE_KERNEL_RELEASE)),
        "{name}: ready line: {ready}"
    );

    // systemd as PID 1 reached the target: the report unit runs after it and
    // asks systemd.
    let report = machine.report_lines();
    assert!(
        report.iter().any(|l| l == "multi-user.target: active"),
        "{name}: the guest did not report multi-user.target active:\n{report:#?}"
    );
    let network = section(&report, "network");
    assert!(
        network.iter().any(|l| l.contains("inet 10.0.2.15/24")),
        "{name}: the guest has no address on QEMU's user network:\n{network:#?}"
    );
    let loader = format!("boot-loader: {}", firmware.boot_loader_report());
    assert!(
        report.contains(&loader),
        "{name}: the guest did not report {loader:?}:\n{report:#?}"
    );
    match firmware {
        Firmware::Uefi => check_systemd_boot(&name, &report),
        Firmware::Bios => check_grub(&name, &report),
    }

    // The seed's Docker TLS: the engine answers a client with the
    // certificate, and refuses one without.
    let version = machine
        .docker_cli(tls, &["version", "--format", "{{.Server.Version}}"])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!version.trim().is_empty(), "{name}: no server version");
    let Some(endpoint) = machine.docker_endpoint() else {
        panic!(
            "{name}: the seed's Docker TLS did not forward port {}",
            vm::DOCKER_TLS_PORT
        );
    };
    let refused = tokio::process::Command::new("docker")
        .args(["-H", &endpoint, "--tls", "--tlscacert"])
        .arg(&tls.ca)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("docker CLI (scripts/install-deps.sh): {e}"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("certificate"),
        "{name}: the engine answered a client without a certificate: {}{stderr}",
        String::from_utf8_lossy(&refused.stdout)
    );

    // The seed's loopback proxy: the guest's 127.0.0.1:<port> is the test
    // machine's.
    let url = format!("http://127.0.0.1:{loopback_port}/");
    let body = machine
        .guest_exec(tls, &["wget", "-q", "-O", "-", &url])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(body, LOOPBACK_BODY, "{name}: {url} in the guest");
    // guest_exec runs in the guest's host PID namespace: systemd is PID 1.
    let init = machine
        .guest_exec(tls, &["cat", "/proc/1/comm"])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(init.trim(), "systemd", "{name}: PID 1 in guest_exec");
    eprintln!(
        "vm: {name} ({firmware}) checked {:.1} s after QEMU started",
        machine.uptime().as_secs_f64()
    );
}

/// What the guest's bootctl reads: systemd-boot is the boot loader that ran,
/// and `bootctl list` shows the entry kernel-install made as the default and
/// as the one systemd-boot selected (LoaderEntrySelected).
fn check_systemd_boot(name: &str, report: &[String]) {
    let status = section(report, "bootctl status");
    let list = section(report, "bootctl list");
    let entry = format!("debian-{}.conf", vm::BASE_KERNEL_RELEASE);
    assert!(
        status.iter().any(|l| l.contains("Product: systemd-boot")),
        "{name}: bootctl status shows no systemd-boot:\n{report:#?}"
    );
    let id = list
        .iter()
        .position(|l| l.trim() == format!("id: {entry}"))
        .unwrap_or_else(|| panic!("{name}: bootctl list does not list {entry}:\n{report:#?}"));
    let title = id
        .checked_sub(1)
        .map(|i| list[i].as_str())
        .unwrap_or_default();
    assert!(
        title.contains("(default)") && title.contains("(selected)"),
        "{name}: {entry} is not the default and selected entry:\n{list:#?}"
    );
    assert!(
        list.iter()
            .any(|l| l.trim() == format!("linux: /debian/{}/linux", vm::BASE_KERNEL_RELEASE)),
        "{name}: the entry's kernel is not where kernel-install puts it:\n{list:#?}"
    );
}

/// GRUB booted the kernel update-grub listed, from the root's UUID, and its
/// environment block is readable (grub-reboot and grub-set-default write it).
fn check_grub(name: &str, report: &[String]) {
    let cmdline = report
        .iter()
        .find_map(|l| l.strip_prefix("cmdline: "))
        .unwrap_or_else(|| panic!("{name}: no cmdline in the report:\n{report:#?}"));
    assert!(
        cmdline.starts_with(&format!(
            "BOOT_IMAGE=/boot/vmlinuz-{} root=UUID=",
            vm::BASE_KERNEL_RELEASE
        )),
        "{name}: GRUB booted {cmdline:?}"
    );
    let env = section(report, "grub-editenv list");
    assert!(
        env.iter().all(|l| !l.contains("error")),
        "{name}: grub-editenv list failed:\n{env:#?}"
    );
}

/// The report lines after the heading `name` up to the next heading.
fn section<'a>(report: &'a [String], name: &str) -> &'a [String] {
    let headings = [
        "bootctl status",
        "bootctl list",
        "grub-editenv list",
        "network",
    ];
    let Some(start) = report.iter().position(|l| l == name) else {
        panic!("the guest printed no {name:?} section:\n{report:#?}");
    };
    let rest = &report[start + 1..];
    let end = rest
        .iter()
        .position(|l| {
            headings.contains(&l.as_str()) || l.starts_with("ready ") || l.starts_with("multi-user")
        })
        .unwrap_or(rest.len());
    &rest[..end]
}
