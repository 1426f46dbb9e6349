//! The job's command line. The agent's settings come as one typed value
//! ([`JobSettings`], JSON in `--settings` or `BATON_JOB_SETTINGS`: what the orchestrator
//! passes) or, for an operator with `docker run`, as separate flags. Every flag has a
//! `BATON_*` environment fallback.

use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::agent_config::{
    DEFAULT_BOOT_ID_FILE, DEFAULT_KERNEL_RELEASE_FILE, DEFAULT_LEASE_TTL_SECS,
};
use baton_protocol::cli::EtcdTlsArgs;
use baton_protocol::etcd::EtcdTls;
use baton_protocol::job::{JobSettings, JobSettingsError, SETTINGS_ENV};
use baton_protocol::keys::DEFAULT_PREFIX;
use baton_protocol::manifest::{InstallPolicy, default_install_allow};
use baton_protocol::signing::BundleSignature;
use clap::Parser;

use crate::host_files::{AgentSettings, CredentialSource};
use crate::job::{DEFAULT_ACTIVE_TIMEOUT, JobConfig, POLL_INTERVAL};
use crate::layout::HostLayout;

/// Where the bundle is inside its image.
pub const DEFAULT_BUNDLE_DIR: &str = "/bundle";
/// Where the host's root is mounted in the job's container.
pub const DEFAULT_HOST_ROOT: &str = "/host";

/// The flags `--settings` replaces.
const AGENT_FLAGS: [&str; 13] = [
    "install_allow",
    "install_setuid",
    "host_id",
    "etcd_endpoints",
    "prefix",
    "lease_ttl_secs",
    "boot_id_file",
    "kernel_release_file",
    "container_prefix",
    "etcd_ca_file",
    "etcd_domain",
    "etcd_cert_file",
    "etcd_key_file",
];

fn signature(text: &str) -> Result<BundleSignature, String> {
    BundleSignature::parse(text).map_err(|e| e.to_string())
}

fn settings(text: &str) -> Result<JobSettings, JobSettingsError> {
    JobSettings::parse(text)
}

pub use baton_protocol::cli::LogFormat;

