//! `Reverting`: an upgrade whose request said `on_failure: revert` halted with hosts it had
//! changed. Nothing new is dispatched; every host it changed goes back to the bundle it ran
//! before (recorded per host when it was told to install), batch by batch from the last
//! batch reached down to the first:
//!
//! - a batch is reverted once none of its hosts is still installing (an in-flight host
//!   finishes, is judged, then reverted; a done host whose install soak the halt cut short
//!   counts as changed);
//! - each changed host's `desired` names its previous bundle by digest, under the revert's id
//!   ([`UpgradeId::revert`]) and with `allow_downgrade` set (the agent refuses an older
//!   bundle otherwise), with the signature its record verified, and names the upgrade it
//!   undoes (`reverts`: its agent finds the revert's soak in this record);
//! - its revert is judged like an install (status `Done` for the revert's id, agent alive;
//!   failed, rolled back, gone or stuck past the timeouts: `Failed`);
//! - with a `soak` in the request, a batch whose hosts are all back soaks like an installed
//!   one, with the same length and gates ([`Decision::soak_batch`]) — their agents re-run
//!   the health checks of the bundle they are back on, the engine checks the gates — and
//!   only then are its hosts recorded `Reverted` and the batch before it reverted;
//! - with no host left to revert: `Reverted`, or `Failed` naming the hosts that could not be.
//!
//! A failing revert soak: an unhealthy host's revert is recorded `Failed` (its batch's other
//! hosts soak afresh, as after a failure an install tolerates); a failing gate records the
//! revert of every host of the batch `Failed`. Either way the revert goes on with the batch
//! before, and the upgrade ends `Failed` naming those hosts and why. Stopping instead would
//! leave the fleet split across two versions, the very thing a revert is for; and the
//! batches below were already running the new version when the failure happened, so going
//! on puts no host in a state worse than the one it is in.
//!
//! A host changed is one told to install whose agent started on it — unless its agent rolled
//! it back by itself (status `RolledBack`: it already runs what it ran before).

use baton_protocol::documents::{
    HostOutcome, HostOutcomeState as O, HostStatus, OnFailure, RevertState, Upgrade,
};
use baton_protocol::{HostId, HostState, UpgradeId, UpgradePhase as P};

use super::install::settled;
use super::soak::Soaking;
use super::{Action, Decision};
use crate::engine::model::{Limits, Observed};

/// Where a host of the upgrade stands as far as a revert is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stand {
    /// Never started, or rolled back by its agent, or its revert ended: nothing to do.
    Untouched,
    /// Its install is still under way: wait for it.
    Installing,
    /// Changed, not reverted yet.
    Changed,
    /// Its revert is under way.
    Reverting,
}

impl Decision {
    /// The upgrade is reverting (or paused while reverting): it no longer halts.
    pub(super) fn reverting(&self) -> bool {
        self.u.reverting()
    }

    /// The phase a halt moves to: `Reverting` when the request asked for it and a host was
    /// changed (or is being changed), else `Failed`.
    pub(super) fn halt_phase(&self, o: &Observed<'_>) -> P {
        let touched = self.u.hosts.iter().any(|(id, h)| {
            matches!(
                stand(&self.u.id, id, h, o),
                Stand::Changed | Stand::Installing
            )
        });
        if self.u.on_failure == OnFailure::Revert && touched {
            P::Reverting
        } else {
            P::Failed
        }
    }

