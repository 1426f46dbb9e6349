//! The JSON documents stored under Baton's keys, and the one place that (de)serialises them.
//!
//! Every document carries `schema_version`. A reader refuses a document written by a newer
//! schema (it cannot know what the new fields mean) with an error naming the key; older
//! documents are read with defaults for the fields they lack.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::events::EventKind;
use crate::names::{GroupName, HostId, UpgradeId};
pub use crate::state::HostOutcomeState;
use crate::state::{HostState, UpgradePhase};

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// An RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-21T23:30:00.123Z`.
pub type Timestamp = String;

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A stored document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON, or not the expected shape.
    #[error("key {key}: invalid {kind} document: {source}")]
    Invalid {
        /// The key it was read from.
        key: String,
        /// The document kind expected.
        kind: &'static str,
        /// The parse error (names the field).
        source: serde_json::Error,
    },
    /// The `schema_version` field is missing.
    #[error("key {key}: {kind} document has no schema_version")]
    MissingSchema {
        /// The key.
        key: String,
        /// The document kind.
        kind: &'static str,
    },
    /// Written by a newer Baton.
    #[error(
        "key {key}: {kind} document has schema_version {found}, this build reads at most {supported}; upgrade this component"
    )]
    NewerSchema {
        /// The key.
        key: String,
        /// The document kind.
        kind: &'static str,
        /// The version found.
        found: u64,
        /// The newest this build reads.
        supported: u32,
    },
}

/// A document stored under a Baton key.
pub trait Document: Serialize + DeserializeOwned {
    /// Name used in errors, e.g. `host status`.
    const KIND: &'static str;
}

/// Serialises a document for storing (compact JSON, readable with `etcdctl get`).
#[allow(clippy::expect_used)]
pub fn encode<T: Document>(doc: &T) -> Vec<u8> {
    // Cannot fail: documents are plain structs whose map keys are all strings.
    serde_json::to_vec(doc).expect("documents always serialise")
}

/// Parses a document read from `key`, refusing newer schemas.
pub fn decode<T: Document>(key: &str, bytes: &[u8]) -> Result<T, DocumentError> {
    let invalid = |source| DocumentError::Invalid {
        key: key.to_owned(),
        kind: T::KIND,
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| DocumentError::MissingSchema {
            key: key.to_owned(),
            kind: T::KIND,
        })?;
    if found > u64::from(SCHEMA_VERSION) {
        return Err(DocumentError::NewerSchema {
            key: key.to_owned(),
            kind: T::KIND,
            found,
            supported: SCHEMA_VERSION,
        });
    }
    serde_json::from_value(value).map_err(invalid)
}

fn schema() -> u32 {
    SCHEMA_VERSION
}

/// `hosts/<host>/spec`: how to reach and address a host. Written at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostSpec {
    /// Always [`SCHEMA_VERSION`] when written by this build.
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

/// `hosts/<host>/desired`: the orchestrator's (or the previous host's) instruction.
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
    /// Daisy-chain: the host to hand the baton to when this one is done and healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_host: Option<HostId>,
    /// When it was written.
    pub issued_at: Timestamp,
}

impl Document for Desired {
    const KIND: &'static str = "desired";
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

/// A maintenance mode (see `docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum MaintenanceMode {
    /// Normal operation.
    #[default]
    None,
    /// Excluded from dispatch, for diagnostics.
    Paused,
    /// The orchestrator does not re-run the downloader to revive a dead agent.
    AutohealingOff,
    /// The agent restarts the host's managed services (or, with `reboot`, reboots the host),
    /// then the mode clears.
    Restart,
    /// Managed components are reinstalled from the current bundle, then the mode clears.
    Replace,
}

impl MaintenanceMode {
    /// The kebab-case name, as stored and accepted by the API.
    pub fn name(self) -> &'static str {
        match self {
            MaintenanceMode::None => "none",
            MaintenanceMode::Paused => "paused",
            MaintenanceMode::AutohealingOff => "autohealing-off",
            MaintenanceMode::Restart => "restart",
            MaintenanceMode::Replace => "replace",
        }
    }
}

/// `hosts/<host>/maintenance` and `groups/<group>/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Maintenance {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The mode.
    pub mode: MaintenanceMode,
    /// Why, as given by the operator.
    #[serde(default)]
    pub reason: String,
    /// When it was set.
    pub since: Timestamp,
    /// Mode `restart` only: reboot the host instead of restarting its managed services.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
}

impl Document for Maintenance {
    const KIND: &'static str = "maintenance";
}

/// How many hosts a rolling batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BatchSize {
    /// A number of hosts (at least 1).
    Count(u32),
    /// A percentage of the selected hosts (1..=100), rounded up.
    Percent(u32),
}

impl BatchSize {
    /// Hosts per batch for `total` selected hosts: at least 1, at most `total`.
    pub fn hosts(self, total: usize) -> usize {
        let n = match self {
            BatchSize::Count(n) => n as usize,
            BatchSize::Percent(p) => (total * p as usize).div_ceil(100),
        };
        n.clamp(1, total.max(1))
    }
}

