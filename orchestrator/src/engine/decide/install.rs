//! `Installing`: batch by batch, `desired` written for the hosts of the lowest unfinished
//! batch (a daisy chain's later hosts told up front whom they follow), dispatched hosts judged from their status and
//! liveness, and the pause after the canaries.

use baton_protocol::documents::{
    HostOutcomeState as O, HostStatus, OnFailure, PreviousBundle, Strategy, TaskKind, Upgrade,
};
use baton_protocol::{HostId, HostState, UpgradeId, UpgradePhase as P};

use super::{Action, Decision, canaries_done};
use crate::engine::model::{Limits, Observed};
use crate::engine::tasks::previous_bundle;

impl Decision {
    pub(super) fn judge_dispatched(&mut self, o: &Observed<'_>, limits: &Limits) {
        for host in self.hosts_in(O::Dispatched) {
            match judge(&self.u, &host, o, limits) {
                // Done, but its batch soaks first (`soak`) — unless a halt cut the soak
                // short: a revert then counts it changed.
                Some((O::Succeeded, _)) if self.soaks() && !self.reverting() => {}
                Some((state, reason)) => self.record(host, state, reason),
                None => {}
            }
        }
    }

    pub(super) fn installing(&mut self, o: &Observed<'_>, limits: &Limits) {
        let Some(current) = self.current_batch() else {
            self.finish();
            return;
        };
        if self.soaking(o, limits, current) {
            return;
        }
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
        if self.next_batch_waits(o) {
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
        let ready = self.in_window(o, ready);
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
        for host in ready.into_iter().take(limits.max_dispatch) {
            let told = self.told(o, &host);
            // A chained host's bundle was recorded when it was told: it may run this one now.
            let previous = if told {
                None
            } else {
                self.previous_bundle(o, &host)
            };
            self.push(Action::Dispatch {
                host,
                write_desired: !told,
                previous,
            });
        }
        if matches!(self.u.strategy, Strategy::DaisyChain) {
            self.chain(o, current);
        }
    }

    /// The bundle a host told now runs, kept for a revert: only an upgrade that may revert
    /// records it (the record grows by it for every host).
    fn previous_bundle(&self, o: &Observed<'_>, host: &HostId) -> Option<PreviousBundle> {
        (self.u.on_failure == OnFailure::Revert)
            .then(|| previous_bundle(o.view, host))
            .flatten()
    }

    /// The host's `desired` already names this upgrade.
    fn told(&self, o: &Observed<'_>, host: &HostId) -> bool {
        o.view
            .hosts
            .get(host)
            .and_then(|d| d.desired.as_ref())
            .is_some_and(|d| d.value.upgrade_id == self.u.id)
    }

    /// Daisy chain: every later host still waiting (`Downloaded`, not held or claimed) and
    /// not yet told is told now whom it follows: the host before it in (batch, id) order
    /// among those dispatched, done or waiting. Written in the same transaction as the first
    /// dispatch, so the chain needs no orchestrator after it.
    fn chain(&mut self, o: &Observed<'_>, current: u32) {
        let mut order: Vec<(u32, HostId, O)> = self
            .u
            .hosts
            .iter()
            .filter(|(id, h)| {
                matches!(h.state, O::Downloaded | O::Dispatched | O::Succeeded)
                    && !o.claimed.contains(*id)
            })
            .map(|(id, h)| (h.batch.unwrap_or(0), id.clone(), h.state))
            .collect();
        order.sort();
        for pair in order.windows(2) {
            let ((_, after, _), (batch, host, state)) = (&pair[0], &pair[1]);
            if *state == O::Downloaded && *batch > current && !self.told(o, host) {
                self.push(Action::Chain {
                    host: host.clone(),
                    after: after.clone(),
                    previous: self.previous_bundle(o, host),
                });
            }
        }
    }

    pub(super) fn canary_pause_due(&self, current: u32) -> bool {
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
}

/// A dispatched host's outcome, once there is one.
pub(super) fn judge(
    u: &Upgrade,
    host: &HostId,
    o: &Observed<'_>,
    limits: &Limits,
) -> Option<(O, String)> {
    match settled(&u.id, u.agent_version.as_deref(), host, o, limits)? {
        Ok(reported) => Some((O::Succeeded, resumed(u, host, reported))),
        Err(reason) => Some((O::Failed, reason)),
    }
}

/// How the work `work` (an upgrade's id, or its revert's) ended on a host told to do it,
/// once it did: `Ok` with what the agent reported when its status is `Done` for it and its
/// agent is alive (on `agent_version`, when given); `Err` with why it failed — its status
/// `Failed`/`RolledBack`, its `alive` away longer than `health_timeout`, or no progress for
/// `install_timeout`.
pub(super) fn settled<'a>(
    work: &UpgradeId,
    agent_version: Option<&str>,
    host: &HostId,
    o: &Observed<'a>,
    limits: &Limits,
) -> Option<Result<Option<&'a str>, String>> {
    let docs = o.view.hosts.get(host);
    let status = docs
        .and_then(|d| d.status.as_ref())
        .map(|s| &s.value)
        .filter(|s| s.upgrade_id.as_ref() == Some(work));
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
            Some(a) if agent_version.is_none_or(|v| v == a.agent_version) => Some(Ok(status
                .map(|s| s.message.as_str())
                .filter(|m| !m.is_empty()))),
            Some(a) => Some(Err(format!(
                "reported Done but its agent reports {}, not {}",
                a.agent_version,
                agent_version.unwrap_or("?")
            ))),
            None => gone_for.map(|d| {
                Err(format!(
                    "reported Done but its agent has not been alive for {}s",
                    d.as_secs()
                ))
            }),
        },
        Some(s) if s.is_failure() => {
            let message = status.map(|s| s.message.as_str()).unwrap_or_default();
            Some(Err(format!("{s}: {message}")))
        }
        // Alive, but no change of `desired` or `status` for too long: no silent hang.
        _ if alive.is_some() => o
            .unchanged_for
            .get(host)
            .copied()
            .filter(|d| *d >= limits.install_timeout)
            .map(|d| {
                Err(format!(
                    "agent alive but no progress for {}s {}; install timeout {}s",
                    d.as_secs(),
                    doing(status),
                    limits.install_timeout.as_secs()
                ))
            }),
        _ => gone_for.map(|d| {
            Err(format!(
                "agent not alive for {}s {}; health timeout {}s",
                d.as_secs(),
                doing(status),
                limits.health_timeout.as_secs()
            ))
        }),
    }
}

/// What a host was doing, for a failure reason: `while Updating (apply service x)`.
fn doing(status: Option<&HostStatus>) -> String {
    match status {
        Some(s) => format!(
            "while {}{}",
            s.state,
            s.step
                .as_deref()
                .map(|st| format!(" ({st})"))
                .unwrap_or_default()
        ),
        None => "before it started".to_owned(),
    }
}

/// The note on a host's success: for a restart task, that the host resumed (after the
/// reboot, or after its managed services were restarted), with what its agent reported —
/// the `host-succeeded` event of the task is its resume event. Empty otherwise.
fn resumed(u: &Upgrade, host: &HostId, reported: Option<&str>) -> String {
    let Some(task) = u.task.as_ref().filter(|t| t.kind == TaskKind::Restart) else {
        return String::new();
    };
    let after = if task.reboot {
        "the reboot"
    } else {
        "its managed services were restarted"
    };
    match reported {
        Some(reported) => format!("{host} resumed after {after}; agent: {reported}"),
        None => format!("{host} resumed after {after}"),
    }
}
