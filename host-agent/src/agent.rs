//! The agent's main loop: keep an etcd session (liveness lease + `alive`), watch this
//! host's `desired` key, and on start and on every change compare desired with what the
//! host has and act on the difference — driving the journaled upgrade with `plan::next`.
//! Besides `install` and `replace` (a journaled upgrade), `desired` may ask for `restart`
//! (the managed services, at once) or `reboot` (journaled: asked in one boot, checked and
//! reported `Done` in the next).
//!
//! Errors never end the daemon: the session is re-established with backoff.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_protocol::agent_config::AgentConfig;
use baton_protocol::documents::{
    self, Alive, Desired, DesiredAction, HostOutcomeState, Installed, Upgrade,
};
use baton_protocol::etcd::{self, Change, EtcdError, KeptLease, ResumableWatch};
use baton_protocol::manifest::{Component, Manifest};
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId};

use crate::apply::{self, Context};
use crate::journal::{self, HostReboot, Journal, Outcome, Previous, Step, StepState};
use crate::notify;
use crate::ops::HostOps;
use crate::plan::{self, Action, Observed};
use crate::report::Reporter;

/// How long a unit or container may take to become healthy after it is applied.
pub const SETTLE: Duration = Duration::from_secs(12);
/// Longest pause before re-establishing a failed etcd session.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The `status.step` of a `reboot` until the host goes down.
const REBOOT_STEP: &str = "reboot host";

/// Something the agent could not do; the session is retried.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// A local file could not be read.
    #[error("{0}")]
    Local(String),
}

/// The agent.
pub struct Agent {
    config: AgentConfig,
    keyspace: Keyspace,
    ops: Arc<dyn HostOps>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.config.host_id)
            .finish_non_exhaustive()
    }
}

/// What `drive` ended with.
enum Driven {
    /// Nothing more to do until `desired` changes.
    Settled,
    /// A reboot was requested: do nothing more in this boot.
    Rebooting,
}

