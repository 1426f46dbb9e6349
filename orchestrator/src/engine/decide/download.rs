//! The first phases: `Pending` (and the self-update it may start) and `Downloading` —
//! downloader jobs started ahead of installs, lowest batch first, within the concurrency
//! limit shared by every record, their outcomes recorded, and hosts whose maintenance mode
//! is `paused` held or skipped before anything starts on them.

use baton_protocol::HostId;
use baton_protocol::UpgradePhase as P;
use baton_protocol::documents::{HostOutcomeState as O, MaintenanceMode};

use super::{Action, Decision};
use crate::engine::model::{DownloadOutcome, Limits, Observed, SuccessorState};

impl Decision {
    /// The bundle carries an orchestrator image of another version than the deciding one's.
    pub(super) fn self_update_due(&self, o: &Observed<'_>) -> bool {
        self.u.orchestrator.is_some() && o.orchestrator_version != self.u.version
    }

    /// Before anything else: the new orchestrator version is started, then handed the
    /// leadership; if it fails, so does the upgrade, with no host touched.
    pub(super) fn self_update(&mut self, o: &Observed<'_>) {
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

    pub(super) fn record_downloads(&mut self, o: &Observed<'_>) {
        for host in self.hosts_at(O::Pending) {
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
    pub(super) fn paused_hosts(&mut self, o: &Observed<'_>) {
        let not_dispatched = self
            .hosts_at(O::Pending)
            .into_iter()
            .chain(self.hosts_at(O::Downloaded))
            .filter(|h| !o.downloads_running.contains(h));
        for host in not_dispatched.collect::<Vec<_>>() {
            let paused = o.view.maintenance(&host) == MaintenanceMode::Paused;
            let held = self.is_held(&host);
            if paused && self.u.skip_paused {
                self.record(host, O::Skipped, "maintenance mode paused".to_owned());
            } else if paused != held {
                self.push(Action::Hold { host, held: paused });
            }
        }
    }

    /// `Downloading`: until no host of the batch next to install (every host, for a daisy
    /// chain) is still to be downloaded.
    pub(super) fn downloading(&mut self) {
        if self.next_batch_hosts(O::Pending).is_empty() {
            self.push(Action::Phase {
                to: P::UpdatingAgents,
                reason: None,
            });
        }
    }

    /// Downloads run ahead of installs: a job for each host still `Pending`, lowest batch
    /// first (so the first batch installs as soon as its own hosts are downloaded), while the
    /// jobs running for every record together (`download_concurrency`, shared with joins,
    /// heals and replaces) leave room.
    pub(super) fn start_downloads(&mut self, o: &Observed<'_>, limits: &Limits) {
        let mut pending: Vec<(u32, HostId)> = self
            .u
            .hosts
            .iter()
            .filter(|(_, h)| h.state == O::Pending)
            .map(|(id, h)| (h.batch.unwrap_or(0), id.clone()))
            .collect();
        let free = limits
            .download_concurrency
            .saturating_sub(o.downloads_running.len() + o.downloads_elsewhere);
        pending.sort();
        let start: Vec<HostId> = pending
            .into_iter()
            .map(|(_, h)| h)
            .filter(|h| !o.downloads_running.contains(h) && !o.downloads_finished.contains_key(h))
            .filter(|h| !o.claimed.contains(h))
            .take(free)
            .collect();
        for host in start {
            self.push(Action::Download { host });
        }
    }
}
