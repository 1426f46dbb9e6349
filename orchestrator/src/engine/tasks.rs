//! Work the leader takes on by itself, decided as a pure function of what etcd shows:
//! [`next_tasks`]`(observed, limits) -> Vec<TaskAction>`. Each task is an upgrade record the
//! orchestrator creates for one host (`upgrades/<kind>-<host>-<n>`, with `task` set), which
//! the engine then drives like any upgrade ([`super::decide`]), with its events under
//! `events/<id>/`:
//!
//! - **join**: a registered host that the fleet's upgrade (the latest `Succeeded` operator
//!   upgrade whose selector matches the host and that did not name its hosts) did not select,
//!   and whose `installed.bundle_version` differs from it, is brought to that version —
//!   downloader job, agent, install. Joins run alongside each other (at most
//!   `download_concurrency` in progress, their jobs within the same shared limit) and never
//!   hold `active`: an operator's upgrade is never refused because of them. While an
//!   operator's upgrade is in progress no join starts, and a join that has not told its host
//!   to install yet is aborted ([`JOIN_PREEMPTED`]) and made again once the upgrade ended (if
//!   the host still differs from the fleet's upgrade then). One join is attempted per host
//!   and fleet upgrade otherwise (a failed one — an unreachable host's, say — is not retried
//!   by itself, and fails nothing but itself).
//! - **heal**: a registered host whose `alive` has been gone for `heal_grace` while its
//!   Docker Engine answers a probe gets the downloader job of its current bundle again
//!   (it reinstalls and restarts the agent) — unless its maintenance mode is
//!   `autohealing-off` or `paused`. A failed heal is retried after `heal_grace` × 2^failures
//!   (at most 64×).
//! - **restart** / **replace**: a host whose maintenance mode (its own, else its group's)
//!   is `restart` or `replace` gets a task carrying it out (one host of a group at a time;
//!   a `restart` with `reboot` set dispatches `reboot` instead of `restart`);
//!   once it succeeds the mode is cleared (a group's when every host of the group it
//!   applies to is done). A failed task leaves the mode set; setting it again retries.
//!
//! A host that is still to be worked on in any record in progress is left alone (in
//! particular a host in an upgrade's install slot is never healed: a vanished host there
//! fails the upgrade). Restart and replace need the host's current bundle (the latest record
//! that dispatched it or in which it succeeded); hosts without one are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use baton_protocol::documents::{
    BatchSize, HostOutcome, HostOutcomeState as O, HostSpec, MaintenanceMode, OnFailure,
    PreviousBundle, SCHEMA_VERSION, Strategy, Task, TaskKind, Timestamp, Upgrade,
};
use baton_protocol::{GroupName, HostId, UpgradeId, UpgradePhase as P};

use crate::engine::decide::{holds_for_revert, is_open};
use crate::engine::model::Limits;
use crate::view::FleetView;

/// Longest wait between failed heals of one host, as a multiple of the grace period.
const MAX_HEAL_BACKOFF_SHIFT: u32 = 6;

/// What the engine sees besides the view: its own clocks and Docker probes.
#[derive(Debug, Clone, Copy)]
pub struct FleetObserved<'a> {
    /// Hosts and records.
    pub view: &'a FleetView,
    /// Registered hosts without an `alive` key, and for how long this replica has seen them so.
    pub alive_missing_for: &'a BTreeMap<HostId, Duration>,
    /// Hosts whose Docker Engine recently answered a probe (`true`) or did not (`false`).
    pub docker_answers: &'a BTreeMap<HostId, bool>,
    /// The time now.
    pub now: SystemTime,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskAction {
    /// Ask the host's Docker Engine whether it answers (a heal is due).
    Probe {
        /// The host.
        host: HostId,
    },
    /// Create a task record (with its first event), only if its id is free.
    Create {
        /// The record to store (phase `Pending`, `events` 0).
        upgrade: Box<Upgrade>,
        /// The `created` event's message.
        message: String,
    },
    /// Abort a join that has not told its host to install: an operator's upgrade started
    /// (the reason is [`JOIN_PREEMPTED`]; the join is made again once that upgrade ended).
    Preempt {
        /// The join's record.
        record: UpgradeId,
    },
    /// Set a host's maintenance mode back to `none` (guarded by the revision read) and
    /// write an event on the task that carried it out.
    ClearHost {
        /// The host.
        host: HostId,
        /// The maintenance key's revision as read.
        read_at: i64,
        /// The task record that succeeded.
        record: UpgradeId,
        /// The event's message.
        message: String,
    },
    /// The same for a group, once every host of the group it applies to is done.
    ClearGroup {
        /// The group.
        group: GroupName,
        /// The maintenance key's revision as read.
        read_at: i64,
        /// The task record that completed it.
        record: UpgradeId,
        /// The event's message.
        message: String,
    },
}

