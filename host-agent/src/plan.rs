//! The agent's state machine as a pure function: given the journal and what the host
//! observes now (boot id, booted kernel), what is the next thing to do?
//!
//! Side effects live in `apply/` and `agent.rs`; this file only decides, so every path —
//! including resuming after a crash or a reboot at any point — is covered by table tests.

use crate::journal::{Journal, Outcome, StepState};

/// What the host looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The current boot's id.
    pub boot_id: String,
    /// The kernel release that booted, if known.
    pub booted_kernel: Option<String>,
}

/// The next action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Back up step `i`'s current files and mark it `Applying`.
    Begin(usize),
    /// Apply step `i` (again, if the agent died while applying: applying is idempotent).
    Apply(usize),
    /// Run step `i`'s health checks.
    Check(usize),
    /// Record a reboot request for kernel step `i` and reboot.
    Reboot(usize),
    /// Back from a reboot, or not needing one: the step's kernel runs; make it the default.
    ConfirmKernel(usize),
    /// Back from a reboot but the new kernel is not running: roll back.
    KernelDidNotBoot {
        /// The step.
        step: usize,
        /// What runs instead.
        running: Option<String>,
    },
    /// Roll back step `i` (newest applied first).
    RollBack(usize),
    /// Every step is verified: the upgrade is done.
    FinishDone,
    /// Every applied step was rolled back.
    FinishRolledBack,
    /// The upgrade already ended; (re)report its outcome.
    Report(Outcome),
    /// `reboot`: record that the reboot is asked during this boot, then ask for it.
    RebootHost,
    /// `reboot`: back in another boot than the one it was asked in; check the managed
    /// services (nothing is restarted) and finish.
    ResumeAfterReboot {
        /// The boot the reboot was asked in.
        from: String,
    },
}

