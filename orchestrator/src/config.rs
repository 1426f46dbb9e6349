//! The orchestrator's configuration, from flags or environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::etcd::EtcdTls;
use clap::Parser;

use crate::docker::Endpoint;
use crate::engine::EngineConfig;
use crate::engine::decide::{
    DEFAULT_AGENT_TIMEOUT, DEFAULT_DOWNLOAD_CONCURRENCY, DEFAULT_HEAL_GRACE,
    DEFAULT_HEALTH_TIMEOUT, Limits, MAX_DISPATCH_PER_PASS,
};
use crate::engine::downloader::{DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT};
use crate::engine::successor::SelfUpdate;

/// Default REST listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
/// Default etcd endpoint.
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";
/// Default leadership lease TTL in seconds: how long a dead leader blocks a successor.
pub const DEFAULT_LEADER_TTL_SECS: i64 = 10;
/// Default time a self-updated orchestrator gets to join the election.
pub const DEFAULT_SELF_UPDATE_TIMEOUT: Duration = Duration::from_secs(120);

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 90s, 10m)"))
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Baton orchestrator (system-updater): upgrades the fleet from update bundles, host by host
/// or batch by batch, coordinated through etcd. Serves the REST API on every replica; the
/// elected leader runs upgrades.
#[derive(Debug, Clone, Parser)]
#[command(name = "baton-orchestrator", version = baton_protocol::VERSION)]
pub struct Config {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "BATON_ETCD", value_delimiter = ',', default_value = DEFAULT_ETCD)]
    pub etcd: Vec<String>,
    /// etcd endpoints as the hosts' agents reach them (written into their configuration by
    /// the downloader job), comma-separated [default: --etcd].
    #[arg(long, env = "BATON_AGENT_ETCD", value_delimiter = ',')]
    pub agent_etcd: Vec<String>,
    /// CA certificate (PEM) for `https://` etcd endpoints.
    #[arg(long, env = "BATON_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) the orchestrator presents to etcd.
    #[arg(long, env = "BATON_ETCD_CERT_FILE", requires = "etcd_ca_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "BATON_ETCD_KEY_FILE", requires = "etcd_ca_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// Name to verify etcd's certificate against, if not the endpoint's host.
    #[arg(long, env = "BATON_ETCD_DOMAIN", requires = "etcd_ca_file")]
    pub etcd_domain: Option<String>,
    /// CA certificate for the agents (a path on the hosts), passed to the downloader job.
    #[arg(long, env = "BATON_AGENT_ETCD_CA_FILE")]
    pub agent_etcd_ca_file: Option<PathBuf>,
    /// The agents' client certificate (a path on the hosts).
    #[arg(
        long,
        env = "BATON_AGENT_ETCD_CERT_FILE",
        requires = "agent_etcd_ca_file"
    )]
    pub agent_etcd_cert_file: Option<PathBuf>,
    /// The agents' client key (a path on the hosts).
    #[arg(
        long,
        env = "BATON_AGENT_ETCD_KEY_FILE",
        requires = "agent_etcd_ca_file"
    )]
    pub agent_etcd_key_file: Option<PathBuf>,
    /// Name the agents verify etcd's certificate against.
    #[arg(long, env = "BATON_AGENT_ETCD_DOMAIN", requires = "agent_etcd_ca_file")]
    pub agent_etcd_domain: Option<String>,
    /// Key prefix of Baton's keyspace in etcd.
    #[arg(long, env = "BATON_PREFIX", default_value = baton_protocol::keys::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Address the REST API listens on.
    #[arg(long, env = "BATON_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// URL under which other replicas' clients reach this one's API, announced in the
    /// election so followers can name the leader's [default: http://<listen>].
    #[arg(long, env = "BATON_ADVERTISE")]
    pub advertise: Option<String>,
    /// Name this replica announces in the leader election (default: orchestrator-<pid>).
    #[arg(long, env = "BATON_REPLICA")]
    pub replica: Option<String>,
    /// Leadership lease TTL in seconds.
    #[arg(long, env = "BATON_LEADER_TTL", default_value_t = DEFAULT_LEADER_TTL_SECS)]
    pub leader_ttl: i64,
    /// The Docker Engine used to resolve bundle tags to digests and read their manifests:
    /// unix:///path or tcp://host:port [default: DOCKER_HOST, else the local socket].
    #[arg(long, env = "BATON_DOCKER")]
    pub docker: Option<String>,
    /// Downloader jobs running at once.
    #[arg(long, env = "BATON_DOWNLOAD_CONCURRENCY", default_value_t = DEFAULT_DOWNLOAD_CONCURRENCY)]
    pub download_concurrency: usize,
    /// Time one downloader job attempt may take.
    #[arg(long, env = "BATON_DOWNLOAD_TIMEOUT", value_parser = duration, default_value = "10m")]
    pub download_timeout: Duration,
    /// Attempts per downloader job (the job is idempotent).
    #[arg(long, env = "BATON_DOWNLOAD_ATTEMPTS", default_value_t = DEFAULT_ATTEMPTS)]
    pub download_attempts: u32,
    /// Time agents get to report the bundle's agent version once the bundle is staged.
    #[arg(long, env = "BATON_AGENT_TIMEOUT", value_parser = duration, default_value = "3m")]
    pub agent_timeout: Duration,
    /// Time a dispatched host's agent may be gone (a reboot) before the host counts as failed.
    #[arg(long, env = "BATON_HEALTH_TIMEOUT", value_parser = duration, default_value = "3m")]
    pub health_timeout: Duration,
    /// Time a registered host's agent may be gone, while its Docker Engine answers, before
    /// the downloader job of its current bundle is run again to revive it (autohealing;
    /// maintenance mode `autohealing-off` turns it off for a host or group).
    #[arg(long, env = "BATON_HEAL_GRACE", value_parser = duration, default_value = "30s")]
    pub heal_grace: Duration,
    /// Label for downloader job containers (and a self-updated orchestrator's container),
    /// KEY=VALUE (repeat).
    #[arg(long = "job-label", env = "BATON_JOB_LABELS", value_delimiter = ',', value_parser = label)]
    pub job_labels: Vec<(String, String)>,
    /// Time a new orchestrator version (from a bundle's orchestrator image, started in a
    /// container on --docker's engine) gets to join the election before the self-update,
    /// and with it the upgrade, fails.
    #[arg(long, env = "BATON_SELF_UPDATE_TIMEOUT", value_parser = duration, default_value = "2m")]
    pub self_update_timeout: Duration,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "BATON_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// A configuration with every default, talking to `etcd` (for tests and embedding).
    pub fn new(etcd: Vec<String>) -> Self {
        Self {
            etcd,
            agent_etcd: Vec::new(),
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_domain: None,
            agent_etcd_ca_file: None,
            agent_etcd_cert_file: None,
            agent_etcd_key_file: None,
            agent_etcd_domain: None,
            prefix: baton_protocol::keys::DEFAULT_PREFIX.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            advertise: None,
            replica: None,
            leader_ttl: DEFAULT_LEADER_TTL_SECS,
            docker: None,
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            download_timeout: DEFAULT_TIMEOUT,
            download_attempts: DEFAULT_ATTEMPTS,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            heal_grace: DEFAULT_HEAL_GRACE,
            job_labels: Vec::new(),
            self_update_timeout: DEFAULT_SELF_UPDATE_TIMEOUT,
            log_json: false,
        }
    }

    /// The command line that reproduces this configuration, but for `--replica` and
    /// `--docker`: a self-update starts the new version with it (and names those two itself).
    /// Keep in step with the fields: the round-trip test below sets every one.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let time = |d: Duration| humantime::format_duration(d).to_string();
        flag("etcd", self.etcd.join(","));
        if !self.agent_etcd.is_empty() {
            flag("agent-etcd", self.agent_etcd.join(","));
        }
        let optional = [
            ("etcd-ca-file", path(&self.etcd_ca_file)),
            ("etcd-cert-file", path(&self.etcd_cert_file)),
            ("etcd-key-file", path(&self.etcd_key_file)),
            ("etcd-domain", self.etcd_domain.clone()),
            ("agent-etcd-ca-file", path(&self.agent_etcd_ca_file)),
            ("agent-etcd-cert-file", path(&self.agent_etcd_cert_file)),
            ("agent-etcd-key-file", path(&self.agent_etcd_key_file)),
            ("agent-etcd-domain", self.agent_etcd_domain.clone()),
            ("advertise", self.advertise.clone()),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                flag(name, v);
            }
        }
        flag("prefix", self.prefix.clone());
        flag("listen", self.listen.to_string());
        flag("leader-ttl", self.leader_ttl.to_string());
        flag(
            "download-concurrency",
            self.download_concurrency.to_string(),
        );
        flag("download-timeout", time(self.download_timeout));
        flag("download-attempts", self.download_attempts.to_string());
        flag("agent-timeout", time(self.agent_timeout));
        flag("health-timeout", time(self.health_timeout));
        flag("heal-grace", time(self.heal_grace));
        for (k, v) in &self.job_labels {
            flag("job-label", format!("{k}={v}"));
        }
        flag("self-update-timeout", time(self.self_update_timeout));
        if self.log_json {
            args.push("--log-json".to_owned());
        }
        args
    }

    /// The Docker Engine the orchestrator resolves bundles on (and starts its successor on).
    pub fn docker_endpoint(&self) -> Result<Option<Endpoint>, String> {
        self.docker
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .map_err(|e| format!("--docker: {e}"))
    }

    /// The replica's name in the election.
    pub fn replica_name(&self) -> String {
        self.replica
            .clone()
            .unwrap_or_else(|| format!("orchestrator-{}", std::process::id()))
    }

    /// TLS for the orchestrator's etcd connection; `Err` names the flag at fault.
    pub fn etcd_tls(&self) -> Result<Option<EtcdTls>, String> {
        tls(
            "--etcd",
            &self.etcd_ca_file,
            &self.etcd_cert_file,
            &self.etcd_key_file,
            &self.etcd_domain,
        )
    }

    /// TLS settings for the agents (paths on the hosts); `Err` names the flag at fault.
    pub fn agent_tls(&self) -> Result<Option<EtcdTls>, String> {
        tls(
            "--agent-etcd",
            &self.agent_etcd_ca_file,
            &self.agent_etcd_cert_file,
            &self.agent_etcd_key_file,
            &self.agent_etcd_domain,
        )
    }

    /// The engine's part of the configuration.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            limits: Limits {
                download_concurrency: self.download_concurrency.max(1),
                agent_timeout: self.agent_timeout,
                health_timeout: self.health_timeout,
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
            self_update: SelfUpdate {
                args: self.args(),
                docker: self.docker_endpoint().ok().flatten(),
                etcd_files: [
                    &self.etcd_ca_file,
                    &self.etcd_cert_file,
                    &self.etcd_key_file,
                ]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
                timeout: self.self_update_timeout,
            },
        }
    }
}