fn records(view: &FleetView) -> impl Iterator<Item = &Upgrade> + Clone {
    view.upgrades.values().map(|v| &v.value)
}

/// The records kept, by the hosts they name, built once per decision: a host is looked up in
/// the records that name it (a task record names its one host), not in every record kept.
struct Index<'a> {
    by_host: BTreeMap<&'a HostId, Vec<&'a Upgrade>>,
    /// Operator upgrades that succeeded and selected by labels: the fleet's upgrade is one.
    fleet: Vec<&'a Upgrade>,
}

impl<'a> Index<'a> {
    fn new(view: &'a FleetView) -> Self {
        let mut by_host: BTreeMap<&'a HostId, Vec<&'a Upgrade>> = BTreeMap::new();
        for u in records(view) {
            for host in u.hosts.keys() {
                by_host.entry(host).or_default().push(u);
            }
        }
        let fleet = records(view)
            .filter(|u| u.phase == P::Succeeded && u.task.is_none() && !u.listed)
            .collect();
        Self { by_host, fleet }
    }

    /// The records naming `host`.
    fn naming(&self, host: &HostId) -> impl Iterator<Item = &'a Upgrade> + Clone + '_ {
        self.by_host.get(host).into_iter().flatten().copied()
    }
}

fn age(since: &str, now: SystemTime) -> Duration {
    humantime::parse_rfc3339(since)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

/// Latest first: by creation time, then id.
fn newest<'a>(it: impl Iterator<Item = &'a Upgrade>) -> Option<&'a Upgrade> {
    it.max_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)))
}

/// Hosts still to be worked on in a record in progress (a reverting upgrade's until their
/// revert ended).
fn busy_hosts(view: &FleetView) -> BTreeSet<HostId> {
    records(view)
        .filter(|u| !u.phase.is_terminal())
        .flat_map(|u| {
            u.hosts
                .iter()
                .filter(|(_, h)| is_open(h.state) || holds_for_revert(u, h))
                .map(|(id, _)| id.clone())
        })
        .collect()
}

/// Why a join was aborted when an operator's upgrade started: such a join does not count as
/// attempted, so it is made again once that upgrade ended.
pub const JOIN_PREEMPTED: &str = "an operator's upgrade started before the join told its host to install; the join is made again once that upgrade has ended";

/// An operator's upgrade (not a task of the leader's) is in progress.
pub fn operator_upgrade_in_progress(view: &FleetView) -> bool {
    records(view).any(|u| !u.phase.is_terminal() && u.task.is_none())
}

fn is_join(u: &Upgrade) -> bool {
    u.task.as_ref().is_some_and(|t| t.kind == TaskKind::Join)
}

/// Joins in progress whose host has not been told to install yet.
fn undispatched_joins(view: &FleetView) -> impl Iterator<Item = &Upgrade> {
    records(view).filter(|u| {
        !u.phase.is_terminal() && is_join(u) && u.hosts.values().all(|h| h.dispatched_at.is_none())
    })
}

