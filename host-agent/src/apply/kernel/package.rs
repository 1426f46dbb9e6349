//! A kernel installed the way its distribution installs kernels: the component's files
//! without a `dest` are Debian packages, installed with `dpkg -i`. Their maintainer scripts
//! make the initramfs and run the boot loader's hooks (`kernel-install` for systemd-boot,
//! `update-grub` for GRUB), so the boot entry is the one the distribution's tools make.
//!
//! [`Packaged`] is the kernel step of every such boot loader, in one place; what differs
//! between them (how an entry is named, set as the default, booted once) is an
//! [`EntryTools`].

use baton_protocol::manifest::Component;

use super::super::Context;
use super::{BootLoader, running};
use crate::ops::{HostOps, OpError, OpResult};

/// How one kernel's entry is named to the boot loader's tools.
pub(super) struct EntryNames {
    /// For the default entry.
    pub default: String,
    /// For a one-shot boot.
    pub once: String,
}

/// What a boot loader whose entries the kernel package's hooks make must provide.
pub(super) trait EntryTools: Sync {
    /// Refuses, before anything changes, settings under which the one-shot or the default
    /// would not work; says what to change.
    fn check(&self, _ops: &dyn HostOps, _component: &Component) -> OpResult<()> {
        Ok(())
    }
    /// The names of the entry that boots `release`; an error names what is missing.
    fn entry(
        &self,
        ops: &dyn HostOps,
        component: &Component,
        release: &str,
    ) -> OpResult<EntryNames>;
    /// Makes `name` the entry booted by default.
    fn set_default(&self, ops: &dyn HostOps, name: &str) -> OpResult<()>;
    /// Makes `name` the entry of the next boot only.
    fn boot_once(&self, ops: &dyn HostOps, name: &str) -> OpResult<()>;
    /// Cancels a one-shot boot not yet taken.
    fn clear_once(&self, ops: &dyn HostOps) -> OpResult<()>;
}

/// A boot loader driven through its [`EntryTools`], kernels installed from packages.
pub(super) struct Packaged<T>(pub T);

impl<T: EntryTools> BootLoader for Packaged<T> {
    fn install(
        &self,
        ops: &dyn HostOps,
        ctx: &Context,
        component: &Component,
        release: &str,
    ) -> OpResult<()> {
        let debs = packages(ctx, component)?;
        self.0.check(ops, component)?;
        // Pinned before the new entry exists: boot loaders default to the newest kernel,
        // and from now on the default is explicit.
        if let Some(running) = running(ops, ctx)?
            && running != release
        {
            let current = self.0.entry(ops, component, &running)?;
            self.0.set_default(ops, &current.default)?;
        }
        verify(ops, ctx, component)?;
        install(ops, &debs)?;
        let next = self.0.entry(ops, component, release)?;
        self.0.boot_once(ops, &next.once)
    }

    fn make_default(
        &self,
        ops: &dyn HostOps,
        component: &Component,
        release: &str,
    ) -> OpResult<()> {
        let entry = self.0.entry(ops, component, release)?;
        self.0.set_default(ops, &entry.default)
    }

    fn abandon(
        &self,
        ops: &dyn HostOps,
        ctx: &Context,
        component: &Component,
        release: &str,
        running: Option<&str>,
    ) -> OpResult<()> {
        // In case the reboot never happened: no later boot starts the new kernel.
        self.0.clear_once(ops)?;
        if running != Some(release) {
            purge(ops, &packages(ctx, component)?)?;
        }
        Ok(())
    }
}

/// The bundle's kernel packages (paths on the host), in manifest order.
fn packages(ctx: &Context, component: &Component) -> OpResult<Vec<String>> {
    let debs: Vec<String> = component
        .files
        .iter()
        .filter(|f| f.dest.is_none())
        .map(|f| ctx.source(f).display().to_string())
        .collect();
    if debs.is_empty() {
        return Err(OpError::Bootloader {
            component: component.name.clone(),
            reason: "the bundle has no kernel package (a file without dest, a .deb): a real \
                     boot loader boots what the distribution's tools installed"
                .to_owned(),
        });
    }
    Ok(debs)
}

/// Checks each package against the manifest before the package manager gets it.
fn verify(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    for f in component.files.iter().filter(|f| f.dest.is_none()) {
        ops.verify_staged(&ctx.source(f), f)?;
    }
    Ok(())
}

/// Installs the packages (again, if they are installed: the same result).
fn install(ops: &dyn HostOps, debs: &[String]) -> OpResult<()> {
    let mut argv = vec!["env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i"];
    argv.extend(debs.iter().map(String::as_str));
    ops.run(&argv).map(drop)
}

/// Purges the packages (their boot entries go with them); already gone is fine.
fn purge(ops: &dyn HostOps, debs: &[String]) -> OpResult<()> {
    for deb in debs {
        let name = ops.run(&["dpkg-deb", "--field", deb, "Package"])?;
        let name = name.trim();
        if ops.run(&["dpkg-query", "--show", name]).is_ok() {
            ops.run(&[
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "dpkg",
                "--purge",
                name,
            ])?;
        }
    }
    Ok(())
}