/// Decides the next action for `journal` given what is observed.
pub fn next(
    journal: &Journal,
    observed: &Observed,
    kernel_release: impl Fn(usize) -> Option<String>,
) -> Action {
    if let Some(outcome) = &journal.outcome {
        return Action::Report(outcome.clone());
    }
    if let Some(reboot) = &journal.reboot {
        return match &reboot.requested_in {
            Some(from) if *from != observed.boot_id => {
                Action::ResumeAfterReboot { from: from.clone() }
            }
            // Not asked yet, or asked but this is still the same boot (the agent was killed
            // before the host went down): ask (again).
            _ => Action::RebootHost,
        };
    }
    if journal.rollback_reason.is_some() {
        let undo = journal
            .steps
            .iter()
            .rposition(|s| !matches!(s.state, StepState::Pending | StepState::RolledBack));
        return match undo {
            Some(i) => Action::RollBack(i),
            None => Action::FinishRolledBack,
        };
    }
    for (i, step) in journal.steps.iter().enumerate() {
        match &step.state {
            StepState::Verified => continue,
            // A kernel that already runs needs no reboot: it only becomes the default.
            StepState::Pending
                if step.kind == baton_protocol::manifest::ComponentKind::Kernel
                    && observed.booted_kernel.is_some()
                    && observed.booted_kernel == kernel_release(i) =>
            {
                return Action::ConfirmKernel(i);
            }
            StepState::Pending => return Action::Begin(i),
            StepState::Applying => return Action::Apply(i),
            StepState::Applied => {
                return if step.kind == baton_protocol::manifest::ComponentKind::Kernel {
                    Action::Reboot(i)
                } else {
                    Action::Check(i)
                };
            }
            StepState::Rebooting { boot_id } => {
                if *boot_id == observed.boot_id {
                    // The reboot was requested but this is still the same boot (the agent was
                    // killed before the host went down): ask again.
                    return Action::Reboot(i);
                }
                return if observed.booted_kernel.is_some()
                    && observed.booted_kernel == kernel_release(i)
                {
                    Action::ConfirmKernel(i)
                } else {
                    Action::KernelDidNotBoot {
                        step: i,
                        running: observed.booted_kernel.clone(),
                    }
                };
            }
            // Only reachable with a rollback reason, handled above.
            StepState::RolledBack => continue,
        }
    }
    Action::FinishDone
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use baton_protocol::UpgradeId;
    use baton_protocol::manifest::ComponentKind;

    use super::*;
    use crate::journal::{Previous, Step};

    fn journal(states: &[(ComponentKind, StepState)]) -> Journal {
        Journal {
            upgrade_id: UpgradeId::new("u1").expect("id"),
            version: "2.0.0".into(),
            bundle_digest: None,
            started_at: "t".into(),
            previous: Previous::default(),
            steps: states
                .iter()
                .enumerate()
                .map(|(i, (kind, state))| Step {
                    component: format!("c{i}"),
                    kind: *kind,
                    state: state.clone(),
                    existed: BTreeMap::new(),
                    previous_image: None,
                })
                .collect(),
            rollback_reason: None,
            outcome: None,
            reboot: None,
        }
    }

    fn obs(boot: &str, kernel: &str) -> Observed {
        Observed {
            boot_id: boot.into(),
            booted_kernel: Some(kernel.into()),
        }
    }

    fn release(_: usize) -> Option<String> {
        Some("k2".into())
    }

    use ComponentKind::{File, Kernel, Service};
    use StepState::*;

    #[test]
    fn table() {
        let rebooting = || Rebooting {
            boot_id: "b1".into(),
        };
        type Case = (Vec<(ComponentKind, StepState)>, Observed, Action);
        let cases: Vec<Case> = vec![
            (
                vec![(File, Pending), (Kernel, Pending)],
                obs("b1", "k1"),
                Action::Begin(0),
            ),
            (
                vec![(File, Applying), (Kernel, Pending)],
                obs("b1", "k1"),
                Action::Apply(0),
            ),
            (
                vec![(File, Applied), (Kernel, Pending)],
                obs("b1", "k1"),
                Action::Check(0),
            ),
            (
                vec![(File, Verified), (Kernel, Pending)],
                obs("b1", "k1"),
                Action::Begin(1),
            ),
            (
                vec![(File, Verified), (Kernel, Pending)],
                obs("b1", "k2"),
                Action::ConfirmKernel(1),
            ),
            (
                vec![(File, Verified), (Kernel, Applying)],
                obs("b1", "k1"),
                Action::Apply(1),
            ),
            (
                vec![(File, Verified), (Kernel, Applied)],
                obs("b1", "k1"),
                Action::Reboot(1),
            ),
            // Killed after recording the reboot but before the host went down.
            (
                vec![(File, Verified), (Kernel, rebooting())],
                obs("b1", "k1"),
                Action::Reboot(1),
            ),
            (
                vec![(File, Verified), (Kernel, rebooting())],
                obs("b2", "k2"),
                Action::ConfirmKernel(1),
            ),
            (
                vec![(File, Verified), (Kernel, rebooting())],
                obs("b2", "k1"),
                Action::KernelDidNotBoot {
                    step: 1,
                    running: Some("k1".into()),
                },
            ),
            (
                vec![(File, Verified), (Kernel, Verified)],
                obs("b2", "k2"),
                Action::FinishDone,
            ),
            (
                vec![(Service, Verified)],
                obs("b1", "k1"),
                Action::FinishDone,
            ),
        ];
        for (states, observed, want) in cases {
            let j = journal(&states);
            assert_eq!(
                next(&j, &observed, release),
                want,
                "{states:?} {observed:?}"
            );
        }
    }

    #[test]
    fn rollback_undoes_newest_applied_first_then_finishes() {
        let mut j = journal(&[(File, Verified), (Service, Applied), (Kernel, Pending)]);
        j.rollback_reason = Some("unit failed".into());
        assert_eq!(next(&j, &obs("b", "k"), release), Action::RollBack(1));
        j.steps[1].state = RolledBack;
        assert_eq!(next(&j, &obs("b", "k"), release), Action::RollBack(0));
        j.steps[0].state = RolledBack;
        assert_eq!(next(&j, &obs("b", "k"), release), Action::FinishRolledBack);
    }

    #[test]
    fn a_reboot_is_asked_once_per_boot_and_resumes_in_the_next() {
        use crate::journal::HostReboot;
        let mut j = journal(&[]);
        let reboot = |requested_in: Option<&str>| {
            Some(HostReboot {
                requested_in: requested_in.map(str::to_owned),
                resumed_in: None,
            })
        };
        let cases = [
            (None, "b1", Action::RebootHost),
            // Killed after recording it, before the host went down: ask again.
            (Some("b1"), "b1", Action::RebootHost),
            (
                Some("b1"),
                "b2",
                Action::ResumeAfterReboot { from: "b1".into() },
            ),
        ];
        for (requested_in, boot, want) in cases {
            j.reboot = reboot(requested_in);
            assert_eq!(
                next(&j, &obs(boot, "k1"), release),
                want,
                "{requested_in:?} {boot}"
            );
        }
        j.outcome = Some(Outcome::Done);
        assert_eq!(
            next(&j, &obs("b2", "k1"), release),
            Action::Report(Outcome::Done)
        );
    }

    #[test]
    fn a_finished_upgrade_only_reports() {
        let mut j = journal(&[(File, Verified)]);
        j.outcome = Some(Outcome::Done);
        assert_eq!(
            next(&j, &obs("b", "k"), release),
            Action::Report(Outcome::Done)
        );
    }
}
