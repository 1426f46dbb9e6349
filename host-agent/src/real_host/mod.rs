//! The real [`HostOps`]: files under a root folder (`/` on a host, a temp dir in tests),
//! systemd through the shared [`Systemd`] trait (the host's system bus, D-Bus), the host's
//! Docker Engine through bollard on its unix socket, the bootloader's entry files, and
//! reboot.
//!
//! Files are copied in `files.rs` (verified installs, backups and restores).
//!
//! Host operations run on blocking threads; the async bus and Docker calls are run to
//! completion on the agent's runtime from there.

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_protocol::durable;
use baton_protocol::manifest::FileEntry;
use baton_systemd_bus::{Bus, JobRef, Systemd};
use bollard::models::{
    ContainerCreateBody, HealthStatusEnum, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, InspectContainerOptions,
    RemoveContainerOptionsBuilder, StartContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

use crate::ops::{HostOps, OpError, OpResult};

mod files;

/// Where the host's Docker Engine listens.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// How long a stop may take before it counts as failed.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// Times a systemd call that found systemd gone is made before its error counts, and the
/// pause between them: long enough for a shutdown under way to stop the agent first.
const BUS_ATTEMPTS: u32 = 6;
const BUS_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Seconds one Docker API request may take (an image load streams within this).
const DOCKER_TIMEOUT_SECS: u64 = 300;
/// Bytes of an image archive sent per chunk.
const CHUNK: usize = 64 * 1024;

/// The host the agent runs on, with its systemd reached through `S`.
#[derive(Debug)]
pub struct RealHost<S = Bus> {
    root: PathBuf,
    docker_socket: PathBuf,
    systemd: Option<S>,
    /// The runtime the async bus and Docker clients run on.
    runtime: Option<Handle>,
    /// The Docker client, once connected (the API version is agreed on first use).
    docker: Mutex<Option<Docker>>,
}

impl RealHost<Bus> {
    /// Operates on the files of the host whose root is `root`; systemd operations fail
    /// until [`RealHost::with_systemd`] gives it a bus.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            docker_socket: root.join(DOCKER_SOCKET.trim_start_matches('/')),
            root,
            systemd: None,
            runtime: Handle::try_current().ok(),
            docker: Mutex::new(None),
        }
    }
}

impl<S: Systemd> RealHost<S> {
    /// Operates on `root` with the host's systemd reached through `systemd`, whose calls
    /// (and Docker's) run on `runtime`.
    pub fn with_systemd(root: impl Into<PathBuf>, systemd: S, runtime: Handle) -> Self {
        let root = root.into();
        Self {
            docker_socket: root.join(DOCKER_SOCKET.trim_start_matches('/')),
            root,
            systemd: Some(systemd),
            runtime: Some(runtime),
            docker: Mutex::new(None),
        }
    }