/// How hosts are dispatched during the install phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Strategy {
    /// Batches of hosts, for backward-compatible bundles.
    Rolling {
        /// Hosts per batch.
        batch: BatchSize,
        /// Hosts updated first, alone.
        #[serde(default)]
        canary: u32,
        /// Wait for `resume` after the canaries.
        #[serde(default)]
        pause_after_canary: bool,
        /// A batch never spans two values of this label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone_label: Option<String>,
        /// Failed hosts tolerated before the upgrade halts.
        #[serde(default)]
        max_failures: u32,
    },
    /// Every host at once, for incompatible bundles; needs `allow_downtime`.
    AllAtOnce {
        /// The operator accepts that the whole fleet is down together.
        allow_downtime: bool,
    },
    /// Each host hands the baton to the next.
    DaisyChain,
}

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
    /// The phase.
    pub phase: UpgradePhase,
    /// The phase it was paused in, while `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<UpgradePhase>,
    /// Per-host outcome, for every selected host.
    #[serde(default)]
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
    /// Set when the orchestrator created the record itself, for one host (absent: an
    /// operator's request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The bundle carries an orchestrator image (manifest `orchestrator_image`): before the
    /// download phase the leader starts it and hands leadership over to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<OrchestratorUpdate>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When this record last changed.
    pub updated_at: Timestamp,
}

impl Document for Upgrade {
    const KIND: &'static str = "upgrade";
}

impl Upgrade {
    /// Daisy-chain: the host that takes the baton after batch `after` — the one of the
    /// lowest later batch (by id within it) still waiting to be dispatched (`Downloaded`);
    /// held, skipped, failed and dispatched hosts are passed over. The orchestrator names it
    /// in a host's `desired`, and a host handing over names the one after its successor.
    pub fn next_in_chain(&self, after: u32) -> Option<HostId> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.state == HostOutcomeState::Downloaded)
            .map(|(id, h)| (h.batch.unwrap_or(0), id))
            .filter(|(batch, _)| *batch > after)
            .min()
            .map(|(_, id)| id.clone())
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

/// `events/<id>/<seq>`: one entry of an upgrade's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// When it happened.
    pub at: Timestamp,
    /// Who wrote it: `orchestrator` or `agent/<host>`.
    pub source: String,
    /// The host concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostId>,
    /// What kind of event, e.g. `host-dispatched`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "host-dispatched"))]
    pub kind: EventKind,
    /// What happened, for people.
    pub message: String,
}

