//! The upgrade engine's decisions as a pure function of what etcd shows:
//! [`next_actions`]`(upgrade, observed, limits) -> Vec<Action>`, and [`apply`], which folds an
//! action into the upgrade record. The executor commits a pass's record changes, `desired`
//! writes and events in one guarded transaction and starts the downloads it asks for; the
//! next pass decides again from what etcd then shows (level-triggered).
//!
//! Per phase:
//! - `Pending` → `Downloading` at once, unless the bundle carries an orchestrator image of
//!   another version than the deciding leader's: then the new version is started first
//!   ([`super::successor`]) and, once it campaigns, the hand-over is recorded (the leader
//!   then exits and the new version decides from here); if it fails, the upgrade fails.
//! - `Downloading`: a downloader job per selected host, at most `download_concurrency` at a
//!   time; each job's outcome is recorded (`Downloaded` or `Failed`); when no host is left
//!   `Pending` → `UpdatingAgents`.
//! - `UpdatingAgents`: waits until every downloaded host's `alive` reports the bundle's agent
//!   version (a host that does not within `agent_timeout` fails) → `Installing`.
//! - `Installing`: batch by batch (the plan stored in the record), `desired` is written for
//!   the hosts of the lowest unfinished batch; a dispatched host succeeds once its status is
//!   `Done` for this upgrade and its agent is alive on the bundle's version, fails on
//!   `Failed`/`RolledBack` or when its `alive` stays away longer than `health_timeout` (it
//!   holds its batch meanwhile). With canaries and `pause_after_canary`, the upgrade pauses
//!   after batch 0 until resumed. No batch left → `Succeeded`.
//! - In every phase, more failed hosts than the strategy tolerates → `Failed`, naming them;
//!   a host not yet dispatched whose maintenance mode is `paused` gets no downloader job and
//!   no `desired`: the upgrade waits for it (its outcome's `reason` says so, an event when
//!   it starts and stops waiting) or, if the request said `skip_paused`, it is `Skipped`.
//! - `Paused`: in-flight work is still judged (and can fail the upgrade); nothing new starts.
//! - A host another in-progress task holds (heal, restart, replace: [`super::tasks`]) gets no
//!   downloader job and no `desired` until that task ends: the task goes first.
//!
//! Records the orchestrator created itself (`task`) follow the same phases for their one
//! host: a join as any upgrade; a heal ends once the agent is back on the bundle's agent
//! version (nothing is dispatched); a restart starts with its host `Downloaded` (no job) and
//! dispatches `restart` (or `reboot`), and its host's success is recorded as "resumed"; a
//! replace dispatches `replace`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use baton_protocol::documents::{
    HostOutcomeState as O, HostStatus, MaintenanceMode, Strategy, TaskKind, Timestamp, Upgrade,
};
use baton_protocol::{HostId, HostState, UpgradeId, UpgradePhase as P};

use crate::engine::successor::SuccessorState;
use crate::view::FleetView;

/// Default downloader jobs running at once.
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 4;
/// Default time agents get to report the bundle's agent version once downloads are done.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Default time a dispatched host's `alive` may be away (a reboot) before it counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(180);
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
    /// Hosts whose downloader job (for this upgrade) is running.
    pub downloads_running: &'a BTreeSet<HostId>,
    /// Hosts whose downloader job ended and whose outcome is not recorded yet.
    pub downloads_finished: &'a BTreeMap<HostId, DownloadOutcome>,
    /// Hosts held by another task in progress (see [`claimed_by_tasks`]): not started here.
    pub claimed: &'a BTreeSet<HostId>,
    /// The deciding orchestrator's own version (a self-update is due when the upgrade
    /// carries an orchestrator image and its version differs).
    pub orchestrator_version: &'a str,
    /// This upgrade's self-update, once started by this leadership.
    pub successor: Option<&'a SuccessorState>,
    /// The time now.
    pub now: SystemTime,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Move the upgrade to another phase.
    Phase {
        /// The new phase.
        to: P,
        /// Why (kept in the record's `reason`).
        reason: Option<String>,
    },
    /// Start the bundle's orchestrator image (self-update); not recorded: the hand-over or
    /// the failure is.
    StartSuccessor,
    /// The new orchestrator version campaigns: record the hand-over; the leader then resigns
    /// and exits.
    HandOver {
        /// Its container.
        container: String,
    },
    /// Start the downloader job on a host.
    Download {
        /// The host.
        host: HostId,
    },
    /// Record a host's outcome.
    Record {
        /// The host.
        host: HostId,
        /// Its new state.
        state: O,
        /// Why (failures, skips) or what happened (downloads).
        reason: String,
    },
    /// Hold a host whose maintenance mode is `paused` (the upgrade waits for it), or release
    /// it once the mode is lifted; kept in its outcome's `reason` ([`HELD`]).
    Hold {
        /// The host.
        host: HostId,
        /// Held (or released).
        held: bool,
    },
    /// Tell a host to install: write its `desired` key (unless it already names this upgrade,
    /// e.g. handed over by the previous host of a daisy chain) and record it `Dispatched`.
    Dispatch {
        /// The host.
        host: HostId,
        /// Daisy-chain: the host it hands the baton to.
        next_host: Option<HostId>,
        /// Whether `desired` must be written.
        write_desired: bool,
    },
}

