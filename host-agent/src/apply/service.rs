//! `service` components (host daemons): binary and unit installed, daemon-reload, restart;
//! the unit must become and stay active.

use std::time::Duration;

use baton_protocol::manifest::Component;

use super::{Context, file};
use crate::journal::Step;
use crate::ops::{HostOps, OpError, OpResult};

fn unit(component: &Component) -> &str {
    component.unit.as_deref().unwrap_or(&component.name)
}

pub(super) fn apply(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    file::apply(ops, ctx, component)?;
    ops.daemon_reload()?;
    // Enabled as well as started, so the daemon comes back after a reboot (a kernel
    // update reboots the host right after).
    ops.enable_unit(unit(component))?;
    ops.restart_unit(unit(component))
}

/// Waits until the unit is `active` and still active a moment later (a daemon that crashes
/// at start is briefly active first).
pub(super) fn wait_active(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    let unit = unit(component);
    let deadline = std::time::Instant::now() + ctx.settle;
    let mut active_since: Option<std::time::Instant> = None;
    loop {
        let state = ops.unit_state(unit)?;
        match state.as_str() {
            "active" => {
                let since = *active_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= ctx.settle / 4 {
                    return Ok(());
                }
            }
            "failed" => {
                return Err(OpError::UnitFailed {
                    unit: unit.to_owned(),
                });
            }
            _ => active_since = None,
        }
        if std::time::Instant::now() >= deadline {
            return Err(OpError::UnitNotActive {
                unit: unit.to_owned(),
                state,
                settle: ctx.settle,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the unit file existed before the upgrade.
fn had_unit(component: &Component, step: &Step) -> bool {
    step.existed
        .iter()
        .any(|(dest, existed)| *existed && dest.ends_with(&format!("/{}", unit(component))))
}

/// Before the files are restored: a unit new in this upgrade is stopped and disabled while
/// its unit file still exists.
pub(super) fn retire_if_new(ops: &dyn HostOps, component: &Component, step: &Step) -> OpResult<()> {
    if had_unit(component, step) {
        return Ok(());
    }
    ops.stop_unit(unit(component))?;
    ops.disable_unit(unit(component))
}

/// After the files are restored: the previous daemon runs again. A new daemon that kept
/// crashing (`Restart=on-failure`) may have hit systemd's start rate limit, which would
/// refuse the restart: the unit's failed state is cleared first.
pub(super) fn roll_back(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
    step: &Step,
) -> OpResult<()> {
    ops.daemon_reload()?;
    if had_unit(component, step) {
        ops.reset_failed_unit(unit(component))?;
        ops.restart_unit(unit(component))?;
        wait_active(ops, ctx, component)
    } else {
        Ok(())
    }
}
