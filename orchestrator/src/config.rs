//! The orchestrator's configuration: flags, an optional TOML file (`--config`) whose keys are
//! the flags' names with `_` for `-`, and environment variables, in that order of precedence
//! (so a self-update's file wins over the orchestrator image's `BATON_LISTEN`). A self-update hands the new version the leader's whole configuration as
//! such a file ([`Config::successor_file`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::cli::{ConfigFileError, EtcdTlsArgs, TlsFlagError, tls_from, with_config_file};
use baton_protocol::etcd::EtcdTls;
use clap::Parser;
use serde::{Serialize, Serializer};

use crate::docker::{DockerTls, Endpoint, TcpAccess};
use baton_protocol::manifest::{InstallPolicy, check_absolute_path, default_install_allow};

use crate::engine::EngineConfig;
use crate::engine::dispatch::{DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT};
use crate::engine::model::{
    DEFAULT_AGENT_TIMEOUT, DEFAULT_DOWNLOAD_CONCURRENCY, DEFAULT_HEAL_GRACE,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_INSTALL_TIMEOUT, Limits, MAX_DISPATCH_PER_PASS,
};
use crate::engine::retention::{DEFAULT_KEEP_FINISHED, DEFAULT_KEEP_FINISHED_FOR, Retention};
use crate::engine::successor::SelfUpdate;
use crate::listen::ApiTransport;

/// Default REST listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
/// Default etcd endpoint.
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";
/// Default leadership lease TTL in seconds: how long a dead leader blocks a successor.
pub const DEFAULT_LEADER_TTL_SECS: i64 = 10;
/// Default time a self-updated orchestrator gets to join the election.
pub const DEFAULT_SELF_UPDATE_TIMEOUT: Duration = Duration::from_secs(120);

/// A flag's value refused.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// Not a duration.
    #[error("{value:?}: {source} (e.g. 90s, 10m)")]
    Duration {
        /// The value.
        value: String,
        /// Why.
        source: humantime::DurationError,
    },
    /// Not `KEY=VALUE`.
    #[error("{0:?} is not KEY=VALUE")]
    Label(String),
}

/// The configuration could not be read or is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line (or a variable) does not parse: clap's error, with usage.
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// The configuration file, naming it (and the key).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// TLS settings, naming the flag.
    #[error(transparent)]
    Tls(#[from] TlsFlagError),
    /// `--docker`.
    #[error("--docker: {0}")]
    Docker(#[from] crate::docker::DockerEndpointError),
    /// `--prefix`.
    #[error("--prefix: {0}")]
    Prefix(#[from] baton_protocol::keys::KeyError),
    /// How the API is served.
    #[error("{0}")]
    Listen(String),
    /// The API's TLS files.
    #[error(transparent)]
    ApiTls(#[from] crate::listen::TlsError),
    /// `--trusted-key` or `--allowed-registry`, naming the file or entry.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    /// `--agent-install-allow`, `--agent-install-setuid` or `--path-map-root`, naming the
    /// entry.
    #[error("{}: {}", .0.field, .0.reason)]
    Install(baton_protocol::manifest::ManifestError),
}

fn duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s).map_err(|source| ValueError::Duration {
        value: s.to_owned(),
        source,
    })
}

fn label(s: &str) -> Result<(String, String), ValueError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(ValueError::Label(s.to_owned())),
    }
}

fn human<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn labels<S: Serializer>(labels: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(labels.iter().map(|(k, v)| format!("{k}={v}")))
}