/// Verify this bundle's packages and stage them on the host (host paths under --host-root),
/// then install and (re)start the bundle's baton-agent through the host's systemd.
///
/// Prints one JSON summary line on stdout on success; on failure exits 1 with one line on
/// stderr naming the file and the reason.
#[derive(Debug, Parser)]
#[command(name = "baton-downloader", version = crate::VERSION)]
pub struct Cli {
    /// Where the bundle's files are (its manifest.json at the top).
    #[arg(long, env = "BATON_BUNDLE_DIR", default_value = DEFAULT_BUNDLE_DIR)]
    pub bundle: PathBuf,
    /// Where the host's root (or each of its Baton paths) is mounted.
    #[arg(long, env = "BATON_HOST_ROOT", default_value = DEFAULT_HOST_ROOT)]
    pub host_root: PathBuf,
    /// The host's system bus socket [default: <host-root>/run/dbus/system_bus_socket].
    #[arg(long, env = "BATON_DBUS_SOCKET")]
    pub dbus_socket: Option<PathBuf>,
    /// The agent's settings as one JSON value (see `baton_protocol::job::JobSettings`);
    /// replaces the agent flags below.
    #[arg(long, env = SETTINGS_ENV, value_parser = settings, conflicts_with_all = AGENT_FLAGS)]
    pub settings: Option<JobSettings>,
    /// This host's id, written to the agent's configuration.
    #[arg(long, env = "BATON_HOST_ID", required_unless_present = "settings")]
    pub host_id: Option<String>,
    /// etcd endpoint(s) for the agent, e.g. http://10.0.0.1:2379 (repeat or comma-separate).
    #[arg(
        long = "etcd-endpoint",
        env = "BATON_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required_unless_present = "settings"
    )]
    pub etcd_endpoints: Vec<String>,
    /// etcd key prefix for the agent.
    #[arg(long, env = "BATON_PREFIX", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// The agent's liveness lease TTL in seconds.
    #[arg(long, env = "BATON_LEASE_TTL_SECS", default_value_t = DEFAULT_LEASE_TTL_SECS)]
    pub lease_ttl_secs: i64,
    /// The file (on the host) holding the current boot's id, for the agent.
    #[arg(long, env = "BATON_BOOT_ID_FILE", default_value = DEFAULT_BOOT_ID_FILE)]
    pub boot_id_file: PathBuf,
    /// The file (on the host) holding the running kernel's release, for the agent.
    #[arg(long, env = "BATON_KERNEL_RELEASE_FILE", default_value = DEFAULT_KERNEL_RELEASE_FILE)]
    pub kernel_release_file: PathBuf,
    /// Prefix of the names of the service containers the agent runs (the simulated fleet,
    /// where hosts share one Docker Engine, uses `<host>-`).
    #[arg(long, env = "BATON_CONTAINER_PREFIX", default_value = "")]
    pub container_prefix: String,
    /// TLS for the agent's `https://` etcd endpoints (paths on the host).
    #[command(flatten)]
    pub tls: EtcdTlsArgs,
    /// Where bundles may install files, for the agent's `install_allow` (repeat or
    /// comma-separate; an entry ending in `/` covers a folder) [default: /usr/local/, /opt/,
    /// /etc/systemd/system/, /boot/]. A bundle installing elsewhere is refused.
    #[arg(long, env = "BATON_INSTALL_ALLOW", value_delimiter = ',')]
    pub install_allow: Vec<String>,
    /// Destinations that may carry setuid or setgid bits (the agent's `install_setuid`).
    #[arg(long, env = "BATON_INSTALL_SETUID", value_delimiter = ',')]
    pub install_setuid: Vec<String>,
    /// The bundle image this job runs from, pinned by digest (`repo@sha256:…`): recorded
    /// beside the staged bundle, whose agent installs it only for a `desired` naming that
    /// digest. Without it the bundle is staged but not installable. `image` in --settings
    /// takes its place.
    #[arg(long, env = "BATON_BUNDLE_IMAGE")]
    pub image: Option<String>,
    /// The bundle's signature (JSON: payload and signature, as `batonctl bundle verify`
    /// and the upgrade record show it): verified against the host's trusted keys
    /// (`/etc/baton/trusted-keys`) before anything is staged.
    #[arg(long, env = "BATON_BUNDLE_SIGNATURE", value_parser = signature)]
    pub signature: Option<BundleSignature>,
    /// Seconds the (re)started agent gets to become active.
    #[arg(long, env = "BATON_ACTIVE_TIMEOUT_SECS", default_value_t = DEFAULT_ACTIVE_TIMEOUT.as_secs())]
    pub active_timeout_secs: u64,
    /// Log format (logs go to stderr; stdout carries only the summary).
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl Cli {
    /// The job's configuration.
    pub fn config(&self) -> JobConfig {
        let dbus_socket = self
            .dbus_socket
            .clone()
            .unwrap_or_else(|| HostLayout::new(&self.host_root).dbus_socket());
        JobConfig {
            bundle_dir: self.bundle.clone(),
            host_root: self.host_root.clone(),
            dbus_socket,
            agent: self.agent_settings(),
            image: self
                .settings
                .as_ref()
                .and_then(|s| s.image.clone())
                .or_else(|| self.image.clone()),
            signature: self
                .settings
                .as_ref()
                .and_then(|s| s.signature.clone())
                .or_else(|| self.signature.clone()),
            active_timeout: Duration::from_secs(self.active_timeout_secs),
            poll_interval: POLL_INTERVAL,
        }
    }
}