/// The record that put `host` on its current bundle: the latest that dispatched it or in
/// which it succeeded, preferring one whose version the host reports as installed.
pub fn current_bundle<'a>(view: &'a FleetView, host: &HostId) -> Option<&'a Upgrade> {
    current_bundle_in(records(view), view, host)
}

/// [`current_bundle`] among `candidates` (every record naming the host, at least).
fn current_bundle_in<'a>(
    candidates: impl Iterator<Item = &'a Upgrade> + Clone,
    view: &FleetView,
    host: &HostId,
) -> Option<&'a Upgrade> {
    let reached = |u: &&Upgrade| {
        u.hosts
            .get(host)
            .is_some_and(|h| h.state == O::Succeeded || h.dispatched_at.is_some())
    };
    let installed = view
        .hosts
        .get(host)
        .and_then(|d| d.installed.as_ref())
        .and_then(|i| i.value.bundle_version.clone());
    newest(
        candidates
            .clone()
            .filter(reached)
            .filter(|u| installed.as_ref().is_some_and(|v| *v == u.version)),
    )
    .or_else(|| newest(candidates.filter(reached)))
}

/// The bundle `host` runs now, as the record that put it there ([`current_bundle`]) names
/// it: what an upgrade records when it tells the host to install, for a revert.
pub fn previous_bundle(view: &FleetView, host: &HostId) -> Option<PreviousBundle> {
    current_bundle(view, host).map(|u| PreviousBundle {
        bundle: u.bundle.clone(),
        version: u.version.clone(),
        upgrade: u.id.clone(),
    })
}

/// The fleet's upgrade for a host with `spec`: the latest succeeded operator upgrade that
/// selected by labels only and whose selector matches the host's labels.
pub fn fleet_upgrade<'a>(view: &'a FleetView, spec: &HostSpec) -> Option<&'a Upgrade> {
    fleet_upgrade_in(records(view), spec)
}

/// [`fleet_upgrade`] among `candidates`.
fn fleet_upgrade_in<'a>(
    candidates: impl Iterator<Item = &'a Upgrade>,
    spec: &HostSpec,
) -> Option<&'a Upgrade> {
    newest(candidates.filter(|u| {
        u.phase == P::Succeeded
            && u.task.is_none()
            && !u.listed
            && u.selector
                .iter()
                .all(|(k, v)| spec.labels.get(k) == Some(v))
    }))
}

/// `<kind>-<host>-<n>`, the first free `n` (the host part shortened if the id would be too
/// long).
fn task_id(
    view: &FleetView,
    index: &Index<'_>,
    kind: TaskKind,
    host: &HostId,
) -> Option<UpgradeId> {
    let mut n = index
        .naming(host)
        .filter(|u| {
            u.task
                .as_ref()
                .is_some_and(|t| t.kind == kind && &t.host == host)
        })
        .count()
        + 1;
    loop {
        let suffix = format!("-{n}");
        let room = baton_protocol::names::MAX_NAME_LEN
            .saturating_sub(kind.name().len() + 1 + suffix.len());
        let short: String = host.as_str().chars().take(room).collect();
        let id = UpgradeId::new(format!("{}-{short}{suffix}", kind.name())).ok()?;
        if !view.upgrades.contains_key(&id) {
            return Some(id);
        }
        n += 1;
    }
}

/// The maintenance setting that applies to a host, with where it comes from.
struct Setting {
    kind: TaskKind,
    since: Timestamp,
    group: Option<GroupName>,
    read_at: i64,
    /// `restart` with a reboot of the host.
    reboot: bool,
}

