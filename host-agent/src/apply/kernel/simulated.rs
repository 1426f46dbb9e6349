//! The simulated fleet's boot loader: it reads `/boot/baton/oneshot` (then removes it) and
//! `/boot/baton/default` at the simulated host's boot, each one line holding a kernel
//! release, and "boots" that release. The kernel's files are copied to their `dest`.

use std::path::Path;

use baton_protocol::manifest::Component;

use super::super::{Context, file};
use super::BootLoader;
use crate::ops::{HostOps, OpResult};

/// The simulated boot loader's folder; its presence is how a simulated host is found.
pub const FOLDER: &str = "/boot/baton";
/// The default boot entry.
pub const DEFAULT_ENTRY: &str = "/boot/baton/default";
/// The boot-once entry, consumed by the boot loader.
pub const ONESHOT_ENTRY: &str = "/boot/baton/oneshot";

pub(super) struct Simulated;

impl BootLoader for Simulated {
    fn install(
        &self,
        ops: &dyn HostOps,
        ctx: &Context,
        component: &Component,
        release: &str,
    ) -> OpResult<()> {
        file::apply(ops, ctx, component)?;
        ops.write_text(Path::new(ONESHOT_ENTRY), &format!("{release}\n"))
    }

    fn make_default(&self, ops: &dyn HostOps, _: &Component, release: &str) -> OpResult<()> {
        ops.write_text(Path::new(DEFAULT_ENTRY), &format!("{release}\n"))
    }

    fn abandon(
        &self,
        ops: &dyn HostOps,
        _: &Context,
        _: &Component,
        _: &str,
        _: Option<&str>,
    ) -> OpResult<()> {
        // The default entry was restored from its backup with the other files; a one-shot
        // entry not yet consumed must not boot the new kernel later.
        ops.remove_file(Path::new(ONESHOT_ENTRY))
    }

    fn replaced_paths(&self) -> &'static [&'static str] {
        &[DEFAULT_ENTRY]
    }
}