impl Cli {
    /// What goes into the agent's configuration: `--settings`, else the agent flags.
    fn agent_settings(&self) -> AgentSettings {
        if let Some(s) = &self.settings {
            return AgentSettings {
                host_id: s.host_id.to_string(),
                etcd_endpoints: s.etcd_endpoints.clone(),
                prefix: s.prefix.clone(),
                lease_ttl_secs: s.lease_ttl_secs,
                boot_id_file: s.boot_id_file.clone(),
                kernel_release_file: s.kernel_release_file.clone(),
                container_prefix: s.container_prefix.clone(),
                tls: s.tls.clone(),
                credential: CredentialSource::from_settings(
                    s.credential_file.as_ref(),
                    s.keep_credential,
                ),
                maintenance_credential: CredentialSource::from_settings(
                    s.maintenance_credential_file.as_ref(),
                    s.keep_maintenance_credential,
                ),
                install: policy(s.install_allow.clone(), s.install_setuid.clone()),
            };
        }
        AgentSettings {
            host_id: self.host_id.clone().unwrap_or_default(),
            etcd_endpoints: self.etcd_endpoints.clone(),
            prefix: self.prefix.clone(),
            lease_ttl_secs: self.lease_ttl_secs,
            boot_id_file: self.boot_id_file.clone(),
            kernel_release_file: self.kernel_release_file.clone(),
            container_prefix: self.container_prefix.clone(),
            tls: self.tls.etcd_ca_file.clone().map(|ca_file| EtcdTls {
                ca_file,
                cert_file: self.tls.etcd_cert_file.clone(),
                key_file: self.tls.etcd_key_file.clone(),
                domain: self.tls.etcd_domain.clone(),
            }),
            credential: CredentialSource::Unmanaged,
            maintenance_credential: CredentialSource::Unmanaged,
            install: policy(
                (!self.install_allow.is_empty()).then(|| self.install_allow.clone()),
                self.install_setuid.clone(),
            ),
        }
    }
}

/// The install policy from the given lists (its entries are checked with the rest of the
/// agent's configuration).
fn policy(allow: Option<Vec<String>>, setuid: Vec<String>) -> InstallPolicy {
    InstallPolicy {
        allow: allow.unwrap_or_else(default_install_allow),
        setuid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_into_the_host_root() {
        let cli = Cli::try_parse_from([
            "baton-downloader",
            "--host-id",
            "h1",
            "--etcd-endpoint",
            "http://a:2379,http://b:2379",
        ])
        .unwrap();
        let c = cli.config();
        assert_eq!(c.bundle_dir, PathBuf::from("/bundle"));
        assert_eq!(
            c.dbus_socket,
            PathBuf::from("/host/run/dbus/system_bus_socket")
        );
        assert_eq!(c.agent.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.agent.prefix, "/baton");
        assert_eq!(c.active_timeout, Duration::from_secs(60));
    }

    #[test]
    fn settings_replace_the_agent_flags() {
        let json =
            r#"{"host_id":"h2","etcd_endpoints":["http://c:2379"],"container_prefix":"h2-"}"#;
        let cli = Cli::try_parse_from(["baton-downloader", "--settings", json]).unwrap();
        let c = cli.config();
        assert_eq!(c.agent.host_id, "h2");
        assert_eq!(c.agent.etcd_endpoints, ["http://c:2379"]);
        assert_eq!(c.agent.container_prefix, "h2-");
        assert_eq!(c.agent.prefix, "/baton");
        assert!(
            Cli::try_parse_from(["baton-downloader", "--settings", json, "--host-id", "h1"])
                .is_err()
        );
        let err = Cli::try_parse_from(["baton-downloader", "--settings", "{}"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("host_id"), "{err}");
    }

    #[test]
    fn host_id_and_endpoints_are_required() {
        assert!(Cli::try_parse_from(["baton-downloader", "--host-id", "h1"]).is_err());
        assert!(
            Cli::try_parse_from(["baton-downloader", "--etcd-endpoint", "http://a:1"]).is_err()
        );
    }
}
