//! Runs the downloader job on one host through that host's Docker Engine (bollard): the
//! bundle image, pulled by digest, with the host's paths bind-mounted under `/host` (from
//! the spec's `path_map`), no network, the agent's settings as flags; waits for it, reads
//! the summary line from its log, removes the container.
//!
//! The container is named after the upgrade and the host, so a job started by a previous
//! leader is found and waited for instead of being started twice. Attempts are retried
//! (the job is idempotent) and each is bounded by a timeout.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use baton_downloader::Summary;
use baton_protocol::UpgradeId;
use baton_protocol::documents::HostSpec;
use baton_protocol::etcd::EtcdTls;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;

use crate::docker::{Endpoint, ensure_image, is_not_found};
use crate::engine::decide::DownloadOutcome;

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
/// Label on every job container.
pub const LABEL_PURPOSE: &str = "io.baton.purpose";

/// What one job needs.
#[derive(Debug, Clone)]
pub struct Job {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The host, as registered.
    pub host: HostSpec,
    /// The bundle image by digest.
    pub bundle: String,
    /// etcd endpoints as the host's agent reaches them.
    pub agent_etcd: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// Extra labels for the container.
    pub labels: BTreeMap<String, String>,
    /// TLS for the agent's etcd connection (paths on the host).
    pub tls: Option<EtcdTls>,
    /// Time per attempt.
    pub timeout: Duration,
    /// Attempts.
    pub attempts: u32,
}

impl Job {
    /// The container's name: `baton-download-<upgrade>-<host>`.
    pub fn container_name(&self) -> String {
        format!("baton-download-{}-{}", self.upgrade, self.host.host)
    }

    /// The job's flags (docs/bundle.md).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--host-id".to_owned(),
            self.host.host.to_string(),
            "--etcd-endpoint".to_owned(),
            self.agent_etcd.join(","),
            "--prefix".to_owned(),
            self.prefix.clone(),
        ];
        let optional = [
            ("--boot-id-file", &self.host.boot_id_file),
            ("--kernel-release-file", &self.host.kernel_release_file),
            ("--container-prefix", &self.host.container_prefix),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                args.push(flag.to_owned());
                args.push(v.clone());
            }
        }
        if let Some(tls) = &self.tls {
            let path = |p: &std::path::Path| p.display().to_string();
            let tls_flags = [
                ("--etcd-ca-file", Some(path(&tls.ca_file))),
                ("--etcd-cert-file", tls.cert_file.as_deref().map(path)),
                ("--etcd-key-file", tls.key_file.as_deref().map(path)),
                ("--etcd-domain", tls.domain.clone()),
            ];
            for (flag, value) in tls_flags {
                if let Some(v) = value {
                    args.push(flag.to_owned());
                    args.push(v);
                }
            }
        }
        args
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
                Err(format!(
                    "timed out after {}s (attempt {attempt})",
                    job.timeout.as_secs()
                ))
            }
        };
        match result {
            Ok(summary) => {
                tracing::info!(%host, upgrade = %job.upgrade, attempt, took = ?started.elapsed(), %summary, "downloader job done");
                return DownloadOutcome::Staged(summary);
            }
            Err(reason) => {
                tracing::warn!(%host, upgrade = %job.upgrade, attempt, %reason, "downloader job failed");
                last = reason;
            }
        }
        if attempt < job.attempts {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    DownloadOutcome::Failed(format!("{last} (after {} attempt(s))", job.attempts.max(1)))
}

async fn connect(job: &Job) -> Result<Docker, String> {
    let endpoint = Endpoint::parse(&job.host.docker).map_err(|e| format!("docker: {e}"))?;
    endpoint.connect().await.map_err(|e| e.to_string())
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

async fn attempt_once(job: &Job) -> Result<String, String> {
    let docker = connect(job).await?;
    let name = job.container_name();
    let docker_err = |what: &str| {
        let what = format!("docker {what} on {}", job.host.docker);
        move |e: bollard::errors::Error| format!("{what}: {e}")
    };
    let existing = match docker
        .inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(info) => Some(info),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(docker_err(&format!("inspect {name}"))(e)),
    };
    let running = existing
        .as_ref()
        .and_then(|i| i.state.as_ref())
        .and_then(|s| s.running)
        .unwrap_or(false);
    if existing.is_some() && running {
        tracing::info!(host = %job.host.host, container = %name, "a downloader job from an earlier attempt or leader is running; waiting for it");
    } else if existing.is_some() {
        // It ended while nobody watched; its log holds the outcome.
        tracing::info!(host = %job.host.host, container = %name, "reading a finished downloader job");
    } else {
        ensure_image(&docker, &job.bundle)
            .await
            .map_err(|e| format!("{e} (on {})", job.host.docker))?;
        let body = ContainerCreateBody {
            image: Some(job.bundle.clone()),
            cmd: Some(job.args()),
            labels: Some(job.labels()),
            host_config: Some(HostConfig {
                binds: Some(job.binds()),
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(docker_err(&format!("create {name}")))?;
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(docker_err(&format!("start {name}")))?;
    }
    let code = wait(&docker, &name)
        .await
        .map_err(docker_err(&format!("wait {name}")))?;
    let (stdout, stderr) = logs(&docker, &name)
        .await
        .map_err(docker_err(&format!("logs {name}")))?;
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .map_err(docker_err(&format!("remove {name}")))?;
    if code == 0
        && let Some(summary) = Summary::from_log(&stdout)
    {
        return Ok(describe(&summary));
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error line")
        .trim()
        .to_owned();
    Err(format!("exit code {code}: {last}"))
}

/// Waits for the container to stop; returns its exit code.
async fn wait(docker: &Docker, name: &str) -> Result<i64, bollard::errors::Error> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut stream = docker.wait_container(name, Some(options));
    match stream.next().await {
        Some(Ok(resp)) => Ok(resp.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(e),
        None => Ok(-1),
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

/// One line for the record: what the job changed.
pub fn describe(s: &Summary) -> String {
    let mut line = format!(
        "bundle {} {}, agent {} {}",
        s.version,
        name(&s.bundle),
        s.agent.version,
        name(&s.agent.action)
    );
    if let Some(previous) = &s.agent.previous {
        line.push_str(&format!(" (was {previous})"));
    }
    line
}

/// The kebab-case name a downloader enum serialises to.
fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use baton_protocol::HostId;

    use super::*;

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
                registered_at: "t".into(),
            },
            bundle: "r/b@sha256:00".into(),
            agent_etcd: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
            prefix: "/baton".into(),
            labels: BTreeMap::new(),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            attempts: 1,
        }
    }

    #[test]
    fn flags_carry_the_agent_settings_of_the_spec() {
        assert_eq!(
            job(&[]).args(),
            [
                "--host-id",
                "host-1",
                "--etcd-endpoint",
                "http://10.0.0.1:2379,http://10.0.0.2:2379",
                "--prefix",
                "/baton",
                "--boot-id-file",
                "/run/baton/boot-id",
                "--container-prefix",
                "host-1-"
            ]
        );
        assert_eq!(job(&[]).container_name(), "baton-download-u1-host-1");
        let mut tls = job(&[]);
        tls.tls = Some(EtcdTls {
            ca_file: "/etc/baton/ca.pem".into(),
            cert_file: None,
            key_file: None,
            domain: Some("etcd".into()),
        });
        let args = tls.args().join(" ");
        assert!(
            args.ends_with("--etcd-ca-file /etc/baton/ca.pem --etcd-domain etcd"),
            "{args}"
        );
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
