//! One host's outcome in an upgrade, stored in a key of its own
//! (`upgrades/<id>/hosts/<host>`), and how an upgrade record and its hosts' keys make up the
//! [`Upgrade`] that readers see.
//!
//! The record (`upgrades/<id>`) keeps the upgrade-wide fields only: a host's progress
//! rewrites that record and its own key, so it costs the same bytes at 10 hosts and at
//! 10,000. Records written before the hosts had keys of their own carry the outcomes inline
//! (`hosts`); they are read as they are and written back the same way until they end
//! ([`HostsLayout::Inline`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Document, HostOutcome, Upgrade, schema};
use crate::keys::Keyspace;
use crate::names::HostId;

/// `upgrades/<id>/hosts/<host>`: the host's outcome in the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeHost {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The outcome (its fields side by side with `schema_version`).
    #[serde(flatten)]
    pub outcome: HostOutcome,
}

impl Document for UpgradeHost {
    const KIND: &'static str = "upgrade host outcome";
}

impl UpgradeHost {
    /// The document storing `outcome`.
    pub fn new(outcome: HostOutcome) -> Self {
        Self {
            schema_version: super::SCHEMA_VERSION,
            outcome,
        }
    }
}

/// Where an upgrade record keeps its hosts' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostsLayout {
    /// Each in its own key `upgrades/<id>/hosts/<host>` (what this version writes).
    #[default]
    Keys,
    /// Inline in the record's `hosts` (records written before the per-host keys).
    Inline,
}

impl HostsLayout {
    /// The layout of a record as read from its key alone: inline if it carries outcomes.
    pub fn of_stored(record: &Upgrade) -> Self {
        if record.hosts.is_empty() {
            HostsLayout::Keys
        } else {
            HostsLayout::Inline
        }
    }
}

/// One write to store an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordWrite {
    /// Put these bytes at this key.
    Put(String, Vec<u8>),
    /// Delete this key.
    Delete(String),
}

impl RecordWrite {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            RecordWrite::Put(key, _) | RecordWrite::Delete(key) => key,
        }
    }
}

/// The record as stored under `layout`: without its hosts' outcomes when they have keys of
/// their own.
pub fn stored_record(upgrade: &Upgrade, layout: HostsLayout) -> Upgrade {
    match layout {
        HostsLayout::Inline => upgrade.clone(),
        HostsLayout::Keys => Upgrade {
            hosts: BTreeMap::new(),
            ..upgrade.clone()
        },
    }
}

/// What storing `after` writes, its record first, when the store holds `before` (`None`:
/// nothing yet): the record, and under [`HostsLayout::Keys`] the key of every host whose
/// outcome changed (a put) or left the upgrade (a delete). Unchanged hosts cost nothing.
pub fn record_writes(
    keyspace: &Keyspace,
    layout: HostsLayout,
    before: Option<&Upgrade>,
    after: &Upgrade,
) -> Vec<RecordWrite> {
    let mut writes = vec![RecordWrite::Put(
        keyspace.upgrade(&after.id),
        super::encode(&stored_record(after, layout)),
    )];
    if layout == HostsLayout::Inline {
        return writes;
    }
    let empty = BTreeMap::new();
    let old = before.map_or(&empty, |b| &b.hosts);
    for (host, outcome) in &after.hosts {
        if old.get(host) != Some(outcome) {
            writes.push(RecordWrite::Put(
                keyspace.upgrade_host(&after.id, host),
                super::encode(&UpgradeHost::new(outcome.clone())),
            ));
        }
    }
    for host in old.keys().filter(|h| !after.hosts.contains_key(*h)) {
        writes.push(RecordWrite::Delete(keyspace.upgrade_host(&after.id, host)));
    }
    writes
}