/// The `reason` of a host outcome the upgrade waits for because its maintenance mode is
/// `paused`.
pub const HELD: &str = "waiting: maintenance mode paused";

/// Failed hosts a strategy tolerates before the upgrade halts.
pub fn allowed_failures(strategy: &Strategy) -> usize {
    match strategy {
        Strategy::Rolling { max_failures, .. } => *max_failures as usize,
        // Incompatible bundles and chains: any failure leaves the fleet split; halt.
        Strategy::AllAtOnce { .. } | Strategy::DaisyChain => 0,
    }
}

/// Folds `action` into the record (at time `now`).
pub fn apply(upgrade: &mut Upgrade, action: &Action, now: &Timestamp) {
    match action {
        Action::Phase { to, reason } => {
            upgrade.paused_from = (*to == P::Paused).then_some(upgrade.phase);
            upgrade.phase = *to;
            upgrade.phase_since = Some(now.clone());
            if reason.is_some() {
                upgrade.reason = reason.clone();
            }
        }
        Action::Download { .. } | Action::StartSuccessor => return,
        Action::HandOver { container } => {
            if let Some(o) = upgrade.orchestrator.as_mut() {
                o.container = Some(container.clone());
                o.handed_over_at = Some(now.clone());
            }
        }
        Action::Record {
            host,
            state,
            reason,
        } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                h.state = *state;
                h.reason = if matches!(state, O::Failed | O::Skipped) {
                    reason.clone()
                } else {
                    String::new()
                };
            }
        }
        Action::Hold { host, held } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                h.reason = if *held {
                    HELD.to_owned()
                } else {
                    String::new()
                };
            }
        }
        Action::Dispatch { host, .. } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                h.state = O::Dispatched;
                h.dispatched_at = Some(now.clone());
            }
        }
    }
    upgrade.updated_at = now.clone();
}

/// The canary batch (0) is over: none of its hosts is still open.
pub fn canaries_done(upgrade: &Upgrade) -> bool {
    upgrade
        .hosts
        .values()
        .filter(|h| h.batch == Some(0))
        .all(|h| !is_open(h.state))
}

/// The host is still to be worked on (or being worked on) in a record.
pub fn is_open(state: O) -> bool {
    matches!(state, O::Pending | O::Downloaded | O::Dispatched)
}

