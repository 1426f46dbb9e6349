//! How long finished upgrade records are kept: the newest [`Retention::keep`] finished
//! records stay, and none older than [`Retention::keep_for`]; the leader removes the others
//! — each record with its hosts' keys and its events — [`RECORDS_PER_TXN`] records a
//! transaction, guarded by each record's revision and its leadership.
//!
//! A finished record still in use is kept whatever its age: the one that put a registered
//! host on its current bundle (heals, restarts and replaces reinstall it), a fleet's upgrade
//! (late joiners follow it), one a host's `desired` names, and one whose bundle an upgrade
//! in progress would revert a host to.
//!
//! [`expired`] decides ([`candidates`], then [`removable`]: pure functions of the view);
//! [`remove_ops`] builds a transaction.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use baton_protocol::documents::Upgrade;
use baton_protocol::{Keyspace, UpgradeId};
use etcd_client::{Compare, DeleteOptions, TxnOp};

use crate::engine::tasks::{current_bundle, fleet_upgrade};
use crate::store;
use crate::view::FleetView;

/// Default number of finished records kept.
pub const DEFAULT_KEEP_FINISHED: usize = 50;
/// Default age past which a finished record is removed.
pub const DEFAULT_KEEP_FINISHED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the leader looks for records to remove.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// Records removed per transaction: three deletions each (record, hosts' keys, events) and
/// a guard each, within etcd's 128 operations.
pub const RECORDS_PER_TXN: usize = 40;

/// How many finished records are kept, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many finished records are kept (unless older than `keep_for`).
    pub keep: usize,
    /// Finished records older than this (since their last change) are removed.
    pub keep_for: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: DEFAULT_KEEP_FINISHED,
            keep_for: DEFAULT_KEEP_FINISHED_FOR,
        }
    }
}