/// The upgrade as readers see it, from its record as stored and its hosts' outcomes read
/// from their keys: a record carrying outcomes inline keeps them (and any host key is
/// ignored); otherwise the hosts are those of the keys.
pub fn assemble(
    mut record: Upgrade,
    outcomes: BTreeMap<HostId, HostOutcome>,
) -> (Upgrade, HostsLayout) {
    let layout = HostsLayout::of_stored(&record);
    if layout == HostsLayout::Keys {
        record.hosts = outcomes;
    }
    (record, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{HostOutcomeState, SCHEMA_VERSION, Strategy, decode, encode};
    use crate::names::UpgradeId;
    use crate::state::UpgradePhase;

    fn outcome(state: HostOutcomeState, batch: u32) -> HostOutcome {
        HostOutcome {
            state,
            reason: String::new(),
            batch: Some(batch),
            dispatched_at: None,
            held_from: None,
            previous: None,
            revert: None,
        }
    }

    fn host(i: usize) -> HostId {
        HostId::new(format!("host-{i}")).expect("id")
    }

    fn upgrade(hosts: usize) -> Upgrade {
        Upgrade {
            schema_version: SCHEMA_VERSION,
            id: UpgradeId::new("u-2.0.0").expect("id"),
            bundle: format!("127.0.0.1:5000/baton/bundle@sha256:{}", "0".repeat(64)),
            version: "2.0.0".into(),
            strategy: Strategy::AllAtOnce {
                allow_downtime: true,
            },
            selector: BTreeMap::new(),
            strategy_reason: None,
            phase: UpgradePhase::Installing,
            paused_from: None,
            hosts: (0..hosts)
                .map(|i| (host(i), outcome(HostOutcomeState::Downloaded, 0)))
                .collect(),
            reason: None,
            agent_version: Some("2.0.0".into()),
            phase_since: Some("2026-12-01T00:00:00.000Z".into()),
            canary_approved: false,
            events: 12,
            listed: false,
            skip_paused: false,
            allow_downgrade: false,
            on_failure: Default::default(),
            task: None,
            orchestrator: None,
            signature: None,
            soak: None,
            waiting_for_window: None,
            created_at: "2026-12-01T00:00:00.000Z".into(),
            updated_at: "2026-12-01T00:00:00.000Z".into(),
        }
    }

    fn bytes(writes: &[RecordWrite]) -> usize {
        writes
            .iter()
            .map(|w| match w {
                RecordWrite::Put(k, v) => k.len() + v.len(),
                RecordWrite::Delete(k) => k.len(),
            })
            .sum()
    }

    /// One host's step (dispatched, with its time) as the engine stores it.
    fn step(before: &Upgrade, layout: HostsLayout) -> Vec<RecordWrite> {
        let mut after = before.clone();
        let h = after.hosts.get_mut(&host(0)).expect("host-0");
        h.state = HostOutcomeState::Dispatched;
        h.dispatched_at = Some("2026-12-01T00:01:00.000Z".into());
        after.events += 1;
        after.updated_at = "2026-12-01T00:01:00.000Z".into();
        record_writes(&Keyspace::default(), layout, Some(before), &after)
    }

    #[test]
    fn a_host_step_writes_the_same_bytes_whatever_the_fleet_size() {
        let sizes: Vec<usize> = [10, 1_000, 10_000]
            .into_iter()
            .map(|n| bytes(&step(&upgrade(n), HostsLayout::Keys)))
            .collect();
        assert_eq!(sizes[0], sizes[1]);
        assert_eq!(sizes[1], sizes[2]);
        // The record and the host's key, nothing else.
        let writes = step(&upgrade(10_000), HostsLayout::Keys);
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[1].key(), "/baton/upgrades/u-2.0.0/hosts/host-0");
        // The layout records were written in before: the record grows with the fleet.
        let inline: Vec<usize> = [10, 1_000, 10_000]
            .into_iter()
            .map(|n| bytes(&step(&upgrade(n), HostsLayout::Inline)))
            .collect();
        assert!(inline[2] > 100 * sizes[2], "{inline:?} vs {sizes:?}");
        println!("bytes per host step (keys of their own): {sizes:?}; inline: {inline:?}");
    }

    #[test]
    fn a_new_record_writes_every_host_and_a_record_without_them() {
        let u = upgrade(3);
        let writes = record_writes(&Keyspace::default(), HostsLayout::Keys, None, &u);
        assert_eq!(writes.len(), 4);
        let RecordWrite::Put(key, record) = &writes[0] else {
            panic!("record first: {writes:?}");
        };
        assert_eq!(key, "/baton/upgrades/u-2.0.0");
        let stored: Upgrade = decode(key, record).expect("record");
        assert!(stored.hosts.is_empty());
        assert!(!String::from_utf8_lossy(record).contains("host-0"));
        let RecordWrite::Put(key, value) = &writes[1] else {
            panic!("{writes:?}");
        };
        let doc: UpgradeHost = decode(key, value).expect("outcome");
        assert_eq!(doc.outcome, u.hosts[&host(0)]);
        let text = String::from_utf8_lossy(value);
        assert!(
            text.starts_with(r#"{"schema_version":1,"state":"Downloaded""#),
            "{text}"
        );
    }

    #[test]
    fn a_host_that_left_loses_its_key_and_unchanged_hosts_are_not_written() {
        let before = upgrade(3);
        let mut after = before.clone();
        after.hosts.remove(&host(2));
        let writes = record_writes(
            &Keyspace::default(),
            HostsLayout::Keys,
            Some(&before),
            &after,
        );
        assert_eq!(
            writes[1..],
            [RecordWrite::Delete(
                "/baton/upgrades/u-2.0.0/hosts/host-2".into()
            )]
        );
    }

    #[test]
    fn records_with_inline_outcomes_are_read_and_written_as_they_are() {
        let old = upgrade(2);
        let (read, layout) = assemble(
            decode("/baton/upgrades/u-2.0.0", &encode(&old)).expect("old record"),
            [(host(9), outcome(HostOutcomeState::Failed, 1))].into(),
        );
        assert_eq!(layout, HostsLayout::Inline);
        assert_eq!(read, old, "the inline outcomes win over stray keys");
        let writes = step(&old, layout);
        assert_eq!(writes.len(), 1, "the record alone");
        let RecordWrite::Put(key, value) = &writes[0] else {
            panic!("{writes:?}");
        };
        let stored: Upgrade = decode(key, value).expect("record");
        assert_eq!(stored.hosts[&host(0)].state, HostOutcomeState::Dispatched);

        let new = stored_record(&upgrade(2), HostsLayout::Keys);
        let (read, layout) = assemble(new, upgrade(2).hosts);
        assert_eq!(layout, HostsLayout::Keys);
        assert_eq!(read, upgrade(2));
    }
}
