//! Carrying out what the leader takes on by itself ([`super::tasks`]): creating task
//! records, clearing the maintenance modes they carried out, and probing hosts' Docker
//! Engines (in the background) for autohealing.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use baton_protocol::documents::{self, Maintenance};
use baton_protocol::etcd::Versioned;
use baton_protocol::{HostId, HostKey, UpgradeId, UpgradePhase};

use super::decide::Action;
use super::tasks::{FleetObserved, JOIN_PREEMPTED, TaskAction, next_tasks};
use super::{Engine, PROBE_FRESH, PROBE_TIMEOUT, execute};
use crate::metrics::Counters;

impl Engine {
    /// Decides and carries out what the leader takes on by itself ([`tasks`]).
    pub(super) async fn tasks_pass(&mut self) {
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

    pub(super) async fn carry_out(&mut self, action: TaskAction) {
        let now = documents::now();
        let writer = self.writer();
        match action {
            TaskAction::Probe { host } => self.probe(host),
            TaskAction::Preempt { record } => {
                let Some(current) = self.seen.view.upgrades.get(&record).cloned() else {
                    return;
                };
                let abort = [Action::Phase {
                    to: UpgradePhase::Aborted,
                    reason: Some(JOIN_PREEMPTED.to_owned()),
                }];
                match execute::commit(writer, &current, &abort, &self.seen.view, &now).await {
                    Ok(Some(c)) => {
                        Counters::inc(&self.counters.commits);
                        tracing::info!(task = %record, "join aborted: an operator's upgrade started");
                        self.wrote_record(c.upgrade, c.revision);
                    }
                    Ok(None) => Counters::inc(&self.counters.conflicts),
                    Err(error) => {
                        tracing::warn!(task = %record, %error, "could not abort a join; retrying");
                    }
                }
            }
            TaskAction::Create { upgrade, message } => {
                match execute::create_task(writer, &upgrade, &message, &now).await {
                    Ok(Some((record, revision))) => {
                        Counters::inc(&self.counters.commits);
                        tracing::info!(task = %record.id, %message, "task created");
                        self.wrote_record(record, revision);
                    }
                    Ok(None) => {
                        Counters::inc(&self.counters.conflicts);
                        tracing::debug!(task = %upgrade.id, "task not created (id taken, an upgrade active, or leadership lost)");
                    }
                    Err(error) => {
                        tracing::warn!(task = %upgrade.id, %error, "could not create a task; retrying");
                    }
                }
            }
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
    pub(super) async fn clear(
        &mut self,
        key: &str,
        read_at: i64,
        record: &UpgradeId,
        message: &str,
    ) -> Option<Versioned<Maintenance>> {
        let current = self.seen.view.upgrades.get(record)?.clone();
        let layout = self.seen.view.layout(record);
        let now = documents::now();
        let writer = self.writer();
        match execute::clear_maintenance(writer, key, read_at, &current, layout, message, &now)
            .await
        {
            Ok(Some((upgrade, cleared, revision))) => {
                Counters::inc(&self.counters.commits);
                tracing::info!(%key, task = %record, %message, "maintenance mode cleared");
                self.wrote_record(upgrade, revision);
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
    pub(super) fn probe(&mut self, host: HostId) {
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
        let tcp = self.config.docker_tcp.clone();
        self.tasks.spawn(async move {
            let answers = tokio::time::timeout(PROBE_TIMEOUT, docker_answers(&endpoint, &tcp))
                .await
                .unwrap_or(false);
            tracing::debug!(%host, %endpoint, answers, "docker probe");
            let _ = results.send((host, answers));
        });
    }
}

/// Whether the Docker Engine at `endpoint` answers a ping.
async fn docker_answers(endpoint: &str, tcp: &crate::docker::TcpAccess) -> bool {
    let Ok(endpoint) = crate::docker::Endpoint::parse(endpoint) else {
        return false;
    };
    match endpoint.connect(tcp).await {
        Ok(docker) => docker.ping().await.is_ok(),
        Err(_) => false,
    }
}