impl Agent {
    /// An agent for the host described by `config`, acting through `ops`.
    pub fn new(config: AgentConfig, ops: Arc<dyn HostOps>) -> Result<Self, AgentError> {
        let keyspace =
            Keyspace::new(&config.prefix).map_err(|e| AgentError::Config(e.to_string()))?;
        Ok(Self {
            config,
            keyspace,
            ops,
        })
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        if let Some(interval) = notify::watchdog_interval() {
            tokio::spawn(notify::watchdog(interval));
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                result = self.session() => match result {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(host = %self.config.host_id, %error, retry_in = ?backoff, "agent session failed");
                    }
                },
                () = &mut shutdown => {
                    notify::notify("STOPPING=1");
                    tracing::info!(host = %self.config.host_id, "shutting down");
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut shutdown => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One etcd session: lease, `alive`, then reconcile on every change of `desired`.
    async fn session(&self) -> Result<(), AgentError> {
        let client =
            etcd::connect_tls(&self.config.etcd_endpoints, self.config.tls.as_ref()).await?;
        let reporter = Reporter::new(
            client.clone(),
            self.keyspace.clone(),
            self.config.host_id.clone(),
        );
        let lease = KeptLease::grant(&client, self.config.lease_ttl_secs).await?;
        let alive = Alive {
            schema_version: documents::SCHEMA_VERSION,
            agent_version: baton_protocol::VERSION.to_owned(),
            boot_id: self.boot_id()?,
            pid: std::process::id(),
            since: documents::now(),
        };
        reporter.alive(&alive, &lease).await?;
        notify::notify("READY=1");
        tracing::info!(host = %self.config.host_id, version = baton_protocol::VERSION, boot_id = %alive.boot_id, "agent session up");
        reporter.installed(&self.installed_now()?).await?;

        let mut watch = ResumableWatch::new(client.clone(), reporter.key(HostKey::Desired));
        loop {
            match self.reconcile(&client, &reporter).await? {
                Driven::Settled => {}
                Driven::Rebooting => {
                    // The host is going down; stay alive (and holding the lease) until it does.
                    lease.lost().await;
                    return Err(EtcdError::LeaseLost { lease: lease.id() }.into());
                }
            }
            tokio::select! {
                update = watch.next() => { update?; }
                () = lease.lost() => return Err(EtcdError::LeaseLost { lease: lease.id() }.into()),
            }
        }
    }

    fn boot_id(&self) -> Result<String, AgentError> {
        read_trimmed(&self.config.boot_id_file)
    }

    fn observed(&self) -> Result<Observed, AgentError> {
        Ok(Observed {
            boot_id: self.boot_id()?,
            booted_kernel: read_trimmed(&self.config.kernel_release_file).ok(),
        })
    }

    fn installed_path(&self) -> PathBuf {
        self.config.state_dir.join("installed.json")
    }

    /// What the host runs, from the agent's local record, with the live agent version and
    /// kernel.
    fn installed_now(&self) -> Result<Installed, AgentError> {
        let mut installed = match std::fs::read(self.installed_path()) {
            Ok(bytes) => {
                documents::decode::<Installed>(&self.installed_path().display().to_string(), &bytes)
                    .map_err(|e| AgentError::Local(e.to_string()))?
            }
            Err(_) => Installed {
                schema_version: documents::SCHEMA_VERSION,
                bundle_version: None,
                agent_version: String::new(),
                kernel: None,
                components: Default::default(),
                updated_at: documents::now(),
            },
        };
        installed.agent_version = baton_protocol::VERSION.to_owned();
        installed.kernel = read_trimmed(&self.config.kernel_release_file).ok();
        Ok(installed)
    }

    fn save_installed(&self, installed: &Installed) -> Result<(), AgentError> {
        journal::write_durably(&self.installed_path(), &documents::encode(installed)).map_err(|e| {
            AgentError::Local(format!("write {}: {e}", self.installed_path().display()))
        })
    }

    fn bundle_dir(&self, version: &str) -> PathBuf {
        self.config.state_dir.join("bundles").join(version)
    }

    fn manifest(&self, version: &str) -> Result<Manifest, String> {
        let path = self.bundle_dir(version).join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "bundle {version} is not staged ({}: {e}); run the downloader job first",
                path.display()
            )
        })?;
        Manifest::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Level-triggered: compares desired with the journal and the host, and acts.
    async fn reconcile(
        &self,
        client: &etcd::Client,
        reporter: &Reporter,
    ) -> Result<Driven, AgentError> {
        let state_dir = &self.config.state_dir;
        let desired = etcd::read::<Desired>(client, &reporter.key(HostKey::Desired))
            .await?
            .map(|v| v.value);
        let mut journal = journal::load(state_dir)?;

        // An unfinished upgrade is finished (or rolled back) first, whatever desired says now.
        let unfinished = journal.as_ref().is_some_and(|j| j.outcome.is_none());
        if !unfinished {
            let Some(desired) = desired.as_ref() else {
                if reporter.current_status().await?.is_none() {
                    reporter
                        .status(None, HostState::Idle, None, "", None)
                        .await?;
                }
                return Ok(Driven::Settled);
            };
            if journal
                .as_ref()
                .is_some_and(|j| j.upgrade_id == desired.upgrade_id)
            {
                // Already handled: make sure the outcome is reported.
            } else if desired.action == DesiredAction::Restart {
                self.restart_services(desired, reporter).await?;
                return Ok(Driven::Settled);
            } else if desired.action == DesiredAction::Reboot {
                // Journaled first (nothing installed, no steps): the reboot and what follows
                // it are driven from the journal, across the reboot.
                let installed = self.installed_now()?;
                let fresh = Journal {
                    upgrade_id: desired.upgrade_id.clone(),
                    version: installed.bundle_version.unwrap_or_default(),
                    started_at: documents::now(),
                    previous: Previous::default(),
                    steps: Vec::new(),
                    rollback_reason: None,
                    outcome: None,
                    reboot: Some(HostReboot::default()),
                };
                reporter
                    .status(
                        Some(&fresh.upgrade_id),
                        HostState::Updating,
                        Some(REBOOT_STEP),
                        "",
                        Some(&fresh.started_at),
                    )
                    .await?;
                journal::save(state_dir, &fresh)?;
                journal = Some(fresh);
            } else {
                // Install, and Replace (reinstall every component of the bundle, even at the
                // version the host already runs): a new journal applies them all.
                match self.manifest(&desired.version) {
                    Ok(manifest) => {
                        let fresh = self.new_journal(desired, &manifest)?;
                        journal::save(state_dir, &fresh)?;
                        journal = Some(fresh);
                    }
                    Err(reason) => {
                        reporter
                            .status(
                                Some(&desired.upgrade_id),
                                HostState::Updating,
                                Some("read bundle"),
                                "",
                                None,
                            )
                            .await?;
                        reporter
                            .status(
                                Some(&desired.upgrade_id),
                                HostState::Failed,
                                None,
                                &reason,
                                None,
                            )
                            .await?;
                        return Ok(Driven::Settled);
                    }
                }
            }
        }
        let Some(journal) = journal else {
            return Ok(Driven::Settled);
        };
        let upgrade = journal.upgrade_id.clone();
        let driven = self.drive(journal, reporter).await?;
        if let (Driven::Settled, Some(desired)) = (&driven, &desired)
            && desired.upgrade_id == upgrade
            && let Some(next) = &desired.next_host
            && matches!(
                journal::load(state_dir)?.and_then(|j| j.outcome),
                Some(Outcome::Done)
            )
        {
            self.hand_over(client, desired, next).await?;
        }
        Ok(driven)
    }