/// Baton orchestrator (system-updater): upgrades the fleet from update bundles, host by host
/// or batch by batch, coordinated through etcd. Serves the REST API on every replica; the
/// elected leader runs upgrades.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "baton-orchestrator", version = crate::VERSION)]
pub struct Config {
    /// A TOML file with any of these settings, by the flag's name with `_` for `-`
    /// (`download_timeout = "10m"`); flags win over it, and it over environment variables.
    #[arg(long, env = "BATON_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "BATON_ETCD", value_delimiter = ',', default_value = DEFAULT_ETCD)]
    pub etcd: Vec<String>,
    /// etcd endpoints as the hosts' agents reach them (written into their configuration by
    /// the downloader job), comma-separated [default: --etcd].
    #[arg(long, env = "BATON_AGENT_ETCD", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_etcd: Vec<String>,
    /// TLS for the orchestrator's own etcd connection.
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: EtcdTlsArgs,
    /// CA certificate for the agents (a path on the hosts), passed to the downloader job.
    #[arg(long, env = "BATON_AGENT_ETCD_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_etcd_ca_file: Option<PathBuf>,
    /// The agents' client certificate (a path on the hosts).
    #[arg(
        long,
        env = "BATON_AGENT_ETCD_CERT_FILE",
        requires = "agent_etcd_ca_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_etcd_cert_file: Option<PathBuf>,
    /// The agents' client key (a path on the hosts).
    #[arg(
        long,
        env = "BATON_AGENT_ETCD_KEY_FILE",
        requires = "agent_etcd_ca_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_etcd_key_file: Option<PathBuf>,
    /// Name the agents verify etcd's certificate against.
    #[arg(long, env = "BATON_AGENT_ETCD_DOMAIN", requires = "agent_etcd_ca_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_etcd_domain: Option<String>,
    /// Where bundles may install files on the hosts (the agents' `install_allow`, passed to
    /// the downloader job), comma-separated; an entry ending in `/` covers a folder
    /// [default: /usr/local/, /opt/, /etc/systemd/system/, /boot/].
    #[arg(long, env = "BATON_AGENT_INSTALL_ALLOW", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_install_allow: Vec<String>,
    /// Destinations on the hosts that may carry setuid or setgid bits (the agents'
    /// `install_setuid`), comma-separated.
    #[arg(long, env = "BATON_AGENT_INSTALL_SETUID", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_install_setuid: Vec<String>,
    /// A public key file (batonctl key generate) whose signatures make a bundle acceptable
    /// (repeat or comma-separate; give the old and the new key while rotating). Without one,
    /// POST /v1/upgrades refuses every bundle.
    #[arg(
        long = "trusted-key",
        env = "BATON_TRUSTED_KEYS",
        value_delimiter = ','
    )]
    #[serde(rename = "trusted_key", skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<PathBuf>,
    /// A registry images may be pulled from, host[:port] (repeat or comma-separate; a host
    /// without a port allows it on any port): bundles and the orchestrator images they name.
    /// Without one, every image is refused.
    #[arg(
        long = "allowed-registry",
        env = "BATON_ALLOWED_REGISTRIES",
        value_delimiter = ','
    )]
    #[serde(rename = "allowed_registry", skip_serializing_if = "Vec::is_empty")]
    pub allowed_registries: Vec<String>,
    /// Key prefix of Baton's keyspace in etcd.
    #[arg(long, env = "BATON_PREFIX", default_value = baton_protocol::keys::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Address the REST API listens on.
    #[arg(long, env = "BATON_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// URL under which other replicas' clients reach this one's API, announced in the
    /// election so followers can name the leader's [default: http://<listen>].
    #[arg(long, env = "BATON_ADVERTISE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The API's TLS certificate chain (PEM); with --api-tls-key-file the API speaks https.
    #[arg(long, env = "BATON_API_TLS_CERT_FILE", requires = "api_tls_key_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_tls_cert_file: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    #[arg(long, env = "BATON_API_TLS_KEY_FILE", requires = "api_tls_cert_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_tls_key_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) of API clients' certificates: a client may then prove who it
    /// is with a certificate instead of a bearer token (mutual TLS). The certificate's
    /// common name names an API token, whose role it gets; revoking that token revokes the
    /// certificate's access too.
    #[arg(long, env = "BATON_API_CLIENT_CA_FILE", requires = "api_tls_cert_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_client_ca_file: Option<PathBuf>,
    /// Serve the API as plain HTTP: only on a loopback --listen address, and only without
    /// the TLS files. Anyone on the machine can then read the tokens sent to it.
    #[arg(
        long,
        env = "BATON_INSECURE_HTTP",
        conflicts_with = "api_tls_cert_file"
    )]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
    /// The orchestrator's own etcd identity (etcd with authentication on): a root-only file
    /// holding `user:password`. With --etcd-admin-credential-file it is created (mode 0600)
    /// for user `baton-orchestrator` with a fresh password if missing, and that user is set
    /// up with the `baton-orchestrator` role at start (docs/security.md).
    #[arg(long, env = "BATON_ETCD_CREDENTIAL_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_credential_file: Option<PathBuf>,
    /// An etcd user with etcd's `root` role (`user:password` in a root-only file), used only
    /// to manage identities: the roles at start, each host's `spec` at registration, its
    /// user and a password at its first downloader job and a fresh password at a job on a
    /// host whose agent is not alive, the host's removal. Without it hosts get no identity
    /// of their own (etcd without authentication).
    #[arg(
        long,
        env = "BATON_ETCD_ADMIN_CREDENTIAL_FILE",
        requires = "etcd_credential_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_admin_credential_file: Option<PathBuf>,
    /// A file holding an admin API token: created (mode 0600) with a fresh token named
    /// `admin` if it does not exist; its hash is stored in etcd at start. Every replica
    /// should get the same file (or create one before the first start).
    #[arg(long, env = "BATON_ADMIN_TOKEN_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Another `Host` the API answers to, host:port (repeat); it always answers to its
    /// listen address (loopback names on a loopback or unspecified one) and --advertise.
    #[arg(
        long = "api-allowed-host",
        env = "BATON_API_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    #[serde(rename = "api_allowed_host", skip_serializing_if = "Vec::is_empty")]
    pub api_allowed_hosts: Vec<String>,
    /// Another browser origin allowed to call the API, scheme://host[:port] (repeat); by
    /// default a request carrying any `Origin` but the server's own (its fleet page's) is
    /// refused.
    #[arg(
        long = "api-allowed-origin",
        env = "BATON_API_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(rename = "api_allowed_origin", skip_serializing_if = "Vec::is_empty")]
    pub api_allowed_origins: Vec<String>,
    /// Name this replica announces in the leader election (default: orchestrator-<pid>).
    #[arg(long, env = "BATON_REPLICA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Leadership lease TTL in seconds.
    #[arg(long, env = "BATON_LEADER_TTL", default_value_t = DEFAULT_LEADER_TTL_SECS)]
    pub leader_ttl: i64,
    /// The Docker Engine used to resolve bundle tags to digests and read their manifests:
    /// unix:///path or tcp://host:port [default: DOCKER_HOST, else the local socket].
    #[arg(long, env = "BATON_DOCKER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<String>,
    /// CA certificate that hosts' `tcp://` Docker Engines' server certificates are checked
    /// against; with --docker-tls-cert-file and --docker-tls-key-file, every `tcp://`
    /// engine is reached over TLS with that client certificate (dockerd `--tlsverify`).
    #[arg(long, env = "BATON_DOCKER_TLS_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_tls_ca_file: Option<PathBuf>,
    /// The orchestrator's client certificate for Docker Engines.
    #[arg(
        long,
        env = "BATON_DOCKER_TLS_CERT_FILE",
        requires = "docker_tls_ca_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_tls_cert_file: Option<PathBuf>,
    /// The orchestrator's client key for Docker Engines.
    #[arg(
        long,
        env = "BATON_DOCKER_TLS_KEY_FILE",
        requires = "docker_tls_ca_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_tls_key_file: Option<PathBuf>,
    /// Reach `tcp://` Docker Engines over plain HTTP. Without it, and without the
    /// --docker-tls-* files, hosts can only be registered with `unix://` endpoints: an
    /// engine runs Baton's job as root, so whoever can talk to it owns the host.
    #[arg(
        long,
        env = "BATON_ALLOW_PLAIN_DOCKER_TCP",
        conflicts_with = "docker_tls_ca_file"
    )]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_plain_docker_tcp: bool,
    /// A folder on hosts' Docker Engine machines under which a registration's path map may
    /// place the host's paths (repeat; comma-separated in the environment), e.g. where
    /// simulated hosts keep their files. Without one, a host path maps only to itself.
    #[arg(
        long = "path-map-root",
        env = "BATON_PATH_MAP_ROOTS",
        value_delimiter = ','
    )]
    #[serde(rename = "path_map_root", skip_serializing_if = "Vec::is_empty")]
    pub path_map_roots: Vec<String>,
    /// Downloader jobs running at once.
    #[arg(long, env = "BATON_DOWNLOAD_CONCURRENCY", default_value_t = DEFAULT_DOWNLOAD_CONCURRENCY)]
    pub download_concurrency: usize,
    /// Time one downloader job attempt may take.
    #[arg(long, env = "BATON_DOWNLOAD_TIMEOUT", value_parser = duration, default_value = "10m")]
    #[serde(serialize_with = "human")]
    pub download_timeout: Duration,
    /// Attempts per downloader job (the job is idempotent).
    #[arg(long, env = "BATON_DOWNLOAD_ATTEMPTS", default_value_t = DEFAULT_ATTEMPTS)]
    pub download_attempts: u32,
    /// Time agents get to report the bundle's agent version once the bundle is staged.
    #[arg(long, env = "BATON_AGENT_TIMEOUT", value_parser = duration, default_value = "3m")]
    #[serde(serialize_with = "human")]
    pub agent_timeout: Duration,
    /// Time a dispatched host's agent may be gone (a reboot) before the host counts as failed.
    #[arg(long, env = "BATON_HEALTH_TIMEOUT", value_parser = duration, default_value = "3m")]
    #[serde(serialize_with = "human")]
    pub health_timeout: Duration,
    /// Time a dispatched host whose agent is alive may make no progress (no change of its
    /// `status`) before it counts as failed.
    #[arg(long, env = "BATON_INSTALL_TIMEOUT", value_parser = duration, default_value = "30m")]
    #[serde(serialize_with = "human")]
    pub install_timeout: Duration,
    /// Time a registered host's agent may be gone, while its Docker Engine answers, before
    /// the downloader job of its current bundle is run again to revive it (autohealing;
    /// maintenance mode `autohealing-off` turns it off for a host or group).
    #[arg(long, env = "BATON_HEAL_GRACE", value_parser = duration, default_value = "30s")]
    #[serde(serialize_with = "human")]
    pub heal_grace: Duration,
    /// Finished upgrade records kept (the newest; with their hosts' outcomes and events):
    /// the leader removes older ones, except those still in use.
    #[arg(long, env = "BATON_KEEP_FINISHED", default_value_t = DEFAULT_KEEP_FINISHED)]
    pub keep_finished: usize,
    /// Age (since its last change) past which a finished upgrade record is removed, however
    /// few there are, unless still in use.
    #[arg(long, env = "BATON_KEEP_FINISHED_FOR", value_parser = duration, default_value = "30d")]
    #[serde(serialize_with = "human")]
    pub keep_finished_for: Duration,
    /// Prometheus server the soaks' `prometheus` gates ask (instant queries at
    /// `<url>/api/v1/query`), e.g. `http://prometheus:9090`. Without it such gates are
    /// refused.
    #[arg(long, env = "BATON_PROMETHEUS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// Label for downloader job containers (and a self-updated orchestrator's container),
    /// KEY=VALUE (repeat).
    #[arg(long = "job-label", env = "BATON_JOB_LABELS", value_delimiter = ',', value_parser = label)]
    #[serde(rename = "job_label", serialize_with = "labels")]
    pub job_labels: Vec<(String, String)>,
    /// Time a new orchestrator version (from a bundle's orchestrator image, started in a
    /// container on --docker's engine) gets to join the election before the self-update,
    /// and with it the upgrade, fails.
    #[arg(long, env = "BATON_SELF_UPDATE_TIMEOUT", value_parser = duration, default_value = "2m")]
    #[serde(serialize_with = "human")]
    pub self_update_timeout: Duration,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "BATON_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// A configuration with every default, talking to `etcd` (for tests and embedding).
    pub fn new(etcd: Vec<String>) -> Self {
        Self {
            config: None,
            etcd,
            agent_etcd: Vec::new(),
            tls: EtcdTlsArgs::default(),
            agent_etcd_ca_file: None,
            agent_etcd_cert_file: None,
            agent_etcd_key_file: None,
            agent_etcd_domain: None,
            agent_install_allow: Vec::new(),
            agent_install_setuid: Vec::new(),
            trusted_keys: Vec::new(),
            allowed_registries: Vec::new(),
            prefix: baton_protocol::keys::DEFAULT_PREFIX.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            advertise: None,
            api_tls_cert_file: None,
            api_tls_key_file: None,
            api_client_ca_file: None,
            insecure_http: false,
            admin_token_file: None,
            etcd_credential_file: None,
            etcd_admin_credential_file: None,
            api_allowed_hosts: Vec::new(),
            api_allowed_origins: Vec::new(),
            replica: None,
            leader_ttl: DEFAULT_LEADER_TTL_SECS,
            docker: None,
            docker_tls_ca_file: None,
            docker_tls_cert_file: None,
            docker_tls_key_file: None,
            allow_plain_docker_tcp: false,
            path_map_roots: Vec::new(),
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            download_timeout: DEFAULT_TIMEOUT,
            download_attempts: DEFAULT_ATTEMPTS,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            install_timeout: DEFAULT_INSTALL_TIMEOUT,
            heal_grace: DEFAULT_HEAL_GRACE,
            keep_finished: DEFAULT_KEEP_FINISHED,
            keep_finished_for: DEFAULT_KEEP_FINISHED_FOR,
            prometheus_url: None,
            job_labels: Vec::new(),
            self_update_timeout: DEFAULT_SELF_UPDATE_TIMEOUT,
            log_json: false,
        }
    }

    /// The configuration from the process's command line, environment and `--config` file.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// The configuration from `args` (program name first), the environment and the
    /// `--config` file they name.
    pub fn load_from(
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Result<Self, ConfigError> {
        let args =
            with_config_file::<Config>(args.into_iter().map(Into::into).collect(), "config")?;
        Ok(Config::try_parse_from(args)?)
    }

    /// This configuration as a `--config` file for a self-update's new version: everything
    /// but `--replica` and `--docker`, which the new version is given by flag.
    pub fn successor_file(&self) -> Result<String, ConfigFileError> {
        let mut own = self.clone();
        own.config = None;
        own.replica = None;
        own.docker = None;
        baton_protocol::cli::config_file_text(&own)
    }

    /// How the API is served on `listen`: TLS when its files are given; plain HTTP only on
    /// loopback and only with --insecure-http. `Err` says what to give.
    pub fn api_transport(&self, listen: SocketAddr) -> Result<ApiTransport, ConfigError> {
        crate::listen::transport(
            listen,
            self.api_tls_cert_file
                .as_deref()
                .zip(self.api_tls_key_file.as_deref()),
            self.api_client_ca_file.as_deref(),
            self.insecure_http,
        )
        .map_err(ConfigError::Listen)
    }

    /// Files a self-updated successor needs at the same paths (read-only bind mounts): the
    /// etcd TLS files, the API's TLS files (the clients' CA too), the admin token file and
    /// the trusted keys.
    pub fn mounted_files(&self) -> Vec<PathBuf> {
        let mut files = self.tls.files();
        files.extend(self.trusted_keys.iter().cloned());
        files.extend(
            [
                &self.api_tls_cert_file,
                &self.api_tls_key_file,
                &self.api_client_ca_file,
                &self.admin_token_file,
                &self.etcd_credential_file,
                &self.etcd_admin_credential_file,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
        files
    }

    /// The Docker Engine the orchestrator resolves bundles on (and starts its successor on).
    pub fn docker_endpoint(&self) -> Result<Option<Endpoint>, ConfigError> {
        Ok(self.docker.as_deref().map(Endpoint::parse).transpose()?)
    }

    /// The folders given with --path-map-root, checked: absolute and normalised.
    pub fn path_map_roots(&self) -> Result<Vec<String>, ConfigError> {
        for root in &self.path_map_roots {
            check_absolute_path("--path-map-root", root).map_err(ConfigError::Install)?;
        }
        Ok(self.path_map_roots.clone())
    }

    /// Where bundles may install files on the hosts; refused naming the flag and entry.
    pub fn agent_install(&self) -> Result<InstallPolicy, ConfigError> {
        let allow = if self.agent_install_allow.is_empty() {
            default_install_allow()
        } else {
            self.agent_install_allow.clone()
        };
        InstallPolicy::new(
            ("--agent-install-allow", allow),
            ("--agent-install-setuid", self.agent_install_setuid.clone()),
        )
        .map_err(ConfigError::Install)
    }

    /// The trusted keys (read from their files) and the registry allow-list; refused naming
    /// the flag and the file or entry.
    pub fn bundle_trust(&self) -> Result<crate::trust::BundleTrust, ConfigError> {
        Ok(crate::trust::BundleTrust::load(
            &self.trusted_keys,
            &self.allowed_registries,
        )?)
    }

    /// The replica's name in the election.
    pub fn replica_name(&self) -> String {
        self.replica
            .clone()
            .unwrap_or_else(|| format!("orchestrator-{}", std::process::id()))
    }

    /// TLS for the orchestrator's etcd connection; `Err` names the flag at fault.
    pub fn etcd_tls(&self) -> Result<Option<EtcdTls>, TlsFlagError> {
        self.tls.tls("--etcd")
    }

    /// TLS settings for the agents (paths on the hosts); `Err` names the flag at fault.
    pub fn agent_tls(&self) -> Result<Option<EtcdTls>, TlsFlagError> {
        tls_from(
            "--agent-etcd",
            &self.agent_etcd_ca_file,
            &self.agent_etcd_cert_file,
            &self.agent_etcd_key_file,
            &self.agent_etcd_domain,
        )
    }

    /// The client certificate for hosts' `tcp://` Docker Engines, checked: the three files
    /// go together and exist.
    pub fn docker_tls(&self) -> Result<Option<DockerTls>, TlsFlagError> {
        let tls = tls_from(
            "--docker-tls",
            &self.docker_tls_ca_file,
            &self.docker_tls_cert_file,
            &self.docker_tls_key_file,
            &None,
        )?;
        let missing = |flag: &str| TlsFlagError {
            flag: flag.to_owned(),
            reason: "Docker Engines with --tlsverify need a client certificate and key".to_owned(),
        };
        match (self.docker_tls_ca_file.is_some(), tls) {
            (false, _)
                if self.docker_tls_cert_file.is_some() || self.docker_tls_key_file.is_some() =>
            {
                Err(missing("--docker-tls-ca-file"))
            }
            (_, None) => Ok(None),
            (_, Some(tls)) => Ok(Some(DockerTls {
                ca_file: tls.ca_file,
                cert_file: tls
                    .cert_file
                    .ok_or_else(|| missing("--docker-tls-cert-file"))?,
                key_file: tls
                    .key_file
                    .ok_or_else(|| missing("--docker-tls-key-file"))?,
            })),
        }
    }

    /// How `tcp://` Docker Engines are reached: over TLS with the --docker-tls-* files,
    /// plain when --allow-plain-docker-tcp says so, else not at all.
    pub fn docker_tcp(&self) -> Result<TcpAccess, TlsFlagError> {
        Ok(match self.docker_tls()? {
            Some(tls) => TcpAccess::Tls(tls),
            None if self.allow_plain_docker_tcp => TcpAccess::Plain,
            None => TcpAccess::Refused,
        })
    }

    /// The engine's part of the configuration.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            limits: Limits {
                download_concurrency: self.download_concurrency.max(1),
                agent_timeout: self.agent_timeout,
                health_timeout: self.health_timeout,
                install_timeout: self.install_timeout,
                max_dispatch: MAX_DISPATCH_PER_PASS,
                heal_grace: self.heal_grace,
            },
            agent_etcd: if self.agent_etcd.is_empty() {
                self.etcd.clone()
            } else {
                self.agent_etcd.clone()
            },
            job_timeout: self.download_timeout,
            job_attempts: self.download_attempts.max(1),
            job_labels: self.job_labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            agent_tls: self.agent_tls().ok().flatten(),
            agent_install: self.agent_install().unwrap_or_default(),
            docker_tcp: self.docker_tcp().unwrap_or_default(),
            self_update: SelfUpdate {
                config: self.successor_file().unwrap_or_default(),
                docker: self.docker_endpoint().ok().flatten(),
                docker_tcp: self.docker_tcp().unwrap_or_default(),
                mounted_files: self.mounted_files(),
                timeout: self.self_update_timeout,
            },
            identities: None,
            prometheus: self.prometheus_url.clone(),
            retention: Retention {
                keep: self.keep_finished,
                keep_for: self.keep_finished_for,
            },
        }
    }
}

#[cfg(test)]
mod tests;
