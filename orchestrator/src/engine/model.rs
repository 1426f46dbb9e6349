//! The types the decision code works on: what the engine observes besides the upgrade
//! record ([`Observed`]), its tunables ([`Limits`]), how a downloader job ended
//! ([`DownloadOutcome`]) and where a self-update stands ([`SuccessorState`]). Plain data: the
//! pure decision function ([`super::decide`]) and the parts that run jobs and containers
//! ([`super::dispatch`], [`super::successor`]) all import it, and it imports none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use baton_protocol::HostId;

use crate::view::FleetView;

/// Default downloader jobs running at once, over every record (upgrades, joins, heals,
/// replaces): a job mostly waits on the registry and the host's disk, so a fleet's worth of
/// them in flight costs the orchestrator little.
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 64;
/// Default time agents get to report the bundle's agent version once downloads are done.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Default time a dispatched host's `alive` may be away (a reboot) before it counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(180);
/// Default time a dispatched host whose agent is alive may go without a change of its
/// `status` before it counts as failed (generous: installing a kernel package, with its
/// initramfs, reports nothing for minutes).
pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Hosts dispatched per transaction (each adds a `desired` and an event to it; etcd allows
/// 128 operations per transaction). The next pass continues.
pub const MAX_DISPATCH_PER_PASS: usize = 32;
/// Default time a registered host's agent may be gone (while its Docker Engine answers)
/// before the downloader job of its current bundle is run again to revive it.
pub const DEFAULT_HEAL_GRACE: Duration = Duration::from_secs(30);

/// The engine's tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Downloader jobs running at once.
    pub download_concurrency: usize,
    /// See [`DEFAULT_AGENT_TIMEOUT`].
    pub agent_timeout: Duration,
    /// See [`DEFAULT_HEALTH_TIMEOUT`].
    pub health_timeout: Duration,
    /// See [`DEFAULT_INSTALL_TIMEOUT`].
    pub install_timeout: Duration,
    /// See [`MAX_DISPATCH_PER_PASS`].
    pub max_dispatch: usize,
    /// See [`DEFAULT_HEAL_GRACE`].
    pub heal_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            install_timeout: DEFAULT_INSTALL_TIMEOUT,
            max_dispatch: MAX_DISPATCH_PER_PASS,
            heal_grace: DEFAULT_HEAL_GRACE,
        }
    }
}

/// How a downloader job ended (after its retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// The bundle is staged and the bundle's agent runs; a summary of what changed.
    Staged(String),
    /// It failed; why (the job's last error line, or what went wrong around it).
    Failed(String),
}

/// What the engine sees besides the record: etcd (the view) and its own jobs and clocks.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Hosts' documents and groups' maintenance.
    pub view: &'a FleetView,
    /// Hosts without an `alive` key, and for how long this replica has seen them so.
    pub alive_missing_for: &'a BTreeMap<HostId, Duration>,
    /// Hosts of upgrades in progress, and for how long this replica has seen their
    /// `desired` and `status` unchanged.
    pub unchanged_for: &'a BTreeMap<HostId, Duration>,
    /// Hosts whose downloader job (for this upgrade) is running.
    pub downloads_running: &'a BTreeSet<HostId>,
    /// Downloader jobs running for other records (they share `download_concurrency`).
    pub downloads_elsewhere: usize,
    /// Hosts whose downloader job ended and whose outcome is not recorded yet.
    pub downloads_finished: &'a BTreeMap<HostId, DownloadOutcome>,
    /// Hosts held by another task in progress (see [`claimed_by_tasks`]) or by another
    /// record's running downloader job: not started here.
    pub claimed: &'a BTreeSet<HostId>,
    /// The deciding orchestrator's own version (a self-update is due when the upgrade
    /// carries an orchestrator image and its version differs).
    pub orchestrator_version: &'a str,
    /// This upgrade's self-update, once started by this leadership.
    pub successor: Option<&'a SuccessorState>,
    /// The fleet gates of this upgrade's soak under way, as checked so far.
    pub gates: Option<&'a GateState>,
    /// The time now.
    pub now: SystemTime,
}

/// Time a host of a soaking batch has, past the soak's end, to report the result of its
/// re-run health checks before it counts as failed.
pub const HEALTH_REPORT_GRACE: Duration = Duration::from_secs(60);

/// The fleet gates of one soak (a batch, from a start), as the engine's rounds found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateState {
    /// The soaking batch.
    pub batch: u32,
    /// When its soak started (the record's `soak.since`): rounds of another soak do not count.
    pub since: String,
    /// The first failure seen in this soak (kept: a later passing round does not undo it).
    pub failure: Option<String>,
    /// When the latest round in which every gate passed started.
    pub passed: Option<SystemTime>,
}

/// Where a self-update stands, as the engine tells the decision function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuccessorState {
    /// Started (or being started); not in the election yet.
    Starting,
    /// Campaigning in the election as `replica`, from `container`.
    Ready {
        /// The container.
        container: String,
    },
    /// It did not become ready; why. Its container is stopped.
    Failed(String),
}