    /// Daisy-chain: this host is done and healthy, so it writes the next host's `desired`
    /// (the same upgrade), naming the host after that from the upgrade's batch plan. The
    /// upgrade goes on even while no orchestrator runs. Idempotent: a next host already
    /// told about this upgrade is left alone.
    async fn hand_over(
        &self,
        client: &etcd::Client,
        desired: &Desired,
        next: &HostId,
    ) -> Result<(), AgentError> {
        let upgrade = etcd::read::<Upgrade>(client, &self.keyspace.upgrade(&desired.upgrade_id))
            .await?
            .map(|v| v.value);
        let after_next = upgrade.as_ref().and_then(|u| host_after(u, next));
        let key = self.keyspace.host(next, HostKey::Desired);
        let handed =
            etcd::update::<Desired, std::convert::Infallible, _>(client, &key, |current| {
                if current.is_some_and(|c| c.upgrade_id == desired.upgrade_id) {
                    return Ok(Change::Keep);
                }
                Ok(Change::Put(Desired {
                    next_host: after_next.clone(),
                    issued_at: documents::now(),
                    ..desired.clone()
                }))
            })
            .await?;
        let Ok(handed) = handed;
        if handed.written {
            tracing::info!(upgrade = %desired.upgrade_id, next = %next, after = ?after_next, "handed the baton");
        }
        Ok(())
    }

    fn new_journal(&self, desired: &Desired, manifest: &Manifest) -> Result<Journal, AgentError> {
        let installed = self.installed_now()?;
        Ok(Journal {
            upgrade_id: desired.upgrade_id.clone(),
            version: desired.version.clone(),
            started_at: documents::now(),
            previous: Previous {
                bundle_version: installed.bundle_version,
                components: installed.components,
                kernel: installed.kernel,
            },
            steps: manifest
                .apply_order()
                .into_iter()
                .map(|c| Step {
                    component: c.name.clone(),
                    kind: c.kind,
                    state: StepState::Pending,
                    existed: Default::default(),
                    previous_image: None,
                })
                .collect(),
            rollback_reason: None,
            outcome: None,
            reboot: None,
        })
    }

