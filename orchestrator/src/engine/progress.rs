//! Whether the hosts of upgrades in progress make progress, as this replica sees it: since
//! when each one's `desired` and `status` have been unchanged (their `mod_revision`s), for
//! `--install-timeout`. Like the absence of `alive` behind `--health-timeout`, a new leader
//! starts counting afresh, so it only ever waits longer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use baton_protocol::HostId;

use crate::view::FleetView;

/// The revisions last seen per host, and since when they have been those.
#[derive(Debug, Default)]
pub struct Progress {
    since: BTreeMap<HostId, ((i64, i64), Instant)>,
}

impl Progress {
    /// Notes the hosts of every upgrade in progress; forgets the others.
    pub fn track(&mut self, view: &FleetView, now: Instant) {
        let hosts: BTreeSet<&HostId> = view
            .upgrades
            .values()
            .filter(|u| !u.value.phase.is_terminal())
            .flat_map(|u| u.value.hosts.keys())
            .collect();
        self.since.retain(|h, _| hosts.contains(h));
        for host in hosts {
            let revisions = revisions(view, host);
            match self.since.get(host) {
                Some((seen, _)) if *seen == revisions => {}
                _ => {
                    self.since.insert(host.clone(), (revisions, now));
                }
            }
        }
    }

    /// Notes the changes of `hosts` only, among those tracked (after a change of these
    /// hosts' documents; [`Self::track`] follows the records in progress).
    pub fn touch(&mut self, view: &FleetView, hosts: &BTreeSet<HostId>, now: Instant) {
        for host in hosts {
            if let Some(entry) = self.since.get_mut(host) {
                let revisions = revisions(view, host);
                if entry.0 != revisions {
                    *entry = (revisions, now);
                }
            }
        }
    }

    /// How long each of `hosts` that is tracked has had its `desired` and `status` unchanged.
    pub fn unchanged_for<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a HostId>,
        now: Instant,
    ) -> BTreeMap<HostId, Duration> {
        hosts
            .into_iter()
            .filter_map(|h| {
                let (_, since) = self.since.get(h)?;
                Some((h.clone(), now.duration_since(*since)))
            })
            .collect()
    }
}

/// A host's `desired` and `status` revisions (0: absent).
fn revisions(view: &FleetView, host: &HostId) -> (i64, i64) {
    let docs = view.hosts.get(host);
    (
        docs.and_then(|d| d.desired.as_ref())
            .map_or(0, |d| d.mod_revision),
        docs.and_then(|d| d.status.as_ref())
            .map_or(0, |s| s.mod_revision),
    )
}

#[cfg(test)]
mod tests {
    use baton_protocol::documents::{HostStatus, Upgrade};
    use baton_protocol::etcd::Versioned;
    use baton_protocol::{HostState, UpgradeId};

    use super::*;

    fn view(phase: &str, status_revision: i64) -> FleetView {
        let upgrade: Upgrade = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": "u1", "bundle": "r@sha256:00", "version": "2.0.0",
            "strategy": {"kind": "daisy-chain"}, "phase": phase,
            "hosts": {"h1": {"state": "Dispatched", "batch": 0}},
            "created_at": "t", "updated_at": "t"
        }))
        .expect("record");
        let mut view = FleetView::default();
        view.upgrades.insert(
            UpgradeId::new("u1").expect("id"),
            Versioned {
                value: upgrade,
                mod_revision: 1,
            },
        );
        let status = HostStatus {
            schema_version: 1,
            upgrade_id: Some(UpgradeId::new("u1").expect("id")),
            state: HostState::Updating,
            step: None,
            message: String::new(),
            started_at: None,
            updated_at: "t".into(),
            health: None,
        };
        view.hosts
            .entry(HostId::new("h1").expect("id"))
            .or_default()
            .status = Some(Versioned {
            value: status,
            mod_revision: status_revision,
        });
        view
    }

    #[test]
    fn counts_from_the_last_change_and_forgets_finished_upgrades() {
        let h1 = HostId::new("h1").expect("id");
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut progress = Progress::default();
        progress.track(&view("Installing", 5), t0);
        progress.track(&view("Installing", 5), secs(10));
        assert_eq!(
            progress.unchanged_for([&h1], secs(30))[&h1],
            Duration::from_secs(30)
        );
        // A new status restarts the count.
        progress.track(&view("Installing", 6), secs(40));
        assert_eq!(
            progress.unchanged_for([&h1], secs(45))[&h1],
            Duration::from_secs(5)
        );
        // Once the upgrade is over the host is no longer watched.
        progress.track(&view("Succeeded", 6), secs(50));
        assert!(progress.unchanged_for([&h1], secs(60)).is_empty());
    }
}
