//! The upgrade engine, run by the leader only: keeps a view of etcd current with three
//! prefix watches (`hosts/` — one watch for the whole fleet —, `groups/`, `upgrades/`),
//! and after every change, every finished downloader job and every second (for timeouts)
//! decides with [`decide::next_actions`] for each upgrade in progress and commits the
//! decision with [`execute::commit`]. Everything it knows comes from etcd, so a new leader
//! continues where the last one stopped.
//!
//! - [`decide`]: the pure decision function and its table tests;
//! - [`execute`]: one guarded transaction per pass (record, `desired` keys, events, `active`);
//! - [`downloader`]: the downloader job on a host, through the host's Docker Engine.

pub mod decide;
pub mod downloader;
pub mod execute;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use baton_protocol::documents::{self, Upgrade};
use baton_protocol::etcd::{Client, ResumableWatch, WatchUpdate};
use baton_protocol::{HostId, Keyspace, UpgradeId};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::engine::decide::{Action, DownloadOutcome, Limits, Observed, next_actions};
use crate::metrics::Counters;
use crate::store;
use crate::view::{FleetView, Part};

/// How often the engine re-decides without a change (timeouts).
const TICK: Duration = Duration::from_secs(1);
/// Pause after a watch fails before it is retried.
const WATCH_RETRY: Duration = Duration::from_secs(1);

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
}

type JobKey = (UpgradeId, HostId);

/// The engine's state under one leadership.
struct Engine {
    client: Client,
    keyspace: Keyspace,
    leadership_key: String,
    config: EngineConfig,
    counters: Arc<Counters>,
    view: FleetView,
    loaded: BTreeSet<Part>,
    missing_since: BTreeMap<HostId, Instant>,
    running: BTreeMap<JobKey, AbortHandle>,
    finished: BTreeMap<JobKey, DownloadOutcome>,
    tasks: JoinSet<()>,
    results: mpsc::UnboundedSender<(JobKey, DownloadOutcome)>,
}

