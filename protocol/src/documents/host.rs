//! The documents under `hosts/<host>/`: its registration (`spec`), its agent's liveness
//! (`alive`), the instruction it is given (`desired`), what its agent reports (`status`) and
//! what it runs (`installed`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Document, Timestamp, schema};
use crate::manifest::{ManifestError, check_version, image_digest};
use crate::names::{HostId, UpgradeId};
use crate::state::HostState;

/// `hosts/<host>/spec`: how to reach and address a host. Written at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostSpec {
    /// Always [`SCHEMA_VERSION`](super::SCHEMA_VERSION) when written by this build.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The host's id (same as in the key).
    pub host: HostId,
    /// Labels used to select hosts: `group`, `zone`, anything else.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The host's Docker Engine endpoint: `unix:///var/run/docker.sock` or `tcp://ip:port`.
    pub docker: String,
    /// Host path → path the Docker Engine sees for it, used for the downloader job's bind
    /// mounts (identity on a real host; a per-host folder in the simulated fleet).
    #[serde(default)]
    pub path_map: BTreeMap<String, String>,
    /// The agent's `boot_id_file` (`--boot-id-file` of the downloader job), when the host
    /// does not use the kernel's (simulated hosts: `/run/baton/boot-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_file: Option<String>,
    /// The agent's `kernel_release_file` (`--kernel-release-file`), when not the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release_file: Option<String>,
    /// The agent's `container_prefix` (`--container-prefix`), when the host shares its
    /// Docker Engine with others (simulated fleet: `<host>-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_prefix: Option<String>,
    /// The host runs a member of the etcd cluster Baton uses (its agent gets a maintenance
    /// identity when etcd authentication is on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quorum_member: bool,
    /// When it was registered.
    pub registered_at: Timestamp,
}

impl Document for HostSpec {
    const KIND: &'static str = "host spec";
}

/// `hosts/<host>/alive`: the agent is up. Bound to the agent's lease, so it vanishes when the
/// agent dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alive {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// Version of the running `baton-agent`.
    pub agent_version: String,
    /// Identity of the current boot (changes on every reboot).
    pub boot_id: String,
    /// The agent's process id.
    pub pid: u32,
    /// When this agent process started.
    pub since: Timestamp,
}

impl Document for Alive {
    const KIND: &'static str = "alive";
}

/// What the orchestrator asks of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum DesiredAction {
    /// Install the bundle's components.
    Install,
    /// Reinstall the host's Baton-managed components from the bundle.
    Replace,
    /// Restart the host's Baton-managed services.
    Restart,
    /// Reboot the host.
    Reboot,
}

/// `hosts/<host>/desired`: the orchestrator's instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Desired {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The upgrade this belongs to.
    pub upgrade_id: UpgradeId,
    /// Target bundle version.
    pub version: String,
    /// The bundle image, by digest (`registry/name@sha256:…`).
    pub bundle: String,
    /// What to do.
    pub action: DesiredAction,
    /// Daisy chain: the host this one follows. The agent starts only once that host's
    /// `status` says `Done` for this upgrade, and only while the upgrade is `Installing` (a
    /// paused chain waits, an aborted or failed one starts no further host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<HostId>,
    /// The upgrade may move the host to a lower version than it runs (the request said
    /// `allow_downgrade: true`, or it is a revert); without it the agent refuses to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
    /// A revert: the upgrade whose changes it undoes (`upgrade_id` is then that upgrade's
    /// revert id, [`UpgradeId::revert`], shortened to fit and so not mapped back by name).
    /// See [`Desired::record`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<UpgradeId>,
    /// The bundle's signature, as the orchestrator verified it: an agent that trusts keys
    /// installs the bundle only if it verifies with them (and is for this digest, version
    /// and the staged manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::BundleSignature>,
    /// When it was written.
    pub issued_at: Timestamp,
}

impl Document for Desired {
    const KIND: &'static str = "desired";
}

impl Desired {
    /// The upgrade record this work belongs to: `upgrade_id`'s own, or for a revert the
    /// record of the upgrade it undoes, which holds the revert's progress and its soak.
    pub fn record(&self) -> &UpgradeId {
        self.reverts.as_ref().unwrap_or(&self.upgrade_id)
    }

