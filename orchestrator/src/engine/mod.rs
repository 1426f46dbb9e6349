//! The upgrade engine, run by the leader only: keeps a view of etcd current with prefix
//! watches (`hosts/` — one watch for the whole fleet —, `groups/`, `upgrades/`, the fleet's
//! `window`), and in each pass decides with [`decide::next_actions`] for the upgrades in
//! progress that a change touched or whose deadline came, and commits the decision with
//! [`execute::commit`]. Everything it knows comes from etcd, so a new leader continues
//! where the last one stopped.
//!
//! A pass costs what changed, not the fleet: the watches, finished jobs, probes, self-updates
//! and gate rounds mark what they touched (`marks`: hosts, records, or everything after a
//! part is read again); changes already queued are taken together into one pass; a pass
//! tracks only the marked hosts and decides only the upgrades naming them, marked
//! themselves, or due — each decision leaves the upgrade's next deadline
//! ([`decide::wake_after`]: timeouts, soak, windows) in a queue the clock looks at, with
//! [`REDECIDE_EVERY`] as a backstop. A new leadership, or a part read again, recomputes
//! everything (level-triggered).
//!
//! - [`model`]: the plain types the decisions work on (what is observed, limits, outcomes);
//! - [`decide`]: the pure decision function, one file per phase, and its table tests;
//! - [`execute`]: one guarded transaction per pass (record, `desired` keys, events, `active`);
//! - [`dispatch`]: starting the downloader job on a host, through the host's Docker Engine;
//! - [`gates`]: checking a soak's fleet gates (HTTP, Prometheus) in rounds while it lasts;
//! - [`successor`]: the orchestrator's self-update (a bundle's orchestrator image started,
//!   then handed the leadership);
//! - `drive` and `upkeep`: the engine's passes over upgrades and over its own tasks;
//! - `marks`: what changed since the last pass, and the upgrades' deadlines;
//! - `progress`: since when each host of an upgrade in progress has made no progress;
//! - [`tasks`]: what the leader takes on by itself (late joiners, autohealing, maintenance
//!   `restart`/`replace`), decided after the upgrades of each pass; the task records it
//!   creates are then driven like upgrades;
//! - [`retention`]: which finished records (with their hosts' keys and events) are removed.
//!
//! An idle leader does no work in proportion to the fleet: the periodic tick runs a pass
//! only when an upgrade's deadline came or a host's agent has been gone long enough for a
//! heal to come due ([`Engine::heal_due`]); every other pass follows a change (a watch, a
//! job, a probe, a self-update, a gate round). The leader's own tasks ([`tasks`]) are
//! decided when a change concerns them (a registration, a maintenance mode, a record
//! created or ending, a probe's answer) or a heal is due.

pub mod decide;
pub mod dispatch;
mod drive;
pub mod execute;
pub mod gates;
mod marks;
pub mod model;
mod progress;
pub mod retention;
pub mod successor;
pub mod tasks;
mod upkeep;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_protocol::documents::Upgrade;
use baton_protocol::etcd::{Client, ResumableWatch, WatchUpdate};
use baton_protocol::keys::Key;
use baton_protocol::{HostId, HostKey, Keyspace, UpgradeId, UpgradePhase};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::engine::model::{DownloadOutcome, Limits, SuccessorState};
use crate::engine::progress::Progress;
use crate::engine::successor::{SelfUpdate, Successor};
use crate::engine::tasks::operator_upgrade_in_progress;
use crate::metrics::Counters;
use crate::store;
use crate::view::{FleetView, Part};

/// How often the engine looks at its clocks (deadlines of upgrades in progress, heals due,
/// retention, gate rounds).
const TICK: Duration = Duration::from_secs(1);
/// Longest time an upgrade in progress goes undecided: the marks and deadlines should leave
/// nothing out, but a change they missed then costs this long, never a stalled upgrade.
const REDECIDE_EVERY: Duration = Duration::from_secs(30);
/// Pause after a watch fails before it is retried.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// First and longest pause between reads of a watched part that failed.
const SNAPSHOT_RETRY_FIRST: Duration = Duration::from_millis(200);
const SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a Docker probe's answer is trusted.
const PROBE_FRESH: Duration = Duration::from_secs(10);
/// Time a Docker probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long records found still in use are not looked at again while nothing else expires.
const IN_USE_RECHECK: Duration = Duration::from_secs(3600);

