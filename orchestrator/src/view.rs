//! What the orchestrator knows of etcd: every host's documents, groups' maintenance and the
//! upgrade records, each with the `mod_revision` it was read at (writes are guarded by it).
//!
//! Built from range reads ([`crate::store`]) and kept current by the engine's watches: a
//! change is applied only if it is newer than what is known, so a range read and a watch
//! that overlap never move a key backwards.

use std::collections::{BTreeMap, BTreeSet};

use baton_protocol::documents::{
    Alive, Desired, Document, HostOutcome, HostSpec, HostStatus, HostsLayout, Installed,
    Maintenance, MaintenanceMode, Upgrade, UpgradeHost, Windows, assemble, decode,
};
use baton_protocol::etcd::Versioned;
use baton_protocol::keys::Key;
use baton_protocol::{GroupName, HostId, HostKey, Keyspace, UpgradeId};

/// One host's documents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostDocs {
    /// `spec` (registration).
    pub spec: Option<Versioned<HostSpec>>,
    /// `alive` (the agent's liveness).
    pub alive: Option<Versioned<Alive>>,
    /// `desired`.
    pub desired: Option<Versioned<Desired>>,
    /// `status`.
    pub status: Option<Versioned<HostStatus>>,
    /// `installed`.
    pub installed: Option<Versioned<Installed>>,
    /// `maintenance`.
    pub maintenance: Option<Versioned<Maintenance>>,
}

fn set<T: Document>(
    slot: &mut Option<Versioned<T>>,
    key: &str,
    value: Option<&[u8]>,
    mod_revision: i64,
) {
    *slot = match value {
        None => None,
        Some(bytes) => match decode::<T>(key, bytes) {
            Ok(value) => Some(Versioned {
                value,
                mod_revision,
            }),
            Err(error) => {
                // An unreadable document counts as absent; the writer must fix it.
                tracing::warn!(%error, "ignoring unreadable document");
                None
            }
        },
    };
}

impl HostDocs {
    /// Sets one document from its stored bytes (`None`: deleted).
    pub fn set(&mut self, doc: HostKey, key: &str, value: Option<&[u8]>, mod_revision: i64) {
        match doc {
            HostKey::Spec => set(&mut self.spec, key, value, mod_revision),
            HostKey::Alive => set(&mut self.alive, key, value, mod_revision),
            HostKey::Desired => set(&mut self.desired, key, value, mod_revision),
            HostKey::Status => set(&mut self.status, key, value, mod_revision),
            HostKey::Installed => set(&mut self.installed, key, value, mod_revision),
            HostKey::Maintenance => set(&mut self.maintenance, key, value, mod_revision),
        }
    }

    /// The revision `doc` was last changed at (0: absent).
    pub fn revision(&self, doc: HostKey) -> i64 {
        fn rev<T>(v: &Option<Versioned<T>>) -> i64 {
            v.as_ref().map_or(0, |v| v.mod_revision)
        }
        match doc {
            HostKey::Spec => rev(&self.spec),
            HostKey::Alive => rev(&self.alive),
            HostKey::Desired => rev(&self.desired),
            HostKey::Status => rev(&self.status),
            HostKey::Installed => rev(&self.installed),
            HostKey::Maintenance => rev(&self.maintenance),
        }
    }

    /// No document at all.
    pub fn is_empty(&self) -> bool {
        HostKey::ALL.iter().all(|d| self.revision(*d) == 0)
    }

    /// The host's `group` label, if it is a valid group name.
    pub fn group(&self) -> Option<GroupName> {
        let spec = self.spec.as_ref()?;
        GroupName::new(spec.value.labels.get("group")?.as_str()).ok()
    }
}

/// Which part of the keyspace a read or watch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// `hosts/`.
    Hosts,
    /// `groups/`.
    Groups,
    /// `upgrades/`.
    Upgrades,
    /// `window`: the fleet's maintenance windows.
    FleetWindow,
}

impl Part {
    /// The prefix of this part.
    pub fn prefix(self, keyspace: &Keyspace) -> String {
        match self {
            Part::Hosts => keyspace.hosts_prefix(),
            Part::Groups => keyspace.groups_prefix(),
            Part::Upgrades => keyspace.upgrades_prefix(),
            Part::FleetWindow => keyspace.fleet_window(),
        }
    }

    /// Every part, in the order the engine watches them.
    pub const ALL: [Part; 4] = [Part::Hosts, Part::Groups, Part::Upgrades, Part::FleetWindow];
}

