//! Daisy chain: a host whose `desired` names the host it follows (`after`) starts only once
//! that host's `status` says `Done` for the same upgrade, and only while the upgrade is
//! `Installing`. The orchestrator tells every host of the chain up front, so the chain goes
//! on with no orchestrator running, and no host writes another host's keys: each host only
//! reads its predecessor's `status` and the upgrade's phase.

use baton_protocol::documents::{Desired, HostStatus, Upgrade};
use baton_protocol::etcd;
use baton_protocol::{HostKey, HostState, UpgradePhase};

use super::{Agent, AgentError};

/// Whether a chained host may start.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Its predecessor is done and the upgrade installs: start.
    Open,
    /// Not yet: watch these keys (the predecessor's `status`, the upgrade record) and ask
    /// again when one changes.
    Wait(Vec<String>),
    /// Never: the upgrade is over (aborted, failed, …) or gone.
    Closed,
}

/// The gate for a chained host, from the upgrade's phase and its predecessor's status (a
/// pure function of what was read, so the rule is tested without etcd).
pub(super) fn gate(
    desired: &Desired,
    upgrade: Option<&Upgrade>,
    predecessor: Option<&HostStatus>,
) -> GateDecision {
    let Some(upgrade) = upgrade else {
        return GateDecision::Closed;
    };
    if upgrade.phase.is_terminal() {
        return GateDecision::Closed;
    }
    if upgrade.phase != UpgradePhase::Installing {
        return GateDecision::Wait;
    }
    let done = predecessor.is_some_and(|s| {
        s.upgrade_id.as_ref() == Some(&desired.upgrade_id) && s.state == HostState::Done
    });
    if done {
        GateDecision::Open
    } else {
        GateDecision::Wait
    }
}

/// [`gate`]'s answer, before the keys to watch are attached.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GateDecision {
    Open,
    Wait,
    Closed,
}

impl Agent {
    /// The gate of a `desired` naming the host it follows; [`Gate::Open`] when it names
    /// none.
    pub(super) async fn chain_gate(
        &self,
        client: &etcd::Client,
        desired: &Desired,
    ) -> Result<Gate, AgentError> {
        let Some(after) = &desired.after else {
            return Ok(Gate::Open);
        };
        let upgrade_key = self.keyspace.upgrade(&desired.upgrade_id);
        let status_key = self.keyspace.host(after, HostKey::Status);
        let upgrade = etcd::read::<Upgrade>(client, &upgrade_key)
            .await?
            .map(|v| v.value);
        let status = etcd::read::<HostStatus>(client, &status_key)
            .await?
            .map(|v| v.value);
        Ok(match gate(desired, upgrade.as_ref(), status.as_ref()) {
            GateDecision::Open => {
                tracing::info!(upgrade = %desired.upgrade_id, %after, "the host before is done: starting");
                Gate::Open
            }
            GateDecision::Wait => {
                tracing::debug!(upgrade = %desired.upgrade_id, %after, "waiting for the host before");
                Gate::Wait(vec![status_key, upgrade_key])
            }
            GateDecision::Closed => {
                tracing::info!(upgrade = %desired.upgrade_id, %after, "upgrade over: not starting");
                Gate::Closed
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use baton_protocol::documents::{self, DesiredAction, SCHEMA_VERSION};
    use baton_protocol::{HostId, UpgradeId};

    use super::*;

    fn desired() -> Desired {
        Desired {
            schema_version: SCHEMA_VERSION,
            upgrade_id: UpgradeId::new("u2").expect("id"),
            version: "2.0.0".into(),
            bundle: "r@sha256:00".into(),
            action: DesiredAction::Install,
            after: Some(HostId::new("h1").expect("host")),
            allow_downgrade: false,
            reverts: None,
            signature: None,
            issued_at: "t".into(),
        }
    }

    fn upgrade(phase: UpgradePhase) -> Upgrade {
        let text = format!(
            r#"{{"schema_version":1,"id":"u2","bundle":"r@sha256:00","version":"2.0.0","strategy":{{"kind":"daisy-chain"}},"phase":"{phase}","hosts":{{}},"created_at":"t","updated_at":"t"}}"#
        );
        documents::decode::<Upgrade>("u2", text.as_bytes()).expect("record")
    }

    fn status(id: &str, state: HostState) -> HostStatus {
        HostStatus {
            schema_version: SCHEMA_VERSION,
            upgrade_id: Some(UpgradeId::new(id).expect("id")),
            state,
            step: None,
            message: String::new(),
            started_at: None,
            updated_at: "t".into(),
            health: None,
        }
    }

    #[test]
    fn gate_table() {
        use GateDecision::*;
        use UpgradePhase as P;
        let d = desired();
        let done = status("u2", HostState::Done);
        let cases: Vec<(&str, Option<Upgrade>, Option<HostStatus>, GateDecision)> = vec![
            (
                "predecessor done, installing",
                Some(upgrade(P::Installing)),
                Some(done.clone()),
                Open,
            ),
            (
                "predecessor updating",
                Some(upgrade(P::Installing)),
                Some(status("u2", HostState::Updating)),
                Wait,
            ),
            (
                "predecessor done with an older upgrade",
                Some(upgrade(P::Installing)),
                Some(status("u1", HostState::Done)),
                Wait,
            ),
            (
                "predecessor failed",
                Some(upgrade(P::Installing)),
                Some(status("u2", HostState::Failed)),
                Wait,
            ),
            (
                "no predecessor status",
                Some(upgrade(P::Installing)),
                None,
                Wait,
            ),
            ("paused", Some(upgrade(P::Paused)), Some(done.clone()), Wait),
            (
                "reverting: the chain goes no further",
                Some(upgrade(P::Reverting)),
                Some(done.clone()),
                Wait,
            ),
            (
                "reverted",
                Some(upgrade(P::Reverted)),
                Some(done.clone()),
                Closed,
            ),
            (
                "aborted",
                Some(upgrade(P::Aborted)),
                Some(done.clone()),
                Closed,
            ),
            (
                "failed",
                Some(upgrade(P::Failed)),
                Some(done.clone()),
                Closed,
            ),
            ("record gone", None, Some(done.clone()), Closed),
        ];
        for (name, u, s, want) in cases {
            assert_eq!(gate(&d, u.as_ref(), s.as_ref()), want, "{name}");
        }
    }
}
