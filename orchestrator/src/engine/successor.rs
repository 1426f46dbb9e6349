//! Orchestrator self-update: when an upgrade's bundle carries an orchestrator image of
//! another version than the leader's, the leader starts that image as a container on its own
//! Docker Engine (`--docker`) with the leader's own configuration, and waits until the new
//! version campaigns in the election announcing the bundle's version. The engine then
//! records the hand-over and the leader resigns and exits; the new version, next in line,
//! leads and continues the same upgrade from etcd.
//!
//! The container runs with host networking, so it reaches the same etcd endpoints and serves
//! the same `--listen` address (both processes bind it with `SO_REUSEPORT` while they
//! overlap), with the Docker socket and the etcd TLS files mounted at their paths. Its name
//! follows from the upgrade and the keyspace, so a leader elected mid-way finds it instead
//! of starting a second one. If it exits or does not announce itself in time, it is
//! stopped (kept, for `docker logs`) and the upgrade fails with the reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_protocol::documents::{Candidate, decode};
use baton_protocol::etcd::Client;
use baton_protocol::{Keyspace, UpgradeId};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::docker::{
    ContainerError, ContainerFile, DockerEndpointError, Endpoint, Found, IfStopped, LABEL_PURPOSE,
    find_or_create,
};
use crate::engine::model::SuccessorState;
use crate::store;

/// How often the election and the container are looked at while waiting.
const POLL: Duration = Duration::from_millis(500);
/// Where the Docker Engine is when neither `--docker` nor `DOCKER_HOST` says.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where the new version finds the leader's configuration, in its container.
pub const CONFIG_PATH: &str = "/etc/baton/orchestrator.toml";

/// The self-update part of the engine's configuration (from [`crate::config::Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfUpdate {
    /// The leader's own configuration as a `--config` file (TOML), but for `--replica` and
    /// `--docker` ([`crate::config::Config::successor_file`]).
    pub config: String,
    /// The leader's Docker Engine (`--docker`; `None`: `DOCKER_HOST`, else the local socket).
    pub docker: Option<Endpoint>,
    /// The client certificate for a `tcp://` --docker engine.
    pub docker_tcp: crate::docker::TcpAccess,
    /// Files the new version reads (etcd and API TLS files, the admin token file), mounted
    /// read-only at the same paths.
    pub mounted_files: Vec<PathBuf>,
    /// Time the new version gets to join the election.
    pub timeout: Duration,
}

/// Why a self-update failed (recorded, as text, in the upgrade's reason).
#[derive(Debug, thiserror::Error)]
pub enum SuccessorError {
    /// The leader's Docker Engine could not be reached.
    #[error("docker: {0}")]
    Endpoint(#[from] DockerEndpointError),
    /// A request to it failed.
    #[error(transparent)]
    Docker(#[from] ContainerError),
    /// The container runs another version than the bundle's.
    #[error(
        "container {container} from {image} runs orchestrator version {found}, not the bundle's {version}"
    )]
    WrongVersion {
        /// The container.
        container: String,
        /// Its image.
        image: String,
        /// The version it announces.
        found: String,
        /// The bundle's.
        version: String,
    },
    /// The container stopped before it campaigned.
    #[error("container {container} from {image} stopped (exit code {exit_code}): {last_line}")]
    Stopped {
        /// The container.
        container: String,
        /// Its image.
        image: String,
        /// Its exit code.
        exit_code: i64,
        /// Its telling log line.
        last_line: String,
    },
    /// It did not campaign in time.
    #[error("container {container} from {image} did not campaign in {election} within {}", humantime::format_duration(*.timeout))]
    TimedOut {
        /// The container.
        container: String,
        /// Its image.
        image: String,
        /// The election's prefix.
        election: String,
        /// The limit.
        timeout: Duration,
    },
}

/// One self-update: the new version of an upgrade, started from `image`.
#[derive(Debug, Clone)]
pub struct Successor {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The version it must announce (the bundle's).
    pub version: String,
    /// The orchestrator image.
    pub image: String,
    /// The keyspace (the election is under it; the container name depends on it).
    pub keyspace: Keyspace,
    /// The settings.
    pub settings: SelfUpdate,
    /// Labels for the container (the downloader jobs' `--job-label`s).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Successor {
    /// `baton-orchestrator-<version>-<hash>`, the hash of the keyspace, the etcd endpoints
    /// and the upgrade: one container per upgrade and fleet.
    pub fn container_name(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.keyspace.prefix());
        hash.update([0]);
        hash.update(&self.settings.config);
        hash.update([0]);
        hash.update(self.upgrade.as_str());
        let short = hex::encode(&hash.finalize()[..5]);
        let version: String = self
            .version
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("baton-orchestrator-{version}-{short}")
    }