    /// Runs the journal to its end (or to a reboot), saving it after every step.
    async fn drive(&self, mut journal: Journal, reporter: &Reporter) -> Result<Driven, AgentError> {
        if journal.outcome.is_some() {
            // Finished before: only (re)report, whatever the staged bundles look like now.
            self.report_outcome(&journal, reporter).await?;
            return Ok(Driven::Settled);
        }
        if journal.reboot.is_some() {
            return self.drive_reboot(journal, reporter).await;
        }
        let state_dir = self.config.state_dir.clone();
        let id = journal.upgrade_id.clone();
        let started = journal.started_at.clone();
        let manifest = match self.manifest(&journal.version) {
            Ok(m) => m,
            Err(reason) => {
                journal.outcome = Some(Outcome::Failed { reason });
                journal::save(&state_dir, &journal)?;
                return self
                    .report_outcome(&journal, reporter)
                    .await
                    .map(|()| Driven::Settled);
            }
        };
        let ctx = Context {
            bundle_dir: self.bundle_dir(&journal.version),
            backup_dir: state_dir.join("backup").join(journal.upgrade_id.as_str()),
            container_prefix: self.config.container_prefix.clone(),
            settle: SETTLE,
        };
        // The steps never change once the journal exists: resolve each to its component once.
        let components: Vec<Option<Component>> = journal
            .steps
            .iter()
            .map(|s| {
                manifest
                    .components
                    .iter()
                    .find(|c| c.name == s.component)
                    .cloned()
            })
            .collect();
        let names: Vec<String> = journal.steps.iter().map(|s| s.component.clone()).collect();
        let component = |i: usize| components[i].clone();
        loop {
            let observed = self.observed()?;
            let action = plan::next(&journal, &observed, |i| {
                component(i).and_then(|c| c.release)
            });
            tracing::debug!(upgrade = %id, ?action, "next");
            let step_of = |i: usize| -> Result<Component, AgentError> {
                component(i).ok_or_else(|| {
                    AgentError::Local(format!(
                        "component {} is not in the bundle manifest",
                        names[i]
                    ))
                })
            };
            // Reports `state` with a step like "apply service baton-echo", then runs the host
            // work off the async threads.
            let work = |state: HostState, verb: &str, c: &Component, message: &str| {
                let text = format!("{verb} {} {}", c.kind.name(), c.name);
                let message = message.to_owned();
                let (id, started) = (id.clone(), started.clone());
                async move {
                    reporter
                        .status(Some(&id), state, Some(&text), &message, Some(&started))
                        .await
                }
            };
            let (ops, ctx) = (self.ops.clone(), ctx.clone());
            match action {
                Action::Report(_) => {
                    self.report_outcome(&journal, reporter).await?;
                    return Ok(Driven::Settled);
                }
                Action::Begin(i) => {
                    let c = step_of(i)?;
                    work(HostState::Updating, "back up", &c, "").await?;
                    let mut step = journal.steps[i].clone();
                    let result = blocking(move || {
                        apply::begin(ops.as_ref(), &ctx, &c, &mut step).map(|()| step)
                    })
                    .await;
                    match result {
                        Ok(step) => {
                            journal.steps[i] = step;
                            journal.steps[i].state = StepState::Applying;
                        }
                        Err(e) => journal.rollback_reason = Some(e.0),
                    }
                }
                Action::Apply(i) => {
                    let c = step_of(i)?;
                    work(HostState::Updating, "apply", &c, "").await?;
                    match blocking(move || apply::apply(ops.as_ref(), &ctx, &c)).await {
                        Ok(()) => journal.steps[i].state = StepState::Applied,
                        Err(e) => journal.rollback_reason = Some(e.0),
                    }
                }
                Action::Check(i) => {
                    let c = step_of(i)?;
                    work(HostState::Updating, "check", &c, "").await?;
                    match blocking(move || apply::check(ops.as_ref(), &ctx, &c)).await {
                        Ok(()) => journal.steps[i].state = StepState::Verified,
                        Err(reason) => journal.rollback_reason = Some(reason),
                    }
                }
                Action::Reboot(i) => {
                    let c = step_of(i)?;
                    // Recorded before asking, so a reboot that happens at once is recognised.
                    journal.steps[i].state = StepState::Rebooting {
                        boot_id: self.boot_id()?,
                    };
                    journal::save(&state_dir, &journal)?;
                    let text =
                        format!("reboot into kernel {}", c.release.as_deref().unwrap_or("?"));
                    reporter
                        .status(
                            Some(&id),
                            HostState::Rebooting,
                            Some(&text),
                            "",
                            Some(&started),
                        )
                        .await?;
                    match blocking(move || ops.reboot()).await {
                        Ok(()) => return Ok(Driven::Rebooting),
                        Err(e) => journal.rollback_reason = Some(e.0),
                    }
                }
                Action::ConfirmKernel(i) => {
                    let c = step_of(i)?;
                    work(HostState::Verifying, "verify", &c, "").await?;
                    match blocking(move || apply::confirm_kernel(ops.as_ref(), &c)).await {
                        Ok(()) => journal.steps[i].state = StepState::Verified,
                        Err(e) => journal.rollback_reason = Some(e.0),
                    }
                }
                Action::KernelDidNotBoot { step, running } => {
                    let c = step_of(step)?;
                    work(HostState::Verifying, "verify", &c, "").await?;
                    journal.rollback_reason = Some(format!(
                        "kernel {} did not boot; running {}",
                        c.release.as_deref().unwrap_or("?"),
                        running.as_deref().unwrap_or("an unknown kernel")
                    ));
                }
                Action::RollBack(i) => {
                    let c = step_of(i)?;
                    let reason = journal.rollback_reason.clone().unwrap_or_default();
                    work(HostState::Updating, "roll back", &c, &reason).await?;
                    let step = journal.steps[i].clone();
                    match blocking(move || apply::roll_back(ops.as_ref(), &ctx, &c, &step)).await {
                        Ok(()) => journal.steps[i].state = StepState::RolledBack,
                        Err(e) => {
                            journal.outcome = Some(Outcome::Failed {
                                reason: format!("{reason}; rollback failed: {}", e.0),
                            });
                        }
                    }
                }
                Action::FinishDone => {
                    let mut installed = self.installed_now()?;
                    installed.bundle_version = Some(journal.version.clone());
                    for c in &manifest.components {
                        installed
                            .components
                            .insert(c.name.clone(), c.version.clone());
                    }
                    installed.updated_at = documents::now();
                    self.save_installed(&installed)?;
                    journal.outcome = Some(Outcome::Done);
                }
                Action::FinishRolledBack => {
                    journal.outcome = Some(Outcome::RolledBack {
                        reason: journal.rollback_reason.clone().unwrap_or_default(),
                    });
                }
                // Only for a reboot's journal, which `drive_reboot` runs.
                Action::RebootHost | Action::ResumeAfterReboot { .. } => {
                    return self.drive_reboot(journal, reporter).await;
                }
            }
            journal::save(&state_dir, &journal)?;
        }
    }

