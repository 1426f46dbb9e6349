//! The REST API's answers: the merged view of a host, an upgrade record with its hosts
//! counted by outcome, an event of the audit trail, health, and the body of every error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::documents::{
    Alive, Desired, Event, HostOutcomeState, HostSpec, HostStatus, Installed, Maintenance,
    MaintenanceMode, Upgrade,
};
use crate::names::HostId;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, naming the field, key, host or upgrade.
    pub error: String,
}

/// `GET /healthz` and `GET /readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The orchestrator's version.
    pub version: String,
    /// This replica's name.
    pub replica: String,
    /// `leader` or `follower`.
    pub role: String,
}

/// One host, merged from its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The host id.
    pub id: HostId,
    /// Its registration (absent: an agent reports for a host nobody registered).
    pub spec: Option<HostSpec>,
    /// Its agent's liveness (absent: the agent is not running or cannot reach etcd).
    pub alive: Option<Alive>,
    /// What it was last told to do.
    pub desired: Option<Desired>,
    /// What its agent reports doing.
    pub status: Option<HostStatus>,
    /// What it runs.
    pub installed: Option<Installed>,
    /// Its own maintenance mode.
    pub maintenance: Option<Maintenance>,
    /// Its group's maintenance mode.
    pub group_maintenance: Option<Maintenance>,
    /// The mode in force: its own if set, else its group's.
    pub effective_maintenance: MaintenanceMode,
}

/// Hosts per outcome state; on the wire an object keyed by the state's name
/// (`{"Pending": 2, "Succeeded": 1}`), states no host is in left out.
pub type Counts = BTreeMap<HostOutcomeState, usize>;

/// An upgrade record with its hosts counted by state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeInfo {
    /// The record, as stored.
    #[serde(flatten)]
    pub upgrade: Upgrade,
    /// Hosts per outcome state (`Pending`, `Downloaded`, `Dispatched`, `Succeeded`, …).
    pub counts: Counts,
    /// Whether `active` names it.
    pub active: bool,
}

impl UpgradeInfo {
    /// `upgrade` with its counts.
    pub fn new(upgrade: Upgrade, active: bool) -> Self {
        let mut counts = Counts::new();
        for h in upgrade.hosts.values() {
            *counts.entry(h.state).or_insert(0) += 1;
        }
        Self {
            upgrade,
            counts,
            active,
        }
    }

    /// Hosts in `state`.
    pub fn count(&self, state: HostOutcomeState) -> usize {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

/// One event of an upgrade's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// Its sequence number.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{BatchSize, HostOutcome, SCHEMA_VERSION, Strategy};
    use crate::names::UpgradeId;
    use crate::state::UpgradePhase;

    fn upgrade(states: &[(&str, HostOutcomeState)]) -> Upgrade {
        Upgrade {
            schema_version: SCHEMA_VERSION,
            id: UpgradeId::new("u1").expect("id"),
            bundle: "r@sha256:0".into(),
            version: "2.0.0".into(),
            strategy: Strategy::Rolling {
                batch: BatchSize::Count(1),
                canary: 0,
                pause_after_canary: false,
                zone_label: None,
                max_failures: 0,
            },
            selector: BTreeMap::new(),
            phase: UpgradePhase::Installing,
            paused_from: None,
            hosts: states
                .iter()
                .map(|(h, state)| {
                    (
                        HostId::new(*h).expect("id"),
                        HostOutcome {
                            state: *state,
                            reason: String::new(),
                            batch: Some(0),
                            dispatched_at: None,
                        },
                    )
                })
                .collect(),
            reason: None,
            agent_version: None,
            phase_since: None,
            canary_approved: false,
            events: 0,
            listed: false,
            task: None,
            orchestrator: None,
            skip_paused: false,
            created_at: "t".into(),
            updated_at: "t".into(),
        }
    }

    #[test]
    fn counts_are_keyed_by_the_state_names() {
        let info = UpgradeInfo::new(
            upgrade(&[
                ("h1", HostOutcomeState::Succeeded),
                ("h2", HostOutcomeState::Downloaded),
                ("h3", HostOutcomeState::Downloaded),
            ]),
            true,
        );
        let json = serde_json::to_value(&info).expect("json");
        assert_eq!(
            json["counts"],
            serde_json::json!({"Downloaded": 2, "Succeeded": 1})
        );
        assert_eq!(info.count(HostOutcomeState::Downloaded), 2);
        assert_eq!(info.count(HostOutcomeState::Failed), 0);
        let back: UpgradeInfo = serde_json::from_value(json).expect("parse");
        assert_eq!(back, info);
    }

    #[test]
    fn an_unknown_count_key_is_refused() {
        let mut json = serde_json::to_value(UpgradeInfo::new(upgrade(&[]), false)).expect("json");
        json["counts"] = serde_json::json!({"Bogus": 1});
        assert!(serde_json::from_value::<UpgradeInfo>(json).is_err());
    }
}
