//! `UpdatingAgents`: the updater updates itself first — every downloaded host of the next
//! batch to install (of the whole upgrade, for a daisy chain) must report the bundle's agent
//! version (in its `alive` key) before any host of that batch installs; one that does not
//! within `agent_timeout` fails.

use baton_protocol::documents::{HostOutcomeState as O, Upgrade};
use baton_protocol::{HostId, UpgradePhase as P};

use super::{Action, Decision, age};
use crate::engine::model::{Limits, Observed};

impl Decision {
    pub(super) fn agent_timeouts(&mut self, o: &Observed<'_>, limits: &Limits) {
        if age(self.u.phase_since.as_ref(), o.now) < limits.agent_timeout {
            return;
        }
        let batch = self.current_batch();
        for host in self.next_batch_hosts(O::Downloaded) {
            if agent_on_version(&self.u, &host, o) {
                continue;
            }
            let reports = match o.view.hosts.get(&host).and_then(|d| d.alive.as_ref()) {
                Some(a) => format!("it reports {}", a.value.agent_version),
                None => "it has no alive key".to_owned(),
            };
            let reason = format!(
                "agent did not report version {} within {}s ({reports})",
                self.u.agent_version.as_deref().unwrap_or("?"),
                limits.agent_timeout.as_secs()
            );
            self.record(host, O::Failed, reason);
        }
        // The failures closed the batch: the next one's agents get their own time (the
        // phase starts again for them).
        if self.current_batch() != batch && self.agents_waited_for(o) {
            self.push(Action::Phase {
                to: P::UpdatingAgents,
                reason: None,
            });
        }
    }

    pub(super) fn updating_agents(&mut self, o: &Observed<'_>) {
        if !self.agents_waited_for(o) {
            self.push(Action::Phase {
                to: P::Installing,
                reason: None,
            });
        }
    }

    /// A downloaded host of the next batch does not run the bundle's agent yet.
    fn agents_waited_for(&self, o: &Observed<'_>) -> bool {
        self.next_batch_hosts(O::Downloaded)
            .into_iter()
            .any(|h| !agent_on_version(&self.u, &h, o))
    }

    /// `Installing`, between batches: the next batch is not downloaded yet, or its agents
    /// do not all run the bundle's version — back to the phase that waits for it.
    pub(super) fn next_batch_waits(&mut self, o: &Observed<'_>) -> bool {
        let to = if !self.next_batch_hosts(O::Pending).is_empty() {
            P::Downloading
        } else if self.agents_waited_for(o) {
            P::UpdatingAgents
        } else {
            return false;
        };
        self.push(Action::Phase { to, reason: None });
        true
    }
}

/// Whether the host's agent is alive and reports the bundle's agent version.
fn agent_on_version(u: &Upgrade, host: &HostId, o: &Observed<'_>) -> bool {
    let alive = o.view.hosts.get(host).and_then(|d| d.alive.as_ref());
    match (alive, &u.agent_version) {
        (Some(a), Some(v)) => &a.value.agent_version == v,
        (Some(_), None) => true,
        (None, _) => false,
    }
}