/// The fleet as known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetView {
    /// Host → its documents.
    pub hosts: BTreeMap<HostId, HostDocs>,
    /// Group → its maintenance mode.
    pub groups: BTreeMap<GroupName, Versioned<Maintenance>>,
    /// Upgrade id → its record, with its hosts' outcomes read from their keys; the
    /// revision is the record key's (every change of a host's outcome rewrites the record).
    pub upgrades: BTreeMap<UpgradeId, Versioned<Upgrade>>,
    /// Records stored with their hosts' outcomes inline (written before they had keys).
    inline: BTreeSet<UpgradeId>,
    /// Hosts' outcomes whose record is not known (yet): a record being created writes them
    /// before itself when they do not fit its transaction.
    orphans: BTreeMap<UpgradeId, BTreeMap<HostId, HostOutcome>>,
    /// The fleet's maintenance windows.
    pub fleet_windows: Option<Versioned<Windows>>,
    /// Group → its maintenance windows.
    pub group_windows: BTreeMap<GroupName, Versioned<Windows>>,
    /// Per part: the revision of its last full read; older changes are ignored.
    floors: BTreeMap<Part, i64>,
}

impl FleetView {
    /// Replaces a whole part with a range read taken at `revision`.
    pub fn load(
        &mut self,
        keyspace: &Keyspace,
        part: Part,
        kvs: &[(String, Vec<u8>, i64)],
        revision: i64,
    ) {
        match part {
            Part::Hosts => self.hosts.clear(),
            Part::Groups => {
                self.groups.clear();
                self.group_windows.clear();
            }
            Part::Upgrades => {
                self.upgrades.clear();
                self.inline.clear();
                self.orphans.clear();
            }
            Part::FleetWindow => self.fleet_windows = None,
        }
        self.floors.insert(part, revision);
        for (key, value, mod_revision) in kvs {
            self.apply_unchecked(keyspace, key, Some(value), *mod_revision);
        }
    }

    /// Applies one change seen by a watch of `part`, unless a full read already covered it.
    pub fn change(
        &mut self,
        keyspace: &Keyspace,
        part: Part,
        key: &str,
        value: Option<&[u8]>,
        mod_revision: i64,
    ) {
        if mod_revision <= self.floors.get(&part).copied().unwrap_or(0) {
            return;
        }
        self.apply_unchecked(keyspace, key, value, mod_revision);
    }