impl Document for Event {
    const KIND: &'static str = "event";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_passes_over_hosts_not_waiting_for_dispatch() {
        use HostOutcomeState::*;
        let text = br#"{"schema_version":1,"id":"u1","bundle":"r@sha256:00","version":"2.0.0","strategy":{"kind":"daisy-chain"},"phase":"Installing","hosts":{
            "h1":{"state":"Dispatched","batch":0},"h2":{"state":"Skipped","batch":1},
            "h3":{"state":"Held","batch":2,"held_from":"Downloaded"},"h4":{"state":"Downloaded","batch":3},
            "h5":{"state":"Downloaded","batch":4}},"created_at":"t","updated_at":"t"}"#;
        let u: Upgrade = serde_json::from_slice(text).expect("record");
        let id = |h: &str| HostId::new(h).expect("id");
        assert_eq!(u.next_in_chain(0), Some(id("h4")));
        assert_eq!(u.next_in_chain(3), Some(id("h5")));
        assert_eq!(u.next_in_chain(4), None);
        assert_eq!(u.hosts[&id("h3")].stage(), Downloaded);
        assert_eq!(u.hosts[&id("h4")].stage(), Downloaded);
        assert_eq!(u.hosts[&id("h1")].stage(), Dispatched);
    }

    fn status() -> HostStatus {
        HostStatus {
            schema_version: SCHEMA_VERSION,
            upgrade_id: Some(UpgradeId::new("u1").expect("id")),
            state: HostState::Updating,
            step: Some("apply file baton-hello".into()),
            message: String::new(),
            started_at: Some(now()),
            updated_at: now(),
        }
    }

    #[test]
    fn round_trips() {
        let doc = status();
        let bytes = encode(&doc);
        let back: HostStatus = decode("/baton/hosts/h1/status", &bytes).expect("decode");
        assert_eq!(back, doc);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains("\"schema_version\":1"), "{text}");
        assert!(text.contains("\"state\":\"Updating\""), "{text}");
    }

    #[test]
    fn refuses_newer_schema_naming_the_key() {
        let mut value = serde_json::to_value(status()).expect("value");
        value["schema_version"] = 2.into();
        let bytes = serde_json::to_vec(&value).expect("bytes");
        let err = decode::<HostStatus>("/baton/hosts/h1/status", &bytes).expect_err("newer");
        let text = err.to_string();
        assert!(matches!(err, DocumentError::NewerSchema { found: 2, .. }));
        assert!(text.contains("/baton/hosts/h1/status"), "{text}");
    }

    #[test]
    fn refuses_missing_schema_and_bad_shapes_naming_the_key() {
        let err = decode::<Active>("/baton/active", br#"{"upgrade_id":"u1"}"#).expect_err("x");
        assert!(matches!(err, DocumentError::MissingSchema { .. }), "{err}");
        let err = decode::<Active>(
            "/baton/active",
            br#"{"schema_version":1,"upgrade_id":"a/b"}"#,
        )
        .expect_err("bad id");
        assert!(err.to_string().contains("/baton/active"), "{err}");
        assert!(err.to_string().contains("host id") || err.to_string().contains("upgrade id"));
        let err = decode::<Active>("/baton/active", b"not json").expect_err("not json");
        assert!(matches!(err, DocumentError::Invalid { .. }));
    }

    #[test]
    fn strategies_have_a_readable_shape() {
        let s: Strategy = serde_json::from_str(
            r#"{"kind":"rolling","batch":{"percent":50},"zone_label":"zone","max_failures":1}"#,
        )
        .expect("rolling");
        assert_eq!(
            s,
            Strategy::Rolling {
                batch: BatchSize::Percent(50),
                canary: 0,
                pause_after_canary: false,
                zone_label: Some("zone".into()),
                max_failures: 1
            }
        );
        let s: Strategy =
            serde_json::from_str(r#"{"kind":"all-at-once","allow_downtime":true}"#).expect("aao");
        assert_eq!(
            s,
            Strategy::AllAtOnce {
                allow_downtime: true
            }
        );
    }

    #[test]
    fn records_written_before_the_engine_fields_still_read() {
        let upgrade: Upgrade = decode(
            "/baton/upgrades/u1",
            br#"{"schema_version":1,"id":"u1","bundle":"r@sha256:00","version":"2.0.0","strategy":{"kind":"daisy-chain"},"phase":"Installing","hosts":{"h1":{"state":"Dispatched"}},"created_at":"t","updated_at":"t"}"#,
        )
        .expect("old upgrade record");
        assert_eq!(upgrade.events, 0);
        assert!(!upgrade.canary_approved);
        assert_eq!(upgrade.agent_version, None);
        let h1 = HostId::new("h1").expect("id");
        assert_eq!(upgrade.hosts[&h1].batch, None);
        let text = String::from_utf8(encode(&upgrade)).expect("utf8");
        assert!(!text.contains("canary_approved"), "{text}");
        assert!(!text.contains("batch"), "{text}");
        let spec: HostSpec = decode(
            "/baton/hosts/h1/spec",
            br#"{"schema_version":1,"host":"h1","docker":"unix:///var/run/docker.sock","registered_at":"t"}"#,
        )
        .expect("old spec");
        assert_eq!(spec.boot_id_file, None);
        assert!(
            !String::from_utf8(encode(&spec))
                .expect("utf8")
                .contains("container_prefix")
        );
        let candidate: Candidate = decode(
            "/baton/leader/694d",
            br#"{"schema_version":1,"replica":"orch-a","since":"t"}"#,
        )
        .expect("candidate");
        assert_eq!(candidate.api, None);
    }

    #[test]
    fn maintenance_mode_names_are_the_stored_form() {
        for mode in [
            MaintenanceMode::None,
            MaintenanceMode::Paused,
            MaintenanceMode::AutohealingOff,
            MaintenanceMode::Restart,
            MaintenanceMode::Replace,
        ] {
            assert_eq!(
                serde_json::to_value(mode).expect("mode"),
                serde_json::Value::from(mode.name())
            );
        }
    }

    #[test]
    fn reboot_is_written_only_when_asked() {
        let m: Maintenance = decode(
            "/baton/hosts/h1/maintenance",
            br#"{"schema_version":1,"mode":"restart","since":"t"}"#,
        )
        .expect("maintenance without reboot");
        assert!(!m.reboot);
        assert!(
            !String::from_utf8(encode(&m))
                .expect("utf8")
                .contains("reboot")
        );
        let m = Maintenance { reboot: true, ..m };
        let text = String::from_utf8(encode(&m)).expect("utf8");
        assert!(text.contains(r#""reboot":true"#), "{text}");
        let back: Maintenance =
            decode("/baton/hosts/h1/maintenance", text.as_bytes()).expect("back");
        assert!(back.reboot);
    }

    #[test]
    fn batch_sizes_round_up_and_clamp() {
        assert_eq!(BatchSize::Count(2).hosts(4), 2);
        assert_eq!(BatchSize::Count(9).hosts(4), 4);
        assert_eq!(BatchSize::Count(0).hosts(4), 1);
        assert_eq!(BatchSize::Percent(25).hosts(4), 1);
        assert_eq!(BatchSize::Percent(30).hosts(4), 2);
        assert_eq!(BatchSize::Percent(100).hosts(3), 3);
    }
}
