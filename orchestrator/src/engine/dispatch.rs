//! Dispatches the downloader job to one host: starts the bundle image as a container
//! through that host's Docker Engine (bollard), pulled by digest, with the host's paths
//! bind-mounted under `/host` (from the spec's `path_map`), no network, and the agent's
//! settings as one typed value ([`JobSettings`] in `BATON_JOB_SETTINGS`); waits for it,
//! reads the [`Summary`] line from its log, removes the container.
//!
//! The container is named after the upgrade and the host, so a job started by a previous
//! leader is found and waited for instead of being started twice. Attempts are retried
//! (the job is idempotent) and each is bounded by a timeout.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use std::path::PathBuf;

use baton_protocol::UpgradeId;
use baton_protocol::documents::HostSpec;
use baton_protocol::etcd::EtcdTls;
use baton_protocol::job::{
    JOB_CREDENTIAL_FILE, JOB_MAINTENANCE_CREDENTIAL_FILE, JobSettings, SETTINGS_ENV, Summary,
};
use baton_protocol::manifest::InstallPolicy;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;

use crate::docker::{
    ContainerError, ContainerFile, DockerEndpointError, Endpoint, Found, IfStopped, LABEL_PURPOSE,
    TcpAccess, find_or_create,
};
use crate::engine::model::DownloadOutcome;
use crate::identities::{Identities, Needed};

/// Default time one attempt may take (pull, verify and stage, agent restart).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default attempts per host.
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_secs(3);
/// Where the job finds the host's paths.
const HOST_ROOT: &str = "/host";
/// Host paths the job needs when a spec has no `path_map` (docs/bundle.md).
pub const DEFAULT_HOST_PATHS: &[&str] = &[
    "/var/lib/baton",
    "/etc/baton",
    "/etc/systemd/system",
    "/run/dbus",
];

/// Why one attempt of a job failed (recorded, as text, as the host's failure reason).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The host's Docker Engine could not be reached.
    #[error("docker: {0}")]
    Endpoint(#[from] DockerEndpointError),
    /// A request to it failed.
    #[error("{source} (on {endpoint})")]
    Docker {
        /// The host's Docker Engine.
        endpoint: String,
        /// The request.
        source: ContainerError,
    },
    /// The job ended without a summary; its last error line.
    #[error("exit code {code}: {last_line}")]
    Job {
        /// Its exit code.
        code: i64,
        /// Its last non-empty stderr line.
        last_line: String,
    },
    /// The host's etcd credential could not be issued.
    #[error("etcd credential for the job: {0}")]
    Identity(String),
    /// The attempt took too long.
    #[error("timed out after {secs}s (attempt {attempt})")]
    TimedOut {
        /// The limit.
        secs: u64,
        /// Which attempt.
        attempt: u32,
    },
}

/// What one job needs.
#[derive(Debug, Clone)]
pub struct Job {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The host, as registered.
    pub host: HostSpec,
    /// The bundle image by digest.
    pub bundle: String,
    /// Its signature, verified by the orchestrator; the job verifies it again.
    pub signature: Option<baton_protocol::signing::BundleSignature>,
    /// etcd endpoints as the host's agent reaches them.
    pub agent_etcd: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// Extra labels for the container.
    pub labels: BTreeMap<String, String>,
    /// TLS for the agent's etcd connection (paths on the host).
    pub tls: Option<EtcdTls>,
    /// Where bundles may install files on the host.
    pub install: InstallPolicy,
    /// The orchestrator's client certificate for the host's `tcp://` Docker Engine.
    pub docker_tcp: TcpAccess,
    /// Time per attempt.
    pub timeout: Duration,
    /// Attempts.
    pub attempts: u32,
    /// With etcd authentication: issues the host's credential, which the job delivers.
    pub identities: Option<Identities>,
}

impl Job {
    /// The container's name: `baton-download-<upgrade>-<host>`.
    pub fn container_name(&self) -> String {
        format!("baton-download-{}-{}", self.upgrade, self.host.host)
    }

