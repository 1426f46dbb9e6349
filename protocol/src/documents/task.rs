//! The `task` of an upgrade record the orchestrator creates itself, for one host: join,
//! heal, restart or replace.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::names::{GroupName, HostId, UpgradeId};

/// Why the orchestrator created an upgrade record itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// A host registered after the fleet's upgrade selected its hosts is brought to its
    /// version: downloader job, agent, install. Holds `active` like any upgrade.
    Join,
    /// The host's agent is gone while its Docker Engine answers: the downloader job of its
    /// current bundle runs again (reinstalls and restarts the agent); nothing is installed.
    Heal,
    /// Maintenance mode `restart`: `desired` action `restart` (`reboot` when the mode asks
    /// for a reboot).
    Restart,
    /// Maintenance mode `replace`: the downloader job of the current bundle, then `desired`
    /// action `replace`.
    Replace,
}

impl TaskKind {
    /// The kebab-case name, also the prefix of the record's id (`join-<host>-<n>`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Join => "join",
            TaskKind::Heal => "heal",
            TaskKind::Restart => "restart",
            TaskKind::Replace => "replace",
        }
    }
}

/// `upgrades/<id>.task`: what a record created by the orchestrator is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    /// The kind.
    pub kind: TaskKind,
    /// The one host it concerns.
    pub host: HostId,
    /// The record whose bundle it installs: the fleet's upgrade (join) or the record that
    /// put the host on its current bundle (heal, restart, replace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<UpgradeId>,
    /// Restart and replace: the `since` of the maintenance setting it carries out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_since: Option<Timestamp>,
    /// Restart and replace: set when the mode is the host's group's, not its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupName>,
    /// Restart: the maintenance setting asked for a reboot of the host (`desired` action
    /// `reboot`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
}
