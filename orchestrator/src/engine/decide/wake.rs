//! When an upgrade must be decided again although nothing in etcd changes: the earliest of
//! its clocks — `UpdatingAgents`' agent timeout, each dispatched host's (or revert's) health
//! and install timeouts, the soak's end and then its report grace, and the opening of the
//! maintenance windows waited for. Everything else a decision depends on is a change the
//! engine sees (a watch, a job, a probe, a gate round), so the engine keeps these times in a
//! deadline queue and its clock decides only the upgrades that are due.

use std::time::Duration;

use baton_protocol::UpgradePhase as P;
use baton_protocol::documents::{HostOutcomeState as O, RevertState, Upgrade};

use super::age;
use crate::engine::model::{HEALTH_REPORT_GRACE, Limits, Observed};

/// How long until `upgrade` may need another decision with nothing changed (`None`: not
/// before something changes). Errs early rather than late: an early decision finds nothing
/// to do, a late one misses a timeout.
pub fn wake_after(upgrade: &Upgrade, o: &Observed<'_>, limits: &Limits) -> Option<Duration> {
    if upgrade.phase.is_terminal() {
        return None;
    }
    let mut earliest: Option<Duration> = None;
    let mut at = |d: Duration| earliest = Some(earliest.map_or(d, |e| e.min(d)));
    if upgrade.phase == P::UpdatingAgents {
        at(limits
            .agent_timeout
            .saturating_sub(age(upgrade.phase_since.as_ref(), o.now)));
    }
    if let Some(until) = upgrade
        .soak
        .as_ref()
        .and_then(|s| s.until.as_ref())
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    {
        // The soak ends, then its hosts' health reports are overdue.
        for end in [until, until + HEALTH_REPORT_GRACE] {
            if let Ok(d) = end.duration_since(o.now) {
                at(d);
                break;
            }
        }
    }
    if let Some(opening) = upgrade
        .waiting_for_window
        .as_ref()
        .and_then(|w| w.next_opening.as_ref())
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    {
        at(opening.duration_since(o.now).unwrap_or_default());
    }
    let told = upgrade.hosts.iter().filter(|(_, h)| {
        h.state == O::Dispatched
            || h.revert
                .as_ref()
                .is_some_and(|r| r.state == RevertState::Dispatched)
    });
    for (host, _) in told {
        let alive = o.view.hosts.get(host).is_some_and(|d| d.alive.is_some());
        let (limit, for_) = if alive {
            (limits.install_timeout, o.unchanged_for.get(host))
        } else {
            (limits.health_timeout, o.alive_missing_for.get(host))
        };
        at(limit.saturating_sub(for_.copied().unwrap_or_default()));
    }
    earliest
}