    /// The job's settings: what goes into the host's agent configuration (docs/bundle.md),
    /// with the new credentials the job's container `carries` (the others, of a host whose
    /// identities the orchestrator manages, the job keeps as the host holds them).
    pub fn settings(&self, carries: Needed) -> JobSettings {
        let mut settings = JobSettings::new(self.host.host.clone(), self.agent_etcd.clone());
        settings.prefix = self.prefix.clone();
        if let Some(f) = &self.host.boot_id_file {
            settings.boot_id_file = PathBuf::from(f);
        }
        if let Some(f) = &self.host.kernel_release_file {
            settings.kernel_release_file = PathBuf::from(f);
        }
        if let Some(p) = &self.host.container_prefix {
            settings.container_prefix = p.clone();
        }
        settings.tls = self.tls.clone();
        let managed = self.identities.is_some();
        let member = managed && self.host.quorum_member;
        settings.credential_file =
            (managed && carries.credential).then(|| PathBuf::from(JOB_CREDENTIAL_FILE));
        settings.keep_credential = managed && !carries.credential;
        settings.maintenance_credential_file =
            (member && carries.maintenance).then(|| PathBuf::from(JOB_MAINTENANCE_CREDENTIAL_FILE));
        settings.keep_maintenance_credential = member && !carries.maintenance;
        settings.image = Some(self.bundle.clone());
        settings.signature = self.signature.clone();
        settings.install_allow = Some(self.install.allow.clone());
        settings.install_setuid = self.install.setuid.clone();
        settings
    }

    /// The job container's environment: its settings as one JSON value.
    pub fn env(&self, carries: Needed) -> Vec<String> {
        vec![format!(
            "{SETTINGS_ENV}={}",
            self.settings(carries).to_json()
        )]
    }

    /// Bind mounts: `<engine path>:/host<host path>` for every entry of the path map.
    pub fn binds(&self) -> Vec<String> {
        let map: Vec<(String, String)> = if self.host.path_map.is_empty() {
            DEFAULT_HOST_PATHS
                .iter()
                .map(|p| ((*p).to_owned(), (*p).to_owned()))
                .collect()
        } else {
            self.host
                .path_map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        map.into_iter()
            .map(|(host_path, engine_path)| {
                let inside = if host_path == "/" {
                    HOST_ROOT.to_owned()
                } else {
                    format!("{HOST_ROOT}{host_path}")
                };
                format!("{engine_path}:{inside}")
            })
            .collect()
    }

    fn labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        labels.insert(LABEL_PURPOSE.to_owned(), "downloader".to_owned());
        labels.insert("io.baton.upgrade".to_owned(), self.upgrade.to_string());
        labels.insert("io.baton.host".to_owned(), self.host.host.to_string());
        labels
    }
}