    fn apply_unchecked(
        &mut self,
        keyspace: &Keyspace,
        key: &str,
        value: Option<&[u8]>,
        mod_revision: i64,
    ) {
        match keyspace.parse(key) {
            Ok(Key::Host(host, doc)) => {
                let docs = self.hosts.entry(host.clone()).or_default();
                docs.set(doc, key, value, mod_revision);
                if docs.is_empty() {
                    self.hosts.remove(&host);
                }
            }
            Ok(Key::GroupMaintenance(group)) => {
                let mut slot = self.groups.remove(&group);
                set(&mut slot, key, value, mod_revision);
                if let Some(v) = slot {
                    self.groups.insert(group, v);
                }
            }
            Ok(Key::GroupWindow(group)) => {
                let mut slot = self.group_windows.remove(&group);
                set(&mut slot, key, value, mod_revision);
                if let Some(v) = slot {
                    self.group_windows.insert(group, v);
                }
            }
            Ok(Key::FleetWindow) => set(&mut self.fleet_windows, key, value, mod_revision),
            Ok(Key::Upgrade(id)) => self.set_record(&id, key, value, mod_revision),
            Ok(Key::UpgradeHost(id, host)) => self.set_outcome(id, host, key, value),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "ignoring a key outside the layout"),
        }
    }

    /// A record's key changed: its upgrade-wide fields are replaced, its hosts' outcomes
    /// kept (they change in keys of their own), unless it carries them inline.
    fn set_record(&mut self, id: &UpgradeId, key: &str, value: Option<&[u8]>, mod_revision: i64) {
        let previous = self.upgrades.remove(id);
        self.inline.remove(id);
        let Some(bytes) = value else {
            self.orphans.remove(id);
            return;
        };
        let record = match decode::<Upgrade>(key, bytes) {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable document");
                return;
            }
        };
        let outcomes = match previous {
            Some(p) => p.value.hosts,
            None => self.orphans.remove(id).unwrap_or_default(),
        };
        let (value, layout) = assemble(record, outcomes);
        if layout == HostsLayout::Inline {
            self.inline.insert(id.clone());
        }
        self.upgrades.insert(
            id.clone(),
            Versioned {
                value,
                mod_revision,
            },
        );
    }

    /// A host's outcome key changed.
    fn set_outcome(&mut self, id: UpgradeId, host: HostId, key: &str, value: Option<&[u8]>) {
        let outcome = match value.map(|bytes| decode::<UpgradeHost>(key, bytes)) {
            None => None,
            Some(Ok(doc)) => Some(doc.outcome),
            Some(Err(error)) => {
                tracing::warn!(%error, "ignoring unreadable document");
                None
            }
        };
        if self.inline.contains(&id) {
            return;
        }
        let hosts = match self.upgrades.get_mut(&id) {
            Some(u) => &mut u.value.hosts,
            None => self.orphans.entry(id.clone()).or_default(),
        };
        match outcome {
            Some(o) => {
                hosts.insert(host, o);
            }
            None => {
                hosts.remove(&host);
            }
        }
        if self.orphans.get(&id).is_some_and(BTreeMap::is_empty) {
            self.orphans.remove(&id);
        }
    }

    /// Where upgrade `id`'s record keeps its hosts' outcomes.
    pub fn layout(&self, id: &UpgradeId) -> HostsLayout {
        if self.inline.contains(id) {
            HostsLayout::Inline
        } else {
            HostsLayout::Keys
        }
    }

    /// Records a document this replica just wrote at `revision` (before its watch says so).
    pub fn wrote_upgrade(&mut self, upgrade: Upgrade, revision: i64) {
        self.upgrades.insert(
            upgrade.id.clone(),
            Versioned {
                value: upgrade,
                mod_revision: revision,
            },
        );
    }

    /// Records a `desired` this replica just wrote at `revision`.
    pub fn wrote_desired(&mut self, host: &HostId, desired: Desired, revision: i64) {
        self.hosts.entry(host.clone()).or_default().desired = Some(Versioned {
            value: desired,
            mod_revision: revision,
        });
    }

    /// The host's maintenance mode: its own if set (and not `none`), else its group's.
    pub fn maintenance(&self, host: &HostId) -> MaintenanceMode {
        let Some(docs) = self.hosts.get(host) else {
            return MaintenanceMode::None;
        };
        if let Some(m) = &docs.maintenance
            && m.value.mode != MaintenanceMode::None
        {
            return m.value.mode;
        }
        docs.group()
            .and_then(|g| self.groups.get(&g))
            .map_or(MaintenanceMode::None, |m| m.value.mode)
    }

    /// Registered hosts' specs.
    pub fn specs(&self) -> BTreeMap<HostId, HostSpec> {
        self.hosts
            .iter()
            .filter_map(|(id, d)| Some((id.clone(), d.spec.as_ref()?.value.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use baton_protocol::documents::{SCHEMA_VERSION, encode};

    use super::*;

    fn maintenance(mode: MaintenanceMode) -> Vec<u8> {
        encode(&Maintenance {
            schema_version: SCHEMA_VERSION,
            mode,
            reason: String::new(),
            since: "t".into(),
            reboot: false,
        })
    }

    #[test]
    fn a_full_read_is_not_undone_by_older_watch_changes() {
        let ks = Keyspace::default();
        let key = "/baton/hosts/h1/maintenance";
        let mut view = FleetView::default();
        view.load(
            &ks,
            Part::Hosts,
            &[(key.into(), maintenance(MaintenanceMode::Paused), 7)],
            9,
        );
        let h1 = HostId::new("h1").expect("id");
        assert_eq!(view.maintenance(&h1), MaintenanceMode::Paused);
        // A deletion at revision 8 was already covered by the read at 9.
        view.change(&ks, Part::Hosts, key, None, 8);
        assert_eq!(view.maintenance(&h1), MaintenanceMode::Paused);
        view.change(&ks, Part::Hosts, key, None, 10);
        assert_eq!(view.maintenance(&h1), MaintenanceMode::None);
        assert!(!view.hosts.contains_key(&h1), "no documents, no host");
    }

    #[test]
    fn group_maintenance_applies_unless_the_host_sets_its_own() {
        let ks = Keyspace::default();
        let spec = encode(&HostSpec {
            schema_version: SCHEMA_VERSION,
            host: HostId::new("h1").expect("id"),
            labels: [("group".to_owned(), "edge".to_owned())].into(),
            docker: "unix:///var/run/docker.sock".into(),
            path_map: BTreeMap::new(),
            boot_id_file: None,
            kernel_release_file: None,
            container_prefix: None,
            quorum_member: false,
            registered_at: "t".into(),
        });
        let mut view = FleetView::default();
        view.change(&ks, Part::Hosts, "/baton/hosts/h1/spec", Some(&spec), 2);
        view.change(
            &ks,
            Part::Groups,
            "/baton/groups/edge/maintenance",
            Some(&maintenance(MaintenanceMode::Paused)),
            3,
        );
        let h1 = HostId::new("h1").expect("id");
        assert_eq!(view.maintenance(&h1), MaintenanceMode::Paused);
        view.change(
            &ks,
            Part::Hosts,
            "/baton/hosts/h1/maintenance",
            Some(&maintenance(MaintenanceMode::AutohealingOff)),
            4,
        );
        assert_eq!(view.maintenance(&h1), MaintenanceMode::AutohealingOff);
        // Unreadable documents count as absent.
        view.change(&ks, Part::Hosts, "/baton/hosts/h1/alive", Some(b"{"), 5);
        assert!(view.hosts[&h1].alive.is_none());
    }

    fn record(hosts: &[&str]) -> Upgrade {
        let text = serde_json::json!({
            "schema_version": 1, "id": "u1", "bundle": "r@sha256:00", "version": "2.0.0",
            "strategy": {"kind": "daisy-chain"}, "phase": "Installing", "events": 2,
            "hosts": hosts.iter().map(|h| (h.to_string(), serde_json::json!({"state": "Dispatched"}))).collect::<serde_json::Map<_, _>>(),
            "created_at": "t", "updated_at": "t"
        });
        serde_json::from_value(text).expect("record")
    }

    fn outcome(state: &str) -> Vec<u8> {
        format!(r#"{{"schema_version":1,"state":"{state}","batch":0}}"#).into_bytes()
    }

    #[test]
    fn an_upgrade_is_its_record_with_its_hosts_keys() {
        use baton_protocol::documents::HostOutcomeState as O;
        let ks = Keyspace::default();
        let id = UpgradeId::new("u1").expect("id");
        let h1 = HostId::new("h1").expect("id");
        let h2 = HostId::new("h2").expect("id");
        let mut view = FleetView::default();
        // A large upgrade writes its hosts' keys ahead of its record.
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1/hosts/h1",
            Some(&outcome("Pending")),
            3,
        );
        assert!(view.upgrades.is_empty());
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1",
            Some(&encode(&record(&[]))),
            4,
        );
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1/hosts/h2",
            Some(&outcome("Pending")),
            4,
        );
        assert_eq!(view.upgrades[&id].value.hosts.len(), 2);
        assert_eq!(view.upgrades[&id].mod_revision, 4);
        assert_eq!(view.layout(&id), HostsLayout::Keys);
        // A step: the record and one host's key; the other host is kept as it was.
        let mut next = record(&[]);
        next.events = 3;
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1",
            Some(&encode(&next)),
            5,
        );
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1/hosts/h1",
            Some(&outcome("Dispatched")),
            5,
        );
        let u = &view.upgrades[&id].value;
        assert_eq!(
            (u.events, u.hosts[&h1].state, u.hosts[&h2].state),
            (3, O::Dispatched, O::Pending)
        );
        // A full read assembles the same.
        let mut read = FleetView::default();
        read.load(
            &ks,
            Part::Upgrades,
            &[
                ("/baton/upgrades/u1".into(), encode(&next), 5),
                (
                    "/baton/upgrades/u1/hosts/h1".into(),
                    outcome("Dispatched"),
                    5,
                ),
                ("/baton/upgrades/u1/hosts/h2".into(), outcome("Pending"), 4),
            ],
            6,
        );
        assert_eq!(read.upgrades, view.upgrades);
        // Removed: record and keys.
        view.change(&ks, Part::Upgrades, "/baton/upgrades/u1", None, 7);
        view.change(&ks, Part::Upgrades, "/baton/upgrades/u1/hosts/h1", None, 7);
        assert!(view.upgrades.is_empty() && view.orphans.is_empty());
    }

    #[test]
    fn a_record_with_its_outcomes_inline_is_read_and_kept_so() {
        let ks = Keyspace::default();
        let id = UpgradeId::new("u1").expect("id");
        let mut view = FleetView::default();
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1",
            Some(&encode(&record(&["h1"]))),
            3,
        );
        view.change(
            &ks,
            Part::Upgrades,
            "/baton/upgrades/u1/hosts/h9",
            Some(&outcome("Failed")),
            4,
        );
        assert_eq!(view.layout(&id), HostsLayout::Inline);
        let hosts: Vec<String> = view.upgrades[&id]
            .value
            .hosts
            .keys()
            .map(ToString::to_string)
            .collect();
        assert_eq!(hosts, ["h1"]);
    }
}
