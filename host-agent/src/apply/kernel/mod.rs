//! `kernel` components: the new kernel is installed beside the running one, and the boot
//! loader is told to boot it **once**; after the reboot, if it is the kernel running, the
//! agent makes it the default, otherwise it is abandoned and the previous default stays.
//! A kernel that cannot boot (a panic, a root it cannot mount, with `panic=` on its command
//! line) reboots the machine, the one-shot is already spent, and the previous kernel comes
//! back without anyone touching the machine.
//!
//! The boot loader is one of [`BootLoader`]'s implementations, chosen by the agent's
//! `bootloader` setting or found on the host ([`resolve`]):
//! - `systemd_boot.rs`: systemd-boot (UEFI), Boot Loader Specification entries;
//! - `grub.rs`: GRUB with `GRUB_DEFAULT=saved`;
//! - `simulated.rs`: the simulated fleet's boot loader files.
//!
//! The real boot loaders install the kernel the distribution's way, and share the steps of
//! the kernel step (`package.rs`); each provides only how its entries are named, made the
//! default and booted once.

mod grub;
mod package;
mod simulated;
mod systemd_boot;

use std::path::Path;

use baton_protocol::agent_config::Bootloader;
use baton_protocol::manifest::Component;

use super::Context;
use crate::ops::{HostOps, OpError, OpResult};

pub use simulated::{DEFAULT_ENTRY, ONESHOT_ENTRY};

/// What a kernel step asks of a boot loader.
trait BootLoader {
    /// Installs the kernel `release` of `component` (beside the running one) and makes
    /// the next boot, and only the next, start it. The entry the host boots by default
    /// stays (or is first made) the running kernel's. Idempotent.
    fn install(
        &self,
        ops: &dyn HostOps,
        ctx: &Context,
        component: &Component,
        release: &str,
    ) -> OpResult<()>;
    /// Makes `release`, verified running, the default entry.
    fn make_default(&self, ops: &dyn HostOps, component: &Component, release: &str)
    -> OpResult<()>;
    /// Abandons `release`: no later boot starts it; it is removed unless it is `running`.
    fn abandon(
        &self,
        ops: &dyn HostOps,
        ctx: &Context,
        component: &Component,
        release: &str,
        running: Option<&str>,
    ) -> OpResult<()>;
    /// Files this boot loader changes that a rollback restores from backups.
    fn replaced_paths(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The boot loader for `component` on this host: the configured one, or the one found.
fn resolve(
    ops: &dyn HostOps,
    setting: Bootloader,
    component: &Component,
) -> OpResult<&'static dyn BootLoader> {
    let found = match setting {
        Bootloader::Simulated => Bootloader::Simulated,
        Bootloader::SystemdBoot => Bootloader::SystemdBoot,
        Bootloader::Grub => Bootloader::Grub,
        Bootloader::Auto => detect(ops).ok_or_else(|| OpError::NoBootloader {
            component: component.name.clone(),
        })?,
    };
    Ok(match found {
        Bootloader::SystemdBoot => &package::Packaged(systemd_boot::SystemdBoot),
        Bootloader::Grub => &package::Packaged(grub::Grub),
        Bootloader::Simulated | Bootloader::Auto => &simulated::Simulated,
    })
}

/// Finds the boot loader: the simulated one's folder first (a simulated host has no
/// other), then systemd-boot on a UEFI host, then GRUB.
fn detect(ops: &dyn HostOps) -> Option<Bootloader> {
    if ops.exists(Path::new(simulated::FOLDER)) {
        return Some(Bootloader::Simulated);
    }
    if ops.exists(Path::new("/sys/firmware/efi")) && ops.run(&["bootctl", "is-installed"]).is_ok() {
        return Some(Bootloader::SystemdBoot);
    }
    if ops.exists(Path::new(grub::CONFIG)) {
        return Some(Bootloader::Grub);
    }
    None
}

fn release(component: &Component) -> OpResult<&str> {
    component
        .release
        .as_deref()
        .ok_or_else(|| OpError::Incomplete {
            component: component.name.clone(),
            what: "release",
        })
}

/// The kernel release running now, if the host says.
fn running(ops: &dyn HostOps, ctx: &Context) -> OpResult<Option<String>> {
    Ok(ops
        .read_text(&ctx.kernel_release_file)?
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

/// The files a kernel step backs up before it is applied.
pub(super) fn replaced_paths(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
) -> OpResult<Vec<String>> {
    let loader = resolve(ops, ctx.bootloader, component)?;
    Ok(loader
        .replaced_paths()
        .iter()
        .map(|p| (*p).to_owned())
        .collect())
}

pub(super) fn apply(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    let loader = resolve(ops, ctx.bootloader, component)?;
    loader.install(ops, ctx, component, release(component)?)
}

/// Makes the new kernel the default once it is seen running.
pub fn confirm(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    let loader = resolve(ops, ctx.bootloader, component)?;
    loader.make_default(ops, component, release(component)?)
}

pub(super) fn roll_back(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    let loader = resolve(ops, ctx.bootloader, component)?;
    let running = running(ops, ctx)?;
    loader.abandon(ops, ctx, component, release(component)?, running.as_deref())
}

#[cfg(test)]
mod tests;
