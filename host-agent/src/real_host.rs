//! The real [`HostOps`]: files under a root folder (`/` on a host, a temp dir in tests),
//! systemd over the system bus (D-Bus), the host's Docker Engine through its API on a unix
//! socket, the bootloader's entry files, and reboot.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use baton_systemd_bus::{Bus, BusError, JobRef};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

use crate::journal::write_durably;
use crate::ops::{HostOps, OpError, OpResult};

/// Where the host's Docker Engine listens.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// How long a stop may take before it counts as failed.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// The host the agent runs on.
#[derive(Debug, Clone)]
pub struct RealHost {
    root: PathBuf,
    docker_socket: PathBuf,
    /// systemd, and the runtime its async client runs on (host operations run on blocking
    /// threads and wait for the bus calls).
    systemd: Option<(Bus, Handle)>,
}

impl RealHost {
    /// Operates on the files of the host whose root is `root`; systemd operations fail
    /// until [`RealHost::with_systemd`] gives it a bus.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            docker_socket: root.join(DOCKER_SOCKET.trim_start_matches('/')),
            root,
            systemd: None,
        }
    }

    /// Operates on `root` with the host's systemd reached through `bus`, whose calls run on
    /// `runtime`.
    pub fn with_systemd(root: impl Into<PathBuf>, bus: Bus, runtime: Handle) -> Self {
        Self {
            systemd: Some((bus, runtime)),
            ..Self::new(root)
        }
    }

    /// Runs one bus call to completion from a blocking thread.
    fn bus<T, F>(&self, call: impl FnOnce(Bus) -> F) -> OpResult<T>
    where
        F: std::future::Future<Output = Result<T, BusError>>,
    {
        let (bus, runtime) = self
            .systemd
            .as_ref()
            .ok_or_else(|| OpError("systemd: no connection to the system bus".to_owned()))?;
        runtime
            .block_on(call(bus.clone()))
            .map_err(|e| OpError(e.to_string()))
    }

    fn path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// One request to the Docker Engine API (HTTP/1.0, so the answer is not chunked).
    fn docker(&self, method: &str, path: &str, body: Option<Body<'_>>) -> OpResult<(u16, Vec<u8>)> {
        let what = || format!("docker {method} {path}");
        let mut stream = UnixStream::connect(&self.docker_socket).map_err(|e| {
            OpError(format!(
                "{}: connect {}: {e}",
                what(),
                self.docker_socket.display()
            ))
        })?;
        let io = |e: std::io::Error| OpError(format!("{}: {e}", what()));
        match body {
            None => {
                write!(stream, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(io)?
            }
            Some(Body::Json(json)) => {
                write!(
                    stream,
                    "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    json.len()
                )
                .map_err(io)?;
                stream.write_all(json.as_bytes()).map_err(io)?;
            }
            Some(Body::File(file)) => {
                let mut f = std::fs::File::open(file)
                    .map_err(|e| OpError(format!("{}: open {}: {e}", what(), file.display())))?;
                let len = f.metadata().map_err(io)?.len();
                write!(
                    stream,
                    "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: {len}\r\n\r\n"
                )
                .map_err(io)?;
                std::io::copy(&mut f, &mut stream).map_err(io)?;
            }
        }
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| OpError(format!("{}: malformed response", what())))?;
        let status = std::str::from_utf8(&response[..split])
            .ok()
            .and_then(|head| head.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| OpError(format!("{}: malformed status line", what())))?;
        Ok((status, response[split + 4..].to_vec()))
    }

    fn docker_ok(&self, method: &str, path: &str, body: Option<Body<'_>>) -> OpResult<Vec<u8>> {
        let (status, body) = self.docker(method, path, body)?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(OpError(format!(
                "docker {method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )))
        }
    }

    fn inspect(&self, name: &str) -> OpResult<Option<serde_json::Value>> {
        let (status, body) = self.docker("GET", &format!("/containers/{name}/json"), None)?;
        match status {
            404 => Ok(None),
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| OpError(format!("docker inspect {name}: {e}"))),
            _ => Err(OpError(format!("docker inspect {name}: HTTP {status}"))),
        }
    }
}

enum Body<'a> {
    Json(String),
    File(&'a Path),
}

fn fsync_dir(dir: &Path) -> OpResult<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| OpError(format!("fsync {}: {e}", dir.display())))
}

