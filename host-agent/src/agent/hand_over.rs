//! Daisy-chain hand-over: a host that finished an upgrade whose `desired` names a
//! `next_host` writes that host's `desired` (the same upgrade), naming the host after it
//! from the upgrade's batch plan, so the upgrade continues with no orchestrator running.

use baton_protocol::documents::{self, Desired, Upgrade};
use baton_protocol::etcd::{self, Change};
use baton_protocol::{HostId, HostKey};

use super::{Agent, AgentError};

impl Agent {
    /// Daisy-chain: this host is done and healthy, so it writes the next host's `desired`
    /// (the same upgrade), naming the host after that from the upgrade's batch plan. The
    /// upgrade goes on even while no orchestrator runs. Idempotent: a next host already
    /// told about this upgrade is left alone.
    pub(super) async fn hand_over(
        &self,
        client: &etcd::Client,
        desired: &Desired,
        next: &HostId,
    ) -> Result<(), AgentError> {
        let upgrade = etcd::read::<Upgrade>(client, &self.keyspace.upgrade(&desired.upgrade_id))
            .await?
            .map(|v| v.value);
        // The orchestrator's own rule ([`Upgrade::next_in_chain`]), from the next host's batch.
        let after_next = upgrade.as_ref().and_then(|u| {
            let batch = u.hosts.get(next)?.batch.unwrap_or(0);
            u.next_in_chain(batch)
        });
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
}
