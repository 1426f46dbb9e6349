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
//! - Downloads run ahead of installs: in `Downloading`, `UpdatingAgents` and `Installing` a
//!   downloader job is started for each host still `Pending`, lowest batch first, while the
//!   jobs of every record together stay within `download_concurrency`; each job's outcome is
//!   recorded (`Downloaded` or `Failed`).
//! - `Downloading`: waits until no host of the next batch to install (the lowest unfinished
//!   one; every host for a daisy chain) is left `Pending` → `UpdatingAgents`.
//! - `UpdatingAgents`: waits until every downloaded host of that batch reports the bundle's
//!   agent version in its `alive` (one that does not within `agent_timeout` fails) →
//!   `Installing`. The updater updates itself first, batch by batch: no host of a batch is
//!   told to install before every host of the batch runs the bundle's agent.
//! - `Installing`: batch by batch (the plan stored in the record), `desired` is written for
//!   the hosts of the lowest unfinished batch — once it is over, back to `Downloading` or
//!   `UpdatingAgents` while the next batch is not ready; a dispatched host succeeds once its status is
//!   `Done` for this upgrade and its agent is alive on the bundle's version, fails on
//!   `Failed`/`RolledBack` or when its `alive` stays away longer than `health_timeout` (it
//!   holds its batch meanwhile). With canaries and `pause_after_canary`, the upgrade pauses
//!   after batch 0 until resumed. With a soak ([`soak`]), a batch whose hosts are all done
//!   soaks before they are recorded `Succeeded` and the next batch starts. Hosts are
//!   dispatched only while the maintenance windows that apply to them are open ([`window`]).
//!   No batch left → `Succeeded`.
//! - In every phase, more failed hosts than the strategy tolerates (or a failed canary) →
//!   `Failed`, naming them, once every host in flight (`Dispatched`) has been judged:
//!   nothing new starts meanwhile — or `Reverting` when the request said `on_failure: revert` and a
//!   host was changed: every changed host back to the bundle recorded when it was told,
//!   batch by batch in reverse order, then `Reverted` (or `Failed`, naming those that could
//!   not be);
//!   a host not yet dispatched whose maintenance mode is `paused` gets no downloader job and
//!   no `desired`: the upgrade waits for it (its outcome is `Held` meanwhile, an event when
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
//!
//! One file per phase: [`download`] (`Pending`, `Downloading`, held hosts), [`agents`]
//! (`UpdatingAgents`), [`install`] (`Installing`), [`revert`] (`Reverting`), [`finish`]
//! (halting and the end), [`wake`] (when an upgrade is due again with nothing changed); the
//! types it decides on are in [`super::model`].

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use baton_protocol::documents::{
    HostOutcomeState as O, HostRevert, PreviousBundle, RevertState, Strategy, Timestamp, Upgrade,
    WindowWait,
};
use baton_protocol::signing::BundleSignature;
use baton_protocol::{HostId, UpgradeId, UpgradePhase as P};

use crate::engine::model::{Limits, Observed};
use crate::view::FleetView;

mod agents;
mod download;
mod finish;
mod install;
mod revert;
mod soak;
mod wake;
mod window;

pub use revert::holds_for_revert;
pub use wake::wake_after;

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
    /// Hold a host whose maintenance mode is `paused` (the upgrade waits for it: its outcome
    /// becomes `Held`), or release it to where it was once the mode is lifted.
    Hold {
        /// The host.
        host: HostId,
        /// Held (or released).
        held: bool,
    },
    /// Tell a host to install: write its `desired` key (unless it already names this upgrade:
    /// a daisy chain's later hosts are told up front) and record it `Dispatched`, with the
    /// bundle it runs (what a revert gives it back; a chained host's was recorded when it
    /// was told).
    Dispatch {
        /// The host.
        host: HostId,
        /// Whether `desired` must be written.
        write_desired: bool,
        /// The bundle it runs now, if a record put it on one.
        previous: Option<PreviousBundle>,
    },
    /// Daisy chain: write a later host's `desired` now, naming the host it follows; its agent
    /// starts once that host's `status` is `Done` for this upgrade (and only while the
    /// upgrade is `Installing`), so the chain goes on with no orchestrator and no host
    /// writes another's keys. Not recorded: the host stays `Downloaded` until its batch
    /// comes, when it is recorded `Dispatched` without another write.
    Chain {
        /// The host.
        host: HostId,
        /// The host it follows.
        after: HostId,
        /// The bundle it runs now (recorded, as for a dispatch).
        previous: Option<PreviousBundle>,
    },
    /// `Reverting`: write a host's `desired` for the bundle it ran before (under the
    /// revert's id, marked as a downgrade the agent accepts) and record its revert
    /// `Dispatched`.
    Revert {
        /// The host.
        host: HostId,
        /// The bundle it goes back to.
        to: PreviousBundle,
        /// That bundle's signature, as the record that installed it verified it.
        signature: Option<BundleSignature>,
    },
    /// Record how a host's revert ended (or that it cannot be made).
    RecordRevert {
        /// The host.
        host: HostId,
        /// `Reverted` or `Failed`.
        state: RevertState,
        /// Why it failed.
        reason: String,
    },
    /// A batch starts soaking (`batch`, until `until`), or its soak ended (`None`: passed or
    /// failed, as `note` says).
    Soak {
        /// The soaking batch.
        batch: Option<u32>,
        /// When its soak ends.
        until: Option<Timestamp>,
        /// What happened, for the event.
        note: String,
    },
    /// Hosts are ready but their maintenance windows are closed: wait until `next_opening`
    /// (`waiting: false`: no longer waiting).
    WindowWait {
        /// Waiting or not.
        waiting: bool,
        /// When the windows next let the waiting hosts start.
        next_opening: Option<Timestamp>,
    },
}

