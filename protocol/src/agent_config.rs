//! The agent's configuration file, `/etc/baton/agent.toml`.
//!
//! Shared because two parts touch it: the downloader job writes it when it installs the
//! agent on a host, and the agent reads it at start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::etcd::EtcdTls;
use crate::keys::{DEFAULT_PREFIX, Keyspace};
use crate::manifest::{DEFAULT_INSTALL_ALLOW, InstallPolicy, default_install_allow};
use crate::names::HostId;

/// Where the agent looks for its configuration.
pub const DEFAULT_PATH: &str = "/etc/baton/agent.toml";
/// Default liveness lease TTL in seconds.
pub const DEFAULT_LEASE_TTL_SECS: i64 = 10;
/// Default state folder on the host (bundles, agent binaries, journal).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/baton";
/// Where the kernel publishes the boot id. In a simulated host the boot id comes from a
/// file written at boot instead (a container restart keeps the kernel's).
pub const DEFAULT_BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// Where the kernel publishes its release.
pub const DEFAULT_KERNEL_RELEASE_FILE: &str = "/proc/sys/kernel/osrelease";

/// Default time, in seconds, a unit or container may take to become healthy after it is
/// applied (a unit must then stay active for a quarter of it).
pub const DEFAULT_HEALTH_SETTLE_SECS: u64 = 12;

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// The file could not be read.
    #[error("agent config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("agent config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error (names the field and line).
        source: toml::de::Error,
    },
    /// An entry of a list is refused (`install_allow[2]`).
    #[error("agent config {path}: field {field}: {reason}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The field and entry.
        field: String,
        /// Why.
        reason: String,
    },
    /// A value is out of range.
    #[error("agent config {path}: field {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

pub(crate) fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}
pub(crate) fn default_ttl() -> i64 {
    DEFAULT_LEASE_TTL_SECS
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
pub(crate) fn default_kernel_release_file() -> PathBuf {
    PathBuf::from(DEFAULT_KERNEL_RELEASE_FILE)
}
pub(crate) fn default_boot_id_file() -> PathBuf {
    PathBuf::from(DEFAULT_BOOT_ID_FILE)
}
fn default_health_settle_secs() -> u64 {
    DEFAULT_HEALTH_SETTLE_SECS
}
fn is_default_health_settle(secs: &u64) -> bool {
    *secs == DEFAULT_HEALTH_SETTLE_SECS
}

/// Which boot loader installs and boots a `kernel` component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// Found on the host when a kernel is first applied: the simulated boot loader if its
    /// folder `/boot/baton` exists, systemd-boot on a UEFI host where `bootctl is-installed`
    /// succeeds, GRUB where `/boot/grub/grub.cfg` exists.
    #[default]
    Auto,
    /// systemd-boot: Boot Loader Specification entries made by `kernel-install`, a one-shot
    /// boot with `bootctl set-oneshot`, the default set with `bootctl set-default`.
    SystemdBoot,
    /// GRUB with `GRUB_DEFAULT=saved`: entries made by `update-grub`, a one-shot boot with
    /// `grub-reboot`, the default set with `grub-set-default`.
    Grub,
    /// The simulated fleet's boot loader: the files `/boot/baton/default` and
    /// `/boot/baton/oneshot`, read at its simulated boot.
    Simulated,
}

impl Bootloader {
    fn is_auto(&self) -> bool {
        *self == Bootloader::Auto
    }
}

