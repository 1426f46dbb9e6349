//! The virtual-machine tier: a VM boots the disk of `images/vmhost/` under
//! QEMU (TCG, UEFI firmware) through systemd-boot into Debian's kernel and
//! systemd's `multi-user.target`, all read from its serial console.

use std::time::{Duration, Instant};

use baton_tests::vm::{self, Vm, VmConfig};

/// A boot under TCG took 1.5 to 2 minutes on a 2-core machine shared with
/// other builds (the Docker Engine's start is a third of it); this leaves
/// room for a slower machine without hiding a hang for long.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The port a Docker Engine serves TLS on.
const DOCKER_TLS_PORT: u16 = 2376;

/// The boot loader entry kernel-install made for the base kernel.
fn base_entry() -> String {
    format!("debian-{}.conf", vm::BASE_KERNEL_RELEASE)
}

#[tokio::test]
async fn boots_debian_kernel_through_systemd_boot_to_multi_user() {
    let image = vm::ensure_image().await.unwrap_or_else(|e| panic!("{e}"));
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

    let started = Instant::now();
    // The Docker Engine's TLS port, as the next tier will use it: QEMU
    // must accept the forward.
    let config = VmConfig::new("boot").forward(DOCKER_TLS_PORT);
    let mut machine = Vm::start(&image, config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(machine.host_port(DOCKER_TLS_PORT).is_some(), "{machine:?}");
    let ready = machine
        .wait_for_serial(vm::READY_MARKER, BOOT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "vm: {} reached multi-user.target in {:.1} s",
        machine.name(),
        started.elapsed().as_secs_f64()
    );
    let console = machine.serial_output();

    // The firmware ran systemd-boot, which booted Debian's kernel, once.
    assert_eq!(
        machine.booted_kernels(),
        [vm::BASE_KERNEL_RELEASE],
        "console:\n{console}"
    );
    assert!(
        ready.contains(&format!("{}{} ", vm::READY_MARKER, vm::BASE_KERNEL_RELEASE)),
        "ready line: {ready}"
    );

    // systemd as PID 1 reached the target: the report unit runs after it and
    // asks systemd (its own status line for the target comes only after the
    // unit gives the console back, if at all).
    let report = machine.report_lines();
    assert!(
        report.iter().any(|l| l == "multi-user.target: active"),
        "the guest did not report multi-user.target active:\n{report:#?}"
    );

    // systemd-networkd got an address from QEMU's user network (DHCP).
    let network = section(&report, "network");
    assert!(
        network.iter().any(|l| l.contains("inet 10.0.2.15/24")),
        "the guest has no address on QEMU's user network:\n{network:#?}"
    );

    // What the guest's bootctl reads: systemd-boot is the boot loader that
    // ran, and `bootctl list` shows the entry kernel-install made as the
    // default and as the one systemd-boot selected (LoaderEntrySelected).
    let status = section(&report, "bootctl status");
    let list = section(&report, "bootctl list");
    let entry = base_entry();
    assert!(
        status.iter().any(|l| l.contains("Product: systemd-boot")),
        "bootctl status shows no systemd-boot:\n{report:#?}"
    );
    let id = list
        .iter()
        .position(|l| l.trim() == format!("id: {entry}"))
        .unwrap_or_else(|| panic!("bootctl list does not list {entry}:\n{report:#?}"));
    let title = id
        .checked_sub(1)
        .map(|i| list[i].as_str())
        .unwrap_or_default();
    assert!(
        title.contains("(default)") && title.contains("(selected)"),
        "{entry} is not the default and selected entry:\n{list:#?}"
    );
    assert!(
        list.iter()
            .any(|l| l.trim() == format!("linux: /debian/{}/linux", vm::BASE_KERNEL_RELEASE)),
        "the entry's kernel is not where kernel-install puts it:\n{list:#?}"
    );
}

/// The report lines after the heading `name` up to the next heading.
fn section<'a>(report: &'a [String], name: &str) -> &'a [String] {
    let headings = ["bootctl status", "bootctl list", "network"];
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