/// Failed hosts a strategy tolerates before the upgrade halts (a failed canary halts it
/// whatever this says: see [`Decision::halt_on_failures`]).
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
        Action::Chain { host, previous, .. } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                h.previous.clone_from(previous);
            }
        }
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
                h.held_from = None;
                h.reason = if matches!(state, O::Failed | O::Skipped) {
                    reason.clone()
                } else {
                    String::new()
                };
            }
        }
        Action::Hold { host, held } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                if *held && h.state != O::Held {
                    h.held_from = Some(h.state);
                    h.state = O::Held;
                } else if !*held && h.state == O::Held {
                    h.state = h.held_from.take().unwrap_or(O::Pending);
                }
            }
        }
        Action::Dispatch { host, previous, .. } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                h.state = O::Dispatched;
                h.dispatched_at = Some(now.clone());
                if previous.is_some() {
                    h.previous.clone_from(previous);
                }
            }
        }
        Action::Revert { host, .. } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                h.revert = Some(HostRevert {
                    state: RevertState::Dispatched,
                    reason: String::new(),
                    dispatched_at: Some(now.clone()),
                });
            }
        }
        Action::RecordRevert {
            host,
            state,
            reason,
        } => {
            if let Some(h) = upgrade.hosts.get_mut(host) {
                let dispatched_at = h.revert.take().and_then(|r| r.dispatched_at);
                h.revert = Some(HostRevert {
                    state: *state,
                    reason: if *state == RevertState::Failed {
                        reason.clone()
                    } else {
                        String::new()
                    },
                    dispatched_at,
                });
            }
        }
        Action::Soak { batch, until, .. } => {
            if let Some(soak) = upgrade.soak.as_mut() {
                soak.batch = *batch;
                soak.since = batch.map(|_| now.clone());
                soak.until = until.clone();
            }
        }
        Action::WindowWait {
            waiting,
            next_opening,
        } => {
            upgrade.waiting_for_window = waiting.then(|| WindowWait {
                since: upgrade
                    .waiting_for_window
                    .as_ref()
                    .map_or_else(|| now.clone(), |w| w.since.clone()),
                next_opening: next_opening.clone(),
            });
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
    state.is_open()
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
    d.judge_reverts(observed, limits);
    if d.u.phase == P::UpdatingAgents {
        d.agent_timeouts(observed, limits);
    }
    if !d.reverting() && d.halt_on_failures(observed) {
        // A revert starts in the same pass; a halt is the end.
        if d.u.phase != P::Reverting {
            return d.actions;
        }
    }
    if d.u.phase == P::Paused {
        return d.actions;
    }
    // A phase may finish at once (agents already updated, …): carry on in the same pass.
    for _ in 0..4 {
        let before = d.u.phase;
        match before {
            P::Downloading => d.downloading(),
            P::UpdatingAgents => d.updating_agents(observed),
            P::Installing => d.installing(observed, limits),
            P::Reverting => d.revert_batches(observed, limits),
            _ => {}
        }
        if d.u.phase == before {
            break;
        }
    }
    if matches!(
        d.u.phase,
        P::Downloading | P::UpdatingAgents | P::Installing
    ) {
        d.start_downloads(observed, limits);
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
        self.u.hosts.get(host).is_some_and(|h| h.state == O::Held)
    }

    /// Hosts at `stage`, held there or not (`HostOutcome::stage`).
    fn hosts_at(&self, stage: O) -> Vec<HostId> {
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.stage() == stage)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The batch installed next: the lowest with a host still to be worked on.
    fn current_batch(&self) -> Option<u32> {
        self.u
            .hosts
            .values()
            .filter(|h| is_open(h.state))
            .map(|h| h.batch.unwrap_or(0))
            .min()
    }

    /// Hosts at `stage` (held there or not) of the batch installed next, which waits until
    /// every one of its hosts is downloaded and runs the bundle's agent (the updater first,
    /// batch by batch) — of every batch for a daisy chain, whose later hosts are told up
    /// front, so the whole chain waits for every host.
    fn next_batch_hosts(&self, stage: O) -> Vec<HostId> {
        let chain = matches!(self.u.strategy, Strategy::DaisyChain);
        let current = self.current_batch();
        self.u
            .hosts
            .iter()
            .filter(|(_, h)| h.stage() == stage)
            .filter(|(_, h)| chain || Some(h.batch.unwrap_or(0)) == current)
            .map(|(id, _)| id.clone())
            .collect()
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
}

/// Hosts open in an in-progress task record other than `except`: joins, heals, restarts and
/// replaces hold their host until they end (upgrades wait for them; a join not dispatched
/// yet is aborted when an operator's upgrade starts, so it holds nothing for long).
pub fn claimed_by_tasks(view: &FleetView, except: &UpgradeId) -> BTreeSet<HostId> {
    view.upgrades
        .values()
        .map(|v| &v.value)
        .filter(|u| &u.id != except && !u.phase.is_terminal())
        .filter(|u| u.task.is_some())
        .flat_map(|u| {
            u.hosts
                .iter()
                .filter(|(_, h)| is_open(h.state))
                .map(|(id, _)| id.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests;
