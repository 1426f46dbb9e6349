//! What changed since the engine's last pass, and when each upgrade in progress is due
//! again by the clock: a pass decides only the upgrades a change touched or whose deadline
//! came, and looks at the hosts whose documents changed, not at the fleet.
//!
//! A change marks, in [`Marks`]:
//! - a host's document: that host (its tracking), hence the upgrades in progress naming it;
//!   a host's registration or maintenance mode, or its `installed` while no operator upgrade
//!   runs, also the leader's own tasks ([`super::tasks`]);
//! - an upgrade's record or one of its hosts' outcomes: that upgrade; a record created,
//!   removed or changing phase, or any task record's change, every upgrade in progress
//!   (they share the download slots and hosts held by tasks) and the tasks;
//! - a part read again (a new leadership, a watch resumed after a compaction), a group's
//!   maintenance, a window: everything (a full recomputation, as level-triggering wants).
//!
//! [`Deadlines`] keeps, per upgrade in progress, when it must be decided again with nothing
//! changed ([`super::decide::wake_after`]): the clock decides those only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use baton_protocol::{HostId, UpgradeId};

use crate::view::FleetView;

/// Changes not looked at yet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Marks {
    /// Decide everything and track every host again.
    pub everything: bool,
    /// Decide every upgrade in progress and track their hosts again (the set of records in
    /// progress, or what they share, changed).
    pub every_record: bool,
    /// Upgrades whose record or hosts' outcomes changed (or whose job, self-update or gate
    /// round reported).
    pub records: BTreeSet<UpgradeId>,
    /// Hosts with a changed document.
    pub hosts: BTreeSet<HostId>,
    /// The leader's own tasks need a look.
    pub tasks: bool,
}

impl Marks {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The upgrades in progress a pass decides: every one after a mark of them all, else those
/// marked, those naming a marked host, and those `due`.
pub fn to_decide(view: &FleetView, marks: &Marks, due: &[UpgradeId]) -> Vec<UpgradeId> {
    view.upgrades
        .values()
        .map(|u| &u.value)
        .filter(|u| !u.phase.is_terminal())
        .filter(|u| {
            marks.everything
                || marks.every_record
                || marks.records.contains(&u.id)
                || due.contains(&u.id)
                || marks.hosts.iter().any(|h| u.hosts.contains_key(h))
        })
        .map(|u| u.id.clone())
        .collect()
}

/// When each upgrade in progress is due again by the clock.
#[derive(Debug, Default)]
pub struct Deadlines {
    at: BTreeMap<UpgradeId, Instant>,
}

impl Deadlines {
    /// Sets (`Some`) or clears when `id` is due.
    pub fn set(&mut self, id: &UpgradeId, at: Option<Instant>) {
        match at {
            Some(at) => {
                self.at.insert(id.clone(), at);
            }
            None => {
                self.at.remove(id);
            }
        }
    }

    /// The upgrades due at `now`.
    pub fn due(&self, now: Instant) -> Vec<UpgradeId> {
        self.at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets the upgrades no longer in progress.
    pub fn retain_in_progress(&mut self, view: &FleetView) {
        self.at.retain(|id, _| {
            view.upgrades
                .get(id)
                .is_some_and(|u| !u.value.phase.is_terminal())
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use baton_protocol::UpgradePhase as P;
    use baton_protocol::documents::HostOutcomeState as O;

    use super::*;
    use crate::engine::tasks::tests::record;

    fn id(s: &str) -> UpgradeId {
        UpgradeId::new(s).expect("id")
    }

    fn host(s: &str) -> HostId {
        HostId::new(s).expect("id")
    }

    /// Two upgrades in progress over hosts of their own, and one finished naming both.
    fn view() -> FleetView {
        let mut view = FleetView::default();
        let hosts = |a: &'static str, b: &'static str| [(a, O::Dispatched), (b, O::Pending)];
        view.wrote_upgrade(
            record("u1", "2.0.0", P::Installing, 0, &hosts("a1", "a2"), None),
            5,
        );
        view.wrote_upgrade(
            record("u2", "2.0.0", P::Installing, 0, &hosts("b1", "b2"), None),
            6,
        );
        view.wrote_upgrade(
            record("u0", "1.0.0", P::Succeeded, 0, &hosts("a1", "b1"), None),
            4,
        );
        view
    }

    #[test]
    fn one_hosts_change_decides_only_the_upgrade_naming_it() {
        let view = view();
        let marks = Marks {
            hosts: [host("a2")].into(),
            ..Marks::default()
        };
        assert_eq!(to_decide(&view, &marks, &[]), [id("u1")]);
        // A host no upgrade in progress names decides nothing.
        let marks = Marks {
            hosts: [host("c9")].into(),
            ..Marks::default()
        };
        assert!(to_decide(&view, &marks, &[]).is_empty());
        // A record's own change, and a deadline, decide that record.
        let marks = Marks {
            records: [id("u2")].into(),
            ..Marks::default()
        };
        assert_eq!(to_decide(&view, &marks, &[]), [id("u2")]);
        assert_eq!(to_decide(&view, &Marks::default(), &[id("u1")]), [id("u1")]);
        // A finished record is never decided, whatever names it.
        let marks = Marks {
            records: [id("u0")].into(),
            ..Marks::default()
        };
        assert!(to_decide(&view, &marks, &[]).is_empty());
    }

    #[test]
    fn a_full_recomputation_decides_every_upgrade_in_progress() {
        let view = view();
        for marks in [
            Marks {
                everything: true,
                ..Marks::default()
            },
            Marks {
                every_record: true,
                ..Marks::default()
            },
        ] {
            assert_eq!(to_decide(&view, &marks, &[]), [id("u1"), id("u2")]);
        }
        assert!(Marks::default().is_empty());
        assert!(to_decide(&view, &Marks::default(), &[]).is_empty());
    }

    #[test]
    fn the_clock_decides_an_upgrade_once_its_deadline_came_and_not_before() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        deadlines.set(&id("u1"), Some(t0 + Duration::from_secs(70)));
        deadlines.set(&id("u2"), Some(t0 + Duration::from_secs(900)));
        assert!(deadlines.due(t0 + Duration::from_secs(69)).is_empty());
        assert_eq!(deadlines.due(t0 + Duration::from_secs(70)), [id("u1")]);
        deadlines.set(&id("u1"), None);
        assert!(deadlines.due(t0 + Duration::from_secs(899)).is_empty());
        // An upgrade that ended is forgotten.
        let mut view = view();
        view.wrote_upgrade(record("u2", "2.0.0", P::Failed, 0, &[], None), 9);
        deadlines.retain_in_progress(&view);
        assert!(deadlines.due(t0 + Duration::from_secs(3600)).is_empty());
    }
}
