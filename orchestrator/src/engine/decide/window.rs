//! Maintenance windows (`Installing`): a host ready to be dispatched starts only while the
//! fleet's windows (if any) and its group's windows (if any) are open; the others wait, and
//! the record says until when (`waiting_for_window`). A host already dispatched finishes
//! whatever the clock says. Operators' own tasks (restart, replace) and heals are not held:
//! only upgrades and the joins that follow them are.

use baton_protocol::HostId;
use baton_protocol::documents::{Rule, TaskKind, Timestamp, Windows, next_allowed, rules};
use baton_protocol::etcd::Versioned;

use super::{Action, Decision};
use crate::engine::model::Observed;
use crate::view::FleetView;

/// The rules of a stored set of windows. One this build cannot read (an unknown time zone)
/// is never open: nothing is started on a guess.
fn stored(doc: Option<&Versioned<Windows>>) -> Option<Vec<Rule>> {
    let doc = doc?;
    match rules(&doc.value.windows) {
        Ok(rules) => Some(rules),
        Err(error) => {
            tracing::warn!(%error, "maintenance windows unreadable: treated as closed");
            Some(Vec::new())
        }
    }
}

/// Every set of windows that applies to `host` (the fleet's, its group's); a set that is
/// empty after reading is one that never opens.
fn sets_for(view: &FleetView, host: &HostId) -> Vec<Option<Vec<Rule>>> {
    let group = view.hosts.get(host).and_then(|d| d.group());
    vec![
        stored(view.fleet_windows.as_ref()),
        group.and_then(|g| stored(view.group_windows.get(&g))),
    ]
}

/// When `host` may next start, from `now` (`now` itself: it may now; `None`: not within a
/// week).
fn next_start(view: &FleetView, host: &HostId, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let sets = sets_for(view, host);
    if sets.iter().flatten().any(Vec::is_empty) {
        return None;
    }
    let sets: Vec<&[Rule]> = sets.iter().flatten().map(Vec::as_slice).collect();
    next_allowed(&sets, now)
}

fn timestamp(t: jiff::Timestamp) -> Timestamp {
    humantime::format_rfc3339_millis(std::time::SystemTime::from(t)).to_string()
}

impl Decision {
    /// The hosts of `ready` whose windows are open now; records (or ends) the wait of the
    /// others.
    pub(super) fn in_window(&mut self, o: &Observed<'_>, ready: Vec<HostId>) -> Vec<HostId> {
        let windowed = self
            .u
            .task
            .as_ref()
            .is_none_or(|t| t.kind == TaskKind::Join);
        let Ok(now) = jiff::Timestamp::try_from(o.now) else {
            return ready;
        };
        if !windowed {
            return ready;
        }
        let mut open = Vec::new();
        let mut next: Option<Option<jiff::Timestamp>> = None;
        for host in ready {
            match next_start(o.view, &host, now) {
                Some(t) if t <= now => open.push(host),
                later => {
                    // The earliest opening among the waiting hosts (`None` beats nothing).
                    next = Some(match (next.flatten(), later) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    });
                }
            }
        }
        let waiting = next.is_some();
        let next_opening = next.flatten().map(timestamp);
        let recorded = self.u.waiting_for_window.as_ref();
        let changed = match recorded {
            None => waiting,
            Some(w) => !waiting || w.next_opening != next_opening,
        };
        if changed {
            self.push(Action::WindowWait {
                waiting,
                next_opening,
            });
        }
        open
    }
}