    /// `reboot`: records the boot the reboot is asked in, reports `Rebooting` and asks
    /// systemd to reboot; in the next boot checks the managed services (restarting nothing)
    /// and reports `Done`, saying the host resumed after the reboot.
    async fn drive_reboot(
        &self,
        mut journal: Journal,
        reporter: &Reporter,
    ) -> Result<Driven, AgentError> {
        let state_dir = self.config.state_dir.clone();
        let id = journal.upgrade_id.clone();
        let started = journal.started_at.clone();
        loop {
            let observed = self.observed()?;
            match plan::next(&journal, &observed, |_| None) {
                Action::RebootHost => {
                    // Recorded before asking, so a reboot that happens at once is recognised.
                    journal.reboot.get_or_insert_default().requested_in =
                        Some(observed.boot_id.clone());
                    journal::save(&state_dir, &journal)?;
                    let message = format!("reboot asked during boot {}", observed.boot_id);
                    reporter
                        .status(
                            Some(&id),
                            HostState::Rebooting,
                            Some(REBOOT_STEP),
                            &message,
                            Some(&started),
                        )
                        .await?;
                    let ops = self.ops.clone();
                    match blocking(move || ops.reboot()).await {
                        Ok(()) => return Ok(Driven::Rebooting),
                        Err(e) => {
                            journal.outcome = Some(Outcome::Failed {
                                reason: format!("reboot: {}", e.0),
                            });
                        }
                    }
                }
                Action::ResumeAfterReboot { from } => {
                    let message = format!("back in boot {} (was {from})", observed.boot_id);
                    reporter
                        .status(
                            Some(&id),
                            HostState::Verifying,
                            Some("check managed services"),
                            &message,
                            Some(&started),
                        )
                        .await?;
                    let checked = match journal.version.as_str() {
                        // No bundle installed: nothing is managed, nothing to check.
                        "" => Ok(()),
                        version => self.managed_services(version, &id, false).await,
                    };
                    journal.reboot.get_or_insert_default().resumed_in = Some(observed.boot_id);
                    journal.outcome = Some(match checked {
                        Ok(()) => Outcome::Done,
                        Err(reason) => Outcome::Failed {
                            reason: format!("after the reboot: {reason}"),
                        },
                    });
                }
                Action::Report(_) => {
                    self.report_outcome(&journal, reporter).await?;
                    return Ok(Driven::Settled);
                }
                other => {
                    // `plan::next` gives a reboot's journal nothing else.
                    journal.outcome = Some(Outcome::Failed {
                        reason: format!("unexpected step {other:?} while rebooting"),
                    });
                }
            }
            journal::save(&state_dir, &journal)?;
        }
    }

