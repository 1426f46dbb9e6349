//! The REST API's request bodies, shared by the server (which refuses unknown fields) and
//! by `batonctl` (which builds them). Numbers an operator could get wrong are signed here so
//! that `-1` is refused by validation naming the field, not by a generic parse error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::documents::{ApiRole, Gate, MaintenanceMode, OnFailure, Window};

/// `POST /v1/hosts`: register (or re-register) a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterHost {
    /// The host id (a key segment: `[A-Za-z0-9._-]`, 1..=63).
    pub id: String,
    /// Labels: `group`, `zone`, anything else.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The host's Docker Engine: `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub docker: String,
    /// Host path → path the host's Docker Engine sees for it (bind mounts of the downloader
    /// job). Empty: the identity map of the paths the job needs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub path_map: BTreeMap<String, String>,
    /// The agent's boot id file, if not the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id_file: Option<String>,
    /// The agent's kernel release file, if not the kernel's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release_file: Option<String>,
    /// Prefix of the agent's service container names, if the engine is shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_prefix: Option<String>,
    /// The host runs a member of the etcd cluster Baton uses: with etcd authentication on,
    /// its agent gets a maintenance identity for the steps around the member's restart
    /// (docs/security.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quorum_member: bool,
}

/// Most registrations in one `POST /v1/hosts` (an array; more: 413).
pub const MAX_BULK_REGISTRATIONS: usize = 1000;

/// `POST /v1/hosts`'s body: one registration, or an array of at most
/// [`MAX_BULK_REGISTRATIONS`], all checked before any is written (one refused: none is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum RegisterHosts {
    /// One host (answered with its spec).
    One(RegisterHost),
    /// Many hosts, at most 1,000 (answered with each one's outcome, in the request's order).
    Many(Vec<RegisterHost>),
}

/// A strategy's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Batches of hosts (backward-compatible bundles).
    Rolling,
    /// Every host at once (needs `allow_downtime: true`).
    AllAtOnce,
    /// One host after the other, each handing the baton to the next.
    DaisyChain,
    /// Chosen from the bundle's manifest: rolling (with the request's rolling settings,
    /// batches of one by default) for a backward-compatible bundle, all-at-once for one
    /// that is not (only with `allow_downtime: true`).
    Auto,
}

/// `strategy.batch`: exactly one of `count` and `percent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Hosts per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// Percent of the selected hosts per batch, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
}

/// `strategy`: flat, so every refusal names its field (`strategy.batch.count`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StrategyRequest {
    /// `rolling`, `all-at-once`, `daisy-chain` or `auto`.
    pub kind: StrategyKind,
    /// Rolling: hosts per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRequest>,
    /// Rolling: hosts updated first, as a batch of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<i64>,
    /// Rolling: wait for `resume` after the canaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_canary: Option<bool>,
    /// Rolling: the label whose value a batch never spans two of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_label: Option<String>,
    /// Rolling: failed hosts tolerated before the upgrade halts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<i64>,
    /// All-at-once: must be `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downtime: Option<bool>,
}

/// `POST /v1/upgrades`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartUpgrade {
    /// The bundle image: a tag (resolved to a digest once) or `repo@sha256:…`.
    pub image: String,
    /// How hosts are dispatched.
    pub strategy: StrategyRequest,
    /// Only hosts carrying all these labels (empty: every registered host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Only these hosts (each must be registered and match the selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// The upgrade id (default: `u-<version>-<UTC date>-<time>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Skip (and report `Skipped`) hosts whose maintenance mode is `paused` instead of
    /// waiting until the mode is lifted (default: wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_paused: Option<bool>,
    /// Allow moving hosts to a lower version than they run (default: such an upgrade is
    /// refused naming the host and both versions, and the agent refuses it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downgrade: Option<bool>,
    /// What happens once more hosts fail than the strategy tolerates, or a canary fails:
    /// `halt` (the default: stop, hosts already upgraded stay so) or `revert` (stop, and
    /// return every host it changed to the exact bundle it ran before, batch by batch in
    /// reverse order; with a `soak`, each reverted batch soaks with the same health checks
    /// and `gates` before the batch before it is reverted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// After each batch is done, wait this long (`30s`, `5m`; rolling and all-at-once)
    /// while its hosts keep passing their health checks and `gates` pass; the batch's hosts
    /// succeed only then. A revert (`on_failure: revert`) soaks each reverted batch the
    /// same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Fleet gates checked during every soak, an install's or a revert's (needs `soak`);
    /// one failing fails the soaking batch's hosts (or their reverts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Vec<Gate>>,
}

/// An operator's command on an upgrade: `POST /v1/upgrades/{id}/pause|resume|abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop dispatching; in-flight hosts finish.
    Pause,
    /// Continue from where it was paused (after canaries: approve them).
    Resume,
    /// End it now; hosts already told to install finish on their own.
    Abort,
}

impl Command {
    /// Its name in routes and messages.
    pub fn name(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Abort => "abort",
        }
    }
}

/// `POST /v1/upgrades/{id}/pause|resume|abort`: an optional reason, kept in the upgrade
/// record and its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Why, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /v1/hosts/{host}/maintenance` and `PUT /v1/groups/{group}/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetMaintenance {
    /// `none`, `paused`, `autohealing-off`, `restart` or `replace`.
    pub mode: MaintenanceMode,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Mode `restart` only: reboot the host instead of restarting its managed services.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
}

/// `PUT /v1/window` and `PUT /v1/groups/{group}/window`: the maintenance windows new hosts
/// are dispatched in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetWindows {
    /// At least one window; dispatching is allowed while any of them is open.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub windows: Vec<Window>,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/tokens`: create an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The token's name (a key segment: `[A-Za-z0-9._-]`, 1..=63, starting with a letter or
    /// digit); `DELETE /v1/tokens/{name}` revokes it.
    pub name: String,
    /// What it may do.
    pub role: ApiRole,
}
