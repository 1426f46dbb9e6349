//! A real OCI registry on loopback for tests and the demo: Debian's
//! `docker-registry` (distribution 2.x) started with a generated config and
//! its storage in a temp folder, killed and waited for on `Drop`.
//!
//! Docker treats registries on 127.0.0.0/8 as insecure by default, so
//! `docker push`/`pull` over plain http to `127.0.0.1:PORT` just work.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docker::{self, DockerError};

/// The registry binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "docker-registry";

/// How long a starting registry may take to answer `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Free-port races (another process binding the port we picked) are retried
/// this many times.
const PORT_ATTEMPTS: usize = 4;

/// A registry that failed to start, or a failed push.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "`{REGISTRY_BIN}` is not installed (Debian: `apt-get install docker-registry`): {source}"
    )]
    NotInstalled { source: std::io::Error },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry on {addr} exited during start ({status}); log {log}:\n{log_tail}")]
    Exited {
        addr: SocketAddr,
        status: std::process::ExitStatus,
        log: PathBuf,
        log_tail: String,
    },
    #[error(
        "registry on {addr} did not answer GET /v2/ within {timeout:?}; log {log}:\n{log_tail}"
    )]
    NotReady {
        addr: SocketAddr,
        timeout: Duration,
        log: PathBuf,
        log_tail: String,
    },
    #[error("{attempts} free ports of 127.0.0.1 were each taken before the registry bound them")]
    NoFreePort { attempts: usize },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("pushed {reference} but docker reports no digest for it in {repo_digests:?}")]
    NoDigest {
        reference: String,
        repo_digests: String,
    },
}

/// A running `docker-registry` serving plain http on a loopback address.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Dropped after `child` is killed (see `Drop`): storage, config, log.
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1.
    pub async fn start() -> Result<Registry, RegistryError> {
        for _ in 0..PORT_ATTEMPTS {
            let addr = free_loopback_addr()?;
            match Registry::start_on(addr).await {
                Err(RegistryError::Exited { log_tail, .. })
                    if log_tail.contains("address already in use") => {}
                other => return other,
            }
        }
        Err(RegistryError::NoFreePort {
            attempts: PORT_ATTEMPTS,
        })
    }

    /// Starts a registry listening on `addr` (e.g. `127.0.0.1:5000` for the
    /// demo), with fresh storage in a temp folder.
    pub async fn start_on(addr: SocketAddr) -> Result<Registry, RegistryError> {
        let dir = tempfile::Builder::new()
            .prefix("baton-registry-")
            .tempdir()
            .map_err(|source| RegistryError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).map_err(|source| RegistryError::Io {
            path: storage.clone(),
            source,
        })?;
        let config = dir.path().join("config.yml");
        std::fs::write(&config, config_yaml(addr, &storage)).map_err(|source| {
            RegistryError::Io {
                path: config.clone(),
                source,
            }
        })?;
        let log = dir.path().join("registry.log");
        let child = spawn(&config, &log)?;
        let mut registry = Registry {
            child,
            addr,
            log,
            dir,
        };
        registry.wait_ready().await?;
        Ok(registry)
    }

    /// Stops the registry (SIGKILL), keeping its storage: every pull and push fails until
    /// [`Registry::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again on its address with its storage (stopping it first if it
    /// runs) and waits until it answers.
    pub async fn restart(&mut self) -> Result<(), RegistryError> {
        self.stop();
        self.child = spawn(&self.dir.path().join("config.yml"), &self.log)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), RegistryError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(RegistryError::Exited {
                    addr: self.addr,
                    status,
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            if answers_v2(self.addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RegistryError::NotReady {
                    addr: self.addr,
                    timeout: START_TIMEOUT,
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry part of an image reference: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repository>`.
    pub fn reference(&self, repository: &str) -> String {
        format!("{}/{repository}", self.host())
    }

    /// The folder holding the registry's blobs and manifests.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of the registry's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Tags the local image `local` as `127.0.0.1:PORT/<repository>:<tag>`,
    /// pushes it, and returns the pinned reference
    /// `127.0.0.1:PORT/<repository>@sha256:…`.
    pub async fn push(
        &self,
        local: &str,
        repository: &str,
        tag: &str,
    ) -> Result<String, RegistryError> {
        let repo = self.reference(repository);
        let reference = format!("{repo}:{tag}");
        docker::run(&["tag", local, &reference]).await?;
        docker::run(&["push", "--quiet", &reference]).await?;
        let repo_digests = docker::run(&[
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &reference,
        ])
        .await?;
        let prefix = format!("{repo}@sha256:");
        repo_digests
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(&prefix))
            .map(str::to_owned)
            .ok_or(RegistryError::NoDigest {
                reference,
                repo_digests,
            })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The registry may already have exited; both calls are then harmless.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `docker-registry serve config`, its output appended to `log`.
fn spawn(config: &Path, log: &Path) -> Result<Child, RegistryError> {
    let io = |source| RegistryError::Io {
        path: log.to_owned(),
        source,
    };
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let log_err = log_file.try_clone().map_err(io)?;
    Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|source| RegistryError::NotInstalled { source })
}

/// The registry's configuration: plain http on `addr`, blobs under `storage`, deletes allowed.
pub fn config_yaml(addr: SocketAddr, storage: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        storage = storage.display(),
    )
}

fn free_loopback_addr() -> Result<SocketAddr, RegistryError> {
    let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listener = TcpListener::bind(bind).map_err(|source| RegistryError::Io {
        path: PathBuf::from(bind.to_string()),
        source,
    })?;
    listener.local_addr().map_err(|source| RegistryError::Io {
        path: PathBuf::from(bind.to_string()),
        source,
    })
}

/// Whether `GET /v2/` answers 200 (the registry's API version check).
pub async fn answers_v2(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut head = Vec::new();
        // HTTP/1.0: the server closes the connection after the response.
        stream.take(64).read_to_end(&mut head).await.ok()?;
        let head = String::from_utf8_lossy(&head).into_owned();
        Some(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}