/// What the engine is configured with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Decision tunables.
    pub limits: Limits,
    /// etcd endpoints as agents reach them (written into their configuration by the job).
    pub agent_etcd: Vec<String>,
    /// Time per downloader job attempt.
    pub job_timeout: Duration,
    /// Attempts per downloader job.
    pub job_attempts: u32,
    /// Extra labels on downloader job containers.
    pub job_labels: BTreeMap<String, String>,
    /// TLS settings for the agents' etcd connection (paths on the hosts).
    pub agent_tls: Option<baton_protocol::etcd::EtcdTls>,
    /// Where bundles may install files on the hosts (the agents' install policy).
    pub agent_install: baton_protocol::manifest::InstallPolicy,
    /// The client certificate for hosts' `tcp://` Docker Engines.
    pub docker_tcp: crate::docker::TcpAccess,
    /// How a self-update starts the new version.
    pub self_update: SelfUpdate,
    /// The etcd identities it manages (a fresh credential for each downloader job), when
    /// etcd runs with authentication.
    pub identities: Option<crate::identities::Identities>,
    /// The Prometheus the soaks' `prometheus` gates ask (its base URL).
    pub prometheus: Option<String>,
    /// How many finished records are kept, and for how long.
    pub retention: retention::Retention,
}

/// Why the engine (or the leadership running it) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The replica shuts down.
    Shutdown,
    /// It recorded the hand-over to a new orchestrator version: this replica should resign
    /// and exit.
    HandedOver {
        /// The new version's container.
        container: String,
    },
}

type JobKey = (UpgradeId, HostId);

/// The engine's state under one leadership.
struct Engine {
    etcd: Etcd,
    config: EngineConfig,
    counters: Arc<Counters>,
    seen: Seen,
    jobs: Jobs,
    probes: Probes,
    successors: Successors,
    gate_rounds: gates::Rounds,
    /// Watches, jobs, probes and self-updates running in the background.
    tasks: JoinSet<()>,
    /// What changed since the last pass.
    marks: marks::Marks,
    /// When each upgrade in progress is due again by the clock.
    deadlines: marks::Deadlines,
    /// When the leader's own tasks were last decided.
    last_tasks: Option<Instant>,
    /// The retention's last look.
    retired: Retired,
}

/// What the retention last found.
#[derive(Default)]
struct Retired {
    /// When it looks next.
    next: Option<Instant>,
    /// Records past the count or age found all still in use, and when: not looked at again
    /// (the look reads every host) until the list changes or [`IN_USE_RECHECK`] passed.
    kept: Option<(Vec<UpgradeId>, Instant)>,
}

/// Where the engine reads and writes, and the leadership its writes are fenced by.
struct Etcd {
    client: Client,
    keyspace: Keyspace,
    leadership_key: String,
}

/// What the engine knows of the fleet.
struct Seen {
    /// etcd's documents, kept current by the watches.
    view: FleetView,
    /// The parts of the view read since the watches started.
    loaded: BTreeSet<Part>,
    /// Since when each host has been without an `alive` key, as seen here.
    missing_since: BTreeMap<HostId, Instant>,
    /// Whether the hosts of upgrades in progress make progress.
    progress: Progress,
}

/// Downloader jobs of this leadership.
struct Jobs {
    running: BTreeMap<JobKey, AbortHandle>,
    /// Outcomes not recorded yet.
    finished: BTreeMap<JobKey, DownloadOutcome>,
    results: mpsc::UnboundedSender<(JobKey, DownloadOutcome)>,
}

/// Docker probes of hosts whose agent is gone (autohealing).
struct Probes {
    /// When each host's engine last answered (or not).
    answers: BTreeMap<HostId, (Instant, bool)>,
    probing: BTreeSet<HostId>,
    results: mpsc::UnboundedSender<(HostId, bool)>,
}

/// Self-updates started under this leadership.
struct Successors {
    /// Per upgrade.
    started: BTreeMap<UpgradeId, (Successor, SuccessorState)>,
    results: mpsc::UnboundedSender<(UpgradeId, SuccessorState)>,
    /// The container handed the leadership, once recorded.
    handed_over: Option<String>,
}

