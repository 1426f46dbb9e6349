//! `container` components (platform services): the image archive is loaded into the host's
//! Docker and the service container recreated from it; it must run (and be healthy).

use baton_protocol::manifest::Component;

use super::{Context, retry_until};
use crate::journal::Step;
use crate::ops::{HostOps, OpError, OpResult};

pub(super) fn image(component: &Component) -> OpResult<&str> {
    component
        .image
        .as_deref()
        .ok_or_else(|| OpError::Incomplete {
            component: component.name.clone(),
            what: "image",
        })
}

pub(super) fn apply(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    let archive = component.files.first().ok_or_else(|| OpError::Incomplete {
        component: component.name.clone(),
        what: "image archive",
    })?;
    ops.verify_staged(&ctx.source(archive), archive)?;
    ops.load_image(&ctx.source(archive))?;
    ops.recreate_container(
        &ctx.container_name(component),
        image(component)?,
        &component.args,
    )
}

pub(super) fn wait_running(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
) -> OpResult<()> {
    let name = ctx.container_name(component);
    if retry_until(ctx.settle, || ops.container_healthy(&name))? {
        Ok(())
    } else {
        Err(OpError::ContainerUnhealthy {
            name,
            settle: ctx.settle,
        })
    }
}

pub(super) fn roll_back(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
    step: &Step,
) -> OpResult<()> {
    let name = ctx.container_name(component);
    match &step.previous_image {
        Some(previous) => {
            ops.recreate_container(&name, previous, &component.args)?;
            wait_running(ops, ctx, component)
        }
        None => ops.remove_container(&name),
    }
}
