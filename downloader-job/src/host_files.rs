//! The agent's configuration file (`/etc/baton/agent.toml`, the shape owned by
//! `baton_protocol::agent_config`) and its systemd unit (`baton-agent.service`), each written
//! only when its content changes, atomically.

use std::path::{Path, PathBuf};

use baton_protocol::HostId;
use baton_protocol::agent_config::AgentConfig;
use baton_protocol::etcd::EtcdTls;
use baton_protocol::etcd::identity::{
    DEFAULT_CREDENTIAL_FILE, DEFAULT_MAINTENANCE_CREDENTIAL_FILE,
};
use baton_protocol::manifest::InstallPolicy;

use crate::error::JobError;
use crate::fs::{HostFs, ensure_dir, parent_of, read_existing, write_atomic};
use crate::layout::{AGENT_CONFIG_PATH, AGENT_UNIT_PATH, CURRENT_LINK, STATE_DIR};

/// Largest existing file read for comparison; anything bigger is simply rewritten.
const MAX_COMPARED: u64 = 64 * 1024;

/// The agent's settings, as given to the job by whoever runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// This host's id.
    pub host_id: String,
    /// etcd endpoints.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// Liveness lease TTL in seconds.
    pub lease_ttl_secs: i64,
    /// The file holding the current boot's id, on the host.
    pub boot_id_file: PathBuf,
    /// The file holding the running kernel's release, on the host.
    pub kernel_release_file: PathBuf,
    /// Prefix of the service containers' names (empty on a real host).
    pub container_prefix: String,
    /// TLS for `https://` etcd endpoints (files on the host).
    pub tls: Option<EtcdTls>,
    /// The host's etcd credential (written to the host's `/etc/baton/etcd-credential`,
    /// mode 0600).
    pub credential: CredentialSource,
    /// A member host's maintenance credential (written to the host's
    /// `/etc/baton/etcd-maintenance-credential`, mode 0600).
    pub maintenance_credential: CredentialSource,
    /// Where bundles may install files (checked here, and by the agent).
    pub install: InstallPolicy,
}

/// Where one of the host's etcd credentials comes from for this job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CredentialSource {
    /// Not managed: the agent's configuration names no such file.
    #[default]
    Unmanaged,
    /// A new credential, in this file of the job's own container (put there by the
    /// orchestrator): written to the host.
    Delivered(PathBuf),
    /// The credential the host holds stays as it is (the orchestrator issues one only to a
    /// host without a live agent or an identity); the host's file must exist.
    Kept,
}

impl CredentialSource {
    /// From the job settings' file and `keep` flag (which exclude each other there).
    pub fn from_settings(file: Option<&PathBuf>, keep: bool) -> Self {
        match (file, keep) {
            (Some(file), _) => Self::Delivered(file.clone()),
            (None, true) => Self::Kept,
            (None, false) => Self::Unmanaged,
        }
    }

    /// Whether the agent's configuration names the host's file.
    pub fn is_managed(&self) -> bool {
        !matches!(self, Self::Unmanaged)
    }
}

/// The `agent.toml` text for `settings`, validated by `AgentConfig::parse` (errors name the
/// file and the field).
pub fn agent_config_text(settings: &AgentSettings) -> Result<String, JobError> {
    let path = Path::new(AGENT_CONFIG_PATH);
    let host_id = HostId::new(settings.host_id.clone()).map_err(|e| {
        baton_protocol::agent_config::AgentConfigError::Invalid {
            path: path.to_owned(),
            field: "host_id",
            reason: e.to_string(),
        }
    })?;
    let config = AgentConfig {
        host_id,
        etcd_endpoints: settings.etcd_endpoints.clone(),
        prefix: settings.prefix.clone(),
        lease_ttl_secs: settings.lease_ttl_secs,
        state_dir: PathBuf::from(STATE_DIR),
        boot_id_file: settings.boot_id_file.clone(),
        kernel_release_file: settings.kernel_release_file.clone(),
        container_prefix: settings.container_prefix.clone(),
        health_settle_secs: baton_protocol::agent_config::DEFAULT_HEALTH_SETTLE_SECS,
        bootloader: baton_protocol::agent_config::Bootloader::default(),
        install_allow: settings.install.allow.clone(),
        install_setuid: settings.install.setuid.clone(),
        tls: settings.tls.clone(),
        trusted_keys_dir: baton_protocol::signing::HOST_TRUSTED_KEYS_DIR.into(),
        credential_file: settings
            .credential
            .is_managed()
            .then(|| PathBuf::from(DEFAULT_CREDENTIAL_FILE)),
        maintenance_credential_file: settings
            .maintenance_credential
            .is_managed()
            .then(|| PathBuf::from(DEFAULT_MAINTENANCE_CREDENTIAL_FILE)),
    };
    let text = format!(
        "# Written by baton-downloader; rewritten by the next bundle's job.\n{}",
        config.to_toml()
    );
    AgentConfig::parse(path, &text)?;
    Ok(text)
}