fn setting(view: &FleetView, host: &HostId) -> Option<Setting> {
    let docs = view.hosts.get(host)?;
    let kind = |mode| match mode {
        MaintenanceMode::Restart => Some(TaskKind::Restart),
        MaintenanceMode::Replace => Some(TaskKind::Replace),
        _ => None,
    };
    if let Some(own) = &docs.maintenance
        && own.value.mode != MaintenanceMode::None
    {
        return Some(Setting {
            kind: kind(own.value.mode)?,
            since: own.value.since.clone(),
            group: None,
            read_at: own.mod_revision,
            reboot: own.value.reboot,
        });
    }
    let group = docs.group()?;
    let m = view.groups.get(&group)?;
    Some(Setting {
        kind: kind(m.value.mode)?,
        since: m.value.since.clone(),
        group: Some(group),
        read_at: m.mod_revision,
        reboot: m.value.reboot,
    })
}

/// Task records carrying out `setting` on `host`.
fn carried_out<'a>(
    index: &'a Index<'a>,
    host: &'a HostId,
    s: &'a Setting,
) -> impl Iterator<Item = &'a Upgrade> + 'a {
    index.naming(host).filter(move |u| {
        u.task.as_ref().is_some_and(|t| {
            t.kind == s.kind
                && &t.host == host
                && t.group == s.group
                && t.maintenance_since.as_ref() == Some(&s.since)
        })
    })
}

fn task_record(id: UpgradeId, task: Task, source: &Upgrade, now: &Timestamp) -> Upgrade {
    // A restart stages nothing and accepts whatever agent runs.
    let restart = task.kind == TaskKind::Restart;
    Upgrade {
        schema_version: SCHEMA_VERSION,
        id,
        bundle: source.bundle.clone(),
        version: source.version.clone(),
        strategy: Strategy::Rolling {
            batch: BatchSize::Count(1),
            canary: 0,
            pause_after_canary: false,
            zone_label: None,
            max_failures: 0,
        },
        selector: BTreeMap::new(),
        strategy_reason: None,
        phase: P::Pending,
        paused_from: None,
        hosts: [(
            task.host.clone(),
            HostOutcome {
                state: if restart { O::Downloaded } else { O::Pending },
                reason: String::new(),
                batch: Some(0),
                dispatched_at: None,
                held_from: None,
                previous: None,
                revert: None,
            },
        )]
        .into(),
        reason: None,
        agent_version: if restart {
            None
        } else {
            source.agent_version.clone()
        },
        phase_since: Some(now.clone()),
        canary_approved: false,
        events: 0,
        listed: true,
        task: Some(task),
        orchestrator: None,
        signature: source.signature.clone(),
        skip_paused: false,
        // The fleet's bundle, as its upgrade installed it: a deliberate downgrade stays one
        // for a host that joins or is reinstalled later.
        allow_downgrade: source.allow_downgrade,
        // A task carries out one host's work: nothing to revert.
        on_failure: OnFailure::Halt,
        created_at: now.clone(),
        updated_at: now.clone(),
        soak: None,
        waiting_for_window: None,
    }
}

