//! The etcd keyspace: every key Baton reads or writes is built and parsed here, and only here.
//!
//! Layout under a configurable prefix (default `/baton`), see `docs/keyspace.md`:
//! `hosts/<host>/{spec,alive,desired,status,installed,maintenance}`,
//! `groups/<group>/{maintenance,window}`, `window`, `upgrades/<id>`,
//! `upgrades/<id>/hosts/<host>`, `active`, `leader`, `events/<id>/<seq>`, `tokens/<name>`.

use std::fmt;

use crate::names::{GroupName, HostId, NameError, TokenName, UpgradeId};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "/baton";

/// Width of the zero-padded event sequence number, so lexical key order is numeric order.
const SEQ_WIDTH: usize = 20;

/// A key or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The configured prefix cannot hold the layout.
    #[error("invalid key prefix {prefix:?}: {reason}")]
    Prefix {
        /// The refused prefix.
        prefix: String,
        /// Why.
        reason: &'static str,
    },
    /// A key is not one of Baton's.
    #[error("key {key:?} is not in Baton's keyspace under {prefix:?}")]
    Unknown {
        /// The key.
        key: String,
        /// The prefix in use.
        prefix: String,
    },
    /// A key holds an invalid name segment.
    #[error("key {key:?}: {source}")]
    Name {
        /// The key.
        key: String,
        /// The name problem.
        source: NameError,
    },
}

/// One of the per-host documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    /// `spec`: registration (labels, Docker endpoint, path map).
    Spec,
    /// `alive`: the agent's liveness, bound to its lease.
    Alive,
    /// `desired`: what the orchestrator wants the host to do.
    Desired,
    /// `status`: what the agent is doing.
    Status,
    /// `installed`: what the host runs.
    Installed,
    /// `maintenance`: the host's maintenance mode.
    Maintenance,
}

impl HostKey {
    /// Every per-host key, in a stable order.
    pub const ALL: [HostKey; 6] = [
        HostKey::Spec,
        HostKey::Alive,
        HostKey::Desired,
        HostKey::Status,
        HostKey::Installed,
        HostKey::Maintenance,
    ];

    /// The key's last segment.
    pub fn segment(self) -> &'static str {
        match self {
            HostKey::Spec => "spec",
            HostKey::Alive => "alive",
            HostKey::Desired => "desired",
            HostKey::Status => "status",
            HostKey::Installed => "installed",
            HostKey::Maintenance => "maintenance",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.segment() == segment)
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.segment())
    }
}