fn age(since: Option<&Timestamp>, now: SystemTime) -> Duration {
    since
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

/// Decides what to do next for `upgrade`.
pub fn next_actions(upgrade: &Upgrade, observed: &Observed<'_>, limits: &Limits) -> Vec<Action> {
    let now: Timestamp = humantime::format_rfc3339_millis(observed.now).to_string();
    let mut d = Decision {
        u: upgrade.clone(),
        actions: Vec::new(),
        now,
    };
    if d.u.phase.is_terminal() {
        return d.actions;
    }
    if d.u.phase == P::Pending {
        if d.self_update_due(observed) {
            d.self_update(observed);
            return d.actions;
        }
        d.push(Action::Phase {
            to: P::Downloading,
            reason: None,
        });
    }
    d.record_downloads(observed);
    d.paused_hosts(observed);
    d.judge_dispatched(observed, limits);
    if d.u.phase == P::UpdatingAgents {
        d.agent_timeouts(observed, limits);
    }
    if d.halt_on_failures() || d.u.phase == P::Paused {
        return d.actions;
    }
    // A phase may finish at once (agents already updated, …): carry on in the same pass.
    for _ in 0..4 {
        let before = d.u.phase;
        match before {
            P::Downloading => d.downloading(observed, limits),
            P::UpdatingAgents => d.updating_agents(observed),
            P::Installing => d.installing(observed, limits),
            _ => {}
        }
        if d.u.phase == before {
            break;
        }
    }
    d.actions
}

struct Decision {
    u: Upgrade,
    actions: Vec<Action>,
    now: Timestamp,
}

impl Decision {
    fn push(&mut self, action: Action) {
        apply(&mut self.u, &action, &self.now);
        self.actions.push(action);
    }

    /// Held by [`Self::paused_hosts`]: nothing is started on it.
    fn is_held(&self, host: &HostId) -> bool {
        self.u.hosts.get(host).is_some_and(|h| h.reason == HELD)
    }

    fn hosts_in(&self, state: O) -> Vec<HostId> {
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.state == state)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn record(&mut self, host: HostId, state: O, reason: String) {
        self.push(Action::Record {
            host,
            state,
            reason,
        });
    }

    /// The bundle carries an orchestrator image of another version than the deciding one's.
    fn self_update_due(&self, o: &Observed<'_>) -> bool {
        self.u.orchestrator.is_some() && o.orchestrator_version != self.u.version
    }

    /// Before anything else: the new orchestrator version is started, then handed the
    /// leadership; if it fails, so does the upgrade, with no host touched.
    fn self_update(&mut self, o: &Observed<'_>) {
        match o.successor {
            None => self.push(Action::StartSuccessor),
            Some(SuccessorState::Starting) => {}
            Some(SuccessorState::Ready { container }) => self.push(Action::HandOver {
                container: container.clone(),
            }),
            Some(SuccessorState::Failed(reason)) => {
                let image = self
                    .u
                    .orchestrator
                    .as_ref()
                    .map_or("", |o| o.image.as_str());
                self.push(Action::Phase {
                    to: P::Failed,
                    reason: Some(format!(
                        "orchestrator self-update to {} ({image}) failed: {reason}; orchestrator {} still leads and no host was touched",
                        self.u.version, o.orchestrator_version
                    )),
                });
            }
        }
    }

    fn record_downloads(&mut self, o: &Observed<'_>) {
        for host in self.hosts_in(O::Pending) {
            match o.downloads_finished.get(&host) {
                Some(DownloadOutcome::Staged(summary)) => {
                    self.record(host, O::Downloaded, summary.clone());
                }
                Some(DownloadOutcome::Failed(reason)) => {
                    self.record(host, O::Failed, format!("downloader job: {reason}"));
                }
                None => {}
            }
        }
    }

    /// Hosts not dispatched yet whose maintenance mode is `paused`: skipped if the request
    /// said so, else held (noted once, released once the mode is lifted).
    fn paused_hosts(&mut self, o: &Observed<'_>) {
        let not_dispatched = self
            .hosts_in(O::Pending)
            .into_iter()
            .chain(self.hosts_in(O::Downloaded))
            .filter(|h| !o.downloads_running.contains(h));
        for host in not_dispatched.collect::<Vec<_>>() {
            let paused = o.view.maintenance(&host) == MaintenanceMode::Paused;
            let held = self.u.hosts.get(&host).is_some_and(|h| h.reason == HELD);
            if paused && self.u.skip_paused {
                self.record(host, O::Skipped, "maintenance mode paused".to_owned());
            } else if paused != held {
                self.push(Action::Hold { host, held: paused });
            }
        }
    }

    fn judge_dispatched(&mut self, o: &Observed<'_>, limits: &Limits) {
        for host in self.hosts_in(O::Dispatched) {
            if let Some((state, reason)) = judge(&self.u, &host, o, limits) {
                self.record(host, state, reason);
            }
        }
    }

    fn agent_timeouts(&mut self, o: &Observed<'_>, limits: &Limits) {
        if age(self.u.phase_since.as_ref(), o.now) < limits.agent_timeout {
            return;
        }
        for host in self.hosts_in(O::Downloaded) {
            if agent_on_version(&self.u, &host, o) {
                continue;
            }
            let reports = match o.view.hosts.get(&host).and_then(|d| d.alive.as_ref()) {
                Some(a) => format!("it reports {}", a.value.agent_version),
                None => "it has no alive key".to_owned(),
            };
            let reason = format!(
                "agent did not report version {} within {}s ({reports})",
                self.u.agent_version.as_deref().unwrap_or("?"),
                limits.agent_timeout.as_secs()
            );
            self.record(host, O::Failed, reason);
        }
    }

    fn failures(&self) -> Vec<String> {
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.state == O::Failed)
            .map(|(id, h)| format!("{id}: {}", h.reason))
            .collect()
    }

    fn halt_on_failures(&mut self) -> bool {
        let failed = self.failures();
        let allowed = allowed_failures(&self.u.strategy);
        if failed.len() <= allowed {
            return false;
        }
        let reason = format!(
            "{} host(s) failed, more than the {allowed} tolerated: {}",
            failed.len(),
            failed.join("; ")
        );
        self.push(Action::Phase {
            to: P::Failed,
            reason: Some(reason),
        });
        true
    }

    fn downloading(&mut self, o: &Observed<'_>, limits: &Limits) {
        let pending = self.hosts_in(O::Pending);
        if pending.is_empty() {
            self.push(Action::Phase {
                to: P::UpdatingAgents,
                reason: None,
            });
            return;
        }
        let running = pending
            .iter()
            .filter(|h| o.downloads_running.contains(*h))
            .count();
        let free = limits.download_concurrency.saturating_sub(running);
        let start: Vec<HostId> = pending
            .into_iter()
            .filter(|h| !o.downloads_running.contains(h) && !o.downloads_finished.contains_key(h))
            .filter(|h| !o.claimed.contains(h) && !self.is_held(h))
            .take(free)
            .collect();
        for host in start {
            self.push(Action::Download { host });
        }
    }

    fn updating_agents(&mut self, o: &Observed<'_>) {
        let waiting = self
            .hosts_in(O::Downloaded)
            .into_iter()
            .any(|h| !agent_on_version(&self.u, &h, o));
        if !waiting {
            self.push(Action::Phase {
                to: P::Installing,
                reason: None,
            });
        }
    }

    fn installing(&mut self, o: &Observed<'_>, limits: &Limits) {
        let current = self
            .u
            .hosts
            .values()
            .filter(|h| is_open(h.state))
            .map(|h| h.batch.unwrap_or(0))
            .min();
        let Some(current) = current else {
            self.finish();
            return;
        };
        if self.canary_pause_due(current) {
            let canaries: Vec<String> = self
                .u
                .hosts
                .iter()
                .filter(|(_, h)| h.batch == Some(0))
                .map(|(id, h)| format!("{id} {:?}", h.state))
                .collect();
            self.push(Action::Phase {
                to: P::Paused,
                reason: Some(format!(
                    "canaries done ({}); resume to continue",
                    canaries.join(", ")
                )),
            });
            return;
        }
        let batch_of = |u: &Upgrade, b: u32| -> Vec<HostId> {
            u.hosts
                .iter()
                .filter(|(_, h)| h.batch.unwrap_or(0) == b && h.state == O::Downloaded)
                .map(|(id, _)| id.clone())
                .collect()
        };
        let ready: Vec<HostId> = batch_of(&self.u, current)
            .into_iter()
            .filter(|h| !o.claimed.contains(h) && !self.is_held(h))
            .collect();
        if self
            .u
            .task
            .as_ref()
            .is_some_and(|t| t.kind == TaskKind::Heal)
        {
            // The agent is back on the bundle's version: that was all a heal was for.
            let progressed = !ready.is_empty();
            for host in ready {
                let reason = format!("agent back on {}", self.u.version);
                self.record(host, O::Succeeded, reason);
            }
            if progressed {
                // Nothing left to wait for: finish in this pass.
                self.installing(o, limits);
            }
            return;
        }
        let daisy = matches!(self.u.strategy, Strategy::DaisyChain);
        for host in ready.into_iter().take(limits.max_dispatch) {
            let next_host = if daisy {
                let later = self
                    .u
                    .hosts
                    .iter()
                    .filter(|(_, h)| h.state == O::Downloaded && h.batch.unwrap_or(0) > current)
                    .filter(|(_, h)| h.reason != HELD)
                    .min_by_key(|(_, h)| h.batch);
                later.map(|(id, _)| id.clone())
            } else {
                None
            };
            let handed_over = o
                .view
                .hosts
                .get(&host)
                .and_then(|d| d.desired.as_ref())
                .is_some_and(|d| d.value.upgrade_id == self.u.id);
            self.push(Action::Dispatch {
                host,
                next_host,
                write_desired: !handed_over,
            });
        }
    }

    fn canary_pause_due(&self, current: u32) -> bool {
        let Strategy::Rolling {
            canary,
            pause_after_canary,
            ..
        } = &self.u.strategy
        else {
            return false;
        };
        *canary > 0
            && *pause_after_canary
            && !self.u.canary_approved
            && current > 0
            && canaries_done(&self.u)
            && self
                .u
                .hosts
                .values()
                .filter(|h| h.batch.unwrap_or(0) > 0)
                .all(|h| h.dispatched_at.is_none())
    }

    fn finish(&mut self) {
        let failed = self.failures();
        let succeeded = self.hosts_in(O::Succeeded).len();
        let skipped = self.hosts_in(O::Skipped).len();
        if succeeded == 0 {
            self.push(Action::Phase {
                to: P::Failed,
                reason: Some(format!(
                    "no host was upgraded ({} failed, {skipped} skipped){}",
                    failed.len(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", failed.join("; "))
                    }
                )),
            });
            return;
        }
        let reason = (!failed.is_empty()).then(|| {
            format!(
                "tolerated {} failed host(s): {}",
                failed.len(),
                failed.join("; ")
            )
        });
        self.push(Action::Phase {
            to: P::Succeeded,
            reason,
        });
    }
}