/// Runs the engine until the future is dropped (leadership lost or shutdown), or until it
/// handed the leadership over to a new orchestrator version. Dropping it stops the watches
/// and abandons running downloader jobs: their containers go on, and the next leader waits
/// for them by name.
pub async fn run(
    client: Client,
    keyspace: Keyspace,
    leadership_key: String,
    config: EngineConfig,
    counters: Arc<Counters>,
) -> Exit {
    let (watch_tx, mut watch_rx) = mpsc::channel::<(Part, WatchUpdate)>(64);
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let (successor_tx, mut successor_rx) = mpsc::unbounded_channel();
    let (gates_tx, mut gates_rx) = mpsc::unbounded_channel();
    let mut engine = Engine {
        etcd: Etcd {
            client: client.clone(),
            keyspace: keyspace.clone(),
            leadership_key,
        },
        config,
        counters,
        seen: Seen {
            view: FleetView::default(),
            loaded: BTreeSet::new(),
            missing_since: BTreeMap::new(),
            progress: Progress::default(),
        },
        jobs: Jobs {
            running: BTreeMap::new(),
            finished: BTreeMap::new(),
            results: results_tx,
        },
        probes: Probes {
            answers: BTreeMap::new(),
            probing: BTreeSet::new(),
            results: probe_tx,
        },
        successors: Successors {
            started: BTreeMap::new(),
            results: successor_tx,
            handed_over: None,
        },
        gate_rounds: gates::Rounds {
            running: BTreeSet::new(),
            last: BTreeMap::new(),
            states: BTreeMap::new(),
            results: gates_tx,
        },
        tasks: JoinSet::new(),
        marks: marks::Marks {
            everything: true,
            ..marks::Marks::default()
        },
        deadlines: marks::Deadlines::default(),
        last_tasks: None,
        retired: Retired::default(),
    };
    for part in Part::ALL {
        let watch = ResumableWatch::new(client.clone(), part.prefix(&keyspace));
        engine.tasks.spawn(forward(watch, part, watch_tx.clone()));
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cleaned_active = false;
    loop {
        let mut ticked = false;
        tokio::select! {
            Some((part, update)) = watch_rx.recv() => {
                engine.on_watch(part, update).await;
                // Take every change already queued before deciding.
                while let Ok((part, update)) = watch_rx.try_recv() {
                    engine.on_watch(part, update).await;
                }
            }
            Some((key, outcome)) = results_rx.recv() => {
                engine.jobs.running.remove(&key);
                Counters::dec(&engine.counters.jobs_running);
                // Its slot is free for every record's downloads.
                engine.marks.every_record = true;
                engine.jobs.finished.insert(key, outcome);
            }
            Some((host, answers)) = probe_rx.recv() => {
                engine.probes.probing.remove(&host);
                engine.probes.answers.insert(host, (Instant::now(), answers));
                engine.marks.tasks = true;
            }
            Some((upgrade, state)) = successor_rx.recv() => {
                if let Some(entry) = engine.successors.started.get_mut(&upgrade) {
                    entry.1 = state;
                }
                engine.marks.records.insert(upgrade);
            }
            Some(round) = gates_rx.recv() => {
                engine.marks.records.insert(round.upgrade.clone());
                engine.gate_rounds.finished(round);
            }
            _ = tick.tick() => ticked = true,
        }
        while engine.tasks.try_join_next().is_some() {}
        if engine.seen.loaded.len() < Part::ALL.len() {
            continue;
        }
        if !cleaned_active {
            cleaned_active = engine.clean_active().await;
        }
        let now = Instant::now();
        if ticked {
            engine.retire(now).await;
        }
        let due = engine.deadlines.due(now);
        let tasks_due = engine.heal_due(now);
        if engine.marks.is_empty() && due.is_empty() && !tasks_due {
            if ticked {
                // A soak's fleet gates are checked in rounds on the clock.
                engine.start_gate_rounds();
            }
            continue;
        }
        Counters::inc(&engine.counters.passes);
        engine.pass(&due, tasks_due).await;
        if let Some(container) = engine.successors.handed_over.take() {
            return Exit::HandedOver { container };
        }
    }
}

/// Forwards a watch's updates, tagged with what it watches, to the engine (or to the
/// replica's live feed, [`crate::feed`]); retries on errors.
pub(crate) async fn forward<T: Copy>(
    mut watch: ResumableWatch,
    tag: T,
    tx: mpsc::Sender<(T, WatchUpdate)>,
) {
    loop {
        match watch.next().await {
            Ok(update) => {
                if tx.send((tag, update)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(prefix = watch.prefix(), %error, "watch failed; retrying");
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}

impl Engine {
    /// Guarded writes under this leadership.
    fn writer(&self) -> execute::Writer<'_> {
        execute::Writer {
            client: &self.etcd.client,
            keyspace: &self.etcd.keyspace,
            leadership_key: &self.etcd.leadership_key,
            counters: &self.counters,
        }
    }

    async fn on_watch(&mut self, part: Part, update: WatchUpdate) {
        match update {
            // The watch's snapshot carries no per-key revisions, which guards need: read the
            // part again (one range read, at start and after a compaction).
            // The watch sends no second snapshot unless etcd compacts past it, so a failed
            // read is tried again here (etcd restarting, a session signing in again) rather
            // than left for a resync that would never come.
            WatchUpdate::Snapshot { .. } => {
                self.seen.loaded.remove(&part);
                self.marks.everything = true;
                let mut backoff = SNAPSHOT_RETRY_FIRST;
                loop {
                    Counters::inc(&self.counters.reads);
                    let prefix = part.prefix(&self.etcd.keyspace);
                    match store::read_prefix(&self.etcd.client, &prefix).await {
                        Ok((kvs, revision)) => {
                            self.seen
                                .view
                                .load(&self.etcd.keyspace, part, &kvs, revision);
                            self.seen.loaded.insert(part);
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(?part, %error, retry_in = ?backoff, "could not read; reading again");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(SNAPSHOT_RETRY_MAX);
                        }
                    }
                }
            }
            WatchUpdate::Changes(changes) => {
                let records_before = self.record_summary();
                for c in changes {
                    Counters::inc(&self.counters.watch_events);
                    self.mark(part, &c.key);
                    self.seen.view.change(
                        &self.etcd.keyspace,
                        part,
                        &c.key,
                        c.value.as_deref(),
                        c.mod_revision,
                    );
                }
                if part == Part::Upgrades && self.record_summary() != records_before {
                    self.marks.every_record = true;
                    self.marks.tasks = true;
                }
            }
        }
    }

    /// Marks what a change of `key` (watched under `part`) touches ([`marks`]).
    fn mark(&mut self, part: Part, key: &str) {
        let marks = &mut self.marks;
        match self.etcd.keyspace.parse(key) {
            Ok(Key::Host(host, doc)) => {
                marks.tasks |= match doc {
                    HostKey::Spec | HostKey::Maintenance => true,
                    // A join starts only while no operator upgrade runs (its end marks
                    // the tasks).
                    HostKey::Installed => !operator_upgrade_in_progress(&self.seen.view),
                    // Heals come due by the clock (`heal_due`); the rest concerns the
                    // upgrades naming the host.
                    HostKey::Alive | HostKey::Desired | HostKey::Status => false,
                };
                marks.hosts.insert(host);
            }
            Ok(Key::Upgrade(id) | Key::UpgradeHost(id, _)) => {
                // A task record holds hosts every other record leaves alone.
                if self
                    .seen
                    .view
                    .upgrades
                    .get(&id)
                    .is_some_and(|u| u.value.task.is_some())
                {
                    marks.every_record = true;
                    marks.tasks = true;
                }
                marks.records.insert(id);
            }
            // Events, identities: nothing decided depends on them.
            Ok(_) if part == Part::Upgrades || part == Part::Hosts => {}
            // Groups' maintenance and windows apply to any number of hosts.
            _ => marks.everything = true,
        }
    }

    /// Each record's id and phase: a record created, removed or changing phase changes what
    /// every other one may do.
    fn record_summary(&self) -> Vec<(UpgradeId, UpgradePhase)> {
        self.seen
            .view
            .upgrades
            .values()
            .map(|u| (u.value.id.clone(), u.value.phase))
            .collect()
    }

    /// Records an upgrade record this replica just wrote, marking every record when its
    /// phase changed (its watch event will then show none).
    fn wrote_record(&mut self, record: Upgrade, revision: i64) {
        let phase = self
            .seen
            .view
            .upgrades
            .get(&record.id)
            .map(|u| u.value.phase);
        if phase != Some(record.phase) || record.task.is_some() {
            self.marks.every_record = true;
            self.marks.tasks = true;
        }
        self.seen.view.wrote_upgrade(record, revision);
    }

    /// `active` naming an upgrade that is over (or gone) blocks every new one: remove it.
    /// Returns whether the check could be made.
    async fn clean_active(&mut self) -> bool {
        Counters::inc(&self.counters.reads);
        let active = match store::read_active(&self.etcd.client, &self.etcd.keyspace).await {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "could not read the active key");
                return false;
            }
        };
        let Some(active) = active else { return true };
        let live = self
            .seen
            .view
            .upgrades
            .get(&active.value.upgrade_id)
            .is_some_and(|u| !u.value.phase.is_terminal());
        if live {
            return true;
        }
        let key = self.etcd.keyspace.active();
        let written = store::commit(
            &self.etcd.client,
            &key,
            vec![
                store::fence(&self.etcd.leadership_key),
                store::unchanged(&key, active.mod_revision),
            ],
            vec![etcd_client::TxnOp::delete(key.as_str(), None)],
        )
        .await;
        match written {
            Ok(w) => {
                tracing::info!(upgrade = %active.value.upgrade_id, ?w, "removed an active key naming an upgrade that is over");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not remove a stale active key");
                false
            }
        }
    }

    /// Notes since when each host (registered, or in an upgrade in progress) has been
    /// without an `alive` key, as seen by this replica (a new leader starts counting afresh:
    /// it only ever waits longer). Looks at every host: after a mark of every record.
    fn track_alive(&mut self, now: Instant) {
        let view = &self.seen.view;
        let in_upgrades = view
            .upgrades
            .values()
            .filter(|u| !u.value.phase.is_terminal())
            .flat_map(|u| u.value.hosts.keys());
        let hosts: BTreeSet<&HostId> = view.hosts.keys().chain(in_upgrades).collect();
        let absent = |h: &HostId| view.hosts.get(h).is_none_or(|d| d.alive.is_none());
        self.seen
            .missing_since
            .retain(|h, _| hosts.contains(h) && absent(h));
        for host in hosts {
            if absent(host) {
                self.seen.missing_since.entry(host.clone()).or_insert(now);
            }
        }
    }

    /// [`Self::track_alive`] and the progress tracking for the hosts whose documents
    /// changed only (the set of hosts tracked changes with the records in progress, which
    /// mark every record).
    fn track_hosts(&mut self, hosts: &BTreeSet<HostId>, now: Instant) {
        let view = &self.seen.view;
        for host in hosts {
            let docs = view.hosts.get(host);
            let tracked = docs.is_some()
                || view
                    .upgrades
                    .values()
                    .any(|u| !u.value.phase.is_terminal() && u.value.hosts.contains_key(host));
            if tracked && docs.is_none_or(|d| d.alive.is_none()) {
                self.seen.missing_since.entry(host.clone()).or_insert(now);
            } else {
                self.seen.missing_since.remove(host);
            }
        }
        self.seen.progress.touch(view, hosts, now);
    }

    /// How long each host without an `alive` key has been so.
    fn alive_missing_for(&self, now: Instant) -> BTreeMap<HostId, Duration> {
        self.seen
            .missing_since
            .iter()
            .map(|(h, since)| (h.clone(), now.duration_since(*since)))
            .collect()
    }

    /// Whether the leader's own tasks are due by the clock ([`heal_due`]).
    fn heal_due(&self, now: Instant) -> bool {
        heal_due(
            &self.seen.missing_since,
            self.config.limits.heal_grace,
            self.last_tasks,
            now,
        )
    }

    /// Removes the finished records the retention no longer keeps, at most every
    /// [`retention::CHECK_EVERY`].
    async fn retire(&mut self, now: Instant) {
        if self.retired.next.is_some_and(|next| now < next) {
            return;
        }
        self.retired.next = Some(now + retention::CHECK_EVERY);
        let view = &self.seen.view;
        let candidates =
            retention::candidates(view, &self.config.retention, std::time::SystemTime::now());
        if let Some((kept, at)) = &self.retired.kept
            && *kept == candidates
            && now.duration_since(*at) < IN_USE_RECHECK
        {
            return;
        }
        let removable = retention::removable(view, &candidates);
        if removable.is_empty() {
            self.retired.kept = (!candidates.is_empty()).then_some((candidates, now));
            return;
        }
        self.retired.kept = None;
        for chunk in removable.chunks(retention::RECORDS_PER_TXN) {
            let (mut guards, ops) = retention::remove_ops(&self.etcd.keyspace, chunk);
            guards.insert(0, store::fence(&self.etcd.leadership_key));
            let key = self.etcd.keyspace.upgrades_prefix();
            match store::commit(&self.etcd.client, &key, guards, ops).await {
                Ok(store::Written::At(_)) => {
                    Counters::inc(&self.counters.commits);
                    let ids: Vec<String> = chunk.iter().map(|(id, _)| id.to_string()).collect();
                    tracing::info!(records = ?ids, "removed finished upgrade records (retention)");
                }
                Ok(store::Written::Conflict) => {
                    Counters::inc(&self.counters.conflicts);
                    self.retired.next = None;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not remove finished upgrade records; retrying");
                    self.retired.next = None;
                    return;
                }
            }
        }
    }

    /// Decides the upgrades in progress that `marks` touched or that are `due`, then the
    /// leader's own tasks if a change concerns them or they are `tasks_due`.
    async fn pass(&mut self, due: &[UpgradeId], tasks_due: bool) {
        let now = Instant::now();
        let marks = std::mem::take(&mut self.marks);
        let visited = if marks.everything || marks.every_record {
            self.track_alive(now);
            self.seen.progress.track(&self.seen.view, now);
            self.seen.view.hosts.len()
        } else {
            self.track_hosts(&marks.hosts, now);
            marks.hosts.len()
        };
        Counters::add(&self.counters.hosts_visited, visited);
        let decide = marks::to_decide(&self.seen.view, &marks, due);
        self.start_gate_rounds();
        for id in decide {
            self.decide_and_commit(&id).await;
        }
        self.deadlines.retain_in_progress(&self.seen.view);
        self.drop_unwanted_successors();
        // Outcomes of jobs for upgrades that are over are of no use any more.
        let view = &self.seen.view;
        self.jobs.finished.retain(|(u, _), _| {
            view.upgrades
                .get(u)
                .is_some_and(|u| !u.value.phase.is_terminal())
        });
        if marks.everything || marks.tasks || tasks_due {
            self.last_tasks = Some(now);
            self.tasks_pass().await;
        }
    }
}

/// Whether the leader's tasks are due by the clock: a host whose agent has been gone past
/// the heal grace — since they were last decided, or at least [`PROBE_FRESH`] ago (a heal
/// waits for its Docker probe, whose answer lasts that long; a failed heal's retry comes
/// due later). Looks at the hosts without an agent, not at the fleet.
fn heal_due(
    missing_since: &BTreeMap<HostId, Instant>,
    heal_grace: Duration,
    last_tasks: Option<Instant>,
    now: Instant,
) -> bool {
    missing_since.values().any(|since| {
        let due = *since + heal_grace;
        due <= now && last_tasks.is_none_or(|l| due > l || now.duration_since(l) >= PROBE_FRESH)
    })
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Jobs abandoned by this leadership no longer run here.
        for _ in self.jobs.running.values() {
            Counters::dec(&self.counters.jobs_running);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_agent_wakes_the_leader_when_its_heal_comes_due_then_every_probe_period() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let gone = BTreeMap::from([(HostId::new("h1").expect("id"), t0)]);
        let at = |s| t0 + Duration::from_secs(s);
        // Nobody gone: nothing due, ever.
        assert!(!heal_due(&BTreeMap::new(), grace, Some(t0), at(3600)));
        // Not yet due.
        assert!(!heal_due(&gone, grace, Some(at(1)), at(29)));
        // Due since the last look.
        assert!(heal_due(&gone, grace, Some(at(29)), at(30)));
        // Looked at already: again once a probe's answer is stale.
        assert!(!heal_due(&gone, grace, Some(at(31)), at(35)));
        assert!(heal_due(&gone, grace, Some(at(31)), at(41)));
    }
}