fn age(since: &str, now: SystemTime) -> Duration {
    humantime::parse_rfc3339(since)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

/// The finished records past `keep`'s count or age (newest first), whether in use or not:
/// cheap (no host is looked at), and empty most of the time.
pub fn candidates(view: &FleetView, keep: &Retention, now: SystemTime) -> Vec<UpgradeId> {
    let mut finished: Vec<&Upgrade> = view
        .upgrades
        .values()
        .map(|v| &v.value)
        .filter(|u| u.phase.is_terminal())
        .collect();
    // Newest first.
    finished.sort_by(|a, b| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
    finished
        .iter()
        .enumerate()
        .filter(|(i, u)| *i >= keep.keep || age(&u.updated_at, now) > keep.keep_for)
        .map(|(_, u)| u.id.clone())
        .collect()
}

/// Of `candidates`, those no longer in use, with the revision each record was read at.
pub fn removable(view: &FleetView, candidates: &[UpgradeId]) -> Vec<(UpgradeId, i64)> {
    if candidates.is_empty() {
        return Vec::new();
    }
    let used = in_use(view);
    candidates
        .iter()
        .filter(|id| !used.contains(*id))
        .filter_map(|id| Some((id.clone(), view.upgrades.get(id)?.mod_revision)))
        .collect()
}

/// The finished records to remove now, with the revision each was read at.
pub fn expired(view: &FleetView, keep: &Retention, now: SystemTime) -> Vec<(UpgradeId, i64)> {
    removable(view, &candidates(view, keep, now))
}

/// Records still in use (see the module's header).
fn in_use(view: &FleetView) -> BTreeSet<UpgradeId> {
    let mut used = BTreeSet::new();
    for (host, docs) in &view.hosts {
        if let Some(d) = &docs.desired {
            used.insert(d.value.upgrade_id.clone());
            used.extend(d.value.reverts.clone());
        }
        let Some(spec) = &docs.spec else { continue };
        used.extend(current_bundle(view, host).map(|u| u.id.clone()));
        used.extend(fleet_upgrade(view, &spec.value).map(|u| u.id.clone()));
    }
    for u in view.upgrades.values().map(|v| &v.value) {
        if u.phase.is_terminal() {
            continue;
        }
        used.extend(u.task.as_ref().and_then(|t| t.follows.clone()));
        used.extend(
            u.hosts
                .values()
                .filter_map(|h| h.previous.as_ref().map(|p| p.upgrade.clone())),
        );
    }
    used
}

/// The guards and deletions removing `records` (at most [`RECORDS_PER_TXN`]): each record's
/// hosts' keys, its events and then the record, only if it did not change since it was read.
pub fn remove_ops(keyspace: &Keyspace, records: &[(UpgradeId, i64)]) -> (Vec<Compare>, Vec<TxnOp>) {
    let mut guards = Vec::new();
    let mut ops = Vec::new();
    for (id, read_at) in records {
        let key = keyspace.upgrade(id);
        guards.push(store::unchanged(&key, *read_at));
        for prefix in [
            keyspace.upgrade_hosts_prefix(id),
            keyspace.events_prefix(id),
        ] {
            ops.push(TxnOp::delete(
                prefix,
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        ops.push(TxnOp::delete(key, None));
    }
    (guards, ops)
}

#[cfg(test)]
mod tests {
    use baton_protocol::documents::{
        Desired, DesiredAction, HostOutcomeState as O, SCHEMA_VERSION,
    };
    use baton_protocol::etcd::Versioned;
    use baton_protocol::{HostId, UpgradePhase as P};

    use super::*;
    use crate::engine::tasks::tests::{at, record};

    const DAY: u64 = 24 * 3600;

    /// Records finished on days 1, 2 and 3 (u1 with h1), one in progress (day 0).
    fn view() -> FleetView {
        let mut view = FleetView::default();
        for (i, (id, phase, hosts)) in [
            ("u1", P::Succeeded, &[("h1", O::Succeeded)][..]),
            ("u2", P::Failed, &[][..]),
            ("u3", P::Aborted, &[][..]),
            ("u0", P::Installing, &[][..]),
        ]
        .into_iter()
        .enumerate()
        {
            let day = if id == "u0" { 0 } else { i as u64 + 1 };
            view.wrote_upgrade(record(id, "2.0.0", phase, day * DAY, hosts, None), 10);
        }
        view
    }

    fn ids(found: Vec<(UpgradeId, i64)>) -> Vec<String> {
        found.into_iter().map(|(id, _)| id.to_string()).collect()
    }

    #[test]
    fn the_newest_finished_records_are_kept_and_older_ones_removed() {
        let v = view();
        let now = at(31 * DAY);
        let keep = Retention {
            keep: 2,
            keep_for: Duration::from_secs(365 * DAY),
        };
        assert_eq!(ids(expired(&v, &keep, now)), ["u1"]);
        // Nothing past the count: nothing to do (and the record in progress never counts).
        let all = Retention { keep: 3, ..keep };
        assert!(candidates(&v, &all, now).is_empty());
        // Too old, whatever the count.
        let young = Retention {
            keep: 10,
            keep_for: Duration::from_secs(28 * DAY),
        };
        assert_eq!(ids(expired(&v, &young, now)), ["u2", "u1"]);
    }

    #[test]
    fn records_still_in_use_are_kept_whatever_their_age() {
        let mut v = view();
        // u1 put registered h1 on its bundle; h3's desired names u3.
        let spec = crate::engine::tasks::tests::spec("h1");
        v.hosts
            .entry(HostId::new("h1").expect("id"))
            .or_default()
            .spec = Some(Versioned {
            value: spec,
            mod_revision: 2,
        });
        v.hosts
            .entry(HostId::new("h3").expect("id"))
            .or_default()
            .desired = Some(Versioned {
            value: Desired {
                schema_version: SCHEMA_VERSION,
                upgrade_id: UpgradeId::new("u3").expect("id"),
                version: "2.0.0".into(),
                bundle: "r/b@sha256:00".into(),
                action: DesiredAction::Install,
                after: None,
                allow_downgrade: false,
                reverts: None,
                signature: None,
                issued_at: "t".into(),
            },
            mod_revision: 3,
        });
        let keep = Retention {
            keep: 0,
            keep_for: Duration::from_secs(1),
        };
        assert_eq!(ids(expired(&v, &keep, at(31 * DAY))), ["u2"]);
    }

    #[test]
    fn a_chunk_of_removals_fits_one_transaction() {
        let ks = Keyspace::default();
        let records: Vec<(UpgradeId, i64)> = (0..RECORDS_PER_TXN)
            .map(|i| (UpgradeId::new(format!("u{i}")).expect("id"), 5))
            .collect();
        let (guards, ops) = remove_ops(&ks, &records);
        assert!(guards.len() < store::MAX_TXN_OPS && ops.len() <= store::MAX_TXN_OPS);
        assert_eq!(ops.len(), 3 * RECORDS_PER_TXN);
    }
}