/// The agent's unit. `Type=notify`: the agent says READY=1 once it serves, and pings the
/// watchdog; `Restart=always` with no start limit, because a host without its agent cannot
/// be updated or healed.
pub fn agent_unit_text() -> String {
    format!(
        "\
# Written by baton-downloader; rewritten by the next bundle's job.
[Unit]
Description=Baton host agent (updater-daemon)
Documentation=file:{STATE_DIR}/agent/{CURRENT_LINK}
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={STATE_DIR}/agent/{CURRENT_LINK}/baton-agent --config {AGENT_CONFIG_PATH}
Restart=always
RestartSec=2
WatchdogSec=30
TimeoutStartSec=60
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"
    )
}

/// Writes `contents` to `path` (mode `mode`) unless it already holds exactly that; returns
/// whether it wrote.
pub fn write_if_changed(
    fs: &dyn HostFs,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<bool, JobError> {
    use std::os::unix::fs::PermissionsExt;
    let same_mode = fs
        .symlink_metadata(path)
        .map_err(|e| JobError::io(path, "stat", e))?
        .is_some_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same_mode && read_existing(fs, path, MAX_COMPARED)?.as_deref() == Some(contents) {
        return Ok(false);
    }
    ensure_dir(fs, parent_of(path))?;
    write_atomic(fs, path, contents, mode)?;
    Ok(true)
}

/// The unit's path on the host, for messages.
pub fn unit_host_path() -> &'static Path {
    Path::new(AGENT_UNIT_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;
    use crate::fs::testing::{FaultyFs, leak};

    fn settings() -> AgentSettings {
        AgentSettings {
            host_id: "host-1".into(),
            etcd_endpoints: vec!["http://10.0.0.1:2379".into()],
            prefix: "/baton".into(),
            lease_ttl_secs: 10,
            boot_id_file: "/run/baton/boot-id".into(),
            kernel_release_file: "/run/baton/booted-kernel".into(),
            container_prefix: String::new(),
            tls: None,
            credential: CredentialSource::Unmanaged,
            maintenance_credential: CredentialSource::Unmanaged,
            install: InstallPolicy::default(),
        }
    }

    #[test]
    fn config_round_trips_through_the_protocol_parser() {
        let text = agent_config_text(&settings()).unwrap();
        let c = AgentConfig::parse(Path::new("x"), &text).unwrap();
        assert_eq!(c.host_id.as_str(), "host-1");
        assert_eq!(c.boot_id_file, Path::new("/run/baton/boot-id"));
        assert_eq!(c.state_dir, Path::new("/var/lib/baton"));
    }

    #[test]
    fn bad_settings_name_the_file_and_field() {
        let mut s = settings();
        s.etcd_endpoints = vec!["10.0.0.1:2379".into()];
        let err = agent_config_text(&s).unwrap_err().to_string();
        assert!(
            err.contains("/etc/baton/agent.toml") && err.contains("etcd_endpoints"),
            "{err}"
        );
        let mut s = settings();
        s.host_id = "a/b".into();
        let err = agent_config_text(&s).unwrap_err().to_string();
        assert!(err.contains("host_id"), "{err}");
    }

    #[test]
    fn unit_is_type_notify_with_watchdog() {
        let unit = agent_unit_text();
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=30",
            "Restart=always",
            "ExecStart=/var/lib/baton/agent/current/baton-agent --config /etc/baton/agent.toml",
            "WantedBy=multi-user.target",
        ] {
            assert!(unit.lines().any(|l| l == line), "missing {line}");
        }
    }

    #[test]
    fn writes_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/baton/agent.toml");
        assert!(write_if_changed(&RealFs, &path, b"a", 0o644).unwrap());
        let fs = leak(FaultyFs::recording());
        assert!(!write_if_changed(&fs, &path, b"a", 0o644).unwrap());
        assert!(fs.ops().is_empty());
        assert!(write_if_changed(&RealFs, &path, b"b", 0o644).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"b");
    }
}
