//! Where the job's files live on the host, as seen from the job (the host's root mounted
//! at `--host-root`, `/host` in the bundle container).
//!
//! The host paths themselves are fixed here: the agent's unit runs
//! `/var/lib/baton/agent/current/baton-agent --config /etc/baton/agent.toml`, so the agent,
//! the job and the unit agree without configuration.

use std::path::{Path, PathBuf};

use baton_protocol::agent_config;

/// The agent's systemd unit.
pub const AGENT_UNIT: &str = "baton-agent.service";
/// The unit file on the host.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/baton-agent.service";
/// The agent's state folder on the host.
pub const STATE_DIR: &str = agent_config::DEFAULT_STATE_DIR;
/// The agent's configuration file on the host.
pub const AGENT_CONFIG_PATH: &str = agent_config::DEFAULT_PATH;
/// Name of the agent binary inside its versioned folder.
pub const AGENT_BINARY: &str = "baton-agent";
/// The link naming the active agent version (`agent/current -> 2.0.0`).
pub const CURRENT_LINK: &str = "current";
/// The link naming the agent version that was active before (`agent/previous -> 1.0.0`).
pub const PREVIOUS_LINK: &str = "previous";
/// The bundle's manifest inside its staged folder (and at the top of the bundle).
pub const MANIFEST_FILE: &str = "manifest.json";
/// Prefix of the job's temporary names (the shared durable write's); entries starting with
/// `.` under `bundles/` and `agent/` are never bundles or agent versions.
pub use baton_protocol::durable::TEMP_PREFIX;

/// The host's paths under the root the job sees it at.
#[derive(Debug, Clone)]
pub struct HostLayout {
    root: PathBuf,
}

impl HostLayout {
    /// The host's root as mounted in the job (e.g. `/host`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The host's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path `abs` (absolute on the host) as seen by the job.
    pub fn host(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// `/var/lib/baton`.
    pub fn state_dir(&self) -> PathBuf {
        self.host(STATE_DIR)
    }

    /// `/var/lib/baton/bundles`.
    pub fn bundles_dir(&self) -> PathBuf {
        self.state_dir().join("bundles")
    }

    /// `/var/lib/baton/bundles/<version>`.
    pub fn bundle_dir(&self, version: &str) -> PathBuf {
        self.bundles_dir().join(version)
    }

    /// `/var/lib/baton/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.state_dir().join("agent")
    }

    /// `/var/lib/baton/agent/<version>/baton-agent`.
    pub fn agent_binary(&self, version: &str) -> PathBuf {
        self.agent_dir().join(version).join(AGENT_BINARY)
    }

    /// `/etc/baton/trusted-keys`: the public keys the host trusts for bundles.
    pub fn trusted_keys_dir(&self) -> PathBuf {
        self.host(baton_protocol::signing::HOST_TRUSTED_KEYS_DIR)
    }

    /// `/etc/baton/agent.toml`.
    pub fn agent_config(&self) -> PathBuf {
        self.host(AGENT_CONFIG_PATH)
    }

    /// `/etc/systemd/system/baton-agent.service`.
    pub fn agent_unit(&self) -> PathBuf {
        self.host(AGENT_UNIT_PATH)
    }

    /// The host's system bus socket, `/run/dbus/system_bus_socket`.
    pub fn dbus_socket(&self) -> PathBuf {
        self.host("/run/dbus/system_bus_socket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_under_the_root() {
        let l = HostLayout::new("/host");
        assert_eq!(
            l.bundle_dir("2.0.0"),
            Path::new("/host/var/lib/baton/bundles/2.0.0")
        );
        assert_eq!(
            l.agent_binary("2.0.0"),
            Path::new("/host/var/lib/baton/agent/2.0.0/baton-agent")
        );
        assert_eq!(l.agent_config(), Path::new("/host/etc/baton/agent.toml"));
        assert_eq!(
            l.agent_unit(),
            Path::new("/host/etc/systemd/system/baton-agent.service")
        );
        assert_eq!(
            l.dbus_socket(),
            Path::new("/host/run/dbus/system_bus_socket")
        );
    }
}
