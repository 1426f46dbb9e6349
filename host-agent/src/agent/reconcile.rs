//! Reconciling: on start and on every change of `desired`, compare it with the journal and
//! the host and act on the difference (level-triggered). An unfinished journal is finished
//! first; a new `install` or `replace` starts a journal that `drive` runs step by
//! step with `plan::next`, saving it after every step; `restart` and `reboot` go to their
//! own modules, and a daisy chain's host waits for the host it follows (`chain.rs`).

use baton_protocol::documents::{self, Desired, DesiredAction};
use baton_protocol::etcd;
use baton_protocol::manifest::{Component, Manifest};
use baton_protocol::{HostState, version};

use super::chain::Gate;
use super::{Agent, AgentError, Driven, REBOOT_STEP, blocking};
use crate::apply;
use crate::journal::{HostReboot, Journal, Outcome, Previous, Step, StepState};
use crate::plan::{self, Action};
use crate::report::Reporter;

/// The `status.step` of an upgrade whose journal could not be started.
const JOURNAL_STEP: &str = "write journal";

impl Agent {
    /// Level-triggered: compares `desired` (as the watch last delivered it) with the
    /// journal and the host, and acts.
    pub(super) async fn reconcile(
        &self,
        client: &etcd::Client,
        reporter: &Reporter,
        desired: Option<&Desired>,
    ) -> Result<Driven, AgentError> {
        let mut journal = self.load_journal()?;

        // An unfinished upgrade is finished (or rolled back) first, whatever desired says now.
        let unfinished = journal.as_ref().is_some_and(|j| j.outcome.is_none());
        if !unfinished {
            let Some(desired) = desired else {
                if reporter.current_status().await?.is_none() {
                    reporter
                        .status(None, HostState::Idle, None, "", None)
                        .await?;
                }
                return Ok(Driven::Settled);
            };
            let handled = journal
                .as_ref()
                .is_some_and(|j| j.upgrade_id == desired.upgrade_id);
            if !handled {
                match self.chain_gate(client, desired).await? {
                    Gate::Open => {}
                    Gate::Wait(keys) => return Ok(Driven::Waiting(keys)),
                    Gate::Closed => return Ok(Driven::Settled),
                }
            }
            if handled {
                // Already handled: make sure the outcome is reported.
            } else if let Err(e) = desired.validate() {
                self.refuse(desired, &format!("{}: {}", e.field, e.reason), reporter)
                    .await?;
                return Ok(Driven::Settled);
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
                    bundle_digest: None,
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
                let mut fresh = fresh;
                self.keep(&mut fresh);
                journal = Some(fresh);
            } else {
                // Install, and Replace (reinstall every component of the bundle, even at the
                // version the host already runs): a new journal applies them all — from the
                // bundle staged from the image `desired` names, and nothing else.
                if let Some(reason) = self.undeclared_downgrade(desired)? {
                    self.refuse(desired, &reason, reporter).await?;
                    return Ok(Driven::Settled);
                }
                match self.desired_bundle(desired) {
                    Ok(manifest) => {
                        let mut fresh = self.new_journal(desired, &manifest)?;
                        self.keep(&mut fresh);
                        if let Some(reason) = &fresh.rollback_reason {
                            // Not even started: the host's status goes through `Updating`
                            // (a `Done` host may not turn `Failed` directly) to the outcome.
                            reporter
                                .status(
                                    Some(&fresh.upgrade_id),
                                    HostState::Updating,
                                    Some(JOURNAL_STEP),
                                    reason,
                                    Some(&fresh.started_at),
                                )
                                .await?;
                        }
                        journal = Some(fresh);
                    }
                    Err(e) => {
                        self.refuse(desired, &e.to_string(), reporter).await?;
                        return Ok(Driven::Settled);
                    }
                }
            }
        }
        let Some(journal) = journal else {
            return Ok(Driven::Settled);
        };
        self.drive(journal, reporter).await
    }

    /// Why `desired` may not be installed if it would move the host to a lower version than
    /// it runs without saying so (`allow_downgrade`, set by the orchestrator only when the
    /// upgrade's request asked for it).
    fn undeclared_downgrade(&self, desired: &Desired) -> Result<Option<String>, AgentError> {
        if desired.allow_downgrade {
            return Ok(None);
        }
        let installed = self.installed_now()?;
        Ok(installed
            .bundle_version
            .filter(|current| version::is_downgrade(current, &desired.version))
            .map(|current| {
                format!(
                    "downgrade from {current} to {} refused: desired.allow_downgrade is not set",
                    desired.version
                )
            }))
    }

