//! Applying one component of a staged bundle, checking it, and rolling it back, per kind:
//! `file.rs`, `service.rs`, `container.rs`, `kernel.rs`. Everything goes through
//! [`HostOps`]; the order and the bookkeeping are the caller's (`agent/` with `plan.rs`).

mod container;
mod file;
mod kernel;
mod service;

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_protocol::manifest::{Component, ComponentKind, FileEntry, HealthCheck};

use crate::journal::Step;
use crate::ops::{HostOps, OpError, OpResult};

pub use kernel::{DEFAULT_ENTRY, ONESHOT_ENTRY, confirm as confirm_kernel};

use baton_protocol::agent_config::Bootloader;

/// Where things are for one upgrade.
#[derive(Debug, Clone)]
pub struct Context {
    /// The staged bundle: `<state_dir>/bundles/<version>/`.
    pub bundle_dir: PathBuf,
    /// Backups of what the upgrade replaces: `<state_dir>/backup/<upgrade>/`.
    pub backup_dir: PathBuf,
    /// Prefix of service container names on this host's Docker.
    pub container_prefix: String,
    /// How long a unit or container may take to become healthy.
    pub settle: Duration,
    /// The boot loader setting for kernels.
    pub bootloader: Bootloader,
    /// The file holding the running kernel's release.
    pub kernel_release_file: PathBuf,
}

impl Context {
    fn source(&self, file: &FileEntry) -> PathBuf {
        self.bundle_dir.join(&file.path)
    }

    fn backup_of(&self, component: &str, dest: &str) -> PathBuf {
        self.backup_dir
            .join(component)
            .join(dest.trim_start_matches('/'))
    }

    fn container_name(&self, component: &Component) -> String {
        format!(
            "{}{}",
            self.container_prefix,
            component.container.as_deref().unwrap_or(&component.name)
        )
    }
}

/// The files a component replaces on the host (its destinations, plus what a kernel's boot
/// loader changes in files), which are backed up before it is applied.
fn replaced_paths(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
) -> OpResult<Vec<String>> {
    let mut paths: Vec<String> = component
        .files
        .iter()
        .filter_map(|f| f.dest.clone())
        .collect();
    if component.kind == ComponentKind::Kernel {
        paths.extend(kernel::replaced_paths(ops, ctx, component)?);
    }
    Ok(paths)
}

/// Backs up what `component` will replace and records it in `step`.
pub fn begin(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
    step: &mut Step,
) -> OpResult<()> {
    for dest in replaced_paths(ops, ctx, component)? {
        let existed = ops.backup_file(Path::new(&dest), &ctx.backup_of(&component.name, &dest))?;
        step.existed.insert(dest, existed);
    }
    if component.kind == ComponentKind::Container {
        step.previous_image = ops.container_image(&ctx.container_name(component))?;
    }
    Ok(())
}

/// Applies `component`. Idempotent: applying again gives the same host.
pub fn apply(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    match component.kind {
        ComponentKind::File => file::apply(ops, ctx, component),
        ComponentKind::Service => service::apply(ops, ctx, component),
        ComponentKind::Container => container::apply(ops, ctx, component),
        ComponentKind::Kernel => kernel::apply(ops, ctx, component),
    }
}

/// Restarts what `component` runs, as installed: a service's unit, a container (recreated
/// from its image). Files and kernels run nothing.
pub fn restart(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    match component.kind {
        ComponentKind::Service => {
            ops.restart_unit(component.unit.as_deref().unwrap_or(&component.name))
        }
        ComponentKind::Container => ops.recreate_container(
            &ctx.container_name(component),
            container::image(component)?,
            &component.args,
        ),
        ComponentKind::File | ComponentKind::Kernel => Ok(()),
    }
}

/// Checks `component` after applying: the kind's own condition (a service's unit active, a
/// container running) and the manifest's health checks. `Err` carries the reason.
pub fn check(ops: &dyn HostOps, ctx: &Context, component: &Component) -> OpResult<()> {
    match component.kind {
        ComponentKind::Service => service::wait_active(ops, ctx, component)?,
        ComponentKind::Container => container::wait_running(ops, ctx, component)?,
        ComponentKind::File | ComponentKind::Kernel => {}
    }
    for check in &component.health {
        let ok = match check {
            // Covered by the kind's own condition above.
            HealthCheck::UnitActive | HealthCheck::ContainerRunning => true,
            HealthCheck::Command { argv, timeout_secs } => ops.run_check(argv, *timeout_secs)?,
            HealthCheck::Http { url, timeout_secs } => {
                retry_until(ctx.settle, || ops.http_check(url, *timeout_secs))?
            }
        };
        if !ok {
            return Err(OpError::CheckFailed {
                component: component.name.clone(),
                check: format!("{check:?}"),
            });
        }
    }
    Ok(())
}

/// Restores what `component` replaced, from the backups recorded in `step`.
pub fn roll_back(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
    step: &Step,
) -> OpResult<()> {
    if component.kind == ComponentKind::Service {
        service::retire_if_new(ops, component, step)?;
    }
    restore_files(ops, ctx, component, step)?;
    match component.kind {
        ComponentKind::File => Ok(()),
        ComponentKind::Service => service::roll_back(ops, ctx, component, step),
        ComponentKind::Container => container::roll_back(ops, ctx, component, step),
        ComponentKind::Kernel => kernel::roll_back(ops, ctx, component),
    }
}

fn restore_files(
    ops: &dyn HostOps,
    ctx: &Context,
    component: &Component,
    step: &Step,
) -> OpResult<()> {
    for (dest, existed) in &step.existed {
        let dest_path = Path::new(dest);
        if *existed {
            ops.restore_file(&ctx.backup_of(&component.name, dest), dest_path)?;
        } else {
            ops.remove_file(dest_path)?;
        }
    }
    Ok(())
}

/// Calls `probe` until it says true or `within` has passed (at least once).
fn retry_until(within: Duration, mut probe: impl FnMut() -> OpResult<bool>) -> OpResult<bool> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if probe()? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
