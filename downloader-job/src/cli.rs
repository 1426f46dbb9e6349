//! The job's command line. Every flag has a `BATON_*` environment fallback, so whoever runs
//! the job (the orchestrator through the host's Docker Engine, or an operator with
//! `docker run`) can pass settings either way.

use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::agent_config::{
    DEFAULT_BOOT_ID_FILE, DEFAULT_KERNEL_RELEASE_FILE, DEFAULT_LEASE_TTL_SECS,
};
use baton_protocol::etcd::EtcdTls;
use baton_protocol::keys::DEFAULT_PREFIX;
use clap::{Parser, ValueEnum};

use crate::host_files::AgentSettings;
use crate::job::{DEFAULT_ACTIVE_TIMEOUT, JobConfig, POLL_INTERVAL};
use crate::layout::HostLayout;

/// Where the bundle is inside its image.
pub const DEFAULT_BUNDLE_DIR: &str = "/bundle";
/// Where the host's root is mounted in the job's container.
pub const DEFAULT_HOST_ROOT: &str = "/host";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Verify this bundle's packages and stage them on the host (host paths under --host-root),
/// then install and (re)start the bundle's baton-agent through the host's systemd.
///
/// Prints one JSON summary line on stdout on success; on failure exits 1 with one line on
/// stderr naming the file and the reason.
#[derive(Debug, Parser)]
#[command(name = "baton-downloader", version = baton_protocol::VERSION)]
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
    /// This host's id, written to the agent's configuration.
    #[arg(long, env = "BATON_HOST_ID")]
    pub host_id: String,
    /// etcd endpoint(s) for the agent, e.g. http://10.0.0.1:2379 (repeat or comma-separate).
    #[arg(
        long = "etcd-endpoint",
        env = "BATON_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
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
    /// CA certificate (PEM, a path on the host) for `https://` etcd endpoints, for the agent.
    #[arg(long, env = "BATON_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM, on the host) the agent presents to etcd.
    #[arg(long, env = "BATON_ETCD_CERT_FILE", requires = "etcd_ca_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM, on the host).
    #[arg(long, env = "BATON_ETCD_KEY_FILE", requires = "etcd_ca_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// Name to verify etcd's certificate against, if not the endpoint's host.
    #[arg(long, env = "BATON_ETCD_DOMAIN", requires = "etcd_ca_file")]
    pub etcd_domain: Option<String>,
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
            agent: AgentSettings {
                host_id: self.host_id.clone(),
                etcd_endpoints: self.etcd_endpoints.clone(),
                prefix: self.prefix.clone(),
                lease_ttl_secs: self.lease_ttl_secs,
                boot_id_file: self.boot_id_file.clone(),
                kernel_release_file: self.kernel_release_file.clone(),
                container_prefix: self.container_prefix.clone(),
                tls: self.etcd_ca_file.clone().map(|ca_file| EtcdTls {
                    ca_file,
                    cert_file: self.etcd_cert_file.clone(),
                    key_file: self.etcd_key_file.clone(),
                    domain: self.etcd_domain.clone(),
                }),
            },
            active_timeout: Duration::from_secs(self.active_timeout_secs),
            poll_interval: POLL_INTERVAL,
        }
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
    fn host_id_and_endpoints_are_required() {
        assert!(Cli::try_parse_from(["baton-downloader", "--host-id", "h1"]).is_err());
        assert!(
            Cli::try_parse_from(["baton-downloader", "--etcd-endpoint", "http://a:1"]).is_err()
        );
    }
}
