//! The demo's state file (`<state dir>/state.json`): everything a running demo consists of,
//! written as each part comes up, so `down` and `status` find it all from another process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use batonctl::client::{ApiClient, ClientError, Credentials};

use super::{DemoError, STATE_FILE, io_error};
use crate::pki::TestPki;

/// The admin token's file in the state folder.
pub const TOKEN_FILE: &str = "token";
/// The API's certificates' folder in the state folder.
pub const API_PKI_DIR: &str = "api-pki";
/// The demo's signing key pair's folder in the state folder.
pub const KEYS_DIR: &str = "keys";

/// Version of the state file's format.
pub(super) const STATE_SCHEMA: u32 = 1;
/// What the demo puts in its state dir: `down` removes these and then the folder only if
/// it is empty, so a state dir given by mistake (`--state-dir ~`) loses nothing else.
const STATE_ENTRIES: &[&str] = &[
    STATE_FILE,
    STATE_TMP,
    TOKEN_FILE,
    API_PKI_DIR,
    KEYS_DIR,
    "etcd",
    "etcd.log",
    super::etcd_security::ETCD_PKI_DIR,
    super::etcd_security::ROOT_CREDENTIAL,
    super::etcd_security::ORCHESTRATOR_CREDENTIAL,
    super::etcd_security::ETCDCTL_ENV,
    "registry",
    "registry.log",
    "orchestrator.log",
    "bundles",
];
const STATE_TMP: &str = "state.json.tmp";

/// A process started detached, identified by pid and start time (so a recycled pid is
/// never mistaken for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// `etcd`, `registry`, `orchestrator`.
    pub name: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot when it started.
    pub start_ticks: u64,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

/// One simulated host as the demo registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoHost {
    /// Hostname and host id.
    pub name: String,
    /// Its container on the machine's Docker Engine.
    pub container: String,
    /// Its `zone` label.
    pub zone: String,
}

/// Everything a running demo consists of: written to `<state dir>/state.json` as each part
/// comes up, read by `down` and `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoState {
    pub schema_version: u32,
    /// The fleet's owner label value (`demo:<state dir>`).
    pub owner: String,
    pub state_dir: PathBuf,
    /// etcd as the machine reaches it (`http://127.0.0.1:2379`).
    pub etcd: String,
    /// etcd as the hosts' agents reach it (the fleet's gateway).
    pub agent_etcd: Option<String>,
    /// `127.0.0.1:5000`.
    pub registry: String,
    /// `https://127.0.0.1:7480`.
    pub api: String,
    /// Where `batonctl` is.
    pub batonctl: PathBuf,
    pub run_id: Option<String>,
    pub network: Option<String>,
    pub fleet_root: Option<PathBuf>,
    pub hosts: Vec<DemoHost>,
    pub processes: Vec<Daemon>,
    /// Bundle tags built locally (untagged by `down`).
    pub images: Vec<String>,
    /// Pinned bundle references by version.
    pub bundles: BTreeMap<String, String>,
    pub started_at: String,
}

impl DemoState {
    pub(super) fn path(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }

    /// The admin API token's file (written by the orchestrator's --admin-token-file).
    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join(TOKEN_FILE)
    }

    /// The API's certificates: a CA and the orchestrator's certificate for 127.0.0.1.
    pub fn api_pki(&self) -> TestPki {
        TestPki::at(&self.state_dir.join(API_PKI_DIR))
    }

    /// A client of the demo's API: https, checked against the demo's CA, with the admin
    /// token once the orchestrator has written it.
    pub fn api_client(&self) -> Result<ApiClient, ClientError> {
        let token_file = self.token_file();
        let credentials = Credentials {
            token: token_file
                .exists()
                .then(|| Credentials::read_token(&token_file))
                .transpose()?,
            ca_file: Some(self.api_pki().ca),
            client_cert: None,
        };
        ApiClient::with(&self.api, &credentials)
    }

    /// Writes the state file atomically (temp file, rename).
    pub(super) fn save(&self) -> Result<(), DemoError> {
        let path = self.path();
        let tmp = self.state_dir.join(STATE_TMP);
        let json = serde_json::to_vec_pretty(self).map_err(|e| DemoError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, json).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    /// The state file of the demo in `state_dir`, if there is one.
    pub fn load(state_dir: &Path) -> Result<Option<DemoState>, DemoError> {
        let path = state_dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DemoError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DemoError::State {
                path,
                reason: e.to_string(),
            })
    }

    pub(super) fn log(&self, name: &str) -> PathBuf {
        self.processes.iter().find(|p| p.name == name).map_or_else(
            || self.state_dir.join(format!("{name}.log")),
            |p| p.log.clone(),
        )
    }
}

/// The fleet's owner label value for the demo in `state_dir`.
pub(super) fn owner_of(state_dir: &Path) -> String {
    format!("demo:{}", state_dir.display())
}

/// Removes what the demo keeps in `dir`, then `dir` if that left it empty; whether it
/// removed the folder.
pub(super) fn remove_state_dir(dir: &Path) -> Result<bool, String> {
    if !dir.exists() {
        return Ok(false);
    }
    for entry in STATE_ENTRIES {
        let path = dir.join(entry);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", path.display()));
            }
            _ => {}
        }
    }
    std::fs::remove_dir(dir).map(|()| true).map_err(|e| {
        format!(
            "{}: {e} (left in place: it holds files the demo did not make)",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_demos_own_files_are_removed_with_its_folder() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("demo");
        std::fs::create_dir_all(dir.join("etcd/member")).unwrap();
        std::fs::write(dir.join(STATE_FILE), "{}").unwrap();
        std::fs::write(dir.join("etcd.log"), "log").unwrap();
        std::fs::write(dir.join(TOKEN_FILE), "secret").unwrap();
        std::fs::create_dir_all(dir.join(API_PKI_DIR)).unwrap();
        std::fs::write(dir.join(API_PKI_DIR).join("ca.pem"), "ca").unwrap();
        assert_eq!(remove_state_dir(&dir), Ok(true));
        assert!(!dir.exists());
        assert_eq!(remove_state_dir(&dir), Ok(false));

        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("etcd.log"), "log").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        assert!(remove_state_dir(&dir).is_err());
        assert!(dir.join("notes.txt").exists());
        assert!(!dir.join("etcd.log").exists());
    }
}