impl HostOps for RealHost {
    fn install_file(&self, source: &Path, dest: &Path, mode: u32) -> OpResult<()> {
        let source = self.path(source);
        let dest = self.path(dest);
        let err = |what: &str, e: std::io::Error| {
            OpError(format!("install {}: {what}: {e}", dest.display()))
        };
        let dir = dest.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| err("create folder", e))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.baton-new"));
        {
            let mut from = std::fs::File::open(&source)
                .map_err(|e| err(&format!("open {}", source.display()), e))?;
            let mut to = std::fs::File::create(&tmp).map_err(|e| err("create temp file", e))?;
            std::io::copy(&mut from, &mut to).map_err(|e| err("copy", e))?;
            to.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| err("chmod", e))?;
            to.sync_all().map_err(|e| err("fsync", e))?;
        }
        std::fs::rename(&tmp, &dest).map_err(|e| err("rename", e))?;
        fsync_dir(dir)
    }

    fn backup_file(&self, path: &Path, backup: &Path) -> OpResult<bool> {
        if !self.path(path).exists() {
            return Ok(false);
        }
        let mode = std::fs::metadata(self.path(path))
            .map(|m| m.permissions().mode() & 0o7777)
            .map_err(|e| OpError(format!("backup {}: {e}", path.display())))?;
        self.install_file(path, backup, mode)?;
        Ok(true)
    }

    fn remove_file(&self, path: &Path) -> OpResult<()> {
        let full = self.path(path);
        match std::fs::remove_file(&full) {
            Ok(()) => fsync_dir(full.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OpError(format!("remove {}: {e}", path.display()))),
        }
    }

    fn daemon_reload(&self) -> OpResult<()> {
        self.bus(|bus| async move { bus.reload().await })
    }

    fn enable_unit(&self, unit: &str) -> OpResult<()> {
        self.bus(|bus| async move { bus.enable(unit).await })
    }

    fn disable_unit(&self, unit: &str) -> OpResult<()> {
        self.bus(|bus| async move { bus.disable(unit).await })
    }

    fn restart_unit(&self, unit: &str) -> OpResult<()> {
        // Queued, not awaited: the unit's health is judged by `unit_state`.
        self.bus(|bus| async move { bus.restart(unit).await.map(|_| ()) })
    }

    fn stop_unit(&self, unit: &str) -> OpResult<()> {
        let job: JobRef = self.bus(|bus| async move { bus.stop(unit).await })?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.bus(|bus| {
            let job = job.clone();
            async move { bus.job_pending(&job).await }
        })? {
            if Instant::now() > deadline {
                return Err(OpError(format!(
                    "stop {unit}: still stopping after {STOP_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn unit_state(&self, unit: &str) -> OpResult<String> {
        self.bus(|bus| async move { bus.status(unit).await.map(|s| s.active_state) })
    }

    fn load_image(&self, archive: &Path) -> OpResult<()> {
        let archive = self.path(archive);
        let body = self.docker_ok("POST", "/images/load?quiet=1", Some(Body::File(&archive)))?;
        // Errors during the load arrive in the (200) JSON stream.
        let text = String::from_utf8_lossy(&body);
        if text.contains("\"error\"") {
            return Err(OpError(format!(
                "docker load {}: {}",
                archive.display(),
                text.trim()
            )));
        }
        Ok(())
    }

    fn recreate_container(&self, name: &str, image: &str, args: &[String]) -> OpResult<()> {
        self.remove_container(name)?;
        let mut spec = serde_json::json!({
            "Image": image,
            "HostConfig": {"RestartPolicy": {"Name": "always"}},
            "Labels": {"baton.managed": "true"},
        });
        if !args.is_empty() {
            spec["Cmd"] = serde_json::json!(args);
        }
        self.docker_ok(
            "POST",
            &format!("/containers/create?name={name}"),
            Some(Body::Json(spec.to_string())),
        )?;
        self.docker_ok("POST", &format!("/containers/{name}/start"), None)
            .map(|_| ())
    }

    fn remove_container(&self, name: &str) -> OpResult<()> {
        let (status, body) = self.docker("DELETE", &format!("/containers/{name}?force=1"), None)?;
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(OpError(format!(
                "docker rm {name}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )))
        }
    }

    fn container_image(&self, name: &str) -> OpResult<Option<String>> {
        Ok(self
            .inspect(name)?
            .and_then(|v| v["Config"]["Image"].as_str().map(str::to_owned)))
    }

    fn container_healthy(&self, name: &str) -> OpResult<bool> {
        let Some(v) = self.inspect(name)? else {
            return Ok(false);
        };
        let running = v["State"]["Running"].as_bool().unwrap_or(false);
        let health = v["State"]["Health"]["Status"].as_str();
        Ok(running && health.is_none_or(|h| h == "healthy"))
    }

    fn run_check(&self, argv: &[String], timeout_secs: u32) -> OpResult<bool> {
        let Some((program, args)) = argv.split_first() else {
            return Ok(false);
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| OpError(format!("health check {program}: {e}")))?;
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
                Err(e) => return Err(OpError(format!("health check {program}: {e}"))),
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
            Err(e) => Err(OpError(format!("read {}: {e}", path.display()))),
        }
    }

    fn write_text(&self, path: &Path, text: &str) -> OpResult<()> {
        write_durably(&self.path(path), text.as_bytes())
            .map_err(|e| OpError(format!("write {}: {e}", path.display())))
    }

    fn reboot(&self) -> OpResult<()> {
        self.bus(|bus| async move { bus.reboot().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_atomically_keeps_backups_and_restores() {
        let root = tempfile::tempdir().expect("tmp");
        let host = RealHost::new(root.path());
        std::fs::create_dir_all(root.path().join("b")).expect("dir");
        std::fs::write(root.path().join("b/new"), "v2").expect("write");
        std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("dir");
        std::fs::write(root.path().join("usr/local/bin/tool"), "v1").expect("write");

        let existed = host
            .backup_file(Path::new("/usr/local/bin/tool"), Path::new("/backup/tool"))
            .expect("backup");
        assert!(existed);
        host.install_file(Path::new("/b/new"), Path::new("/usr/local/bin/tool"), 0o755)
            .expect("install");
        let installed = root.path().join("usr/local/bin/tool");
        assert_eq!(std::fs::read_to_string(&installed).expect("read"), "v2");
        assert_eq!(
            std::fs::metadata(&installed)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let names: Vec<_> = std::fs::read_dir(root.path().join("usr/local/bin"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["tool"], "no temp files left behind");
        host.install_file(
            Path::new("/backup/tool"),
            Path::new("/usr/local/bin/tool"),
            0o755,
        )
        .expect("restore");
        assert_eq!(std::fs::read_to_string(&installed).expect("read"), "v1");
        assert!(
            !host
                .backup_file(Path::new("/nope"), Path::new("/backup/nope"))
                .expect("backup")
        );
    }

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
}