fn tls(
    flag: &str,
    ca_file: &Option<PathBuf>,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
    domain: &Option<String>,
) -> Result<Option<EtcdTls>, String> {
    let Some(ca_file) = ca_file.clone() else {
        return Ok(None);
    };
    let tls = EtcdTls {
        ca_file,
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        domain: domain.clone(),
    };
    tls.check()
        .map_err(|(field, reason)| match field.strip_prefix("tls.") {
            Some(f) => format!("{flag}-{}: {reason}", f.replace('_', "-")),
            None => format!("{flag}-cert-file and {flag}-key-file: {reason}"),
        })?;
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::try_parse_from(["baton-orchestrator"]).expect("defaults");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.engine().agent_etcd, [DEFAULT_ETCD]);
        assert_eq!(c.download_timeout, Duration::from_secs(600));
        let c = Config::try_parse_from([
            "baton-orchestrator",
            "--etcd",
            "http://127.0.0.1:1",
            "--agent-etcd",
            "http://10.0.0.1:1,http://10.0.0.2:1",
            "--health-timeout",
            "90s",
            "--job-label",
            "baton.run=abc",
        ])
        .expect("flags");
        let e = c.engine();
        assert_eq!(e.agent_etcd, ["http://10.0.0.1:1", "http://10.0.0.2:1"]);
        assert_eq!(e.limits.health_timeout, Duration::from_secs(90));
        assert_eq!(
            e.job_labels.get("baton.run").map(String::as_str),
            Some("abc")
        );
        assert!(Config::try_parse_from(["x", "--job-label", "nolabel"]).is_err());
        assert!(Config::try_parse_from(["x", "--agent-timeout", "soon"]).is_err());
        let c = Config::try_parse_from([
            "x",
            "--agent-etcd-ca-file",
            "/etc/baton/ca.pem",
            "--agent-etcd-cert-file",
            "/etc/baton/c.pem",
        ])
        .expect("flags");
        let err = c.agent_tls().expect_err("cert without key");
        assert!(
            err.starts_with("--agent-etcd-cert-file and --agent-etcd-key-file:"),
            "{err}"
        );
        let c = Config::try_parse_from(["x", "--etcd-ca-file", "ca.pem"]).expect("flags");
        let err = c.etcd_tls().expect_err("relative");
        assert!(err.starts_with("--etcd-ca-file:"), "{err}");
        assert!(Config::try_parse_from(["x", "--etcd-domain", "etcd"]).is_err());
        // `args` reproduces a configuration with every field set.
        let full = Config::try_parse_from([
            "x",
            "--etcd=https://10.0.0.1:2379,https://10.0.0.2:2379",
            "--agent-etcd=https://10.1.0.1:2379",
            "--etcd-ca-file=/etc/baton/ca.pem",
            "--etcd-cert-file=/etc/baton/o.pem",
            "--etcd-key-file=/etc/baton/o.key",
            "--etcd-domain=etcd.internal",
            "--agent-etcd-ca-file=/etc/baton/ca.pem",
            "--agent-etcd-cert-file=/etc/baton/a.pem",
            "--agent-etcd-key-file=/etc/baton/a.key",
            "--agent-etcd-domain=etcd.internal",
            "--prefix=/fleet",
            "--listen=0.0.0.0:7481",
            "--advertise=http://o1:7481",
            "--leader-ttl=7",
            "--download-concurrency=9",
            "--download-timeout=7m",
            "--download-attempts=5",
            "--agent-timeout=61s",
            "--health-timeout=1h 2m",
            "--heal-grace=45s",
            "--job-label=a=1",
            "--job-label=b=x=y",
            "--self-update-timeout=3m",
            "--log-json",
        ])
        .expect("every flag");
        let again = Config::try_parse_from(std::iter::once("x".to_owned()).chain(full.args()))
            .expect("args parse");
        assert_eq!(format!("{again:?}"), format!("{full:?}"));
        // The test constructor matches the command line's defaults.
        let parsed = Config::try_parse_from(["baton-orchestrator"]).expect("defaults");
        let built = Config::new(vec![DEFAULT_ETCD.to_owned()]);
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
    }
}