/// `/etc/baton/agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's id, as registered.
    pub host_id: HostId,
    /// etcd endpoints, e.g. `["http://10.0.0.1:2379"]`.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Liveness lease TTL in seconds.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: i64,
    /// State folder: bundles, agent binaries, journal.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// File holding the current boot's id.
    #[serde(default = "default_boot_id_file")]
    pub boot_id_file: PathBuf,
    /// File holding the running kernel's release (in a simulated host, the file its
    /// bootloader writes at boot).
    #[serde(default = "default_kernel_release_file")]
    pub kernel_release_file: PathBuf,
    /// Prefix for the names of the service containers this host runs. Empty on a real host;
    /// in the simulated fleet, where hosts share one Docker Engine, `<host>-`.
    #[serde(default)]
    pub container_prefix: String,
    /// How long (seconds) a unit or container may take to become healthy after it is
    /// applied. Left out of the written file when it is the default, so files written
    /// before the setting existed stay byte for byte the same.
    #[serde(
        default = "default_health_settle_secs",
        skip_serializing_if = "is_default_health_settle"
    )]
    pub health_settle_secs: u64,
    /// The boot loader for `kernel` components (`auto`, `systemd-boot`, `grub`,
    /// `simulated`); left out of the written file when `auto`.
    #[serde(default, skip_serializing_if = "Bootloader::is_auto")]
    pub bootloader: Bootloader,
    /// Where bundles may install files: entries ending in `/` cover a folder, others one
    /// file (Baton's own paths are refused whatever this says); left out of the written
    /// file when it is the default ([`DEFAULT_INSTALL_ALLOW`]).
    #[serde(
        default = "default_install_allow",
        skip_serializing_if = "is_default_install_allow"
    )]
    pub install_allow: Vec<String>,
    /// Destinations that may carry setuid or setgid bits (default: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install_setuid: Vec<String>,
    /// TLS for `https://` etcd endpoints (`[tls]`: `ca_file`, optional `cert_file` and
    /// `key_file`, optional `domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTls>,
    /// The host's own etcd identity, a root-only file holding `user:password` (written by
    /// the downloader job, [`crate::etcd::identity::DEFAULT_CREDENTIAL_FILE`]); read at
    /// every session, so a rotated credential is picked up without a restart. Absent: etcd
    /// without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<PathBuf>,
    /// The host's maintenance identity, on a host running a member of the etcd cluster
    /// Baton uses: a root-only file holding `user:password` of a user with etcd's `root`
    /// role (written by the downloader job,
    /// [`crate::etcd::identity::DEFAULT_MAINTENANCE_CREDENTIAL_FILE`]), used only for the
    /// steps around the member's restart (member status, snapshot, moving the leader).
    /// Absent: those steps use `credential_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_credential_file: Option<PathBuf>,
    /// The folder of public keys the host trusts for bundles (written by the downloader
    /// job); left out of the written file when it is the default
    /// ([`HOST_TRUSTED_KEYS_DIR`](crate::signing::HOST_TRUSTED_KEYS_DIR)).
    #[serde(
        default = "default_trusted_keys_dir",
        skip_serializing_if = "is_default_trusted_keys_dir"
    )]
    pub trusted_keys_dir: PathBuf,
}

fn default_trusted_keys_dir() -> PathBuf {
    PathBuf::from(crate::signing::HOST_TRUSTED_KEYS_DIR)
}

fn is_default_trusted_keys_dir(dir: &Path) -> bool {
    dir == Path::new(crate::signing::HOST_TRUSTED_KEYS_DIR)
}

fn is_default_install_allow(allow: &[String]) -> bool {
    allow == DEFAULT_INSTALL_ALLOW
}

