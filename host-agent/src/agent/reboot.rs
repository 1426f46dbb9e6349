//! `reboot` asked by `desired`: journaled with the boot it is asked in before systemd is
//! asked, so the agent of the next boot knows it happened; then the managed services are
//! checked (nothing restarted) and `Done` reported.

use baton_protocol::HostState;

use super::{Agent, AgentError, Driven, REBOOT_STEP, blocking};
use crate::journal::{Journal, Outcome};
use crate::plan::{self, Action};
use crate::report::Reporter;

impl Agent {
    /// `reboot`: records the boot the reboot is asked in, reports `Rebooting` and asks
    /// systemd to reboot; in the next boot checks the managed services (restarting nothing)
    /// and reports `Done`, saying the host resumed after the reboot.
    pub(super) async fn drive_reboot(
        &self,
        mut journal: Journal,
        reporter: &Reporter,
    ) -> Result<Driven, AgentError> {
        let id = journal.upgrade_id.clone();
        let started = journal.started_at.clone();
        loop {
            let observed = self.observed()?;
            match plan::next(&journal, &observed, |_| None) {
                Action::RebootHost => {
                    // Recorded before asking, so a reboot that happens at once is recognised.
                    journal.reboot.get_or_insert_default().requested_in =
                        Some(observed.boot_id.clone());
                    self.keep(&mut journal);
                    if journal.outcome.is_some() {
                        // Not recorded: not asked either (the next boot would not know).
                        continue;
                    }
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
                                reason: format!("reboot: {e}"),
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
            self.keep(&mut journal);
        }
    }
}