/// Decides what the leader takes on by itself now.
pub fn next_tasks(o: &FleetObserved<'_>, limits: &Limits) -> Vec<TaskAction> {
    let view = o.view;
    let now: Timestamp = humantime::format_rfc3339_millis(o.now).to_string();
    let mut out = Vec::new();
    let index = Index::new(view);
    let busy = busy_hosts(view);
    let operator_busy = operator_upgrade_in_progress(view);
    if operator_busy {
        out.extend(undispatched_joins(view).map(|u| TaskAction::Preempt {
            record: u.id.clone(),
        }));
    }
    let joining = records(view)
        .filter(|u| !u.phase.is_terminal() && is_join(u))
        .count();
    let mut joins_free = limits.download_concurrency.saturating_sub(joining);
    // Group settings with a host in progress (one host of a group at a time).
    let mut groups_busy: BTreeSet<(TaskKind, GroupName, Timestamp)> = records(view)
        .filter(|u| !u.phase.is_terminal())
        .filter_map(|u| {
            let t = u.task.as_ref()?;
            Some((t.kind, t.group.clone()?, t.maintenance_since.clone()?))
        })
        .collect();
    for (host, docs) in &view.hosts {
        let Some(spec) = docs.spec.as_ref().map(|s| &s.value) else {
            continue;
        };
        if busy.contains(host) {
            continue;
        }
        let mode = view.maintenance(host);
        let current = current_bundle_in(index.naming(host), view, host);

        // Restart and replace.
        if let Some(s) = setting(view, host) {
            let done = newest(carried_out(&index, host, &s));
            match done {
                Some(t) if t.phase == P::Succeeded => {
                    if s.group.is_none() {
                        out.push(TaskAction::ClearHost {
                            host: host.clone(),
                            read_at: s.read_at,
                            record: t.id.clone(),
                            message: format!(
                                "maintenance mode {} of {host} cleared: {} succeeded",
                                s.kind.name(),
                                t.id
                            ),
                        });
                        continue;
                    }
                }
                Some(_) => {}
                None => {
                    let group_key = s.group.clone().map(|g| (s.kind, g, s.since.clone()));
                    let group_free = group_key.as_ref().is_none_or(|k| !groups_busy.contains(k));
                    if let (Some(source), true) = (current, group_free)
                        && let Some(id) = task_id(view, &index, s.kind, host)
                    {
                        let scope = match &s.group {
                            Some(g) => format!("of group {g}"),
                            None => format!("of {host}"),
                        };
                        let what = match s.kind {
                            TaskKind::Restart if s.reboot => {
                                format!("rebooting {host} (on bundle {})", source.version)
                            }
                            TaskKind::Restart => {
                                format!("restarting the managed services of {}", source.version)
                            }
                            _ => format!(
                                "reinstalling bundle {} (from {}) on {host}",
                                source.version, source.id
                            ),
                        };
                        let task = Task {
                            kind: s.kind,
                            host: host.clone(),
                            follows: Some(source.id.clone()),
                            maintenance_since: Some(s.since.clone()),
                            group: s.group.clone(),
                            reboot: s.kind == TaskKind::Restart && s.reboot,
                        };
                        out.push(TaskAction::Create {
                            upgrade: Box::new(task_record(id, task, source, &now)),
                            message: format!(
                                "maintenance mode {} {scope} (since {}): {what}",
                                s.kind.name(),
                                s.since
                            ),
                        });
                        if let Some(k) = group_key {
                            groups_busy.insert(k);
                        }
                        continue;
                    }
                }
            }
        }

        // Autohealing.
        let gone_for = o.alive_missing_for.get(host).copied();
        let heal_allowed = !matches!(
            mode,
            MaintenanceMode::AutohealingOff | MaintenanceMode::Paused
        );
        if let (Some(gone), Some(source), true) = (gone_for, current, heal_allowed)
            && gone >= limits.heal_grace
            && heal_backoff_over(&index, host, limits.heal_grace, o.now)
        {
            match o.docker_answers.get(host) {
                None => out.push(TaskAction::Probe { host: host.clone() }),
                Some(false) => {}
                Some(true) => {
                    if let Some(id) = task_id(view, &index, TaskKind::Heal, host) {
                        let task = Task {
                            kind: TaskKind::Heal,
                            host: host.clone(),
                            follows: Some(source.id.clone()),
                            maintenance_since: None,
                            group: None,
                            reboot: false,
                        };
                        out.push(TaskAction::Create {
                            upgrade: Box::new(task_record(id, task, source, &now)),
                            message: format!(
                                "agent of {host} gone for {}s while its Docker Engine answers: running the downloader job of bundle {} (from {}) again",
                                gone.as_secs(),
                                source.version,
                                source.id
                            ),
                        });
                    }
                }
            }
            continue;
        }

        // Late joiners.
        if operator_busy || joins_free == 0 || mode == MaintenanceMode::Paused {
            continue;
        }
        let Some(fleet) = fleet_upgrade_in(index.fleet.iter().copied(), spec) else {
            continue;
        };
        let installed = docs
            .installed
            .as_ref()
            .and_then(|i| i.value.bundle_version.clone());
        let tried = index.naming(host).any(|u| {
            u.task.as_ref().is_some_and(|t| {
                t.kind == TaskKind::Join && &t.host == host && t.follows.as_ref() == Some(&fleet.id)
            }) && !(u.phase == P::Aborted && u.reason.as_deref() == Some(JOIN_PREEMPTED))
        });
        if fleet.hosts.contains_key(host) || installed.as_ref() == Some(&fleet.version) || tried {
            continue;
        }
        if let Some(id) = task_id(view, &index, TaskKind::Join, host) {
            let task = Task {
                kind: TaskKind::Join,
                host: host.clone(),
                follows: Some(fleet.id.clone()),
                maintenance_since: None,
                group: None,
                reboot: false,
            };
            out.push(TaskAction::Create {
                upgrade: Box::new(task_record(id, task, fleet, &now)),
                message: format!(
                    "{host} was not selected by upgrade {} and runs {}: bringing it to {}",
                    fleet.id,
                    installed.as_deref().unwrap_or("no bundle"),
                    fleet.version
                ),
            });
            joins_free -= 1;
        }
    }
    out.extend(clear_groups(view, &index));
    out
}

