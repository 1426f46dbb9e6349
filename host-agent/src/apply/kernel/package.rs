//! A kernel installed the way its distribution installs kernels: the component's files
//! without a `dest` are Debian packages, installed with `dpkg -i`. Their maintainer scripts
//! make the initramfs and run the boot loader's hooks (`kernel-install` for systemd-boot,
//! `update-grub` for GRUB), so the boot entry is the one the distribution's tools make.

use baton_protocol::manifest::Component;

use super::super::Context;
use crate::ops::{HostOps, OpError, OpResult};

/// The bundle's kernel packages (paths on the host), in manifest order.
pub(super) fn packages(ctx: &Context, component: &Component) -> OpResult<Vec<String>> {
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
pub(super) fn verify(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    for f in component.files.iter().filter(|f| f.dest.is_none()) {
        ops.verify_staged(&ctx.source(f), f)?;
    }
    Ok(())
}

/// Installs the packages (again, if they are installed: the same result).
pub(super) fn install(ops: &dyn HostOps, debs: &[String]) -> OpResult<()> {
    let mut argv = vec!["env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i"];
    argv.extend(debs.iter().map(String::as_str));
    ops.run(&argv).map(drop)
}

/// Purges the packages (their boot entries go with them); already gone is fine.
pub(super) fn purge(ops: &dyn HostOps, debs: &[String]) -> OpResult<()> {
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
