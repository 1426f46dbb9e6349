//! etcd identities and roles: who may read and write which of Baton's keys when etcd runs
//! with authentication on (docs/security.md, "etcd identities").
//!
//! - every host has its own user and role (`baton-host-<host>`): it writes only its own
//!   `alive`, `status` and `installed`, and reads the hosts' documents and the upgrade
//!   records (its `desired`, a daisy-chain predecessor's `status`, an upgrade's phase);
//! - the orchestrator's everyday role (`baton-orchestrator`) writes the upgrade records,
//!   `active`, the election, the events, the token hashes, the groups' maintenance and
//!   windows, the fleet's windows, and per
//!   registered host that host's `spec`, `desired` and `maintenance` — never a host's
//!   `alive`, `status` or `installed`;
//! - `baton-reader` reads everything under the prefix (operators' `etcdctl`);
//! - a host registered as running a member of the etcd cluster Baton uses also has a
//!   maintenance user (`baton-maintenance-<host>`) with etcd's `root` role, because etcd
//!   serves the calls around a member's restart (`Snapshot`, `MoveLeader`) only to `root`.
//!   Such a host holds the whole database on its disk already, so the user gives it nothing
//!   it could not read; its agent uses it for those calls only.
//!
//! A credential is a user and a password, kept in a root-only file as `user:password` (the
//! form `etcdctl --user` takes). etcd stores only a bcrypt hash of the password; Baton stores
//! none at all. The plans here are data; applying them to etcd is [`super::auth`].

use std::fmt;
use std::path::Path;

use crate::{HostId, HostKey, Keyspace};

/// The orchestrator's everyday role (and user).
pub const ORCHESTRATOR_ROLE: &str = "baton-orchestrator";
/// The read-only role for inspection.
pub const READER_ROLE: &str = "baton-reader";
/// Prefix of every host's user and role name.
pub const HOST_ROLE_PREFIX: &str = "baton-host-";
/// Where the downloader job leaves the host's credential (mode 0600), and the agent reads it.
pub const DEFAULT_CREDENTIAL_FILE: &str = "/etc/baton/etcd-credential";
/// Prefix of the maintenance user of a host running a member of the cluster.
pub const MAINTENANCE_USER_PREFIX: &str = "baton-maintenance-";
/// etcd's administrative role, the only one etcd serves `Snapshot` and `MoveLeader` to.
pub const ETCD_ROOT_ROLE: &str = "root";
/// Where the downloader job leaves a member host's maintenance credential (mode 0600), and
/// the agent reads it for the steps around its member's restart.
pub const DEFAULT_MAINTENANCE_CREDENTIAL_FILE: &str = "/etc/baton/etcd-maintenance-credential";

/// The user (and role) of `host`.
pub fn host_user(host: &HostId) -> String {
    format!("{HOST_ROLE_PREFIX}{host}")
}

/// The maintenance user of `host` (it has no role of its own: it has etcd's `root`).
pub fn maintenance_user(host: &HostId) -> String {
    format!("{MAINTENANCE_USER_PREFIX}{host}")
}

/// What a permission allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Get, range, watch.
    Read,
    /// Put, delete.
    Write,
    /// Both.
    ReadWrite,
}

/// One permission of a role: a key, or every key starting with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it allows.
    pub access: Access,
    /// The key, or the prefix.
    pub key: String,
    /// `key` is a prefix (always ending in `/`, so `hosts/host-1/` never covers `host-10`).
    pub prefix: bool,
}

impl Grant {
    fn key(access: Access, key: String) -> Self {
        Self {
            access,
            key,
            prefix: false,
        }
    }

    fn prefix(access: Access, key: String) -> Self {
        debug_assert!(key.ends_with('/'), "{key}");
        Self {
            access,
            key,
            prefix: true,
        }
    }
}

/// The keys a host writes: its own `alive`, `status` and `installed`.
pub const HOST_WRITES: [HostKey; 3] = [HostKey::Alive, HostKey::Status, HostKey::Installed];
/// The keys of a host the orchestrator writes (registration, dispatch, maintenance).
pub const ORCHESTRATOR_HOST_WRITES: [HostKey; 3] =
    [HostKey::Spec, HostKey::Desired, HostKey::Maintenance];

