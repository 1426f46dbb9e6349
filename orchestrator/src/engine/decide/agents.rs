//! `UpdatingAgents`: the updater updates itself first — every downloaded host's agent must
//! report the bundle's agent version (in its `alive` key) before any host installs; one that
//! does not within `agent_timeout` fails.

use baton_protocol::documents::{HostOutcomeState as O, Upgrade};
use baton_protocol::{HostId, UpgradePhase as P};

use super::{Action, Decision, age};
use crate::engine::model::{Limits, Observed};

impl Decision {
    pub(super) fn agent_timeouts(&mut self, o: &Observed<'_>, limits: &Limits) {
        if age(self.u.phase_since.as_ref(), o.now) < limits.agent_timeout {
            return;
        }
        for host in self.hosts_at(O::Downloaded) {
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
    }

    pub(super) fn updating_agents(&mut self, o: &Observed<'_>) {
        let waiting = self
            .hosts_at(O::Downloaded)
            .into_iter()
            .any(|h| !agent_on_version(&self.u, &h, o));
        if !waiting {
            self.push(Action::Phase {
                to: P::Installing,
                reason: None,
            });
        }
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
