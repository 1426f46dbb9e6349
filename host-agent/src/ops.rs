//! Every change the agent makes to its host goes through [`HostOps`]: files, systemd, the
//! host's Docker Engine, the bootloader's entry files, and reboot. The real implementation is
//! in `real_host/` (systemd there is the shared `baton_systemd_bus::Systemd` trait, Docker
//! is bollard); [`RecordingHost`] records calls for unit tests of the agent's logic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use baton_protocol::digest;
use baton_protocol::durable::DurableError;
use baton_protocol::manifest::FileEntry;
use baton_systemd_bus::BusError;

/// A host operation failed; every variant names the file, unit, container or component.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    File {
        /// What was being done (`read`, `remove`, `backup`, …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A staged file does not match its manifest entry: nothing was installed from it.
    #[error("{}: {reason}: the staged file does not match the manifest; nothing installed from it", file.display())]
    Mismatch {
        /// The staged file.
        file: PathBuf,
        /// How it differs.
        reason: String,
    },
    /// A durable write (temp file, fsync, rename, fsync folder) failed.
    #[error("install {}: {source}", dest.display())]
    Install {
        /// The destination.
        dest: PathBuf,
        /// The step that failed, naming its file.
        source: DurableError,
    },
    /// A systemd call failed (the error names the socket, method and unit).
    #[error(transparent)]
    Systemd(#[from] BusError),
    /// The agent has no connection to systemd.
    #[error("systemd: no connection to the system bus")]
    NoBus,
    /// Blocking host work has no async runtime to run a bus or Docker call on.
    #[error("{what}: no async runtime to run the call on")]
    NoRuntime {
        /// The call.
        what: &'static str,
    },
    /// A stop job did not finish in time.
    #[error("stop {unit}: still stopping after {after:?}")]
    StopTimeout {
        /// The unit.
        unit: String,
        /// How long the agent waited.
        after: Duration,
    },
    /// A unit failed to start.
    #[error("unit {unit} failed to start")]
    UnitFailed {
        /// The unit.
        unit: String,
    },
    /// A unit did not become (and stay) active in time.
    #[error("unit {unit} is {state}, not active, after {settle:?}")]
    UnitNotActive {
        /// The unit.
        unit: String,
        /// Its last `ActiveState`.
        state: String,
        /// How long the agent waited.
        settle: Duration,
    },
    /// A Docker Engine call failed.
    #[error("docker {action} {name}: {source}")]
    Docker {
        /// The call (`load`, `create`, `start`, `rm`, `inspect`).
        action: &'static str,
        /// The container, image or archive.
        name: String,
        /// The engine's error.
        source: bollard::errors::Error,
    },
    /// The engine reported an error while loading an image archive.
    #[error("docker load {}: {message}", archive.display())]
    LoadFailed {
        /// The archive.
        archive: PathBuf,
        /// The engine's message.
        message: String,
    },
    /// A service container did not run (healthy) in time.
    #[error("container {name} is not running and healthy after {settle:?}")]
    ContainerUnhealthy {
        /// The container.
        name: String,
        /// How long the agent waited.
        settle: Duration,
    },
    /// A component lacks a field its kind needs.
    #[error("component {component}: no {what}")]
    Incomplete {
        /// The component.
        component: String,
        /// The missing field (`image`, `image archive`, `release`).
        what: &'static str,
    },
    /// A program the agent runs on the host (a package manager, a boot loader's tool)
    /// could not be started or did not exit 0.
    #[error("{command}: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Why: the spawn error, or the exit status and the end of its output.
        detail: String,
    },
    /// No boot loader the agent can drive was found for a `kernel` component.
    #[error(
        "kernel {component}: no boot loader found (no /boot/baton, no systemd-boot on a UEFI \
         host, no /boot/grub/grub.cfg); set `bootloader` in /etc/baton/agent.toml"
    )]
    NoBootloader {
        /// The component.
        component: String,
    },
    /// The boot loader cannot do what a kernel step needs; says what to change.
    #[error("kernel {component}: {reason}")]
    Bootloader {
        /// The component.
        component: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A health check command could not be run.
    #[error("health check {program}: {source}")]
    CheckCommand {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// A manifest health check did not pass.
    #[error("component {component}: health check {check} failed")]
    CheckFailed {
        /// The component.
        component: String,
        /// The check, as the manifest has it.
        check: String,
    },
}

/// Result of a host operation.
pub type OpResult<T> = Result<T, OpError>;

/// The host side effects the agent needs.
pub trait HostOps: Send + Sync {
    /// Installs the staged file `source` at `dest` atomically (temp file beside it, fsync,
    /// rename, fsync dir) with `file`'s mode, re-hashing it while it is copied: content
    /// other than `file`'s size and sha256 is refused ([`OpError::Mismatch`]) and `dest`
    /// stays as it was.
    fn install_file(&self, source: &Path, dest: &Path, file: &FileEntry) -> OpResult<()>;
    /// Checks the staged file `source` against `file`'s size and sha256 (for files handed
    /// to another program: an image archive, a kernel package).
    fn verify_staged(&self, source: &Path, file: &FileEntry) -> OpResult<()>;
    /// Copies `path` to `backup` (creating folders), with its mode and owner, if it exists;
    /// returns whether it existed.
    fn backup_file(&self, path: &Path, backup: &Path) -> OpResult<bool>;
    /// Puts the backup `backup` back at `path` atomically, with the mode and owner it was
    /// backed up with.
    fn restore_file(&self, backup: &Path, path: &Path) -> OpResult<()>;
    /// Removes a file if present.
    fn remove_file(&self, path: &Path) -> OpResult<()>;
    /// Reloads systemd's unit files.
    fn daemon_reload(&self) -> OpResult<()>;
    /// Enables a unit (starts at boot).
    fn enable_unit(&self, unit: &str) -> OpResult<()>;
    /// Disables a unit.
    fn disable_unit(&self, unit: &str) -> OpResult<()>;
    /// Restarts (or starts) a unit.
    fn restart_unit(&self, unit: &str) -> OpResult<()>;
    /// Clears a unit's failed state and its start rate limit (`systemctl reset-failed`), so
    /// a unit that kept failing can be started again at once.
    fn reset_failed_unit(&self, unit: &str) -> OpResult<()>;
    /// Stops a unit.
    fn stop_unit(&self, unit: &str) -> OpResult<()>;
    /// The unit's `ActiveState` (`active`, `failed`, `activating`, …).
    fn unit_state(&self, unit: &str) -> OpResult<String>;
    /// Loads an image archive (`docker save` output) into the host's Docker.
    fn load_image(&self, archive: &Path) -> OpResult<()>;
    /// Replaces the container `name` with a new one from `image` (restart policy always).
    fn recreate_container(&self, name: &str, image: &str, args: &[String]) -> OpResult<()>;
    /// Removes the container `name` if it exists.
    fn remove_container(&self, name: &str) -> OpResult<()>;
    /// The ID (`sha256:…`) of the image the container `name` runs, if it exists; what a
    /// rollback recreates it from.
    fn container_image(&self, name: &str) -> OpResult<Option<String>>;
    /// Whether the container runs (and is healthy, if it has a health check).
    fn container_healthy(&self, name: &str) -> OpResult<bool>;
    /// Runs a command on the host; Ok(true) if it exited 0 within `timeout_secs`.
    fn run_check(&self, argv: &[String], timeout_secs: u32) -> OpResult<bool>;
    /// HTTP GET; Ok(true) on a 2xx within `timeout_secs`.
    fn http_check(&self, url: &str, timeout_secs: u32) -> OpResult<bool>;
    /// Reads a small text file; `None` if absent.
    fn read_text(&self, path: &Path) -> OpResult<Option<String>>;
    /// Writes a small text file durably.
    fn write_text(&self, path: &Path, text: &str) -> OpResult<()>;
    /// Asks systemd to reboot the host. Returns once the request was accepted.
    fn reboot(&self) -> OpResult<()>;
    /// Runs a program to completion and returns its standard output if it exits 0. No
    /// time limit: installing a kernel package (its initramfs) may take minutes.
    fn run(&self, argv: &[&str]) -> OpResult<String>;
    /// Whether `path` exists on the host.
    fn exists(&self, path: &Path) -> bool;
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `install_file(dest)`.
    Install(PathBuf),
    /// `backup_file(path)`.
    Backup(PathBuf),
    /// `restore_file(path)`.
    Restore(PathBuf),
    /// `remove_file(path)`.
    Remove(PathBuf),
    /// `daemon_reload`.
    DaemonReload,
    /// `enable_unit`.
    Enable(String),
    /// `disable_unit`.
    Disable(String),
    /// `restart_unit`.
    Restart(String),
    /// `reset_failed_unit`.
    ResetFailed(String),
    /// `stop_unit`.
    Stop(String),
    /// `load_image`.
    LoadImage(PathBuf),
    /// `recreate_container(name, image)`.
    Recreate(String, String),
    /// `write_text(path, text)`.
    Write(PathBuf, String),
    /// `reboot`.
    Reboot,
    /// `run(argv)`.
    Run(Vec<String>),
}

/// A fake host for unit tests: records calls, keeps files and containers in memory, and
/// answers unit states and checks from settings.
#[derive(Debug, Default)]
pub struct RecordingHost {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<Call>,
    files: BTreeMap<PathBuf, String>,
    containers: BTreeMap<String, String>,
    failed_units: Vec<String>,
    failing_checks: bool,
    /// `run` answers: the first entry whose command line starts with the key.
    outputs: Vec<(String, Result<String, String>)>,
    paths: Vec<PathBuf>,
}

impl RecordingHost {
    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Makes `unit` report `failed` after restarts.
    pub fn fail_unit(&self, unit: &str) {
        self.lock().failed_units.push(unit.to_owned());
    }

    /// Makes command and HTTP checks fail.
    pub fn fail_checks(&self) {
        self.lock().failing_checks = true;
    }

    /// Puts a file in the fake's file table. A staged file the table does not hold is read
    /// from the real file system, and one that is not there either has its own path as its
    /// content (only logic that ignores content may rely on that: it is never re-hashed).
    pub fn set_file(&self, path: &Path, content: &str) {
        self.lock()
            .files
            .insert(path.to_owned(), content.to_owned());
    }

    /// Answers `run` of a command line starting with `prefix` with `stdout` (exit 0), or
    /// with a failure when `stdout` is `Err`. Later answers for the same prefix win.
    pub fn answer(&self, prefix: &str, stdout: Result<&str, &str>) {
        let answer = stdout.map(str::to_owned).map_err(str::to_owned);
        self.lock().outputs.insert(0, (prefix.to_owned(), answer));
    }

    /// Makes `exists(path)` true.
    pub fn add_path(&self, path: &Path) {
        self.lock().paths.push(path.to_owned());
    }

    /// The command lines `run` was given, in order.
    pub fn commands(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Run(argv) => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    /// A file's content.
    pub fn file(&self, path: &Path) -> Option<String> {
        self.lock().files.get(path).cloned()
    }

    /// A staged file's content, re-hashed against `file` like the real host does (with the
    /// shared [`digest::copy_verified`]) unless it is only a path stand-in.
    fn staged_content(&self, source: &Path, file: &FileEntry) -> OpResult<String> {
        let known = self.lock().files.get(source).cloned();
        let bytes = match known {
            Some(content) => content.into_bytes(),
            None => match std::fs::read(source) {
                Ok(bytes) => bytes,
                Err(_) => return Ok(source.display().to_string()),
            },
        };
        digest::copy_verified(&mut bytes.as_slice(), None, file.size, &file.sha256).map_err(
            |e| OpError::Mismatch {
                file: source.to_owned(),
                reason: e.to_string(),
            },
        )?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A poisoned lock only happens after a test already panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HostOps for RecordingHost {
    fn install_file(&self, source: &Path, dest: &Path, file: &FileEntry) -> OpResult<()> {
        let content = self.staged_content(source, file)?;
        let mut s = self.lock();
        s.calls.push(Call::Install(dest.to_owned()));
        s.files.insert(dest.to_owned(), content);
        Ok(())
    }
    fn verify_staged(&self, source: &Path, file: &FileEntry) -> OpResult<()> {
        self.staged_content(source, file).map(drop)
    }
    fn backup_file(&self, path: &Path, backup: &Path) -> OpResult<bool> {
        let mut s = self.lock();
        s.calls.push(Call::Backup(path.to_owned()));
        match s.files.get(path).cloned() {
            Some(content) => {
                s.files.insert(backup.to_owned(), content);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn restore_file(&self, backup: &Path, path: &Path) -> OpResult<()> {
        let mut s = self.lock();
        s.calls.push(Call::Restore(path.to_owned()));
        let content = s.files.get(backup).cloned().ok_or_else(|| OpError::File {
            action: "restore",
            path: backup.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        s.files.insert(path.to_owned(), content);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> OpResult<()> {
        let mut s = self.lock();
        s.calls.push(Call::Remove(path.to_owned()));
        s.files.remove(path);
        Ok(())
    }
    fn daemon_reload(&self) -> OpResult<()> {
        self.lock().calls.push(Call::DaemonReload);
        Ok(())
    }
    fn enable_unit(&self, unit: &str) -> OpResult<()> {
        self.lock().calls.push(Call::Enable(unit.to_owned()));
        Ok(())
    }
    fn disable_unit(&self, unit: &str) -> OpResult<()> {
        self.lock().calls.push(Call::Disable(unit.to_owned()));
        Ok(())
    }
    fn restart_unit(&self, unit: &str) -> OpResult<()> {
        self.lock().calls.push(Call::Restart(unit.to_owned()));
        Ok(())
    }
    fn reset_failed_unit(&self, unit: &str) -> OpResult<()> {
        self.lock().calls.push(Call::ResetFailed(unit.to_owned()));
        Ok(())
    }
    fn stop_unit(&self, unit: &str) -> OpResult<()> {
        self.lock().calls.push(Call::Stop(unit.to_owned()));
        Ok(())
    }
    fn unit_state(&self, unit: &str) -> OpResult<String> {
        let s = self.lock();
        // A unit marked failing fails only while its new binary is installed.
        let failing = s.failed_units.iter().any(|u| u == unit)
            && s.files.values().any(|c| c.contains("FAIL"));
        Ok(if failing { "failed" } else { "active" }.to_owned())
    }
    fn load_image(&self, archive: &Path) -> OpResult<()> {
        self.lock().calls.push(Call::LoadImage(archive.to_owned()));
        Ok(())
    }
    fn recreate_container(&self, name: &str, image: &str, _args: &[String]) -> OpResult<()> {
        let mut s = self.lock();
        s.calls
            .push(Call::Recreate(name.to_owned(), image.to_owned()));
        s.containers.insert(name.to_owned(), image.to_owned());
        Ok(())
    }
    fn remove_container(&self, name: &str) -> OpResult<()> {
        self.lock().containers.remove(name);
        Ok(())
    }
    fn container_image(&self, name: &str) -> OpResult<Option<String>> {
        Ok(self.lock().containers.get(name).cloned())
    }
    fn container_healthy(&self, name: &str) -> OpResult<bool> {
        Ok(self.lock().containers.contains_key(name))
    }
    fn run_check(&self, _argv: &[String], _timeout_secs: u32) -> OpResult<bool> {
        Ok(!self.lock().failing_checks)
    }
    fn http_check(&self, _url: &str, _timeout_secs: u32) -> OpResult<bool> {
        Ok(!self.lock().failing_checks)
    }
    fn read_text(&self, path: &Path) -> OpResult<Option<String>> {
        Ok(self.lock().files.get(path).cloned())
    }
    fn write_text(&self, path: &Path, text: &str) -> OpResult<()> {
        let mut s = self.lock();
        s.calls.push(Call::Write(path.to_owned(), text.to_owned()));
        s.files.insert(path.to_owned(), text.to_owned());
        Ok(())
    }
    fn reboot(&self) -> OpResult<()> {
        self.lock().calls.push(Call::Reboot);
        Ok(())
    }
    fn run(&self, argv: &[&str]) -> OpResult<String> {
        let mut s = self.lock();
        s.calls
            .push(Call::Run(argv.iter().map(|a| (*a).to_owned()).collect()));
        let command = argv.join(" ");
        let answer = s
            .outputs
            .iter()
            .find(|(prefix, _)| command.starts_with(prefix.as_str()))
            .map(|(_, answer)| answer.clone())
            .unwrap_or_else(|| Ok(String::new()));
        answer.map_err(|detail| OpError::Command { command, detail })
    }
    fn exists(&self, path: &Path) -> bool {
        let s = self.lock();
        s.paths.iter().any(|p| p == path) || s.files.contains_key(path)
    }
}
