//! The upgrade engine, run by the leader only: keeps a view of etcd current with three
//! prefix watches (`hosts/` — one watch for the whole fleet —, `groups/`, `upgrades/`),
//! and after every change, every finished downloader job and every second (for timeouts)
//! decides with [`decide::next_actions`] for each upgrade in progress and commits the
//! decision with [`execute::commit`]. Everything it knows comes from etcd, so a new leader
//! continues where the last one stopped.
//!
//! - [`model`]: the plain types the decisions work on (what is observed, limits, outcomes);
//! - [`decide`]: the pure decision function, one file per phase, and its table tests;
//! - [`execute`]: one guarded transaction per pass (record, `desired` keys, events, `active`);
//! - [`dispatch`]: starting the downloader job on a host, through the host's Docker Engine;
//! - [`successor`]: the orchestrator's self-update (a bundle's orchestrator image started,
//!   then handed the leadership);
//! - [`tasks`]: what the leader takes on by itself (late joiners, autohealing, maintenance
//!   `restart`/`replace`), decided after the upgrades of each pass; the task records it
//!   creates are then driven like upgrades.

pub mod decide;
pub mod dispatch;
pub mod execute;
pub mod model;
pub mod successor;
pub mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use baton_protocol::documents::{self, Maintenance, Upgrade};
use baton_protocol::etcd::{Client, ResumableWatch, Versioned, WatchUpdate};
use baton_protocol::{HostId, HostKey, Keyspace, UpgradeId};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::engine::decide::{Action, claimed_by_tasks, next_actions};
use crate::engine::model::{DownloadOutcome, Limits, Observed, SuccessorState};
use crate::engine::successor::{SelfUpdate, Successor};
use crate::engine::tasks::{FleetObserved, TaskAction, next_tasks};
use crate::metrics::Counters;
use crate::store;
use crate::view::{FleetView, Part};

/// How often the engine re-decides without a change (timeouts).
const TICK: Duration = Duration::from_secs(1);
/// Pause after a watch fails before it is retried.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// How long a Docker probe's answer is trusted.
const PROBE_FRESH: Duration = Duration::from_secs(10);
/// Time a Docker probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// How a self-update starts the new version.
    pub self_update: SelfUpdate,
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
    /// Watches, jobs, probes and self-updates running in the background.
    tasks: JoinSet<()>,
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
        tasks: JoinSet::new(),
    };
    for part in [Part::Hosts, Part::Groups, Part::Upgrades] {
        let watch = ResumableWatch::new(client.clone(), part.prefix(&keyspace));
        engine.tasks.spawn(forward(watch, part, watch_tx.clone()));
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cleaned_active = false;
    loop {
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
                engine.jobs.finished.insert(key, outcome);
            }
            Some((host, answers)) = probe_rx.recv() => {
                engine.probes.probing.remove(&host);
                engine.probes.answers.insert(host, (Instant::now(), answers));
            }
            Some((upgrade, state)) = successor_rx.recv() => {
                if let Some(entry) = engine.successors.started.get_mut(&upgrade) {
                    entry.1 = state;
                }
            }
            _ = tick.tick() => {}
        }
        while engine.tasks.try_join_next().is_some() {}
        if engine.seen.loaded.len() < 3 {
            continue;
        }
        if !cleaned_active {
            cleaned_active = engine.clean_active().await;
        }
        engine.pass().await;
        if let Some(container) = engine.successors.handed_over.take() {
            return Exit::HandedOver { container };
        }
    }
}