    /// Reports a `desired` refused before anything was started: `Failed` with the reason,
    /// nothing touched on the host.
    async fn refuse(
        &self,
        desired: &Desired,
        reason: &str,
        reporter: &Reporter,
    ) -> Result<(), AgentError> {
        tracing::warn!(upgrade = %desired.upgrade_id, %reason, "desired refused");
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
                reason,
                None,
            )
            .await?;
        Ok(())
    }

    fn new_journal(&self, desired: &Desired, manifest: &Manifest) -> Result<Journal, AgentError> {
        let installed = self.installed_now()?;
        Ok(Journal {
            upgrade_id: desired.upgrade_id.clone(),
            version: desired.version.clone(),
            bundle_digest: desired.validate().ok().map(str::to_owned),
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
    pub(super) async fn drive(
        &self,
        mut journal: Journal,
        reporter: &Reporter,
    ) -> Result<Driven, AgentError> {
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
        // Resumed: still only the bundle staged from the image the upgrade began with.
        let manifest = match &journal.bundle_digest {
            Some(digest) => self.staged(&journal.version, digest),
            None => self.manifest(&journal.version),
        };
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                journal.outcome = Some(Outcome::Failed {
                    reason: e.to_string(),
                });
                self.keep(&mut journal);
                return self
                    .report_outcome(&journal, reporter)
                    .await
                    .map(|()| Driven::Settled);
            }
        };
        let ctx = self.context(&journal.version, &journal.upgrade_id);
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
                component(i).ok_or_else(|| AgentError::NotInManifest {
                    component: names[i].clone(),
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
                    if let Some(member) = &c.quorum {
                        // Nothing is backed up or stopped until the cluster can lose the
                        // member; refused, the step stays Pending and nothing is undone.
                        work(HostState::Updating, "prepare quorum member", &c, "").await?;
                        if let Err(e) = self.quorum_before_stop(&id, &c.name, member).await {
                            journal.rollback_reason = Some(e);
                            self.keep(&mut journal);
                            continue;
                        }
                    }
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
                        Err(e) => journal.rollback_reason = Some(e.to_string()),
                    }
                }
                Action::Apply(i) => {
                    let c = step_of(i)?;
                    work(HostState::Updating, "apply", &c, "").await?;
                    match blocking(move || apply::apply(ops.as_ref(), &ctx, &c)).await {
                        Ok(()) => journal.steps[i].state = StepState::Applied,
                        Err(e) => journal.rollback_reason = Some(e.to_string()),
                    }
                }
                Action::Check(i) => {
                    let c = step_of(i)?;
                    work(HostState::Updating, "check", &c, "").await?;
                    let member = c.quorum.clone();
                    match blocking(move || apply::check(ops.as_ref(), &ctx, &c)).await {
                        Err(e) => journal.rollback_reason = Some(e.to_string()),
                        // A quorum member counts only once it is back in the cluster and
                        // caught up, so the next host's member may go down after it.
                        Ok(()) => match self.quorum_after_start(member.as_ref()).await {
                            Ok(()) => journal.steps[i].state = StepState::Verified,
                            Err(e) => journal.rollback_reason = Some(e),
                        },
                    }
                }
                Action::Reboot(i) => {
                    let c = step_of(i)?;
                    // Recorded before asking, so a reboot that happens at once is recognised.
                    journal.steps[i].state = StepState::Rebooting {
                        boot_id: self.boot_id()?,
                    };
                    self.keep(&mut journal);
                    if journal.rollback_reason.is_some() {
                        // Not recorded: not asked either (the next boot would not know).
                        journal.steps[i].state = StepState::Applied;
                        continue;
                    }
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
                        Err(e) => journal.rollback_reason = Some(e.to_string()),
                    }
                }
                Action::ConfirmKernel(i) => {
                    let c = step_of(i)?;
                    work(HostState::Verifying, "verify", &c, "").await?;
                    match blocking(move || apply::confirm_kernel(ops.as_ref(), &ctx, &c)).await {
                        Ok(()) => journal.steps[i].state = StepState::Verified,
                        Err(e) => journal.rollback_reason = Some(e.to_string()),
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
                    let member = c.quorum.clone();
                    let rolled_back =
                        match blocking(move || apply::roll_back(ops.as_ref(), &ctx, &c, &step))
                            .await
                        {
                            Err(e) => Err(e.to_string()),
                            // The previous binary on the same data: back in the cluster.
                            Ok(()) => self.quorum_after_start(member.as_ref()).await,
                        };
                    match rolled_back {
                        Ok(()) => journal.steps[i].state = StepState::RolledBack,
                        Err(e) => {
                            journal.outcome = Some(Outcome::Failed {
                                reason: format!("{reason}; rollback failed: {e}"),
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
                    if let Err(e) = self.save_installed(&installed) {
                        // The record of what runs must say the new version before it is
                        // Done; it still says the previous one: go back to that.
                        journal.rollback_reason = Some(e.to_string());
                        self.keep(&mut journal);
                        continue;
                    }
                    journal.outcome = Some(Outcome::Done);
                    let (state, version, previous, id) = (
                        state_dir.clone(),
                        journal.version.clone(),
                        journal.previous.bundle_version.clone(),
                        journal.upgrade_id.clone(),
                    );
                    let pruned = blocking(move || {
                        super::prune::prune(&state, &version, previous.as_deref(), &id)
                    })
                    .await;
                    if !pruned.is_empty() {
                        tracing::info!(upgrade = %journal.upgrade_id, ?pruned, "pruned staged bundles and backups no longer needed");
                    }
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
            self.keep(&mut journal);
        }
    }
}
