//! The REST API's answers: the merged view of a host, an upgrade record with its hosts
//! counted by outcome, an event of the audit trail, health, and the body of every error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::documents::{
    Alive, ApiRole, ApiToken, Desired, Event, HostOutcomeState, HostSpec, HostStatus, Installed,
    Maintenance, MaintenanceMode, Upgrade,
};
use crate::names::{HostId, UpgradeId};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What is wrong, naming the field, key, host or upgrade.
    pub error: String,
}

/// `GET /healthz` and `GET /readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Registered {
    /// The host was not registered before.
    Created,
    /// Its registration changed (labels, endpoints); `registered_at` is kept.
    Updated,
    /// It was registered so already: nothing was written.
    Unchanged,
}

/// One host of a bulk `POST /v1/hosts`: what happened and the spec stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredHost {
    /// What the registration did.
    pub outcome: Registered,
    /// The spec as stored.
    pub spec: HostSpec,
}

/// `POST /v1/hosts`'s answer: the spec stored for one registration, or each host's outcome
/// (in the request's order) for an array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum RegisterAnswer {
    /// One host.
    One(HostSpec),
    /// Many.
    Many(Vec<RegisteredHost>),
}

/// One host, merged from its keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpgradeInfo {
    /// The record, as stored.
    #[serde(flatten)]
    pub upgrade: Upgrade,
    /// Hosts per outcome state (`Pending`, `Downloaded`, `Dispatched`, `Succeeded`, …).
    pub counts: BTreeMap<HostOutcomeState, usize>,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventInfo {
    /// Its sequence number.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// `GET /v1/stream`'s `snapshot` message: everything the fleet page shows, as this replica
/// knows it when the stream (re)connects; `host`, `host-removed`, `upgrade` and `event`
/// messages then tell what changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetSnapshot {
    /// The replica serving the stream.
    pub replica: String,
    /// Its version (it changes across a self-update).
    pub version: String,
    /// Every host with any document, in id order.
    pub hosts: Vec<HostInfo>,
    /// The upgrades in progress and the most recent others, oldest first.
    pub upgrades: Vec<UpgradeInfo>,
}

/// `GET /v1/stream`'s `host-removed` message: the host has no document any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRemoved {
    /// The host id.
    pub id: HostId,
}

/// `GET /v1/stream`'s `event` message: an entry just added to an upgrade's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpgradeEvent {
    /// The upgrade whose trail it belongs to.
    pub upgrade_id: UpgradeId,
    /// The event and its sequence number.
    #[serde(flatten)]
    pub info: EventInfo,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An upgrade record whose hosts are in `states`, as stored.
    fn upgrade(states: &[(&str, &str)]) -> Upgrade {
        let hosts: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(h, state)| ((*h).to_owned(), json!({"state": state, "batch": 0})))
            .collect();
        serde_json::from_value(json!({
            "schema_version": 1, "id": "u1", "bundle": "r@sha256:0", "version": "2.0.0",
            "strategy": {"kind": "daisy-chain"}, "selector": {}, "phase": "Installing",
            "hosts": hosts, "created_at": "t", "updated_at": "t",
        }))
        .expect("an upgrade record")
    }

    #[test]
    fn counts_are_keyed_by_the_state_names() {
        let info = UpgradeInfo::new(
            upgrade(&[
                ("h1", "Succeeded"),
                ("h2", "Downloaded"),
                ("h3", "Downloaded"),
            ]),
            true,
        );
        let json = serde_json::to_value(&info).expect("json");
        assert_eq!(json["counts"], json!({"Downloaded": 2, "Succeeded": 1}));
        assert_eq!(info.count(HostOutcomeState::Downloaded), 2);
        assert_eq!(info.count(HostOutcomeState::Failed), 0);
        let back: UpgradeInfo = serde_json::from_value(json).expect("parse");
        assert_eq!(back, info);
    }

    #[test]
    fn an_unknown_count_key_is_refused() {
        let mut json = serde_json::to_value(UpgradeInfo::new(upgrade(&[]), false)).expect("json");
        json["counts"] = json!({"Bogus": 1});
        assert!(serde_json::from_value::<UpgradeInfo>(json).is_err());
    }
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: ApiRole,
    /// When it was created.
    pub created_at: String,
}

impl From<&ApiToken> for TokenInfo {
    fn from(t: &ApiToken) -> Self {
        Self {
            name: t.name.to_string(),
            role: t.role,
            created_at: t.created_at.clone(),
        }
    }
}

/// `POST /v1/tokens`'s answer: the only time the token itself is ever shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The token's name, role and creation time.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token (`Authorization: Bearer <token>`); store it now, it cannot be read
    /// again.
    pub token: String,
}

/// Debug output never shows the token.
impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
}