/// The role of `host`.
pub fn host_grants(keyspace: &Keyspace, host: &HostId) -> Vec<Grant> {
    let mut grants: Vec<Grant> = HOST_WRITES
        .iter()
        .map(|k| Grant::key(Access::Write, keyspace.host(host, *k)))
        .collect();
    grants.push(Grant::prefix(Access::Read, keyspace.hosts_prefix()));
    grants.push(Grant::prefix(Access::Read, keyspace.upgrades_prefix()));
    grants
}

/// The orchestrator role's permissions that do not depend on the hosts.
pub fn orchestrator_grants(keyspace: &Keyspace) -> Vec<Grant> {
    vec![
        Grant::prefix(Access::Read, keyspace.root()),
        Grant::prefix(Access::ReadWrite, keyspace.upgrades_prefix()),
        Grant::key(Access::ReadWrite, keyspace.active()),
        Grant::prefix(Access::ReadWrite, format!("{}/", keyspace.leader())),
        Grant::prefix(Access::ReadWrite, keyspace.events_root()),
        Grant::prefix(Access::ReadWrite, keyspace.tokens_prefix()),
        Grant::prefix(Access::ReadWrite, keyspace.groups_prefix()),
        Grant::key(Access::ReadWrite, keyspace.fleet_window()),
    ]
}

/// The orchestrator role's permissions for one registered host.
pub fn orchestrator_host_grants(keyspace: &Keyspace, host: &HostId) -> Vec<Grant> {
    ORCHESTRATOR_HOST_WRITES
        .iter()
        .map(|k| Grant::key(Access::ReadWrite, keyspace.host(host, *k)))
        .collect()
}

/// The read-only role.
pub fn reader_grants(keyspace: &Keyspace) -> Vec<Grant> {
    vec![Grant::prefix(Access::Read, keyspace.root())]
}

/// A user and its password, read from a root-only file holding `user:password`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A credential file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("etcd credential file {path}: {reason}")]
pub struct CredentialError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl Credential {
    /// Parses `user:password` (one line; a trailing newline is ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let (user, password) = line.split_once(':')?;
        if user.is_empty() || password.is_empty() || line.contains('\n') {
            return None;
        }
        Some(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Reads the file (errors name it, never its content).
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let error = |reason: String| CredentialError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Self::parse(&text).ok_or_else(|| error("expected one line `user:password`".into()))
    }

    /// The file's content.
    pub fn to_file_text(&self) -> String {
        format!("{}:{}\n", self.user, self.password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HostId {
        HostId::new(h).expect("host")
    }

    #[test]
    fn a_host_writes_only_its_own_reports() {
        let ks = Keyspace::default();
        let writes: Vec<(String, bool)> = host_grants(&ks, &host("host-1"))
            .into_iter()
            .filter(|g| g.access != Access::Read)
            .map(|g| (g.key, g.prefix))
            .collect();
        assert_eq!(
            writes,
            [
                ("/baton/hosts/host-1/alive".to_owned(), false),
                ("/baton/hosts/host-1/status".to_owned(), false),
                ("/baton/hosts/host-1/installed".to_owned(), false),
            ]
        );
    }

    #[test]
    fn prefixes_end_with_a_slash() {
        let ks = Keyspace::default();
        let all = orchestrator_grants(&ks)
            .into_iter()
            .chain(host_grants(&ks, &host("h")))
            .chain(reader_grants(&ks));
        for g in all.filter(|g| g.prefix) {
            assert!(g.key.ends_with('/'), "{g:?}");
        }
    }

    #[test]
    fn the_orchestrator_never_writes_a_hosts_reports() {
        let ks = Keyspace::default();
        let h = host("host-1");
        let grants: Vec<Grant> = orchestrator_grants(&ks)
            .into_iter()
            .chain(orchestrator_host_grants(&ks, &h))
            .filter(|g| g.access != Access::Read)
            .collect();
        for k in HOST_WRITES {
            let key = ks.host(&h, k);
            assert!(
                !grants
                    .iter()
                    .any(|g| g.key == key || (g.prefix && key.starts_with(&g.key))),
                "{key}"
            );
        }
    }

    #[test]
    fn credentials_parse_and_redact() {
        let c = Credential::parse("baton-host-h:s3cr3t\n").expect("parse");
        assert_eq!(c.user, "baton-host-h");
        assert_eq!(c.password, "s3cr3t");
        assert_eq!(c.to_file_text(), "baton-host-h:s3cr3t\n");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        for bad in ["", "nopassword", ":p", "u:", "u:p\nx"] {
            assert!(Credential::parse(bad).is_none(), "{bad:?}");
        }
    }
}