/// Runs the job with retries; never panics, always says how it ended.
pub async fn run(job: Job) -> DownloadOutcome {
    let host = job.host.host.clone();
    let mut last = String::from("no attempt made");
    for attempt in 1..=job.attempts.max(1) {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(job.timeout, attempt_once(&job)).await {
            Ok(result) => result,
            Err(_) => {
                remove_quietly(&job).await;
                Err(AttemptError::TimedOut {
                    secs: job.timeout.as_secs(),
                    attempt,
                })
            }
        };
        match result {
            Ok(summary) => {
                tracing::info!(%host, upgrade = %job.upgrade, attempt, took = ?started.elapsed(), %summary, "downloader job done");
                return DownloadOutcome::Staged(summary);
            }
            Err(reason) => {
                tracing::warn!(%host, upgrade = %job.upgrade, attempt, %reason, "downloader job failed");
                last = reason.to_string();
            }
        }
        if attempt < job.attempts {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    DownloadOutcome::Failed(format!("{last} (after {} attempt(s))", job.attempts.max(1)))
}

async fn connect(job: &Job) -> Result<Docker, DockerEndpointError> {
    Endpoint::parse(&job.host.docker)?
        .connect(&job.docker_tcp)
        .await
}

async fn remove_quietly(job: &Job) {
    if let Ok(docker) = connect(job).await {
        let _ = docker
            .remove_container(
                &job.container_name(),
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
    }
}

async fn attempt_once(job: &Job) -> Result<String, AttemptError> {
    let docker = connect(job).await?;
    let name = job.container_name();
    let on_host = |source| AttemptError::Docker {
        endpoint: job.host.docker.clone(),
        source,
    };
    let (files, carries) = job_files(job, &docker, &name).await?;
    let body = ContainerCreateBody {
        image: Some(job.bundle.clone()),
        env: Some(job.env(carries)),
        labels: Some(job.labels()),
        host_config: Some(HostConfig {
            binds: Some(job.binds()),
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    match find_or_create(&docker, &name, body, &files, IfStopped::Keep)
        .await
        .map_err(on_host)?
    {
        Found::Running => {
            tracing::info!(host = %job.host.host, container = %name, "a downloader job from an earlier attempt or leader is running; waiting for it");
        }
        // It ended while nobody watched; its log holds the outcome.
        Found::Stopped => {
            tracing::info!(host = %job.host.host, container = %name, "reading a finished downloader job");
        }
        Found::Started => {}
    }
    let (code, engine_error) = wait(&docker, &name)
        .await
        .map_err(|e| on_host(ContainerError::request("wait", &name)(e)))?;
    let (stdout, stderr) = logs(&docker, &name)
        .await
        .map_err(|e| on_host(ContainerError::request("logs", &name)(e)))?;
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .map_err(|e| on_host(ContainerError::request("remove", &name)(e)))?;
    if code == 0
        && let Some(summary) = Summary::from_log(&stdout)
    {
        return Ok(summary.describe());
    }
    let last_line = match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => line.trim().to_owned(),
        None => engine_error.unwrap_or_else(|| "no error line".to_owned()),
    };
    Err(AttemptError::Job { code, last_line })
}

/// The files put into a new job container, and which new credentials they are: the host's
/// etcd credential (and, for a host running a member of the cluster, its maintenance
/// credential), issued only where [`Identities::needed`] says so (the previous password
/// stops working) and readable by the job's root only. None for a job container that
/// already exists (started by an earlier attempt or leader, which issued the credentials it
/// delivers).
async fn job_files(
    job: &Job,
    docker: &Docker,
    name: &str,
) -> Result<(Vec<ContainerFile>, Needed), AttemptError> {
    let none = Needed {
        credential: false,
        maintenance: false,
    };
    let Some(identities) = &job.identities else {
        return Ok((Vec::new(), none));
    };
    if docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .is_ok()
    {
        return Ok((Vec::new(), none));
    }
    let host = &job.host.host;
    let identity = |e: baton_protocol::etcd::EtcdError| AttemptError::Identity(e.to_string());
    let needed = identities
        .needed(host, job.host.quorum_member)
        .await
        .map_err(identity)?;
    let mut files = Vec::new();
    if needed.credential {
        let credential = identities.issue(host).await.map_err(identity)?;
        files.push(ContainerFile {
            path: JOB_CREDENTIAL_FILE.to_owned(),
            contents: credential.to_file_text().into_bytes(),
            mode: 0o400,
        });
    }
    if needed.maintenance {
        let maintenance = identities.issue_maintenance(host).await.map_err(identity)?;
        files.push(ContainerFile {
            path: JOB_MAINTENANCE_CREDENTIAL_FILE.to_owned(),
            contents: maintenance.to_file_text().into_bytes(),
            mode: 0o400,
        });
    }
    Ok((files, needed))
}

/// Waits for the container to stop; returns its exit code and the engine's error, if it
/// gave one (a container that could not start: a mount, the runtime).
async fn wait(
    docker: &Docker,
    name: &str,
) -> Result<(i64, Option<String>), bollard::errors::Error> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut stream = docker.wait_container(name, Some(options));
    let engine_error = |e: String| Some(e).filter(|e| !e.trim().is_empty());
    match stream.next().await {
        Some(Ok(resp)) => Ok((
            resp.status_code,
            resp.error.and_then(|e| e.message).and_then(engine_error),
        )),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, error })) => {
            Ok((code, engine_error(error)))
        }
        Some(Err(e)) => Err(e),
        None => Ok((-1, None)),
    }
}

/// The container's stdout and stderr.
async fn logs(docker: &Docker, name: &str) -> Result<(String, String), bollard::errors::Error> {
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
    let mut stream = docker.logs(name, Some(options));
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(item) = stream.next().await {
        match item? {
            LogOutput::StdOut { message } => out.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdErr { message } => err.push_str(&String::from_utf8_lossy(&message)),
            _ => {}
        }
    }
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use baton_protocol::HostId;

    use super::*;

    const NONE: Needed = Needed {
        credential: false,
        maintenance: false,
    };

    fn job(path_map: &[(&str, &str)]) -> Job {
        Job {
            upgrade: UpgradeId::new("u1").expect("id"),
            host: HostSpec {
                schema_version: 1,
                host: HostId::new("host-1").expect("id"),
                labels: BTreeMap::new(),
                docker: "unix:///var/run/docker.sock".into(),
                path_map: path_map
                    .iter()
                    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                    .collect(),
                boot_id_file: Some("/run/baton/boot-id".into()),
                kernel_release_file: None,
                container_prefix: Some("host-1-".into()),
                quorum_member: false,
                registered_at: "t".into(),
            },
            bundle: "r/b@sha256:00".into(),
            signature: None,
            agent_etcd: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
            prefix: "/baton".into(),
            labels: BTreeMap::new(),
            tls: None,
            install: InstallPolicy {
                allow: vec!["/usr/local/".into(), "/srv/".into()],
                setuid: vec!["/usr/local/bin/ping".into()],
            },
            docker_tcp: TcpAccess::Refused,
            timeout: DEFAULT_TIMEOUT,
            attempts: 1,
            identities: None,
        }
    }

    #[test]
    fn settings_carry_the_agent_settings_of_the_spec() {
        let settings = job(&[]).settings(NONE);
        assert_eq!(settings.host_id.as_str(), "host-1");
        assert_eq!(
            settings.etcd_endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(settings.prefix, "/baton");
        assert_eq!(settings.boot_id_file, PathBuf::from("/run/baton/boot-id"));
        assert_eq!(
            settings.kernel_release_file,
            PathBuf::from(baton_protocol::agent_config::DEFAULT_KERNEL_RELEASE_FILE)
        );
        assert_eq!(settings.container_prefix, "host-1-");
        assert_eq!(settings.image.as_deref(), Some("r/b@sha256:00"));
        assert_eq!(
            settings.install_allow.as_deref(),
            Some(["/usr/local/".to_owned(), "/srv/".to_owned()].as_slice())
        );
        assert_eq!(settings.install_setuid, ["/usr/local/bin/ping"]);
        assert_eq!(job(&[]).container_name(), "baton-download-u1-host-1");
        let mut tls = job(&[]);
        tls.tls = Some(EtcdTls {
            ca_file: "/etc/baton/ca.pem".into(),
            cert_file: None,
            key_file: None,
            domain: Some("etcd".into()),
        });
        let env = tls.env(NONE);
        let json = env[0]
            .strip_prefix("BATON_JOB_SETTINGS=")
            .expect("one variable");
        assert_eq!(
            JobSettings::parse(json).expect("parses").tls,
            tls.tls,
            "{json}"
        );
    }

    #[test]
    fn only_a_member_host_gets_a_maintenance_credential_and_only_with_etcd_authentication() {
        let identities = Identities::new(
            vec!["https://10.0.0.1:2379".into()],
            None,
            baton_protocol::etcd::Credential {
                user: "root".into(),
                password: "secret".into(),
            },
            baton_protocol::keys::Keyspace::default(),
        );
        let files = |quorum_member: bool, identities: Option<Identities>, carries: Needed| {
            let mut j = job(&[]);
            j.host.quorum_member = quorum_member;
            j.identities = identities;
            let s = j.settings(carries);
            (
                s.credential_file,
                s.keep_credential,
                s.maintenance_credential_file,
                s.keep_maintenance_credential,
            )
        };
        let credential = Some(PathBuf::from(JOB_CREDENTIAL_FILE));
        let maintenance = Some(PathBuf::from(JOB_MAINTENANCE_CREDENTIAL_FILE));
        let both = Needed {
            credential: true,
            maintenance: true,
        };
        assert_eq!(
            files(true, Some(identities.clone()), both),
            (credential.clone(), false, maintenance.clone(), false)
        );
        assert_eq!(
            files(false, Some(identities.clone()), both),
            (credential.clone(), false, None, false)
        );
        assert_eq!(files(true, None, both), (None, false, None, false));
        // What the container does not carry, the job keeps.
        assert_eq!(
            files(true, Some(identities.clone()), NONE),
            (None, true, None, true)
        );
        let only_maintenance = Needed {
            credential: false,
            maintenance: true,
        };
        assert_eq!(
            files(true, Some(identities.clone()), only_maintenance),
            (None, true, maintenance, false)
        );
        assert_eq!(
            files(false, Some(identities.clone()), NONE),
            (None, true, None, false)
        );
        for carries in [both, NONE, only_maintenance] {
            let mut j = job(&[]);
            j.host.quorum_member = true;
            j.identities = Some(identities.clone());
            let json = j.settings(carries).to_json();
            assert!(JobSettings::parse(&json).is_ok(), "{json}");
        }
    }

    #[test]
    fn binds_follow_the_path_map() {
        assert_eq!(
            job(&[]).binds(),
            [
                "/var/lib/baton:/host/var/lib/baton",
                "/etc/baton:/host/etc/baton",
                "/etc/systemd/system:/host/etc/systemd/system",
                "/run/dbus:/host/run/dbus"
            ]
        );
        assert_eq!(
            job(&[("/var/lib/baton", "/srv/h1/var/lib/baton"), ("/", "/")]).binds(),
            ["/:/host", "/srv/h1/var/lib/baton:/host/var/lib/baton"]
        );
    }
}