impl AgentConfig {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text` (read from `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, AgentConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| AgentConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |field, reason: String| AgentConfigError::Invalid {
            path: path.to_owned(),
            field,
            reason,
        };
        if config.etcd_endpoints.is_empty() {
            return Err(invalid(
                "etcd_endpoints",
                "must list at least one endpoint".into(),
            ));
        }
        if let Some(bad) = config
            .etcd_endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Err(invalid(
                "etcd_endpoints",
                format!("{bad:?} must start with http:// or https://"),
            ));
        }
        Keyspace::new(&config.prefix).map_err(|e| invalid("prefix", e.to_string()))?;
        for (field, file) in [
            ("credential_file", &config.credential_file),
            (
                "maintenance_credential_file",
                &config.maintenance_credential_file,
            ),
        ] {
            if let Some(p) = file.as_ref().filter(|p| !p.is_absolute()) {
                return Err(invalid(field, format!("{} must be absolute", p.display())));
            }
        }
        let https = config
            .etcd_endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        match &config.tls {
            Some(tls) => {
                tls.check()
                    .map_err(|(field, reason)| invalid(field, reason))?;
                if https != config.etcd_endpoints.len() {
                    return Err(invalid(
                        "etcd_endpoints",
                        "with a [tls] section every endpoint must be https://".into(),
                    ));
                }
            }
            None if https > 0 => {
                return Err(invalid(
                    "tls",
                    "https:// endpoints need a [tls] section with at least ca_file".into(),
                ));
            }
            None => {}
        }
        if !(2..=300).contains(&config.lease_ttl_secs) {
            return Err(invalid(
                "lease_ttl_secs",
                format!("{} must be between 2 and 300", config.lease_ttl_secs),
            ));
        }
        if !(1..=600).contains(&config.health_settle_secs) {
            return Err(invalid(
                "health_settle_secs",
                format!("{} must be between 1 and 600", config.health_settle_secs),
            ));
        }
        InstallPolicy::new(
            ("install_allow", config.install_allow.clone()),
            ("install_setuid", config.install_setuid.clone()),
        )
        .map_err(|e| AgentConfigError::Entry {
            path: path.to_owned(),
            field: e.field,
            reason: e.reason,
        })?;
        for (field, p) in [
            ("state_dir", &config.state_dir),
            ("boot_id_file", &config.boot_id_file),
            ("kernel_release_file", &config.kernel_release_file),
        ] {
            if !p.is_absolute() {
                return Err(invalid(field, format!("{} must be absolute", p.display())));
            }
        }
        Ok(config)
    }

    /// Where bundles may install files (checked when the file was parsed).
    pub fn install_policy(&self) -> InstallPolicy {
        InstallPolicy {
            allow: self.install_allow.clone(),
            setuid: self.install_setuid.clone(),
        }
    }

    /// How long a unit or container may take to become healthy after it is applied.
    pub fn health_settle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.health_settle_secs)
    }

    /// The TOML text of this configuration.
    #[allow(clippy::expect_used)]
    pub fn to_toml(&self) -> String {
        // Cannot fail: strings, integers and a list of strings.
        toml::to_string(self).expect("agent config always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults_and_round_trips() {
        let c = AgentConfig::parse(
            Path::new("/etc/baton/agent.toml"),
            "host_id = \"h1\"\netcd_endpoints = [\"http://10.0.0.1:2379\"]\n",
        )
        .expect("valid");
        assert_eq!(c.prefix, "/baton");
        assert_eq!(c.lease_ttl_secs, 10);
        assert_eq!(c.health_settle_secs, DEFAULT_HEALTH_SETTLE_SECS);
        assert!(
            !c.to_toml().contains("health_settle_secs"),
            "the default is not written: {}",
            c.to_toml()
        );
        assert_eq!(
            AgentConfig::parse(Path::new("x"), &c.to_toml()).expect("again"),
            c
        );
        let short = AgentConfig {
            health_settle_secs: 1,
            ..c
        };
        assert!(short.to_toml().contains("health_settle_secs = 1"));
        assert_eq!(
            AgentConfig::parse(Path::new("x"), &short.to_toml()).expect("short"),
            short
        );
    }

    #[test]
    fn the_install_allow_list_defaults_and_its_entries_are_checked() {
        let base = "host_id = \"h1\"\netcd_endpoints = [\"http://10.0.0.1:2379\"]\n";
        let c = AgentConfig::parse(Path::new("a.toml"), base).expect("valid");
        assert_eq!(c.install_policy(), InstallPolicy::default());
        assert!(!c.to_toml().contains("install_allow"), "{}", c.to_toml());
        let text = format!(
            "{base}install_allow = [\"/usr/local/\", \"/srv/app/\"]\ninstall_setuid = [\"/usr/local/bin/ping\"]\n"
        );
        let c = AgentConfig::parse(Path::new("a.toml"), &text).expect("valid");
        assert_eq!(c.install_allow, ["/usr/local/", "/srv/app/"]);
        assert_eq!(
            AgentConfig::parse(Path::new("x"), &c.to_toml()).expect("again"),
            c
        );
        let err = AgentConfig::parse(
            Path::new("a.toml"),
            &format!("{base}install_allow = [\"/usr/local/\", \"srv/\"]\n"),
        )
        .expect_err("relative");
        let err = err.to_string();
        assert!(
            err.contains("a.toml") && err.contains("install_allow[1]"),
            "{err}"
        );
    }

    #[test]
    fn tls_section_round_trips() {
        let c = AgentConfig::parse(
            Path::new("/etc/baton/agent.toml"),
            "host_id = \"h1\"\netcd_endpoints = [\"https://10.0.0.1:2379\"]\n\
             [tls]\nca_file = \"/etc/baton/etcd-ca.pem\"\ncert_file = \"/etc/baton/c.pem\"\nkey_file = \"/etc/baton/k.pem\"\n",
        )
        .expect("valid");
        assert!(c.tls.is_some());
        assert_eq!(
            AgentConfig::parse(Path::new("x"), &c.to_toml()).expect("again"),
            c
        );
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let path = Path::new("/etc/baton/agent.toml");
        let cases = [
            (
                "host_id = \"a/b\"\netcd_endpoints = [\"http://x\"]",
                "host id",
            ),
            ("host_id = \"h\"\netcd_endpoints = []", "etcd_endpoints"),
            (
                "host_id = \"h\"\netcd_endpoints = [\"x:1\"]",
                "etcd_endpoints",
            ),
            (
                "host_id = \"h\"\netcd_endpoints = [\"http://x\"]\nlease_ttl_secs = 0",
                "lease_ttl_secs",
            ),
            (
                "host_id = \"h\"\netcd_endpoints = [\"http://x\"]\nprefix = \"b\"",
                "prefix",
            ),
            (
                "host_id = \"h\"\netcd_endpoints = [\"http://x\"]\nhealth_settle_secs = 0",
                "health_settle_secs",
            ),
            (
                "host_id = \"h\"\netcd_endpoints = [\"http://x\"]\ncolour = 1",
                "colour",
            ),
            ("host_id = \"h\"\netcd_endpoints = [\"https://x\"]", "tls"),
            (
                "host_id = \"h\"\netcd_endpoints = [\"http://x\"]\n[tls]\nca_file = \"/ca.pem\"",
                "every endpoint must be https",
            ),
            (
                "host_id = \"h\"\netcd_endpoints = [\"https://x\"]\n[tls]\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"",
                "key_file",
            ),
            (
                "host_id = \"h\"\netcd_endpoints = [\"https://x\"]\n[tls]\nca_file = \"ca.pem\"",
                "tls.ca_file",
            ),
        ];
        for (text, field) in cases {
            let err = AgentConfig::parse(path, text).expect_err(text).to_string();
            assert!(err.contains("/etc/baton/agent.toml"), "{err}");
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