/// Hosts open in an in-progress task record other than `except`: heals, restarts and
/// replaces hold their host until they end (upgrades and joins wait for them).
pub fn claimed_by_tasks(view: &FleetView, except: &UpgradeId) -> BTreeSet<HostId> {
    view.upgrades
        .values()
        .map(|v| &v.value)
        .filter(|u| &u.id != except && !u.phase.is_terminal())
        .filter(|u| u.task.as_ref().is_some_and(|t| t.kind != TaskKind::Join))
        .flat_map(|u| {
            u.hosts
                .iter()
                .filter(|(_, h)| is_open(h.state))
                .map(|(id, _)| id.clone())
        })
        .collect()
}

/// Whether the host's agent is alive and reports the bundle's agent version.
fn agent_on_version(u: &Upgrade, host: &HostId, o: &Observed<'_>) -> bool {
    let alive = o.view.hosts.get(host).and_then(|d| d.alive.as_ref());
    match (alive, &u.agent_version) {
        (Some(a), Some(v)) => &a.value.agent_version == v,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A dispatched host's outcome, once there is one.
fn judge(u: &Upgrade, host: &HostId, o: &Observed<'_>, limits: &Limits) -> Option<(O, String)> {
    let docs = o.view.hosts.get(host);
    let status = docs
        .and_then(|d| d.status.as_ref())
        .map(|s| &s.value)
        .filter(|s| s.upgrade_id.as_ref() == Some(&u.id));
    let alive = docs.and_then(|d| d.alive.as_ref()).map(|a| &a.value);
    let gone_for = match alive {
        Some(_) => None,
        None => o
            .alive_missing_for
            .get(host)
            .copied()
            .filter(|d| *d >= limits.health_timeout),
    };
    let state = status.map(|s| s.state);
    match state {
        Some(HostState::Done) => match alive {
            Some(a)
                if u.agent_version
                    .as_ref()
                    .is_none_or(|v| *v == a.agent_version) =>
            {
                Some((O::Succeeded, resumed(u, host, status)))
            }
            Some(a) => Some((
                O::Failed,
                format!(
                    "reported Done but its agent reports {}, not {}",
                    a.agent_version,
                    u.agent_version.as_deref().unwrap_or("?")
                ),
            )),
            None => gone_for.map(|d| {
                (
                    O::Failed,
                    format!(
                        "reported Done but its agent has not been alive for {}s",
                        d.as_secs()
                    ),
                )
            }),
        },
        Some(s) if s.is_failure() => {
            let message = status.map(|s| s.message.as_str()).unwrap_or_default();
            Some((O::Failed, format!("{s}: {message}")))
        }
        _ => gone_for.map(|d| {
            let doing = match status {
                Some(s) => format!(
                    "while {}{}",
                    s.state,
                    s.step
                        .as_deref()
                        .map(|st| format!(" ({st})"))
                        .unwrap_or_default()
                ),
                None => "before it started".to_owned(),
            };
            (
                O::Failed,
                format!(
                    "agent not alive for {}s {doing}; health timeout {}s",
                    d.as_secs(),
                    limits.health_timeout.as_secs()
                ),
            )
        }),
    }
}

/// The note on a host's success: for a restart task, that the host resumed (after the
/// reboot, or after its managed services were restarted), with what its agent reported —
/// the `host-succeeded` event of the task is its resume event. Empty otherwise.
fn resumed(u: &Upgrade, host: &HostId, status: Option<&HostStatus>) -> String {
    let Some(task) = u.task.as_ref().filter(|t| t.kind == TaskKind::Restart) else {
        return String::new();
    };
    let after = if task.reboot {
        "the reboot"
    } else {
        "its managed services were restarted"
    };
    match status.map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
        Some(reported) => format!("{host} resumed after {after}; agent: {reported}"),
        None => format!("{host} resumed after {after}"),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
