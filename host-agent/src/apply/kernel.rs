//! `kernel` components: the kernel is installed beside the running one and a one-shot boot
//! entry points at it; after the reboot, if it is running it becomes the default entry,
//! otherwise the previous default is restored.
//!
//! Entry files (the same ones the simulated bootloader reads): `/boot/baton/default` and
//! `/boot/baton/oneshot`, each one line holding a kernel release.

use std::path::Path;

use baton_protocol::manifest::Component;

use super::{Context, file};
use crate::ops::{HostOps, OpError, OpResult};

/// The default boot entry.
pub const DEFAULT_ENTRY: &str = "/boot/baton/default";
/// The boot-once entry, consumed by the bootloader.
pub const ONESHOT_ENTRY: &str = "/boot/baton/oneshot";

fn release(component: &Component) -> OpResult<&str> {
    component
        .release
        .as_deref()
        .ok_or_else(|| OpError::Incomplete {
            component: component.name.clone(),
            what: "release",
        })
}

pub(super) fn apply(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    file::apply(ops, ctx, component)?;
    ops.write_text(
        Path::new(ONESHOT_ENTRY),
        &format!("{}\n", release(component)?),
    )
}

/// Makes the new kernel the default after it booted.
pub fn confirm(ops: &dyn HostOps, component: &Component) -> OpResult<()> {
    ops.write_text(
        Path::new(DEFAULT_ENTRY),
        &format!("{}\n", release(component)?),
    )
}

pub(super) fn roll_back(ops: &dyn HostOps, _component: &Component) -> OpResult<()> {
    // The default entry was restored from its backup with the other files; a one-shot entry
    // not yet consumed must not boot the new kernel later.
    ops.remove_file(Path::new(ONESHOT_ENTRY))
}