    fn block_on<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = OpResult<T>>,
    ) -> OpResult<T> {
        self.runtime
            .as_ref()
            .ok_or(OpError::NoRuntime { what })?
            .block_on(call)
    }

    /// Runs one systemd call to completion from a blocking thread.
    fn systemd<'a, T, F>(&'a self, call: impl Fn(&'a S) -> F) -> OpResult<T>
    where
        F: Future<Output = Result<T, baton_systemd_bus::BusError>>,
    {
        let systemd = self.systemd.as_ref().ok_or(OpError::NoBus)?;
        self.block_on("systemd", async move {
            let mut attempt = 1;
            loop {
                match call(systemd).await {
                    // systemd going away mid-call is most often the host shutting down: asked
                    // again a little later, the agent is stopped first and resumes the step
                    // after the boot, instead of rolling back a step that did not fail.
                    Err(error) if error.is_transient() && attempt < BUS_ATTEMPTS => {
                        tracing::warn!(%error, attempt, "systemd did not answer; asking again");
                        tokio::time::sleep(BUS_RETRY_PAUSE).await;
                        attempt += 1;
                    }
                    answer => return Ok(answer?),
                }
            }
        })
    }

    /// Runs Docker calls to completion from a blocking thread.
    fn docker<T, F>(&self, call: impl FnOnce(Docker) -> F) -> OpResult<T>
    where
        F: Future<Output = OpResult<T>>,
    {
        self.block_on("docker", async move {
            let docker = self.docker_client().await?;
            call(docker).await
        })
    }

    /// The Docker client, connected on first use.
    async fn docker_client(&self) -> OpResult<Docker> {
        let cached = self
            .docker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(docker) = cached {
            return Ok(docker);
        }
        let socket = self.docker_socket.display().to_string();
        let err = |source| OpError::Docker {
            action: "connect",
            name: socket.clone(),
            source,
        };
        let docker = Docker::connect_with_unix(&socket, DOCKER_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(err)?
            .negotiate_version()
            .await
            .map_err(err)?;
        *self.docker.lock().unwrap_or_else(|e| e.into_inner()) = Some(docker.clone());
        Ok(docker)
    }

    fn path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    fn inspect(&self, name: &str) -> OpResult<Option<bollard::models::ContainerInspectResponse>> {
        self.docker(|docker| async move {
            match docker
                .inspect_container(name, None::<InspectContainerOptions>)
                .await
            {
                Ok(found) => Ok(Some(found)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(source) => Err(OpError::Docker {
                    action: "inspect",
                    name: name.to_owned(),
                    source,
                }),
            }
        })
    }
}

/// Whether the engine answered 404: no such container.
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The file at `path` as a stream of chunks, for a request body.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
}

fn fsync_dir(dir: &Path) -> OpResult<()> {
    durable::sync_dir(dir).map_err(|source| OpError::Install {
        dest: dir.to_owned(),
        source,
    })
}

impl<S: Systemd> HostOps for RealHost<S> {
    fn install_file(&self, source: &Path, dest: &Path, file: &FileEntry) -> OpResult<()> {
        self.install_verified(source, dest, file)
    }

    fn verify_staged(&self, source: &Path, file: &FileEntry) -> OpResult<()> {
        self.verify(source, file)
    }

    fn backup_file(&self, path: &Path, backup: &Path) -> OpResult<bool> {
        if !self.path(path).exists() {
            return Ok(false);
        }
        self.copy_as_is(path, backup, "backup")?;
        Ok(true)
    }

    fn restore_file(&self, backup: &Path, path: &Path) -> OpResult<()> {
        self.copy_as_is(backup, path, "restore")
    }

    fn remove_file(&self, path: &Path) -> OpResult<()> {
        let full = self.path(path);
        match std::fs::remove_file(&full) {
            Ok(()) => fsync_dir(durable::parent_of(&full)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(OpError::File {
                action: "remove",
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn daemon_reload(&self) -> OpResult<()> {
        self.systemd(|s| s.reload())
    }

    fn enable_unit(&self, unit: &str) -> OpResult<()> {
        self.systemd(|s| s.enable(unit))
    }

    fn disable_unit(&self, unit: &str) -> OpResult<()> {
        self.systemd(|s| s.disable(unit))
    }

    fn restart_unit(&self, unit: &str) -> OpResult<()> {
        // Queued, not awaited: the unit's health is judged by `unit_state`.
        self.systemd(|s| s.restart(unit)).map(|_| ())
    }

    fn reset_failed_unit(&self, unit: &str) -> OpResult<()> {
        self.systemd(|s| s.reset_failed(unit))
    }

    fn stop_unit(&self, unit: &str) -> OpResult<()> {
        let job: JobRef = self.systemd(|s| s.stop(unit))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.systemd(|s| s.job_pending(&job))? {
            if Instant::now() > deadline {
                return Err(OpError::StopTimeout {
                    unit: unit.to_owned(),
                    after: STOP_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn unit_state(&self, unit: &str) -> OpResult<String> {
        self.systemd(|s| async move { s.status(unit).await.map(|st| st.active_state) })
    }

    fn load_image(&self, archive: &Path) -> OpResult<()> {
        let archive = self.path(archive);
        self.docker(|docker| async move {
            let file = tokio::fs::File::open(&archive)
                .await
                .map_err(|source| OpError::File {
                    action: "open",
                    path: archive.clone(),
                    source,
                })?;
            let options = ImportImageOptionsBuilder::new().quiet(true).build();
            let body = bollard::body_try_stream(file_chunks(file));
            let mut progress = docker.import_image(options, body, None);
            let failed = |message| OpError::LoadFailed {
                archive: archive.clone(),
                message,
            };
            // Errors during the load arrive in the (200) JSON stream.
            while let Some(item) = progress.next().await {
                match item {
                    Ok(info) => {
                        if let Some(message) =
                            info.error_detail.and_then(|d| d.message).or(info.error)
                        {
                            return Err(failed(message));
                        }
                    }
                    Err(bollard::errors::Error::DockerStreamError { error }) => {
                        return Err(failed(error));
                    }
                    Err(source) => {
                        return Err(OpError::Docker {
                            action: "load",
                            name: archive.display().to_string(),
                            source,
                        });
                    }
                }
            }
            Ok(())
        })
    }

    fn recreate_container(&self, name: &str, image: &str, args: &[String]) -> OpResult<()> {
        self.remove_container(name)?;
        let docker_err = |action| {
            move |source| OpError::Docker {
                action,
                name: name.to_owned(),
                source,
            }
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: (!args.is_empty()).then(|| args.to_vec()),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ALWAYS),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            labels: Some([("baton.managed".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        };
        self.docker(|docker| async move {
            docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(name).build()),
                    body,
                )
                .await
                .map_err(docker_err("create"))?;
            docker
                .start_container(name, None::<StartContainerOptions>)
                .await
                .map_err(docker_err("start"))
        })
    }

    fn remove_container(&self, name: &str) -> OpResult<()> {
        self.docker(|docker| async move {
            let options = RemoveContainerOptionsBuilder::new().force(true).build();
            match docker.remove_container(name, Some(options)).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(source) => Err(OpError::Docker {
                    action: "rm",
                    name: name.to_owned(),
                    source,
                }),
            }
        })
    }

    fn container_image(&self, name: &str) -> OpResult<Option<String>> {
        // The image ID the container runs, not the tag it was created from: a rollback must
        // get exactly that image back, even if the tag was moved since.
        Ok(self.inspect(name)?.and_then(|c| c.image))
    }

    fn container_healthy(&self, name: &str) -> OpResult<bool> {
        let Some(state) = self.inspect(name)?.and_then(|c| c.state) else {
            return Ok(false);
        };
        let running = state.running.unwrap_or(false);
        // A container without a health check has no health status.
        let health = state.health.and_then(|h| h.status);
        Ok(running && matches!(health, None | Some(HealthStatusEnum::HEALTHY)))
    }

    fn run_check(&self, argv: &[String], timeout_secs: u32) -> OpResult<bool> {
        let Some((program, args)) = argv.split_first() else {
            return Ok(false);
        };
        let check_err = |source| OpError::CheckCommand {
            program: program.clone(),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(check_err)?;
        let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_secs));
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status.success()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(false);
                }
                Err(e) => return Err(check_err(e)),
            }
        }
    }

    fn http_check(&self, url: &str, timeout_secs: u32) -> OpResult<bool> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let timeout = Duration::from_secs(u64::from(timeout_secs));
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .ok()
            .and_then(|mut a| a.next());
        let Some(addr) = addr else {
            return Ok(false);
        };
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
            return Ok(false);
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        if write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").is_err() {
            return Ok(false);
        }
        let mut head = [0u8; 16];
        let n = stream.read(&mut head).unwrap_or(0);
        let line = String::from_utf8_lossy(&head[..n]);
        Ok(line
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2')))
    }

    fn read_text(&self, path: &Path) -> OpResult<Option<String>> {
        match std::fs::read_to_string(self.path(path)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(OpError::File {
                action: "read",
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn write_text(&self, path: &Path, text: &str) -> OpResult<()> {
        durable::write(&self.path(path), text.as_bytes(), 0o644).map_err(|source| {
            OpError::Install {
                dest: path.to_owned(),
                source,
            }
        })
    }

    fn reboot(&self) -> OpResult<()> {
        self.systemd(|s| s.reboot())
    }

    fn run(&self, argv: &[&str]) -> OpResult<String> {
        let command = argv.join(" ");
        let failed = |detail: String| OpError::Command {
            command: command.clone(),
            detail,
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(failed("empty command".to_owned()));
        };
        tracing::info!(%command, "run");
        // Programs run on the host itself: `root` is only ever not `/` in unit tests of
        // the file operations, which run nothing.
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot start: {e}")))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        Err(failed(format!("{}: {}", output.status, tail(&text, 600))))
    }

    fn exists(&self, path: &Path) -> bool {
        self.path(path).exists()
    }
}

/// The last `max` bytes of `text` (on a character boundary), trimmed: the end of a failed
/// program's output is where it says why.
fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_check_times_out() {
        let host = RealHost::new("/");
        assert!(host.run_check(&["true".into()], 5).expect("true"));
        assert!(!host.run_check(&["false".into()], 5).expect("false"));
        assert!(
            !host
                .run_check(&["sleep".into(), "5".into()], 1)
                .expect("sleep")
        );
    }

    #[test]
    fn a_systemd_gone_for_a_moment_is_asked_again() {
        use baton_systemd_bus::fake::FakeSystemd;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let root = tempfile::tempdir().expect("tmp");
        let fake = FakeSystemd::new();
        fake.lock().restarts_unanswered = 2;
        let host = RealHost::with_systemd(root.path(), fake, runtime.handle().clone());
        host.restart_unit("baton-echo.service")
            .expect("answered on the third call");
        let systemd = host.systemd.as_ref().expect("fake");
        assert_eq!(
            systemd.calls(),
            ["RestartUnit baton-echo.service"; 3],
            "asked again, not failed"
        );
    }

    #[test]
    fn systemd_calls_go_through_the_shared_trait() {
        use baton_systemd_bus::fake::FakeSystemd;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let root = tempfile::tempdir().expect("tmp");
        let host =
            RealHost::with_systemd(root.path(), FakeSystemd::new(), runtime.handle().clone());
        host.daemon_reload().expect("reload");
        host.enable_unit("baton-echo.service").expect("enable");
        host.restart_unit("baton-echo.service").expect("restart");
        assert_eq!(
            host.unit_state("baton-echo.service").expect("state"),
            "active"
        );
        // A stop is waited for until its job is gone.
        host.systemd
            .as_ref()
            .expect("fake")
            .lock()
            .stop_pending_polls = 2;
        host.stop_unit("baton-echo.service").expect("stop");
        assert_eq!(
            host.systemd
                .as_ref()
                .expect("fake")
                .lock()
                .stop_pending_polls,
            0
        );
        host.reboot().expect("reboot");
        assert_eq!(
            host.systemd.as_ref().expect("fake").calls(),
            [
                "Reload",
                "EnableUnitFiles baton-echo.service",
                "RestartUnit baton-echo.service",
                "StopUnit baton-echo.service",
                "StartUnit reboot.target"
            ]
        );
    }

    #[test]
    fn systemd_without_a_bus_names_the_problem() {
        let host = RealHost::new("/");
        let err = host.daemon_reload().expect_err("no bus");
        assert!(err.to_string().contains("no connection"), "{err}");
    }
}
