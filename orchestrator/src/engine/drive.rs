//! Driving the upgrades in progress: each pass decides ([`super::decide`]) and commits
//! ([`super::execute`], a transaction per [`execute::chunks`] slice) per upgrade, then
//! starts the downloader jobs ([`super::dispatch`]) and self-updates
//! ([`super::successor`]) the decisions ask for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use baton_protocol::documents::{self, TaskKind, Upgrade};
use baton_protocol::{HostId, UpgradeId};

use super::decide::{Action, claimed_by_tasks, next_actions, wake_after};
use super::model::{DownloadOutcome, Observed, SuccessorState};
use super::successor::{self, Successor};
use super::tasks::operator_upgrade_in_progress;
use super::{Engine, JobKey, REDECIDE_EVERY, TICK, dispatch, execute};
use crate::metrics::Counters;

impl Engine {
    /// A new orchestrator version that got ready after its upgrade ended (aborted while it
    /// started) is not handed anything: it is stopped.
    pub(super) fn drop_unwanted_successors(&mut self) {
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
    pub(super) fn start_successor(&mut self, upgrade: &Upgrade) {
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

    pub(super) async fn decide_and_commit(&mut self, id: &UpgradeId) {
        let Some(current) = self.seen.view.upgrades.get(id).cloned() else {
            return;
        };
        let clock = Instant::now();
        Counters::inc(&self.counters.decisions);
        Counters::add(&self.counters.hosts_visited, current.value.hosts.len());
        let missing = self.alive_missing_for(clock);
        let unchanged = self
            .seen
            .progress
            .unchanged_for(current.value.hosts.keys(), clock);
        let mut claimed = claimed_by_tasks(&self.seen.view, id);
        let (running, elsewhere): (Vec<&JobKey>, Vec<&JobKey>) =
            self.jobs.running.keys().partition(|(u, _)| u == id);
        // One downloader job on a host at a time: another record's running job holds it.
        claimed.extend(elsewhere.iter().map(|(_, h)| h.clone()));
        // A join starts nothing while an operator's upgrade is in progress (it is aborted
        // unless it told its host already: `tasks`).
        let is_join = current
            .value
            .task
            .as_ref()
            .is_some_and(|t| t.kind == TaskKind::Join);
        if is_join && operator_upgrade_in_progress(&self.seen.view) {
            claimed.extend(current.value.hosts.keys().cloned());
        }
        let running: BTreeSet<HostId> = running.into_iter().map(|(_, h)| h.clone()).collect();
        let finished: BTreeMap<HostId, DownloadOutcome> = self
            .jobs
            .finished
            .iter()
            .filter(|((u, _), _)| u == id)
            .map(|((_, h), o)| (h.clone(), o.clone()))
            .collect();
        let observed = Observed {
            view: &self.seen.view,
            alive_missing_for: &missing,
            unchanged_for: &unchanged,
            downloads_running: &running,
            downloads_elsewhere: elsewhere.len(),
            downloads_finished: &finished,
            claimed: &claimed,
            orchestrator_version: crate::VERSION,
            successor: self.successors.started.get(id).map(|(_, state)| state),
            gates: self.gate_rounds.states.get(id),
            now: SystemTime::now(),
        };
        let actions = next_actions(&current.value, &observed, &self.config.limits);
        // Decided again when its clocks say, or by the backstop at the latest.
        let wake = wake_after(&current.value, &observed, &self.config.limits)
            .map_or(REDECIDE_EVERY, |w| w.clamp(TICK, REDECIDE_EVERY));
        self.deadlines.set(id, Some(clock + wake));
        if actions.is_empty() {
            return;
        }
        let (downloads, record): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Download { .. } | Action::StartSuccessor));
        for chunk in execute::chunks(&record) {
            // Each transaction is decided on the record as the one before left it.
            let Some(current) = self.seen.view.upgrades.get(id).cloned() else {
                return;
            };
            let now = documents::now();
            let writer = self.writer();
            let committed = execute::commit(writer, &current, chunk, &self.seen.view, &now).await;
            match committed {
                Ok(Some(c)) => {
                    Counters::inc(&self.counters.commits);
                    for a in chunk {
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
                    self.wrote_record(c.upgrade, c.revision);
                }
                Ok(None) => {
                    // The change that made the guard fail marks it again; the clock too, in
                    // case that change was this leadership's fence.
                    Counters::inc(&self.counters.conflicts);
                    tracing::debug!(upgrade = %id, "something changed since the read; deciding again");
                    self.deadlines.set(id, Some(Instant::now() + TICK));
                    return;
                }
                Err(error) => {
                    tracing::warn!(upgrade = %id, %error, "could not commit; retrying");
                    self.deadlines.set(id, Some(Instant::now() + TICK));
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

    pub(super) fn start_download(&mut self, id: &UpgradeId, upgrade: &Upgrade, host: HostId) {
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
            // Recorded by the upgrade's next decision.
            self.marks.records.insert(id.clone());
            return;
        };
        let job = dispatch::Job {
            upgrade: id.clone(),
            host: spec,
            bundle: upgrade.bundle.clone(),
            signature: upgrade.signature.clone(),
            agent_etcd: self.config.agent_etcd.clone(),
            prefix: self.etcd.keyspace.prefix().to_owned(),
            labels: self.config.job_labels.clone(),
            tls: self.config.agent_tls.clone(),
            install: self.config.agent_install.clone(),
            docker_tcp: self.config.docker_tcp.clone(),
            timeout: self.config.job_timeout,
            attempts: self.config.job_attempts,
            identities: self.config.identities.clone(),
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
