//! What an upgrade does when more hosts fail than it tolerates (`on_failure`), and what it
//! keeps per host so a revert can return the host to exactly what it ran before.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::names::UpgradeId;

/// What an upgrade does once more hosts failed than it tolerates (or a canary failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop dispatching and end `Failed`: hosts already upgraded stay on the new version.
    #[default]
    Halt,
    /// Stop dispatching and return every host it changed to the bundle that host ran
    /// before, batch by batch in reverse order, each reverted batch soaking with the same
    /// health checks and gates as an installed one (when the request has a `soak`):
    /// `Reverting`, then `Reverted` (or `Failed` naming the hosts that could not be
    /// reverted or failed their revert's soak).
    Revert,
}

impl OnFailure {
    /// Its name in requests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Halt => "halt",
            OnFailure::Revert => "revert",
        }
    }

    /// Whether it is the default (not written into records).
    pub fn is_halt(&self) -> bool {
        *self == OnFailure::Halt
    }
}

/// The bundle a host ran when the upgrade told it to install, recorded then: what a revert
/// gives it back, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviousBundle {
    /// The bundle image, by digest (`registry/name@sha256:…`).
    pub bundle: String,
    /// Its version.
    pub version: String,
    /// The record that put the host on it (its signature goes with a revert's `desired`).
    pub upgrade: UpgradeId,
}

/// Where a host's revert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RevertState {
    /// Its `desired` names the bundle it ran before (under the revert's id); with a soak,
    /// it stays so until its batch's soak ended.
    Dispatched,
    /// Back on the bundle it ran before, healthy (through its batch's soak, if any).
    Reverted,
    /// It could not be reverted, or failed its batch's soak; see the reason.
    Failed,
}

/// One host's revert, once its batch is reverted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRevert {
    /// Where it stands.
    pub state: RevertState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When its revert `desired` was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failure_reads_by_name_and_defaults_to_halt() {
        assert_eq!(OnFailure::default(), OnFailure::Halt);
        for f in [OnFailure::Halt, OnFailure::Revert] {
            let text = serde_json::to_string(&f).expect("json");
            assert_eq!(text, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<OnFailure>(&text).expect("read"), f);
        }
        assert!(serde_json::from_str::<OnFailure>("\"rollback\"").is_err());
    }
}
