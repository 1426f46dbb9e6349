//! The end of an upgrade: halting when more hosts failed than the strategy tolerates, and
//! the final `Succeeded` or `Failed` once no batch is left.

use baton_protocol::UpgradePhase as P;
use baton_protocol::documents::HostOutcomeState as O;

use super::{Action, Decision, allowed_failures};

impl Decision {
    pub(super) fn failures(&self) -> Vec<String> {
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.state == O::Failed)
            .map(|(id, h)| format!("{id}: {}", h.reason))
            .collect()
    }

    pub(super) fn halt_on_failures(&mut self) -> bool {
        let failed = self.failures();
        let allowed = allowed_failures(&self.u.strategy);
        if failed.len() <= allowed {
            return false;
        }
        let reason = format!(
            "{} host(s) failed, more than the {allowed} tolerated: {}",
            failed.len(),
            failed.join("; ")
        );
        self.push(Action::Phase {
            to: P::Failed,
            reason: Some(reason),
        });
        true
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
