//! A `service` component that is a member of a quorum cluster (etcd): the manifest's
//! `quorum` object, and its checks.
//!
//! Such a member must never go down while the cluster could not lose it, must hand over
//! leadership before it stops, and must be back and caught up before the next member goes:
//! the orchestrator takes the hosts one at a time whatever the request's batch size, and the
//! agent checks the cluster around the restart. The unit is the component's `unit`.

use serde::{Deserialize, Serialize};

use super::ManifestError;
use super::checks::check_absolute_path;

/// The software of a quorum cluster, which says how the agent talks to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumCluster {
    /// etcd v3: members' health and raft index from the maintenance `Status` call,
    /// leadership moved with `MoveLeader`, the backup taken with `Snapshot`.
    Etcd,
}

/// How the agent reaches the member a component runs on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumMember {
    /// The cluster software.
    pub cluster: QuorumCluster,
    /// The member's client endpoint as the host's agent reaches it, e.g.
    /// `http://127.0.0.1:2379` (the agent's own etcd TLS settings are used for `https://`).
    pub endpoint: String,
    /// The member's data folder: never part of the component's files, so replacing the
    /// binary or rolling it back leaves the member's data as it was.
    pub data_dir: String,
}

impl QuorumMember {
    /// Checks the fields (`field` is the object's path, e.g. `components[1].quorum`) and
    /// that none of `dests` lies in the data folder.
    pub(super) fn check<'a>(
        &self,
        field: &str,
        dests: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<(), ManifestError> {
        check_endpoint(&format!("{field}.endpoint"), &self.endpoint)?;
        check_absolute_path(&format!("{field}.data_dir"), &self.data_dir)?;
        let data = format!("{}/", self.data_dir.trim_end_matches('/'));
        for (dest_field, dest) in dests {
            if dest.starts_with(&data) || dest == data.trim_end_matches('/') {
                return Err(ManifestError::new(
                    dest_field,
                    format!(
                        "{dest:?} lies in the member's data folder {:?}: an upgrade never replaces a member's data",
                        self.data_dir
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `http://host:port` or `https://host:port`, nothing after the port.
fn check_endpoint(field: &str, endpoint: &str) -> Result<(), ManifestError> {
    let authority = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    let ok = authority.is_some_and(|a| {
        a.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
        })
    });
    if ok {
        Ok(())
    } else {
        Err(ManifestError::new(
            field,
            format!("{endpoint:?} is not a client endpoint like http://127.0.0.1:2379"),
        ))
    }
}
