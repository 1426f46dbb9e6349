//! The end of an upgrade: halting when more hosts failed than the strategy tolerates, and
//! the final `Succeeded` or `Failed` once no batch is left.

use baton_protocol::UpgradePhase as P;
use baton_protocol::documents::{HostOutcomeState as O, Strategy};

use super::{Action, Decision, allowed_failures};
use crate::engine::model::Observed;

impl Decision {
    pub(super) fn failures(&self) -> Vec<String> {
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.state == O::Failed)
            .map(|(id, h)| format!("{id}: {}", h.reason))
            .collect()
    }

    /// More hosts failed than the strategy tolerates, or a canary failed: the upgrade
    /// halts — `Failed`, or `Reverting` when the request said `on_failure: revert` and a
    /// host was changed. Returns whether it halted.
    pub(super) fn halt_on_failures(&mut self, o: &Observed<'_>) -> bool {
        let failed = self.failures();
        let allowed = allowed_failures(&self.u.strategy);
        let canaries = self.failed_canaries();
        let why = if failed.len() > allowed {
            format!(
                "{} host(s) failed, more than the {allowed} tolerated: {}",
                failed.len(),
                failed.join("; ")
            )
        } else if !canaries.is_empty() {
            format!("canary failed: {}", canaries.join("; "))
        } else {
            return false;
        };
        let to = self.halt_phase(o);
        // A halt to `Failed` ends the upgrade: a host still installing would finish unjudged,
        // its outcome left `Dispatched`. So it waits until every host in flight has been
        // judged (each within its install and health timeouts); nothing new starts meanwhile.
        if to == P::Failed && !self.hosts_in(O::Dispatched).is_empty() {
            return true;
        }
        self.cut_soak_short("the upgrade halts");
        let reason = match to {
            P::Reverting => format!("{why}; reverting the hosts it changed"),
            _ => why,
        };
        self.push(Action::Phase {
            to,
            reason: Some(reason),
        });
        true
    }

    /// Failed canaries (batch 0 of a rolling upgrade with canaries), with their reasons.
    fn failed_canaries(&self) -> Vec<String> {
        if !matches!(self.u.strategy, Strategy::Rolling { canary, .. } if canary > 0) {
            return Vec::new();
        }
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.batch == Some(0) && h.state == O::Failed)
            .map(|(id, h)| format!("{id}: {}", h.reason))
            .collect()
    }

    pub(super) fn finish(&mut self) {
        let failed = self.failures();
        let succeeded = self.hosts_in(O::Succeeded).len();
        let skipped = self.hosts_in(O::Skipped).len();
        if succeeded == 0 {
            self.push(Action::Phase {
                to: P::Failed,
                reason: Some(format!(
                    "no host was upgraded ({} failed, {skipped} skipped){}",
                    failed.len(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", failed.join("; "))
                    }
                )),
            });
            return;
        }
        let reason = (!failed.is_empty()).then(|| {
            format!(
                "tolerated {} failed host(s): {}",
                failed.len(),
                failed.join("; ")
            )
        });
        self.push(Action::Phase {
            to: P::Succeeded,
            reason,
        });
    }
}
