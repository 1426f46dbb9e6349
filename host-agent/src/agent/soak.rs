//! While an upgrade soaks (or its revert does), the hosts it made `Done` re-run their
//! components' health checks (each managed component's unit active, container running,
//! manifest checks — nothing is restarted) every [`RECHECK_INTERVAL`] and report the result
//! in `status.health`. To keep writes few, the result is written the first time and then
//! only when it changes; the orchestrator reads it for the soaking batch.

use std::time::Duration;

use baton_protocol::UpgradeId;
use baton_protocol::documents::{Desired, DesiredAction, Upgrade};
use baton_protocol::etcd;

use super::{Agent, AgentError};
use crate::journal::{self, Outcome};
use crate::report::Reporter;

/// Time between two re-runs of the health checks while the upgrade soaks.
pub(super) const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What to re-check: the bundle version the host is done with, for an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recheck {
    version: String,
    upgrade: UpgradeId,
}

impl Agent {
    /// The re-check due while the upgrade `desired` names soaks: its install (or replace,
    /// or revert) is done here, and its record — for a revert, the record of the upgrade it
    /// undoes ([`Desired::record`]) — asks for a soak and is not over.
    pub(super) async fn soak_recheck(
        &self,
        client: &etcd::Client,
        desired: &Desired,
    ) -> Result<Option<Recheck>, AgentError> {
        if !matches!(
            desired.action,
            DesiredAction::Install | DesiredAction::Replace
        ) {
            return Ok(None);
        }
        let done = journal::load(&self.config.state_dir)?.filter(|j| {
            j.upgrade_id == desired.upgrade_id && matches!(j.outcome, Some(Outcome::Done))
        });
        let Some(done) = done else {
            return Ok(None);
        };
        // A revert's soak is kept in the record of the upgrade it undoes.
        let record = etcd::read::<Upgrade>(client, &self.keyspace.upgrade(desired.record()))
            .await?
            .map(|v| v.value);
        let soaks = record.is_some_and(|u| u.soak.is_some() && !u.phase.is_terminal());
        Ok(soaks.then_some(Recheck {
            version: done.version,
            upgrade: done.upgrade_id,
        }))
    }

    /// Re-runs the health checks and reports the result (only if it changed).
    pub(super) async fn recheck(
        &self,
        reporter: &Reporter,
        recheck: &Recheck,
    ) -> Result<(), AgentError> {
        let outcome = self
            .managed_services(&recheck.version, &recheck.upgrade, false)
            .await;
        let message = match &outcome {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        if !message.is_empty() {
            tracing::warn!(host = %self.config.host_id, upgrade = %recheck.upgrade, %message, "health check failed while soaking");
        }
        reporter
            .health(&recheck.upgrade, outcome.is_ok(), &message)
            .await?;
        Ok(())
    }
}
