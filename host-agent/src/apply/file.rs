//! `file` components (CLI utilities): each file installed atomically at its destination.

use std::path::Path;

use baton_protocol::manifest::Component;

use super::Context;
use crate::ops::{HostOps, OpResult};

pub(super) fn apply(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    for f in &component.files {
        if let Some(dest) = &f.dest {
            ops.install_file(&ctx.source(f), Path::new(dest), f)?;
        }
    }
    Ok(())
}
