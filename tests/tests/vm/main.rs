//! The virtual-machine tier (`make test-vm`; `make test` runs it as its own step): QEMU
//! VMs booting the Debian disks of `images/vmhost/`, one with UEFI firmware and
//! systemd-boot, one with a BIOS and GRUB.
//!
//! - `fleet.rs`: the two VMs as a fleet, driven through the orchestrator's REST API, with
//!   real kernel upgrades and a kernel that cannot boot;
//! - `clock.rs`: one host's clock jumped an hour forward and back mid-upgrade (fault 10 of
//!   the fault matrix, docs/reliability.md);
//! - `boot_checks.rs`: what each VM must show once booted (boot loader, kernel, systemd,
//!   Docker's TLS, the loopback proxy), which the fleet test checks first.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod boot_checks;
mod clock;
mod fleet;
#[path = "../orchestrator/support.rs"]
mod support;