    /// The unix socket of the leader's Docker Engine, if it talks to one.
    fn socket(&self) -> Option<String> {
        match &self.settings.docker {
            Some(Endpoint::Unix(path)) => Some(path.clone()),
            Some(Endpoint::Tcp { .. }) => None,
            None => match std::env::var("DOCKER_HOST") {
                Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(str::to_owned),
                _ => Some(DEFAULT_SOCKET.to_owned()),
            },
        }
    }

    /// The new version's command line: the leader's configuration (put into the container
    /// as [`CONFIG_PATH`]), named after the container, on the same Docker Engine.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--config".to_owned(), CONFIG_PATH.to_owned()];
        args.extend(["--replica".to_owned(), self.container_name()]);
        let docker = match (&self.settings.docker, self.socket()) {
            (Some(Endpoint::Tcp { host, port }), _) => Some(format!("tcp://{host}:{port}")),
            (_, Some(socket)) => Some(format!("unix://{socket}")),
            (_, None) => None,
        };
        if let Some(docker) = docker {
            args.extend(["--docker".to_owned(), docker]);
        }
        args
    }

    /// Bind mounts: the Docker socket, and the mounted files read-only, at their paths.
    pub fn binds(&self) -> Vec<String> {
        let socket = self.socket().map(|s| format!("{s}:{s}"));
        let files = self.settings.mounted_files.iter().map(|f| {
            let f = f.display();
            format!("{f}:{f}:ro")
        });
        socket.into_iter().chain(files).collect()
    }

    fn container_labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        labels.insert(LABEL_PURPOSE.to_owned(), "orchestrator".to_owned());
        labels.insert("io.baton.upgrade".to_owned(), self.upgrade.to_string());
        labels.insert("io.baton.version".to_owned(), self.version.clone());
        labels
    }
}

/// Starts the new version (or finds it started) and waits until it campaigns; never panics.
/// On failure its container is stopped.
pub async fn run(successor: Successor, client: Client) -> SuccessorState {
    let name = successor.container_name();
    let docker = match connect(&successor).await {
        Ok(d) => d,
        Err(reason) => return SuccessorState::Failed(reason.to_string()),
    };
    let started = Instant::now();
    let outcome = match start(&successor, &docker).await {
        Ok(()) => wait_ready(&successor, &docker, &client).await,
        Err(reason) => Err(reason),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(container = %name, version = %successor.version, took = ?started.elapsed(), "the new orchestrator version is campaigning");
            SuccessorState::Ready { container: name }
        }
        Err(reason) => {
            tracing::warn!(container = %name, %reason, "self-update failed; stopping the new version");
            let options = StopContainerOptionsBuilder::new().t(10).build();
            if let Err(e) = docker.stop_container(&name, Some(options)).await {
                tracing::debug!(container = %name, error = %e, "could not stop");
            }
            SuccessorState::Failed(reason.to_string())
        }
    }
}

/// Stops a successor that is no longer wanted (its upgrade ended before the hand-over).
pub async fn stop(successor: &Successor) {
    let name = successor.container_name();
    if let Ok(docker) = connect(successor).await {
        let options = StopContainerOptionsBuilder::new().t(10).build();
        match docker.stop_container(&name, Some(options)).await {
            Ok(()) => {
                tracing::info!(container = %name, "stopped the new orchestrator version: its upgrade ended before the hand-over")
            }
            Err(e) => tracing::debug!(container = %name, error = %e, "could not stop"),
        }
    }
}

async fn connect(successor: &Successor) -> Result<Docker, SuccessorError> {
    match &successor.settings.docker {
        Some(e) => Ok(e.connect(&successor.settings.docker_tcp).await?),
        None => Ok(baton_protocol::docker::connect()
            .await
            .map_err(ContainerError::from)?),
    }
}

