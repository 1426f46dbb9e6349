//! A quorum cluster's member (a component with `quorum`) around its restart: the agent's
//! side of `crate::quorum`, with the host's etcd access (its maintenance identity, if it has
//! one) and where the snapshot is kept.

use std::path::PathBuf;

use baton_protocol::UpgradeId;
use baton_protocol::etcd::Credential;
use baton_protocol::manifest::QuorumMember;

use super::Agent;
use crate::quorum::{self, Access};

/// Folder of the snapshots taken before a member goes down, under the state folder:
/// `snapshots/<upgrade>/<component>.db`. Not pruned with the backups: an operator removes
/// them.
const SNAPSHOTS_DIR: &str = "snapshots";

impl Agent {
    /// Where the snapshot of `component`'s member is kept for upgrade `id`.
    pub(super) fn snapshot_path(&self, id: &UpgradeId, component: &str) -> PathBuf {
        self.config
            .state_dir
            .join(SNAPSHOTS_DIR)
            .join(id.as_str())
            .join(format!("{component}.db"))
    }

    /// The cluster is reached with the agent's TLS settings, as the host's maintenance user
    /// when it has one (etcd serves `Snapshot` and `MoveLeader` only to a user with the
    /// `root` role; docs/security.md), else as the host's own user. Read at each step, so a
    /// credential a later job rotated is used; used for these steps only.
    fn quorum_access(&self) -> Result<Access, String> {
        let file = self
            .config
            .maintenance_credential_file
            .as_ref()
            .or(self.config.credential_file.as_ref());
        let credential = match file {
            Some(path) => Some(Credential::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Access {
            tls: self.config.tls.clone(),
            credential,
        })
    }

    /// Waits until the member may go down, snapshots it, and moves leadership away from
    /// it; `Err` is the reason the step fails.
    pub(super) async fn quorum_before_stop(
        &self,
        id: &UpgradeId,
        component: &str,
        member: &QuorumMember,
    ) -> Result<(), String> {
        let access = self.quorum_access()?;
        quorum::before_stop(&access, member, self.snapshot_path(id, component))
            .await
            .map_err(|e| e.to_string())
    }

    /// For a quorum member, waits until it is healthy and caught up; other components pass.
    pub(super) async fn quorum_after_start(
        &self,
        member: Option<&QuorumMember>,
    ) -> Result<(), String> {
        let Some(member) = member else {
            return Ok(());
        };
        let access = self.quorum_access()?;
        quorum::after_start(&access, member)
            .await
            .map_err(|e| e.to_string())
    }
}
