//! Each boot loader's commands, in order, against the recording host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_protocol::agent_config::Bootloader;
use baton_protocol::manifest::{Component, ComponentKind, FileEntry};

use super::super::Context;
use super::*;
use crate::ops::RecordingHost;

const RUNNING: &str = "6.1.0-50-cloud-amd64";
const NEW: &str = "6.1.0-51-cloud-amd64";
const DEB: &str = "/var/lib/baton/bundles/2.0.0/packages/kernel/linux-image.deb";

fn ctx(bootloader: Bootloader) -> Context {
    Context {
        bundle_dir: PathBuf::from("/var/lib/baton/bundles/2.0.0"),
        backup_dir: PathBuf::from("/var/lib/baton/backup/u1"),
        container_prefix: String::new(),
        settle: Duration::from_secs(1),
        bootloader,
        kernel_release_file: PathBuf::from("/proc/sys/kernel/osrelease"),
    }
}

fn kernel(dest: Option<&str>) -> Component {
    let mut c: Component = serde_json::from_value(serde_json::json!({
        "name": "kernel", "version": "2.0.0", "kind": "kernel", "release": NEW,
        "order": 90, "reboot": true, "files": []
    }))
    .expect("component");
    c.kind = ComponentKind::Kernel;
    c.files.push(FileEntry {
        path: "packages/kernel/linux-image.deb".into(),
        dest: dest.map(str::to_owned),
        size: 0,
        sha256: "0".repeat(64),
        mode: "0644".into(),
    });
    c
}

fn host(running: &str) -> RecordingHost {
    let host = RecordingHost::default();
    host.set_file(
        Path::new("/proc/sys/kernel/osrelease"),
        &format!("{running}\n"),
    );
    host
}

#[test]
fn systemd_boot_pins_the_running_entry_installs_the_package_and_boots_it_once() {
    let host = host(RUNNING);
    host.answer("bootctl list", Ok(systemd_boot::tests::LIST));
    let ctx = ctx(Bootloader::SystemdBoot);
    apply(&host, &ctx, &kernel(None)).expect("apply");
    assert_eq!(
        host.commands(),
        [
            "bootctl list --no-pager".to_owned(),
            format!("bootctl set-default debian-{RUNNING}.conf"),
            format!("env DEBIAN_FRONTEND=noninteractive dpkg -i {DEB}"),
            "bootctl list --no-pager".to_owned(),
            format!("bootctl set-oneshot debian-{NEW}+3.conf"),
        ]
    );
}

#[test]
fn systemd_boot_confirms_and_abandons() {
    let host = host(NEW);
    host.answer("bootctl list", Ok(systemd_boot::tests::LIST));
    let ctx = ctx(Bootloader::SystemdBoot);
    confirm(&host, &ctx, &kernel(None)).expect("confirm");
    assert_eq!(
        host.commands().last().map(String::as_str),
        Some(format!("bootctl set-default debian-{NEW}.conf").as_str())
    );

    // Back on the old kernel: the new one is removed with its package.
    let host = self::host(RUNNING);
    host.answer("dpkg-deb --field", Ok("linux-image-6.1.0-51-cloud-amd64\n"));
    roll_back(&host, &ctx, &kernel(None)).expect("roll back");
    assert_eq!(
        host.commands(),
        [
            "bootctl set-oneshot ".to_owned(),
            format!("dpkg-deb --field {DEB} Package"),
            format!("dpkg-query --show linux-image-{NEW}"),
            format!("env DEBIAN_FRONTEND=noninteractive dpkg --purge linux-image-{NEW}"),
        ]
    );

    // Running the new kernel (a later step failed): it is kept, only not the default.
    let host = self::host(NEW);
    roll_back(&host, &ctx, &kernel(None)).expect("roll back");
    assert_eq!(host.commands(), ["bootctl set-oneshot ".to_owned()]);
}

#[test]
fn a_real_boot_loader_needs_the_kernel_package() {
    let host = host(RUNNING);
    let err = apply(
        &host,
        &ctx(Bootloader::SystemdBoot),
        &kernel(Some("/boot/vmlinuz")),
    )
    .expect_err("no package");
    assert!(err.to_string().contains("no kernel package"), "{err}");
    assert!(host.commands().is_empty(), "{:?}", host.commands());
}

#[test]
fn systemd_boot_without_an_entry_for_the_new_kernel_says_so() {
    let host = host(RUNNING);
    host.answer("bootctl list", Ok(""));
    let err = apply(&host, &ctx(Bootloader::SystemdBoot), &kernel(None)).expect_err("no entry");
    assert!(err.to_string().contains(RUNNING), "{err}");
}

#[test]
fn grub_pins_the_saved_default_and_uses_grub_reboot() {
    let host = host(RUNNING);
    host.set_file(Path::new("/etc/default/grub"), "GRUB_DEFAULT=saved\n");
    host.set_file(Path::new(grub::CONFIG), grub::tests::CONFIG_TEXT);
    let ctx = ctx(Bootloader::Grub);
    apply(&host, &ctx, &kernel(None)).expect("apply");
    assert_eq!(
        host.commands(),
        [
            format!("grub-set-default gnulinux-advanced-0f00>gnulinux-{RUNNING}-advanced-0f00"),
            format!("env DEBIAN_FRONTEND=noninteractive dpkg -i {DEB}"),
            format!("grub-reboot gnulinux-advanced-0f00>gnulinux-{NEW}-advanced-0f00"),
        ]
    );
    confirm(&host, &ctx, &kernel(None)).expect("confirm");
    assert_eq!(
        host.commands().last().map(String::as_str),
        Some(
            format!("grub-set-default gnulinux-advanced-0f00>gnulinux-{NEW}-advanced-0f00")
                .as_str()
        )
    );
}

#[test]
fn grub_refuses_a_default_that_is_not_saved_before_installing() {
    let host = host(RUNNING);
    host.set_file(Path::new("/etc/default/grub"), "GRUB_DEFAULT=0\n");
    let err = apply(&host, &ctx(Bootloader::Grub), &kernel(None)).expect_err("not saved");
    assert!(err.to_string().contains("GRUB_DEFAULT=saved"), "{err}");
    assert!(host.commands().is_empty(), "{:?}", host.commands());
}

#[test]
fn detection_prefers_the_simulated_folder_then_systemd_boot_then_grub() {
    let host = RecordingHost::default();
    assert_eq!(detect(&host), None);
    host.add_path(Path::new(grub::CONFIG));
    assert_eq!(detect(&host), Some(Bootloader::Grub));
    host.add_path(Path::new("/sys/firmware/efi"));
    assert_eq!(detect(&host), Some(Bootloader::SystemdBoot));
    host.answer("bootctl is-installed", Err("no"));
    assert_eq!(detect(&host), Some(Bootloader::Grub), "bootctl says no");
    host.add_path(Path::new(simulated::FOLDER));
    assert_eq!(detect(&host), Some(Bootloader::Simulated));

    let err = apply(
        &RecordingHost::default(),
        &ctx(Bootloader::Auto),
        &kernel(None),
    )
    .expect_err("none");
    assert!(err.to_string().contains("set `bootloader`"), "{err}");
}
