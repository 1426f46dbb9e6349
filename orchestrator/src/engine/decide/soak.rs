//! Soak (`Installing`, when the request asked for one): once every host of the lowest open
//! batch is done, the batch soaks for the request's length before its hosts are recorded
//! `Succeeded` and the next batch is dispatched. Meanwhile its hosts' agents re-run their
//! components' health checks (reported in `status.health`) and the engine checks the fleet
//! gates ([`GateState`]); an unhealthy host fails, a failing gate fails every host of the
//! batch — and the strategy's `max_failures` decides, as for any failure, whether the
//! upgrade halts.
//!
//! A revert soaks each reverted batch the same way ([`Decision::soak_batch`], used by
//! [`super::revert`]); a halt cuts a soak under way short.

use std::time::SystemTime;

use baton_protocol::documents::{HostHealth, HostOutcomeState as O, Timestamp};
use baton_protocol::{HostId, UpgradeId};

use super::install::judge;
use super::{Action, Decision};
use crate::engine::model::{GateState, HEALTH_REPORT_GRACE, Limits, Observed};

fn timestamp(t: SystemTime) -> Timestamp {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse(t: Option<&Timestamp>) -> Option<SystemTime> {
    humantime::parse_rfc3339(t?).ok()
}

impl Decision {
    /// Whether a done host waits for its batch's soak before it is recorded `Succeeded`.
    pub(super) fn soaks(&self) -> bool {
        self.u.soak.is_some()
    }

    /// The soak of batch `current` (the lowest with open hosts). `true` while it holds the
    /// upgrade: hosts of the batch still install, or the batch soaks (or just ended its
    /// soak: the next pass dispatches from the record as committed).
    pub(super) fn soaking(&mut self, o: &Observed<'_>, limits: &Limits, current: u32) -> bool {
        if !self.soaks() {
            return false;
        }
        let open: Vec<(HostId, O)> = self
            .u
            .hosts
            .iter()
            .filter(|(_, h)| h.batch.unwrap_or(0) == current && h.state.is_open())
            .map(|(id, h)| (id.clone(), h.state))
            .collect();
        if open.iter().any(|(_, s)| *s != O::Dispatched) {
            // Part of the batch is still to be dispatched.
            return false;
        }
        let done: Vec<HostId> = open
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| matches!(judge(&self.u, h, o, limits), Some((O::Succeeded, _))))
            .collect();
        if done.is_empty() || done.len() < self.dispatched_in(current) {
            return true;
        }
        let batch = Soaking {
            batch: current,
            label: format!("batch {current}"),
            work: self.u.id.clone(),
            done,
        };
        self.soak_batch(o, &batch, |host, outcome| match outcome {
            Ok(passed) => Action::Record {
                host,
                state: O::Succeeded,
                reason: passed,
            },
            Err(reason) => Action::Record {
                host,
                state: O::Failed,
                reason,
            },
        });
        true
    }

    /// One pass over the soak of `s`, a batch whose hosts are all done with their work (an
    /// install, or a revert): starts it; or, under way, ends it once a host is unhealthy or
    /// a gate fails (those hosts fail, as `outcome(host, Err(why))` records) or once it
    /// lasted its length with every check passing (each host's `outcome(host, Ok(note))`).
    pub(super) fn soak_batch(
        &mut self,
        o: &Observed<'_>,
        s: &Soaking,
        outcome: impl Fn(HostId, Result<String, String>) -> Action,
    ) {
        let Some(soak) = self.u.soak.clone() else {
            return;
        };
        let (current, label) = (s.batch, &s.label);
        if soak.batch != Some(current) {
            let until = o.now + soak.length();
            let gates = if soak.gates.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = soak.gates.iter().map(ToString::to_string).collect();
                format!(" and gates {}", names.join("; "))
            };
            self.push(Action::Soak {
                batch: Some(current),
                until: Some(timestamp(until)),
                note: format!(
                    "{label} done ({}): soaks {} until {}, its hosts' health checks{gates} must keep passing",
                    names(&s.done),
                    soak.duration,
                    timestamp(until)
                ),
            });
            return;
        }
        let until = parse(soak.until.as_ref()).unwrap_or(o.now);
        let gates = o
            .gates
            .filter(|g| g.batch == current && soak.since.as_deref() == Some(g.since.as_str()));
        let mut failed = Vec::new();
        for host in &s.done {
            let reason = match health(o, host, &s.work) {
                Some(h) if !h.healthy => {
                    Some(format!("unhealthy while {label} soaked: {}", h.message))
                }
                None if o.now >= until + HEALTH_REPORT_GRACE => Some(format!(
                    "its agent reported no re-run health checks within {}s of the soak's end",
                    HEALTH_REPORT_GRACE.as_secs()
                )),
                _ => gate_failure(gates).map(|f| format!("soak of {label} failed: gate {f}")),
            };
            if let Some(reason) = reason {
                failed.push(format!("{host}: {reason}"));
                self.push(outcome(host.clone(), Err(reason)));
            }
        }
        if !failed.is_empty() {
            self.push(Action::Soak {
                batch: None,
                until: None,
                note: format!("soak of {label} failed: {}", failed.join("; ")),
            });
            return;
        }
        let healthy = s
            .done
            .iter()
            .all(|h| health(o, h, &s.work).is_some_and(|h| h.healthy));
        let gates_passed =
            soak.gates.is_empty() || gates.and_then(|g| g.passed).is_some_and(|p| p >= until);
        if o.now < until || !healthy || !gates_passed {
            return;
        }
        let passed = if soak.gates.is_empty() {
            format!("soaked {}: health checks passing", soak.duration)
        } else {
            format!("soaked {}: health checks and gates passing", soak.duration)
        };
        for host in &s.done {
            self.push(outcome(host.clone(), Ok(passed.clone())));
        }
        self.push(Action::Soak {
            batch: None,
            until: None,
            note: format!("{label} ({}) {passed}", names(&s.done)),
        });
    }

    /// Ends the soak under way, if any (the upgrade halts: no batch soaks any more).
    pub(super) fn cut_soak_short(&mut self, why: &str) {
        if let Some(batch) = self.u.soak.as_ref().and_then(|s| s.batch) {
            self.push(Action::Soak {
                batch: None,
                until: None,
                note: format!("soak of batch {batch} cut short: {why}"),
            });
        }
    }

    fn dispatched_in(&self, batch: u32) -> usize {
        self.u
            .hosts
            .values()
            .filter(|h| h.batch.unwrap_or(0) == batch && h.state == O::Dispatched)
            .count()
    }
}

/// A batch whose hosts are all done with their work, soaking (or about to).
pub(super) struct Soaking {
    /// The batch.
    pub batch: u32,
    /// How events and reasons name it: `batch 1`, `revert of batch 1`.
    pub label: String,
    /// The work its hosts' agents report their re-run health checks under: the upgrade's
    /// id, or its revert's.
    pub work: UpgradeId,
    /// Its hosts.
    pub done: Vec<HostId>,
}

fn names(hosts: &[HostId]) -> String {
    hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The host's latest re-run health checks for `upgrade` (the work it is done with), as its agent reported them.
fn health<'a>(o: &'a Observed<'_>, host: &HostId, upgrade: &UpgradeId) -> Option<&'a HostHealth> {
    let status = &o.view.hosts.get(host)?.status.as_ref()?.value;
    if status.upgrade_id.as_ref() != Some(upgrade) {
        return None;
    }
    status.health.as_ref()
}

fn gate_failure(gates: Option<&GateState>) -> Option<&str> {
    gates.and_then(|g| g.failure.as_deref())
}