    /// Checks the fields the agent takes as names on the host: `version` must be a version
    /// (it names the staged bundle's folder, so a path never gets through) and `bundle` an
    /// image digest (or a reference pinned by one). Returns the digest, `sha256:…`.
    pub fn validate(&self) -> Result<&str, ManifestError> {
        check_version("desired.version", &self.version)?;
        image_digest("desired.bundle", &self.bundle)
    }
}

/// `hosts/<host>/status`: what the agent is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostStatus {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The upgrade being worked on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_id: Option<UpgradeId>,
    /// The host state.
    pub state: HostState,
    /// The current step, e.g. `apply daemon baton-echo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Human-readable detail (the reason, on failure).
    #[serde(default)]
    pub message: String,
    /// When work on this upgrade started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When this status was written.
    pub updated_at: Timestamp,
    /// Set while the host is `Done` and its upgrade soaks: the agent re-runs its components'
    /// health checks and writes this only when the result changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HostHealth>,
}

/// The result of a host's re-run health checks (see [`HostStatus::health`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostHealth {
    /// Every managed component passed its health checks.
    pub healthy: bool,
    /// What failed, when not healthy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When this result was first seen.
    pub since: Timestamp,
}

impl Document for HostStatus {
    const KIND: &'static str = "host status";
}

/// `hosts/<host>/installed`: what the host runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Installed {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The bundle version the host is on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_version: Option<String>,
    /// Version of the running agent.
    pub agent_version: String,
    /// The running kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Component name → installed version.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// When this was written.
    pub updated_at: Timestamp,
}

impl Document for Installed {
    const KIND: &'static str = "installed";
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn desired(version: &str, bundle: &str) -> Desired {
        Desired {
            schema_version: 1,
            upgrade_id: UpgradeId::new("u1").expect("id"),
            version: version.into(),
            bundle: bundle.into(),
            action: DesiredAction::Install,
            after: None,
            allow_downgrade: false,
            reverts: None,
            signature: None,
            issued_at: "t".into(),
        }
    }

    #[test]
    fn a_desired_names_a_version_and_an_image_digest() {
        let pinned = format!("127.0.0.1:5000/baton/bundle@{DIGEST}");
        assert_eq!(desired("2.0.0", &pinned).validate().ok(), Some(DIGEST));
        assert_eq!(desired("2.0.0", DIGEST).validate().ok(), Some(DIGEST));
        for (version, bundle, field) in [
            ("../../../tmp/evil", DIGEST, "desired.version"),
            ("/tmp/evil", DIGEST, "desired.version"),
            ("2.0.0/..", DIGEST, "desired.version"),
            ("", DIGEST, "desired.version"),
            (
                "2.0.0",
                "127.0.0.1:5000/baton/bundle:2.0.0",
                "desired.bundle",
            ),
            ("2.0.0", "sha256:abc", "desired.bundle"),
        ] {
            let err = desired(version, bundle).validate().expect_err(version);
            assert_eq!(err.field, field, "{version} {bundle}: {err}");
        }
    }

    #[test]
    fn allow_downgrade_is_written_only_when_set() {
        let mut d = desired("1.0.0", DIGEST);
        let text = String::from_utf8(crate::documents::encode(&d)).expect("utf-8");
        assert!(!text.contains("allow_downgrade"), "{text}");
        d.allow_downgrade = true;
        let text = String::from_utf8(crate::documents::encode(&d)).expect("utf-8");
        assert!(text.contains(r#""allow_downgrade":true"#), "{text}");
    }

    #[test]
    fn a_reverts_record_is_the_upgrade_it_undoes() {
        let mut d = desired("1.0.0", DIGEST);
        assert_eq!(d.record().as_str(), "u1");
        let text = String::from_utf8(crate::documents::encode(&d)).expect("utf-8");
        assert!(!text.contains("reverts"), "{text}");
        // A long id's revert id is shortened: the record is named, not derived from it.
        let long = UpgradeId::new("u".repeat(63)).expect("id");
        d.upgrade_id = long.revert();
        d.reverts = Some(long.clone());
        assert_eq!(d.record(), &long);
        let text = String::from_utf8(crate::documents::encode(&d)).expect("utf-8");
        let back: Desired = serde_json::from_str(&text).expect("read back");
        assert_eq!(back.record(), &long);
    }
}