    /// Records how each host's revert under way ended, once it did.
    pub(super) fn judge_reverts(&mut self, o: &Observed<'_>, limits: &Limits) {
        let work = self.u.id.revert();
        let under_way: Vec<HostId> = self
            .u
            .hosts
            .iter()
            .filter(|(_, h)| {
                h.revert
                    .as_ref()
                    .is_some_and(|r| r.state == RevertState::Dispatched)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for host in under_way {
            let (state, reason) = match settled(&work, None, &host, o, limits) {
                None => continue,
                // Back, but its batch soaks first ([`Self::soak_revert`]).
                Some(Ok(_)) if self.soaks() => continue,
                Some(Ok(_)) => (RevertState::Reverted, String::new()),
                Some(Err(reason)) => (RevertState::Failed, reason),
            };
            self.push(Action::RecordRevert {
                host,
                state,
                reason,
            });
        }
    }

    /// Reverts the last batch with a changed host once none of its hosts is still
    /// installing, soaks it once its hosts are back (with a soak); ends the upgrade once no
    /// host is left to revert.
    pub(super) fn revert_batches(&mut self, o: &Observed<'_>, limits: &Limits) {
        // Chained hosts that started by themselves are judged like any dispatched host.
        let started: Vec<HostId> = self
            .u
            .hosts
            .iter()
            .filter(|(id, h)| h.state == O::Downloaded && status_for(&self.u.id, id, o).is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for host in started {
            self.push(Action::Dispatch {
                host,
                write_desired: false,
                previous: None,
            });
        }
        let stands: Vec<(HostId, u32, Stand)> = self
            .u
            .hosts
            .iter()
            .map(|(id, h)| {
                (
                    id.clone(),
                    h.batch.unwrap_or(0),
                    stand(&self.u.id, id, h, o),
                )
            })
            .filter(|(_, _, s)| *s != Stand::Untouched)
            .collect();
        let Some(current) = stands.iter().map(|(_, b, _)| *b).max() else {
            self.end_revert();
            return;
        };
        let batch: Vec<&(HostId, u32, Stand)> =
            stands.iter().filter(|(_, b, _)| *b == current).collect();
        if batch.iter().any(|(_, _, s)| *s == Stand::Installing) {
            return;
        }
        let hosts: Vec<HostId> = batch
            .iter()
            .filter(|(_, _, s)| *s == Stand::Changed)
            .map(|(id, _, _)| id.clone())
            .collect();
        if hosts.is_empty() {
            // Every host of the batch is being reverted.
            let reverting = batch.iter().map(|(id, _, _)| id.clone()).collect();
            self.soak_revert(o, limits, current, reverting);
            return;
        }
        let mut dispatched = false;
        for host in hosts.into_iter().take(limits.max_dispatch) {
            let previous = self.u.hosts.get(&host).and_then(|h| h.previous.clone());
            match previous {
                Some(to) => {
                    let signature = o
                        .view
                        .upgrades
                        .get(&to.upgrade)
                        .filter(|r| r.value.bundle == to.bundle)
                        .and_then(|r| r.value.signature.clone());
                    self.push(Action::Revert {
                        host,
                        to,
                        signature,
                    });
                    dispatched = true;
                }
                None => self.push(Action::RecordRevert {
                    host,
                    state: RevertState::Failed,
                    reason: "no record of the bundle it ran before".to_owned(),
                }),
            }
        }
        if !dispatched {
            // Nothing to wait for in this batch: on to the one before (or the end).
            self.revert_batches(o, limits);
        }
    }

    /// With a soak: once every host of batch `current` whose revert is under way
    /// (`reverting`) is back on its bundle, the batch soaks; when the soak ends, each host's
    /// revert is recorded `Reverted` or, having failed it, `Failed`.
    fn soak_revert(
        &mut self,
        o: &Observed<'_>,
        limits: &Limits,
        current: u32,
        reverting: Vec<HostId>,
    ) {
        if !self.soaks() {
            return;
        }
        let work = self.u.id.revert();
        let count = reverting.len();
        let back: Vec<HostId> = reverting
            .into_iter()
            .filter(|h| matches!(settled(&work, None, h, o, limits), Some(Ok(_))))
            .collect();
        if back.len() < count {
            // Other reverts of the batch are still under way.
            return;
        }
        let batch = Soaking {
            batch: current,
            label: format!("revert of batch {current}"),
            work,
            done: back,
        };
        self.soak_batch(o, &batch, |host, outcome| {
            let (state, reason) = match outcome {
                Ok(_) => (RevertState::Reverted, String::new()),
                Err(reason) => (RevertState::Failed, reason),
            };
            Action::RecordRevert {
                host,
                state,
                reason,
            }
        });
    }

    /// No host left to revert: `Reverted`, or `Failed` naming those that could not be.
    fn end_revert(&mut self) {
        let halted = self.u.reason.clone().unwrap_or_default();
        let mut reverted = Vec::new();
        let mut failed = Vec::new();
        for (id, h) in &self.u.hosts {
            match h.revert.as_ref().map(|r| (r.state, &r.reason)) {
                Some((RevertState::Reverted, _)) => reverted.push(id.to_string()),
                Some((RevertState::Failed, reason)) => failed.push(format!("{id}: {reason}")),
                _ => {}
            }
        }
        let (to, reason) = if failed.is_empty() {
            (
                P::Reverted,
                format!(
                    "{} host(s) back on the bundle they ran before ({}); {halted}",
                    reverted.len(),
                    reverted.join(", ")
                ),
            )
        } else {
            (
                P::Failed,
                format!(
                    "{} host(s) could not be reverted: {}; {halted}",
                    failed.len(),
                    failed.join("; ")
                ),
            )
        };
        self.push(Action::Phase {
            to,
            reason: Some(reason),
        });
    }
}

/// A reverting upgrade still holds a host it told to install until the host's revert ended:
/// the leader's own tasks (heal, restart, replace) leave it alone meanwhile.
pub fn holds_for_revert(u: &Upgrade, h: &HostOutcome) -> bool {
    u.reverting()
        && h.dispatched_at.is_some()
        && h.revert
            .as_ref()
            .is_none_or(|r| r.state == RevertState::Dispatched)
}

/// Where `host` (outcome `h` in upgrade `id`) stands for a revert.
fn stand(id: &UpgradeId, host: &HostId, h: &HostOutcome, o: &Observed<'_>) -> Stand {
    if let Some(r) = &h.revert {
        return match r.state {
            RevertState::Dispatched => Stand::Reverting,
            RevertState::Reverted | RevertState::Failed => Stand::Untouched,
        };
    }
    let status = status_for(id, host, o).map(|s| s.state);
    match h.state {
        O::Dispatched => Stand::Installing,
        _ if status == Some(HostState::RolledBack) => Stand::Untouched,
        O::Succeeded | O::Failed if h.dispatched_at.is_some() || status.is_some() => Stand::Changed,
        // A chained host that started before the orchestrator recorded it (recorded now).
        O::Downloaded if status.is_some() => Stand::Installing,
        _ => Stand::Untouched,
    }
}

/// The host's status, if it is about `work`.
fn status_for<'a>(work: &UpgradeId, host: &HostId, o: &Observed<'a>) -> Option<&'a HostStatus> {
    o.view
        .hosts
        .get(host)
        .and_then(|d| d.status.as_ref())
        .map(|s| &s.value)
        .filter(|s| s.upgrade_id.as_ref() == Some(work))
}
