//! The upgrade record (`upgrades/<id>`): its request, phase and per-host outcomes (stored
//! under keys of their own, [`super::outcomes`]), and the orchestrator self-update it may
//! carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Document, HostRevert, OnFailure, PreviousBundle, Soak, Strategy, Task, Timestamp, schema,
};
use crate::names::{HostId, UpgradeId};
use crate::state::{HostOutcomeState, UpgradePhase};

/// One host's outcome in an upgrade record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostOutcome {
    /// Where the host stands.
    pub state: HostOutcomeState,
    /// Detail (the failure reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The install batch the host belongs to (0 first; with canaries, batch 0 holds them),
    /// fixed when the upgrade is created so every leader follows the same plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// When its `desired` key was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<Timestamp>,
    /// The state it was held in, while [`HostOutcomeState::Held`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<HostOutcomeState>,
    /// The bundle the host ran when this upgrade told it to install (what a revert gives it
    /// back); absent when no record put it on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousBundle>,
    /// Its revert, once the upgrade reverts its batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<HostRevert>,
}

impl HostOutcome {
    /// Where the host is in its upgrade, held or not: [`Self::held_from`] while held.
    pub fn stage(&self) -> HostOutcomeState {
        match (self.state, self.held_from) {
            (HostOutcomeState::Held, Some(from)) => from,
            (state, _) => state,
        }
    }
}

/// `upgrades/<id>`: one upgrade, its request, phase and per-host outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Upgrade {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// Its id (same as in the key).
    pub id: UpgradeId,
    /// The bundle image resolved to a digest at creation.
    pub bundle: String,
    /// The bundle's version.
    pub version: String,
    /// The strategy.
    pub strategy: Strategy,
    /// Label selector the hosts were chosen by.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Why `strategy` is what it is, when the request said `auto` and the orchestrator chose
    /// it from the bundle's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_reason: Option<String>,
    /// The phase.
    pub phase: UpgradePhase,
    /// The phase it was paused in, while `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<UpgradePhase>,
    /// Per-host outcome, for every selected host. Stored in keys of their own
    /// (`upgrades/<id>/hosts/<host>`, [`super::UpgradeHost`]); the record's own key carries
    /// them only if it was written before they had (see [`super::HostsLayout`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<HostId, HostOutcome>,
    /// Why it failed, was aborted or paused (or, when it succeeded, which failures it
    /// tolerated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The bundle's agent version (manifest `agent.version`): every selected host's agent must
    /// report it before anything is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the current phase was entered (timeouts count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Timestamp>,
    /// An operator resumed the upgrade after its canaries (`pause_after_canary`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_approved: bool,
    /// Events written so far under `events/<id>/`: the next one's `<seq>`. Bumped in the
    /// same transaction that writes the event, so sequence numbers are never reused.
    #[serde(default)]
    pub events: u64,
    /// The request named its hosts (`hosts`) instead of selecting them by labels only: hosts
    /// registered later do not join it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub listed: bool,
    /// Hosts in maintenance mode `paused` are skipped (reported `Skipped`) instead of waited
    /// for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_paused: bool,
    /// The request said `allow_downgrade: true`: hosts may be moved to a lower version than
    /// they run (carried into every host's `desired`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
    /// What happens once more hosts fail than the strategy tolerates: halt (the default) or
    /// revert every host it changed.
    #[serde(default, skip_serializing_if = "OnFailure::is_halt")]
    pub on_failure: OnFailure,
    /// Set when the orchestrator created the record itself, for one host (absent: an
    /// operator's request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The bundle carries an orchestrator image (manifest `orchestrator_image`): before the
    /// download phase the leader starts it and hands leadership over to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<OrchestratorUpdate>,
    /// The bundle's signature the orchestrator verified when it accepted the upgrade (passed
    /// to every host's downloader job and `desired`, which verify it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::BundleSignature>,
    /// The request's soak after each batch (its length and fleet gates), and the batch
    /// soaking now: after its install, or — while `Reverting` — after its revert, which
    /// soaks the same length with the same gates before the batch before it is reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
    /// Hosts are ready to be dispatched but a maintenance window is closed: since when, and
    /// when one opens next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_window: Option<WindowWait>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When this record last changed.
    pub updated_at: Timestamp,
}

impl Document for Upgrade {
    const KIND: &'static str = "upgrade";
}

impl Upgrade {
    /// `Reverting`, or paused in it: its soak under way (if any) is a revert's.
    pub fn reverting(&self) -> bool {
        self.phase == UpgradePhase::Reverting
            || (self.phase == UpgradePhase::Paused
                && self.paused_from == Some(UpgradePhase::Reverting))
    }
}

/// An upgrade's orchestrator self-update (see [`Upgrade::orchestrator`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrchestratorUpdate {
    /// The orchestrator image of the bundle's version, as the manifest names it.
    pub image: String,
    /// The container the new version runs in, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// When the previous leader handed leadership over to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over_at: Option<Timestamp>,
}

/// An upgrade waiting for a maintenance window (see [`Upgrade::waiting_for_window`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowWait {
    /// When it started waiting.
    pub since: Timestamp,
    /// When the windows next let it dispatch (absent: not within a week, e.g. a fleet and a
    /// group window that never overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_opening: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_host_is_at_the_stage_it_was_held_from() {
        use HostOutcomeState::*;
        let text = br#"{"schema_version":1,"id":"u1","bundle":"r@sha256:00","version":"2.0.0","strategy":{"kind":"daisy-chain"},"phase":"Installing","hosts":{
            "h1":{"state":"Dispatched","batch":0},"h2":{"state":"Skipped","batch":1},
            "h3":{"state":"Held","batch":2,"held_from":"Downloaded"},"h4":{"state":"Downloaded","batch":3},
            "h5":{"state":"Downloaded","batch":4}},"created_at":"t","updated_at":"t"}"#;
        let u: Upgrade = serde_json::from_slice(text).expect("record");
        let id = |h: &str| HostId::new(h).expect("id");
        assert_eq!(u.hosts[&id("h3")].stage(), Downloaded);
        assert_eq!(u.hosts[&id("h4")].stage(), Downloaded);
        assert_eq!(u.hosts[&id("h1")].stage(), Dispatched);
    }
}
