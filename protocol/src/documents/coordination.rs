//! The documents orchestrator replicas coordinate through: `active` (at most one upgrade in
//! progress) and `leader/<lease>` (their candidacies in the leader election).

use serde::{Deserialize, Serialize};

use super::{Document, Timestamp, schema};
use crate::names::UpgradeId;

/// `active`: the upgrade in progress. Created with compare-and-swap, so at most one exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The upgrade's id.
    pub upgrade_id: UpgradeId,
}

impl Document for Active {
    const KIND: &'static str = "active";
}

/// `leader/<lease>`: an orchestrator replica's candidacy in the leader election; the oldest
/// is the leader. Followers name it (and its API) when they refuse a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The replica's name (`--replica`).
    pub replica: String,
    /// Where its REST API is reached, e.g. `http://10.0.0.5:7480`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The replica's Baton version (absent from replicas older than the field): a
    /// self-update waits for a candidate announcing the bundle's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When it started campaigning.
    pub since: Timestamp,
}

impl Document for Candidate {
    const KIND: &'static str = "leader candidate";
}