/// Creates and starts the container, unless it runs already (an earlier leader started it);
/// one stopped by an earlier failed attempt is replaced.
async fn start(s: &Successor, docker: &Docker) -> Result<(), SuccessorError> {
    let name = s.container_name();
    let body = ContainerCreateBody {
        image: Some(s.image.clone()),
        cmd: Some(s.args()),
        labels: Some(s.container_labels()),
        host_config: Some(HostConfig {
            binds: Some(s.binds()),
            network_mode: Some("host".to_owned()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Copied in rather than bind-mounted: the leader's configuration may come from flags
    // and environment only, and its files need not be on the Docker Engine's machine.
    let config = ContainerFile {
        path: CONFIG_PATH.to_owned(),
        contents: s.settings.config.clone().into_bytes(),
        mode: 0o644,
    };
    match find_or_create(docker, &name, body, &[config], IfStopped::Replace).await? {
        Found::Running | Found::Stopped => {
            tracing::info!(container = %name, "the new orchestrator version runs already; waiting for it");
        }
        Found::Started => {
            tracing::info!(container = %name, image = %s.image, version = %s.version, "started the new orchestrator version");
        }
    }
    Ok(())
}

/// Waits until the container's replica campaigns announcing the version; fails as soon as
/// the container stops, or at the timeout.
async fn wait_ready(s: &Successor, docker: &Docker, client: &Client) -> Result<(), SuccessorError> {
    let name = s.container_name();
    let election = format!("{}/", s.keyspace.leader());
    let deadline = Instant::now() + s.settings.timeout;
    loop {
        if let Some(candidate) = candidate(client, &election, &name).await {
            return match candidate.version.as_deref() {
                Some(v) if v == s.version => Ok(()),
                other => Err(SuccessorError::WrongVersion {
                    container: name,
                    image: s.image.clone(),
                    found: other.unwrap_or("(unknown)").to_owned(),
                    version: s.version.clone(),
                }),
            };
        }
        let info = docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .map_err(ContainerError::request("inspect", &name))?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) || state.restarting == Some(true) {
            let last_line = last_log_line(docker, &name).await;
            return Err(SuccessorError::Stopped {
                container: name,
                image: s.image.clone(),
                exit_code: state.exit_code.unwrap_or(-1),
                last_line,
            });
        }
        if Instant::now() >= deadline {
            return Err(SuccessorError::TimedOut {
                container: name,
                image: s.image.clone(),
                election,
                timeout: s.settings.timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The candidacy of replica `name` in the election, if it campaigns.
async fn candidate(client: &Client, election: &str, name: &str) -> Option<Candidate> {
    let (kvs, _) = store::read_prefix(client, election).await.ok()?;
    kvs.iter()
        .filter_map(|kv| decode::<Candidate>(election, &kv.1).ok())
        .find(|c| c.replica == name)
}

/// The container's last log line naming an error (clap ends its errors with a hint line),
/// else its last non-empty one, or a note that it logged nothing.
async fn last_log_line(docker: &Docker, name: &str) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail("20")
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut text = String::new();
    while let Some(Ok(item)) = stream.next().await {
        if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = item {
            text.push_str(&String::from_utf8_lossy(&message));
        }
    }
    telling_line(&text)
        .unwrap_or("it logged nothing")
        .to_owned()
}

fn telling_line(log: &str) -> Option<&str> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn successor(docker: Option<&str>) -> Successor {
        Successor {
            upgrade: UpgradeId::new("u-2.0.0-1").expect("id"),
            version: "2.0.0".to_owned(),
            image: "127.0.0.1:5000/baton/orchestrator:2.0.0".to_owned(),
            keyspace: Keyspace::new("/baton").expect("prefix"),
            settings: SelfUpdate {
                config: "etcd = [\"http://127.0.0.1:2379\"]\n".into(),
                docker: docker.map(|d| Endpoint::parse(d).expect("endpoint")),
                docker_tcp: crate::docker::TcpAccess::Refused,
                mounted_files: vec![PathBuf::from("/etc/baton/ca.pem")],
                timeout: Duration::from_secs(60),
            },
            labels: [("run".to_owned(), "r1".to_owned())].into(),
        }
    }

    #[test]
    fn the_new_version_gets_the_config_file_the_socket_and_the_tls_files() {
        let s = successor(Some("unix:///run/docker.sock"));
        let name = s.container_name();
        assert!(name.starts_with("baton-orchestrator-2-0-0-"), "{name}");
        assert_eq!(
            s.args(),
            [
                "--config",
                CONFIG_PATH,
                "--replica",
                name.as_str(),
                "--docker",
                "unix:///run/docker.sock"
            ]
        );
        assert_eq!(
            s.binds(),
            [
                "/run/docker.sock:/run/docker.sock",
                "/etc/baton/ca.pem:/etc/baton/ca.pem:ro"
            ]
        );
        let labels = s.container_labels();
        assert_eq!(labels["run"], "r1");
        assert_eq!(labels[LABEL_PURPOSE], "orchestrator");
        let tcp = successor(Some("tcp://10.0.0.7:2375"));
        assert!(
            tcp.args()
                .ends_with(&["--docker".into(), "tcp://10.0.0.7:2375".into()])
        );
        assert_eq!(tcp.binds(), ["/etc/baton/ca.pem:/etc/baton/ca.pem:ro"]);
    }

    #[test]
    fn the_telling_log_line_is_the_error() {
        let clap = "error: unexpected argument '--bad' found\n\nUsage: baton-orchestrator [OPTIONS]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            telling_line(clap),
            Some("error: unexpected argument '--bad' found")
        );
        assert_eq!(telling_line("starting\nlistening\n\n"), Some("listening"));
        assert_eq!(telling_line("\n"), None);
    }

    #[test]
    fn names_differ_per_upgrade_and_fleet() {
        let a = successor(None);
        let mut b = a.clone();
        b.upgrade = UpgradeId::new("u-2.0.0-2").expect("id");
        let mut c = a.clone();
        c.keyspace = Keyspace::new("/other").expect("prefix");
        assert_ne!(a.container_name(), b.container_name());
        assert_ne!(a.container_name(), c.container_name());
        assert_eq!(a.container_name(), a.clone().container_name());
    }
}