/// A failed heal is retried after `grace` × 2^(consecutive failed heals), counted from when
/// the last one ended.
fn heal_backoff_over(index: &Index<'_>, host: &HostId, grace: Duration, now: SystemTime) -> bool {
    let mut heals: Vec<&Upgrade> = index
        .naming(host)
        .filter(|u| {
            u.task
                .as_ref()
                .is_some_and(|t| t.kind == TaskKind::Heal && &t.host == host)
        })
        .collect();
    heals.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
    let failures = heals
        .iter()
        .take_while(|u| matches!(u.phase, P::Failed | P::Aborted))
        .count();
    let Some(last) = heals.first() else {
        return true;
    };
    if failures == 0 {
        return true;
    }
    let shift = u32::try_from(failures)
        .unwrap_or(u32::MAX)
        .min(MAX_HEAL_BACKOFF_SHIFT);
    age(&last.updated_at, now) >= grace.saturating_mul(1 << shift)
}

/// Group restart/replace settings whose every host is done.
fn clear_groups(view: &FleetView, index: &Index<'_>) -> Vec<TaskAction> {
    let mut out = Vec::new();
    for (group, m) in &view.groups {
        let kind = match m.value.mode {
            MaintenanceMode::Restart => TaskKind::Restart,
            MaintenanceMode::Replace => TaskKind::Replace,
            _ => continue,
        };
        let s = Setting {
            kind,
            since: m.value.since.clone(),
            group: Some(group.clone()),
            read_at: m.mod_revision,
            reboot: m.value.reboot,
        };
        // The hosts it applies to (not overridden by their own mode) that have a bundle.
        let members: Vec<&HostId> = view
            .hosts
            .iter()
            .filter(|(_, d)| d.spec.is_some() && d.group().as_ref() == Some(group))
            .filter(|(_, d)| {
                d.maintenance
                    .as_ref()
                    .is_none_or(|own| own.value.mode == MaintenanceMode::None)
            })
            .filter(|(h, _)| current_bundle_in(index.naming(h), view, h).is_some())
            .map(|(h, _)| h)
            .collect();
        let mut last: Option<&Upgrade> = None;
        let mut all_done = !members.is_empty();
        for h in &members {
            match newest(carried_out(index, h, &s)) {
                Some(t) if t.phase == P::Succeeded => {
                    if last.is_none_or(|l| t.updated_at > l.updated_at) {
                        last = Some(t);
                    }
                }
                _ => all_done = false,
            }
        }
        if let (true, Some(t)) = (all_done, last) {
            out.push(TaskAction::ClearGroup {
                group: group.clone(),
                read_at: s.read_at,
                record: t.id.clone(),
                message: format!(
                    "maintenance mode {} of group {group} cleared: all {} host(s) done",
                    kind.name(),
                    members.len()
                ),
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "tasks_tests.rs"]
pub(crate) mod tests;