    /// The managed components of the installed bundle `version`, in apply order: each is
    /// restarted first when `restart`, then checked (its unit active, its container running,
    /// its health checks). `Err` carries the reason.
    async fn managed_services(
        &self,
        version: &str,
        id: &UpgradeId,
        restart: bool,
    ) -> Result<(), String> {
        let manifest = self.manifest(version)?;
        let ops = self.ops.clone();
        let ctx = Context {
            bundle_dir: self.bundle_dir(version),
            backup_dir: self.config.state_dir.join("backup").join(id.as_str()),
            container_prefix: self.config.container_prefix.clone(),
            settle: SETTLE,
        };
        blocking(move || {
            for c in manifest.apply_order() {
                if restart {
                    apply::restart(ops.as_ref(), &ctx, c).map_err(|e| e.0)?;
                }
                apply::check(ops.as_ref(), &ctx, c)?;
            }
            Ok(())
        })
        .await
    }

    /// `restart`: restarts the host's Baton-managed services (daemons and platform
    /// containers of the installed bundle) and checks them; nothing is reinstalled.
    async fn restart_services(
        &self,
        desired: &Desired,
        reporter: &Reporter,
    ) -> Result<(), AgentError> {
        let id = &desired.upgrade_id;
        let started = documents::now();
        reporter
            .status(
                Some(id),
                HostState::Updating,
                Some("restart managed services"),
                "",
                Some(&started),
            )
            .await?;
        let installed = self.installed_now()?;
        let outcome = match installed.bundle_version.as_deref() {
            None => Err("no bundle is installed: nothing to restart".to_owned()),
            Some(version) => self.managed_services(version, id, true).await,
        };
        // Recorded like an upgrade so a repeated `desired` is recognised as done.
        let done = Journal {
            upgrade_id: id.clone(),
            version: installed.bundle_version.clone().unwrap_or_default(),
            started_at: started.clone(),
            previous: Previous::default(),
            steps: Vec::new(),
            rollback_reason: None,
            outcome: Some(match outcome {
                Ok(()) => Outcome::Done,
                Err(reason) => Outcome::Failed { reason },
            }),
            reboot: None,
        };
        journal::save(&self.config.state_dir, &done)?;
        self.report_outcome(&done, reporter).await
    }

    async fn report_outcome(
        &self,
        journal: &Journal,
        reporter: &Reporter,
    ) -> Result<(), AgentError> {
        let id = Some(&journal.upgrade_id);
        let started = Some(journal.started_at.as_str());
        match &journal.outcome {
            Some(Outcome::Done) => {
                reporter.installed(&self.installed_now()?).await?;
                let message = done_message(journal);
                reporter
                    .status(id, HostState::Done, None, &message, started)
                    .await?;
            }
            Some(Outcome::RolledBack { reason }) => {
                reporter
                    .status(id, HostState::RolledBack, None, reason, started)
                    .await?;
            }
            Some(Outcome::Failed { reason }) => {
                reporter
                    .status(id, HostState::Failed, None, reason, started)
                    .await?;
            }
            None => {}
        }
        Ok(())
    }
}

/// What `Done` says: the version reached, that the managed services were restarted, or that
/// the host resumed after the reboot (in which boot).
fn done_message(journal: &Journal) -> String {
    match &journal.reboot {
        Some(reboot) => {
            let boots = format!(
                "boot {} (asked in boot {})",
                reboot.resumed_in.as_deref().unwrap_or("?"),
                reboot.requested_in.as_deref().unwrap_or("?")
            );
            if journal.version.is_empty() {
                format!("resumed after the reboot in {boots}; no bundle installed")
            } else {
                format!(
                    "resumed after the reboot in {boots}; managed services of {} healthy",
                    journal.version
                )
            }
        }
        None if journal.steps.is_empty() => {
            format!("managed services of {} restarted", journal.version)
        }
        None => format!("on {}", journal.version),
    }
}

/// The host dispatched after `host` in `upgrade`'s batch plan: the one with the next
/// higher batch number (hosts skipped for maintenance are passed over).
fn host_after(upgrade: &Upgrade, host: &HostId) -> Option<HostId> {
    let batch = upgrade.hosts.get(host)?.batch?;
    upgrade
        .hosts
        .iter()
        .filter(|(_, h)| h.state != HostOutcomeState::Skipped)
        .filter_map(|(id, h)| h.batch.filter(|b| *b > batch).map(|b| (b, id)))
        .min()
        .map(|(_, id)| id.clone())
}

/// Runs blocking host work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn read_trimmed(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| AgentError::Local(format!("read {}: {e}", path.display())))
}