/// Runs the engine until the future is dropped (leadership lost or shutdown). Dropping it
/// stops the watches and abandons running downloader jobs: their containers go on, and the
/// next leader waits for them by name.
pub async fn run(
    client: Client,
    keyspace: Keyspace,
    leadership_key: String,
    config: EngineConfig,
    counters: Arc<Counters>,
) {
    let (watch_tx, mut watch_rx) = mpsc::channel::<(Part, WatchUpdate)>(64);
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let mut engine = Engine {
        client: client.clone(),
        keyspace: keyspace.clone(),
        leadership_key,
        config,
        counters,
        view: FleetView::default(),
        loaded: BTreeSet::new(),
        missing_since: BTreeMap::new(),
        running: BTreeMap::new(),
        finished: BTreeMap::new(),
        tasks: JoinSet::new(),
        results: results_tx,
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
                engine.running.remove(&key);
                Counters::dec(&engine.counters.jobs_running);
                engine.finished.insert(key, outcome);
            }
            _ = tick.tick() => {}
        }
        while engine.tasks.try_join_next().is_some() {}
        if engine.loaded.len() < 3 {
            continue;
        }
        if !cleaned_active {
            cleaned_active = engine.clean_active().await;
        }
        engine.pass().await;
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
    async fn on_watch(&mut self, part: Part, update: WatchUpdate) {
        match update {
            // The watch's snapshot carries no per-key revisions, which guards need: read the
            // part again (one range read, at start and after a compaction).
            WatchUpdate::Snapshot { .. } => {
                Counters::inc(&self.counters.reads);
                match store::read_prefix(&self.client, &part.prefix(&self.keyspace)).await {
                    Ok((kvs, revision)) => {
                        self.view.load(&self.keyspace, part, &kvs, revision);
                        self.loaded.insert(part);
                    }
                    Err(error) => {
                        tracing::warn!(?part, %error, "could not read; waiting for the watch to resync");
                        self.loaded.remove(&part);
                    }
                }
            }
            WatchUpdate::Changes(changes) => {
                for c in changes {
                    Counters::inc(&self.counters.watch_events);
                    self.view.change(
                        &self.keyspace,
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
        let active = match store::read_active(&self.client, &self.keyspace).await {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "could not read the active key");
                return false;
            }
        };
        let Some(active) = active else { return true };
        let live = self
            .view
            .upgrades
            .get(&active.value.upgrade_id)
            .is_some_and(|u| !u.value.phase.is_terminal());
        if live {
            return true;
        }
        let key = self.keyspace.active();
        let written = store::commit(
            &self.client,
            &key,
            vec![
                store::fence(&self.leadership_key),
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

    /// How long each host of `upgrade` has been without an `alive` key, as seen by this
    /// replica (a new leader starts counting afresh: it only ever waits longer).
    fn alive_missing_for(&mut self, upgrade: &Upgrade, now: Instant) -> BTreeMap<HostId, Duration> {
        let mut out = BTreeMap::new();
        for host in upgrade.hosts.keys() {
            let alive = self.view.hosts.get(host).is_some_and(|d| d.alive.is_some());
            if alive {
                self.missing_since.remove(host);
            } else {
                let since = *self.missing_since.entry(host.clone()).or_insert(now);
                out.insert(host.clone(), now.duration_since(since));
            }
        }
        out
    }

    async fn pass(&mut self) {
        let in_progress: Vec<UpgradeId> = self
            .view
            .upgrades
            .values()
            .filter(|u| !u.value.phase.is_terminal())
            .map(|u| u.value.id.clone())
            .collect();
        for id in in_progress {
            self.decide_and_commit(&id).await;
        }
        // Outcomes of jobs for upgrades that are over are of no use any more.
        let view = &self.view;
        self.finished.retain(|(u, _), _| {
            view.upgrades
                .get(u)
                .is_some_and(|u| !u.value.phase.is_terminal())
        });
    }

    async fn decide_and_commit(&mut self, id: &UpgradeId) {
        let Some(current) = self.view.upgrades.get(id).cloned() else {
            return;
        };
        let missing = self.alive_missing_for(&current.value, Instant::now());
        let running: BTreeSet<HostId> = self
            .running
            .keys()
            .filter(|(u, _)| u == id)
            .map(|(_, h)| h.clone())
            .collect();
        let finished: BTreeMap<HostId, DownloadOutcome> = self
            .finished
            .iter()
            .filter(|((u, _), _)| u == id)
            .map(|((_, h), o)| (h.clone(), o.clone()))
            .collect();
        let actions = next_actions(
            &current.value,
            &Observed {
                view: &self.view,
                alive_missing_for: &missing,
                downloads_running: &running,
                downloads_finished: &finished,
                now: SystemTime::now(),
            },
            &self.config.limits,
        );
        if actions.is_empty() {
            return;
        }
        let (downloads, record): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Download { .. }));
        if !record.is_empty() {
            let now = documents::now();
            let writer = execute::Writer {
                client: &self.client,
                keyspace: &self.keyspace,
                leadership_key: &self.leadership_key,
                counters: &self.counters,
            };
            let committed = execute::commit(writer, &current, &record, &self.view, &now).await;
            match committed {
                Ok(Some(c)) => {
                    Counters::inc(&self.counters.commits);
                    for a in &record {
                        tracing::info!(upgrade = %id, action = ?a, "committed");
                        if let Action::Record { host, .. } = a {
                            self.finished.remove(&(id.clone(), host.clone()));
                        }
                    }
                    for (host, desired) in c.desired {
                        self.view.wrote_desired(&host, desired, c.revision);
                    }
                    self.view.wrote_upgrade(c.upgrade, c.revision);
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
            if let Action::Download { host } = action {
                self.start_download(id, &current.value, host);
            }
        }
    }

    fn start_download(&mut self, id: &UpgradeId, upgrade: &Upgrade, host: HostId) {
        let key = (id.clone(), host.clone());
        if self.running.contains_key(&key) {
            return;
        }
        let Some(spec) = self
            .view
            .hosts
            .get(&host)
            .and_then(|d| d.spec.as_ref())
            .map(|s| s.value.clone())
        else {
            self.finished.insert(
                key,
                DownloadOutcome::Failed("the host is no longer registered".to_owned()),
            );
            return;
        };
        let job = downloader::Job {
            upgrade: id.clone(),
            host: spec,
            bundle: upgrade.bundle.clone(),
            agent_etcd: self.config.agent_etcd.clone(),
            prefix: self.keyspace.prefix().to_owned(),
            labels: self.config.job_labels.clone(),
            tls: self.config.agent_tls.clone(),
            timeout: self.config.job_timeout,
            attempts: self.config.job_attempts,
        };
        tracing::info!(upgrade = %id, %host, container = %job.container_name(), "starting the downloader job");
        Counters::inc(&self.counters.jobs_started);
        Counters::inc(&self.counters.jobs_running);
        let results = self.results.clone();
        let handle = self.tasks.spawn(async move {
            let outcome = downloader::run(job).await;
            let _ = results.send((key, outcome));
        });
        self.running.insert((id.clone(), host), handle);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Jobs abandoned by this leadership no longer run here.
        for _ in self.running.values() {
            Counters::dec(&self.counters.jobs_running);
        }
    }
}