/// Forwards a watch's updates to the engine; retries on errors.
async fn forward(mut watch: ResumableWatch, part: Part, tx: mpsc::Sender<(Part, WatchUpdate)>) {
    loop {
        match watch.next().await {
            Ok(update) => {
                if tx.send((part, update)).await.is_err() {
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
            WatchUpdate::Snapshot { .. } => {
                Counters::inc(&self.counters.reads);
                match store::read_prefix(&self.etcd.client, &part.prefix(&self.etcd.keyspace)).await
                {
                    Ok((kvs, revision)) => {
                        self.seen
                            .view
                            .load(&self.etcd.keyspace, part, &kvs, revision);
                        self.seen.loaded.insert(part);
                    }
                    Err(error) => {
                        tracing::warn!(?part, %error, "could not read; waiting for the watch to resync");
                        self.seen.loaded.remove(&part);
                    }
                }
            }
            WatchUpdate::Changes(changes) => {
                for c in changes {
                    Counters::inc(&self.counters.watch_events);
                    self.seen.view.change(
                        &self.etcd.keyspace,
                        part,
                        &c.key,
                        c.value.as_deref(),
                        c.mod_revision,
                    );
                }
            }
        }
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
    /// it only ever waits longer).
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

    /// How long each host without an `alive` key has been so.
    fn alive_missing_for(&self, now: Instant) -> BTreeMap<HostId, Duration> {
        self.seen
            .missing_since
            .iter()
            .map(|(h, since)| (h.clone(), now.duration_since(*since)))
            .collect()
    }

    async fn pass(&mut self) {
        self.track_alive(Instant::now());
        let in_progress: Vec<UpgradeId> = self
            .seen
            .view
            .upgrades
            .values()
            .filter(|u| !u.value.phase.is_terminal())
            .map(|u| u.value.id.clone())
            .collect();
        for id in in_progress {
            self.decide_and_commit(&id).await;
        }
        self.drop_unwanted_successors();
        // Outcomes of jobs for upgrades that are over are of no use any more.
        let view = &self.seen.view;
        self.jobs.finished.retain(|(u, _), _| {
            view.upgrades
                .get(u)
                .is_some_and(|u| !u.value.phase.is_terminal())
        });
        self.tasks_pass().await;
    }

    /// A new orchestrator version that got ready after its upgrade ended (aborted while it
    /// started) is not handed anything: it is stopped.
    fn drop_unwanted_successors(&mut self) {
        let view = &self.seen.view;
        let ended: Vec<UpgradeId> = self
            .successors
            .started
            .iter()
            // One still starting is looked at again once it answers.
            .filter(|(_, (_, state))| *state != SuccessorState::Starting)
            .filter(|(u, _)| {
                view.upgrades
                    .get(*u)
                    .is_none_or(|u| u.value.phase.is_terminal())
            })
            .map(|(u, _)| u.clone())
            .collect();
        for id in ended {
            if let Some((successor, state)) = self.successors.started.remove(&id)
                && matches!(state, SuccessorState::Ready { .. })
            {
                self.tasks
                    .spawn(async move { successor::stop(&successor).await });
            }
        }
    }

    /// Starts this upgrade's new orchestrator version in the background, once.
    fn start_successor(&mut self, upgrade: &Upgrade) {
        let Some(update) = &upgrade.orchestrator else {
            return;
        };
        if self.successors.started.contains_key(&upgrade.id) {
            return;
        }
        let successor = Successor {
            upgrade: upgrade.id.clone(),
            version: upgrade.version.clone(),
            image: update.image.clone(),
            keyspace: self.etcd.keyspace.clone(),
            settings: self.config.self_update.clone(),
            labels: self.config.job_labels.clone(),
        };
        tracing::info!(upgrade = %upgrade.id, image = %update.image, container = %successor.container_name(), "self-update: starting orchestrator {}", upgrade.version);
        self.successors.started.insert(
            upgrade.id.clone(),
            (successor.clone(), SuccessorState::Starting),
        );
        let client = self.etcd.client.clone();
        let results = self.successors.results.clone();
        let id = upgrade.id.clone();
        self.tasks.spawn(async move {
            let state = successor::run(successor, client).await;
            let _ = results.send((id, state));
        });
    }

    /// Decides and carries out what the leader takes on by itself ([`tasks`]).
    async fn tasks_pass(&mut self) {
        let now = Instant::now();
        self.probes
            .answers
            .retain(|_, (at, _)| now.duration_since(*at) < PROBE_FRESH);
        let answers: BTreeMap<HostId, bool> = self
            .probes
            .answers
            .iter()
            .map(|(h, (_, a))| (h.clone(), *a))
            .collect();
        let missing = self.alive_missing_for(now);
        let actions = next_tasks(
            &FleetObserved {
                view: &self.seen.view,
                alive_missing_for: &missing,
                docker_answers: &answers,
                now: SystemTime::now(),
            },
            &self.config.limits,
        );
        for action in actions {
            self.carry_out(action).await;
        }
    }

    async fn carry_out(&mut self, action: TaskAction) {
        let now = documents::now();
        let writer = self.writer();
        match action {
            TaskAction::Probe { host } => self.probe(host),
            TaskAction::Create {
                upgrade,
                message,
                take_active,
            } => match execute::create_task(writer, &upgrade, &message, take_active, &now).await {
                Ok(Some((record, revision))) => {
                    Counters::inc(&self.counters.commits);
                    tracing::info!(task = %record.id, %message, "task created");
                    self.seen.view.wrote_upgrade(record, revision);
                }
                Ok(None) => {
                    Counters::inc(&self.counters.conflicts);
                    tracing::debug!(task = %upgrade.id, "task not created (id taken, an upgrade active, or leadership lost)");
                }
                Err(error) => {
                    tracing::warn!(task = %upgrade.id, %error, "could not create a task; retrying");
                }
            },
            TaskAction::ClearHost {
                host,
                read_at,
                record,
                message,
            } => {
                let key = self.etcd.keyspace.host(&host, HostKey::Maintenance);
                if let Some(m) = self.clear(&key, read_at, &record, &message).await {
                    self.seen.view.hosts.entry(host).or_default().maintenance = Some(m);
                }
            }
            TaskAction::ClearGroup {
                group,
                read_at,
                record,
                message,
            } => {
                let key = self.etcd.keyspace.group_maintenance(&group);
                if let Some(m) = self.clear(&key, read_at, &record, &message).await {
                    self.seen.view.groups.insert(group, m);
                }
            }
        }
    }

    /// Clears a maintenance key; returns it as written.
    async fn clear(
        &mut self,
        key: &str,
        read_at: i64,
        record: &UpgradeId,
        message: &str,
    ) -> Option<Versioned<Maintenance>> {
        let current = self.seen.view.upgrades.get(record)?.clone();
        let now = documents::now();
        let writer = self.writer();
        match execute::clear_maintenance(writer, key, read_at, &current, message, &now).await {
            Ok(Some((upgrade, cleared, revision))) => {
                Counters::inc(&self.counters.commits);
                tracing::info!(%key, task = %record, %message, "maintenance mode cleared");
                self.seen.view.wrote_upgrade(upgrade, revision);
                Some(Versioned {
                    value: cleared,
                    mod_revision: revision,
                })
            }
            Ok(None) => {
                Counters::inc(&self.counters.conflicts);
                None
            }
            Err(error) => {
                tracing::warn!(%key, %error, "could not clear a maintenance mode; retrying");
                None
            }
        }
    }

    /// Asks the host's Docker Engine whether it answers, in the background.
    fn probe(&mut self, host: HostId) {
        if self.probes.probing.contains(&host) {
            return;
        }
        let Some(endpoint) = self
            .seen
            .view
            .hosts
            .get(&host)
            .and_then(|d| d.spec.as_ref())
            .map(|s| s.value.docker.clone())
        else {
            return;
        };
        self.probes.probing.insert(host.clone());
        let results = self.probes.results.clone();
        self.tasks.spawn(async move {
            let answers = tokio::time::timeout(PROBE_TIMEOUT, docker_answers(&endpoint))
                .await
                .unwrap_or(false);
            tracing::debug!(%host, %endpoint, answers, "docker probe");
            let _ = results.send((host, answers));
        });
    }

    async fn decide_and_commit(&mut self, id: &UpgradeId) {
        let Some(current) = self.seen.view.upgrades.get(id).cloned() else {
            return;
        };
        let missing = self.alive_missing_for(Instant::now());
        let claimed = claimed_by_tasks(&self.seen.view, id);
        let running: BTreeSet<HostId> = self
            .jobs
            .running
            .keys()
            .filter(|(u, _)| u == id)
            .map(|(_, h)| h.clone())
            .collect();
        let finished: BTreeMap<HostId, DownloadOutcome> = self
            .jobs
            .finished
            .iter()
            .filter(|((u, _), _)| u == id)
            .map(|((_, h), o)| (h.clone(), o.clone()))
            .collect();
        let actions = next_actions(
            &current.value,
            &Observed {
                view: &self.seen.view,
                alive_missing_for: &missing,
                downloads_running: &running,
                downloads_finished: &finished,
                claimed: &claimed,
                orchestrator_version: baton_protocol::VERSION,
                successor: self.successors.started.get(id).map(|(_, state)| state),
                now: SystemTime::now(),
            },
            &self.config.limits,
        );
        if actions.is_empty() {
            return;
        }
        let (downloads, record): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Download { .. } | Action::StartSuccessor));
        if !record.is_empty() {
            let now = documents::now();
            let writer = self.writer();
            let committed = execute::commit(writer, &current, &record, &self.seen.view, &now).await;
            match committed {
                Ok(Some(c)) => {
                    Counters::inc(&self.counters.commits);
                    for a in &record {
                        tracing::info!(upgrade = %id, action = ?a, "committed");
                        match a {
                            Action::Record { host, .. } => {
                                self.jobs.finished.remove(&(id.clone(), host.clone()));
                            }
                            Action::HandOver { container } => {
                                self.successors.handed_over = Some(container.clone());
                            }
                            _ => {}
                        }
                    }
                    for (host, desired) in c.desired {
                        self.seen.view.wrote_desired(&host, desired, c.revision);
                    }
                    self.seen.view.wrote_upgrade(c.upgrade, c.revision);
                }
                Ok(None) => {
                    Counters::inc(&self.counters.conflicts);
                    tracing::debug!(upgrade = %id, "something changed since the read; deciding again");
                    return;
                }
                Err(error) => {
                    tracing::warn!(upgrade = %id, %error, "could not commit; retrying");
                    return;
                }
            }
        }
        for action in downloads {
            match action {
                Action::Download { host } => self.start_download(id, &current.value, host),
                Action::StartSuccessor => self.start_successor(&current.value),
                _ => {}
            }
        }
    }

    fn start_download(&mut self, id: &UpgradeId, upgrade: &Upgrade, host: HostId) {
        let key = (id.clone(), host.clone());
        if self.jobs.running.contains_key(&key) {
            return;
        }
        let Some(spec) = self
            .seen
            .view
            .hosts
            .get(&host)
            .and_then(|d| d.spec.as_ref())
            .map(|s| s.value.clone())
        else {
            self.jobs.finished.insert(
                key,
                DownloadOutcome::Failed("the host is no longer registered".to_owned()),
            );
            return;
        };
        let job = dispatch::Job {
            upgrade: id.clone(),
            host: spec,
            bundle: upgrade.bundle.clone(),
            agent_etcd: self.config.agent_etcd.clone(),
            prefix: self.etcd.keyspace.prefix().to_owned(),
            labels: self.config.job_labels.clone(),
            tls: self.config.agent_tls.clone(),
            timeout: self.config.job_timeout,
            attempts: self.config.job_attempts,
        };
        tracing::info!(upgrade = %id, %host, container = %job.container_name(), "starting the downloader job");
        Counters::inc(&self.counters.jobs_started);
        Counters::inc(&self.counters.jobs_running);
        let results = self.jobs.results.clone();
        let handle = self.tasks.spawn(async move {
            let outcome = dispatch::run(job).await;
            let _ = results.send((key, outcome));
        });
        self.jobs.running.insert((id.clone(), host), handle);
    }
}

/// Whether the Docker Engine at `endpoint` answers a ping.
async fn docker_answers(endpoint: &str) -> bool {
    let Ok(endpoint) = crate::docker::Endpoint::parse(endpoint) else {
        return false;
    };
    match endpoint.connect().await {
        Ok(docker) => docker.ping().await.is_ok(),
        Err(_) => false,
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Jobs abandoned by this leadership no longer run here.
        for _ in self.jobs.running.values() {
            Counters::dec(&self.counters.jobs_running);
        }
    }
}