/// A parsed Baton key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `hosts/<host>/<doc>`.
    Host(HostId, HostKey),
    /// `groups/<group>/maintenance`.
    GroupMaintenance(GroupName),
    /// `groups/<group>/window`: the group's maintenance windows.
    GroupWindow(GroupName),
    /// `window`: the whole fleet's maintenance windows.
    FleetWindow,
    /// `upgrades/<id>`.
    Upgrade(UpgradeId),
    /// `upgrades/<id>/hosts/<host>`: one host's outcome in that upgrade.
    UpgradeHost(UpgradeId, HostId),
    /// `active`.
    Active,
    /// `leader` or a candidate key below it (the election API appends the lease id).
    Leader,
    /// `events/<id>/<seq>`.
    Event(UpgradeId, u64),
    /// `tokens/<name>`.
    Token(TokenName),
}

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Keyspace {
    /// A keyspace under `prefix`: absolute, no trailing `/`, no empty, `.` or `..` segments.
    pub fn new(prefix: &str) -> Result<Self, KeyError> {
        let refuse = |reason| {
            Err(KeyError::Prefix {
                prefix: prefix.to_owned(),
                reason,
            })
        };
        if !prefix.starts_with('/') {
            return refuse("must start with '/'");
        }
        if prefix.len() > 1 && prefix.ends_with('/') {
            return refuse("must not end with '/'");
        }
        if prefix == "/" {
            return refuse("must name at least one segment, e.g. /baton");
        }
        for segment in prefix[1..].split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return refuse("must not contain empty, '.' or '..' segments");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return refuse("segments may only contain letters, digits, '.', '_' and '-'");
            }
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix, e.g. `/baton`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything Baton owns: `<prefix>/`.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `<prefix>/hosts/`: every host document (one watch covers the fleet).
    pub fn hosts_prefix(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// `<prefix>/hosts/<host>/`: every document of one host.
    pub fn host_prefix(&self, host: &HostId) -> String {
        format!("{}/hosts/{host}/", self.prefix)
    }

    /// `<prefix>/hosts/<host>/<doc>`.
    pub fn host(&self, host: &HostId, doc: HostKey) -> String {
        format!("{}/hosts/{host}/{doc}", self.prefix)
    }

    /// `<prefix>/groups/<group>/maintenance`.
    pub fn group_maintenance(&self, group: &GroupName) -> String {
        format!("{}/groups/{group}/maintenance", self.prefix)
    }

    /// `<prefix>/groups/<group>/window`: the group's maintenance windows.
    pub fn group_window(&self, group: &GroupName) -> String {
        format!("{}/groups/{group}/window", self.prefix)
    }

    /// `<prefix>/window`: the whole fleet's maintenance windows.
    pub fn fleet_window(&self) -> String {
        format!("{}/window", self.prefix)
    }

    /// `<prefix>/groups/`.
    pub fn groups_prefix(&self) -> String {
        format!("{}/groups/", self.prefix)
    }

    /// `<prefix>/upgrades/<id>`.
    pub fn upgrade(&self, id: &UpgradeId) -> String {
        format!("{}/upgrades/{id}", self.prefix)
    }

    /// `<prefix>/upgrades/<id>/hosts/<host>`: one host's outcome in the upgrade, in a key of
    /// its own so that a host's progress writes the same bytes whatever the fleet's size.
    pub fn upgrade_host(&self, id: &UpgradeId, host: &HostId) -> String {
        format!("{}/upgrades/{id}/hosts/{host}", self.prefix)
    }

    /// `<prefix>/upgrades/<id>/hosts/`: every host's outcome in the upgrade.
    pub fn upgrade_hosts_prefix(&self, id: &UpgradeId) -> String {
        format!("{}/upgrades/{id}/hosts/", self.prefix)
    }

    /// `<prefix>/upgrades/`.
    pub fn upgrades_prefix(&self) -> String {
        format!("{}/upgrades/", self.prefix)
    }

    /// `<prefix>/active`: id of the upgrade in progress.
    pub fn active(&self) -> String {
        format!("{}/active", self.prefix)
    }

    /// `<prefix>/leader`: the election name (candidates' keys live below it).
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// `<prefix>/events/`: every upgrade's events.
    pub fn events_root(&self) -> String {
        format!("{}/events/", self.prefix)
    }

    /// `<prefix>/events/<id>/`.
    pub fn events_prefix(&self, id: &UpgradeId) -> String {
        format!("{}/events/{id}/", self.prefix)
    }

    /// `<prefix>/events/<id>/<seq>`, the sequence zero-padded so keys sort numerically.
    pub fn event(&self, id: &UpgradeId, seq: u64) -> String {
        format!("{}/events/{id}/{seq:0SEQ_WIDTH$}", self.prefix)
    }

    /// `<prefix>/tokens/<name>`: an API token's role and hash.
    pub fn token(&self, name: &TokenName) -> String {
        format!("{}/tokens/{name}", self.prefix)
    }

    /// `<prefix>/tokens/`.
    pub fn tokens_prefix(&self) -> String {
        format!("{}/tokens/", self.prefix)
    }

    /// Parses a key read from etcd.
    pub fn parse(&self, key: &str) -> Result<Key, KeyError> {
        let unknown = || KeyError::Unknown {
            key: key.to_owned(),
            prefix: self.prefix.clone(),
        };
        let name_err = |source| KeyError::Name {
            key: key.to_owned(),
            source,
        };
        let rest = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["hosts", host, doc] => {
                let doc = HostKey::from_segment(doc).ok_or_else(unknown)?;
                Ok(Key::Host(HostId::new(*host).map_err(name_err)?, doc))
            }
            ["groups", group, "maintenance"] => Ok(Key::GroupMaintenance(
                GroupName::new(*group).map_err(name_err)?,
            )),
            ["groups", group, "window"] => {
                Ok(Key::GroupWindow(GroupName::new(*group).map_err(name_err)?))
            }
            ["window"] => Ok(Key::FleetWindow),
            ["upgrades", id] => Ok(Key::Upgrade(UpgradeId::new(*id).map_err(name_err)?)),
            ["upgrades", id, "hosts", host] => Ok(Key::UpgradeHost(
                UpgradeId::new(*id).map_err(name_err)?,
                HostId::new(*host).map_err(name_err)?,
            )),
            ["active"] => Ok(Key::Active),
            ["tokens", name] => Ok(Key::Token(TokenName::new(*name).map_err(name_err)?)),
            ["leader", ..] => Ok(Key::Leader),
            ["events", id, seq] if seq.len() == SEQ_WIDTH => {
                let seq = seq.parse().map_err(|_| unknown())?;
                Ok(Key::Event(UpgradeId::new(*id).map_err(name_err)?, seq))
            }
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostId {
        HostId::new(s).expect("valid host")
    }

    #[test]
    fn builds_the_documented_layout() {
        let ks = Keyspace::default();
        let h = host("h1");
        let id = UpgradeId::new("u1").expect("id");
        assert_eq!(ks.host(&h, HostKey::Spec), "/baton/hosts/h1/spec");
        assert_eq!(ks.host(&h, HostKey::Alive), "/baton/hosts/h1/alive");
        assert_eq!(
            ks.group_maintenance(&GroupName::new("g").expect("g")),
            "/baton/groups/g/maintenance"
        );
        assert_eq!(
            ks.group_window(&GroupName::new("g").expect("g")),
            "/baton/groups/g/window"
        );
        assert_eq!(ks.fleet_window(), "/baton/window");
        assert_eq!(ks.upgrade(&id), "/baton/upgrades/u1");
        assert_eq!(ks.upgrade_host(&id, &h), "/baton/upgrades/u1/hosts/h1");
        assert_eq!(ks.upgrade_hosts_prefix(&id), "/baton/upgrades/u1/hosts/");
        assert_eq!(ks.active(), "/baton/active");
        assert_eq!(ks.leader(), "/baton/leader");
        assert_eq!(ks.event(&id, 7), "/baton/events/u1/00000000000000000007");
        let ci = TokenName::new("ci").expect("name");
        assert_eq!(ks.token(&ci), "/baton/tokens/ci");
    }

    #[test]
    fn every_built_key_parses_back() {
        let ks = Keyspace::new("/x/y").expect("prefix");
        let h = host("h-2");
        let id = UpgradeId::new("u.3").expect("id");
        let g = GroupName::new("edge").expect("g");
        for doc in HostKey::ALL {
            assert_eq!(ks.parse(&ks.host(&h, doc)), Ok(Key::Host(h.clone(), doc)));
        }
        assert_eq!(
            ks.parse(&ks.group_window(&g)),
            Ok(Key::GroupWindow(g.clone()))
        );
        assert_eq!(ks.parse(&ks.fleet_window()), Ok(Key::FleetWindow));
        assert_eq!(
            ks.parse(&ks.group_maintenance(&g)),
            Ok(Key::GroupMaintenance(g))
        );
        assert_eq!(ks.parse(&ks.upgrade(&id)), Ok(Key::Upgrade(id.clone())));
        assert_eq!(
            ks.parse(&ks.upgrade_host(&id, &h)),
            Ok(Key::UpgradeHost(id.clone(), h.clone()))
        );
        assert!(
            ks.upgrade_host(&id, &h)
                .starts_with(&ks.upgrade_hosts_prefix(&id))
        );
        assert_eq!(ks.parse(&ks.active()), Ok(Key::Active));
        assert_eq!(ks.parse(&format!("{}/694d", ks.leader())), Ok(Key::Leader));
        assert_eq!(ks.parse(&ks.event(&id, 42)), Ok(Key::Event(id, 42)));
        let ci = TokenName::new("ci").expect("name");
        assert_eq!(ks.parse(&ks.token(&ci)), Ok(Key::Token(ci)));
    }

    #[test]
    fn refuses_foreign_and_malformed_keys() {
        let ks = Keyspace::default();
        for bad in [
            "/other/hosts/h/spec",
            "/batonx/hosts/h/spec",
            "/baton/hosts/h/unknown",
            "/baton/hosts/h/spec/extra",
            "/baton/events/u/12",
            "/baton/upgrades/u/hosts",
            "/baton/upgrades/u/other/h",
            "/baton/upgrades/u/hosts/h/x",
        ] {
            assert!(
                matches!(ks.parse(bad), Err(KeyError::Unknown { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            ks.parse("/baton/hosts/..x/spec"),
            Err(KeyError::Name { .. })
        ));
    }

    #[test]
    fn refuses_prefixes_that_break_the_layout() {
        for bad in ["", "baton", "/", "/baton/", "//baton", "/a/../b", "/a b"] {
            let err = Keyspace::new(bad).expect_err(bad);
            assert!(err.to_string().contains("prefix"), "{err}");
        }
        assert!(Keyspace::new("/prod/baton").is_ok());
    }
}
