//! Virtual-machine test hosts: the disk built by `images/vmhost/` and QEMU
//! VMs booting a private copy of it, with UEFI firmware (OVMF), systemd-boot,
//! a real Debian kernel and systemd as PID 1.
//!
//! What containers cannot show — a real kernel, a real boot loader, a real
//! reboot — a VM does. Every VM runs under TCG (`/dev/kvm` does not run a
//! stock kernel on the test machines), with 1 vCPU and 1 GiB, its serial
//! console written to a log file the tests read: what booted is checked on
//! the console, not taken from what an agent reports.
//!
//! The recipe's `build.sh` computes the disk's cache folder and builds
//! ([`crate::recipe`]); this module calls it once per process.

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::recipe::{self, RecipeError};

/// The kernel installed on the disk, booted by default. Mirrors the first of
/// `kernels` in `images/vmhost/build.sh` (the boot test checks they agree).
pub const BASE_KERNEL_RELEASE: &str = "6.1.0-50-cloud-amd64";
/// The next kernel ABI, whose package is kept beside the disk for bundles
/// that upgrade the VMs. Mirrors the second of `kernels` in `build.sh`.
pub const NEXT_KERNEL_RELEASE: &str = "6.1.0-51-cloud-amd64";
/// Printed on the serial console by `baton-vm-ready.service` once
/// `multi-user.target` is reached, followed by `<release> boot-id=<id>`.
pub const READY_MARKER: &str = "baton-vmhost: ready kernel=";
/// Prefix of every line the guest's report unit prints on the console.
pub const REPORT_PREFIX: &str = "baton-vmhost: ";
/// The kernel's first line on the console, once per boot.
pub const KERNEL_BANNER: &str = "Linux version ";

/// Debian's `ovmf` package: the firmware, read-only, and the template of the
/// EFI variable store every VM gets a copy of (it keeps `LoaderEntryOneShot`
/// and the boot loader's other variables across reboots).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
/// See [`OVMF_CODE`].
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// The QEMU binary (Debian's `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";
/// Memory of a VM, MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Where per-VM folders (a disk copy, the firmware variables, the logs) go:
/// the disk is gigabytes, sparse, so not a tmpfs.
pub const VM_DIR_PARENT: &str = "/var/tmp";

const INSTALL_HINT: &str = "install qemu-system-x86 and ovmf: scripts/install-deps.sh";
const LOG_TAIL_LINES: usize = 60;

/// Failure to build the disk, start a VM or see what it printed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what} is missing ({hint})")]
    Missing { what: String, hint: &'static str },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("copying {from} to {to} failed ({status})")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error(
        "VM {vm}: QEMU exited ({status}) before {waiting_for:?} appeared; QEMU said:\n{stderr}\n\
         last lines of the serial console {log}:\n{log_tail}"
    )]
    Exited {
        vm: String,
        status: std::process::ExitStatus,
        waiting_for: String,
        stderr: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error(
        "VM {vm}: {waiting_for:?} did not appear on the serial console within {timeout:?}; \
         last lines of {log}:\n{log_tail}"
    )]
    Timeout {
        vm: String,
        waiting_for: String,
        timeout: Duration,
        log: PathBuf,
        log_tail: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VmError + '_ {
    move |source| VmError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The built disk and the kernel packages kept beside it.
#[derive(Debug, Clone)]
pub struct VmImage {
    dir: PathBuf,
}

impl VmImage {
    /// The cache folder of this recipe (`/var/cache/baton-vmhost/<hash>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The raw GPT disk; never booted itself, every VM boots a copy.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }

    /// The kernel releases the recipe fetched, the installed one first.
    pub fn kernel_releases(&self) -> Result<Vec<String>, VmError> {
        let path = self.dir.join("kernel-releases");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The Debian package of kernel `release` (`linux-image-<release>_*.deb`).
    pub fn kernel_package(&self, release: &str) -> Result<PathBuf, VmError> {
        let dir = self.dir.join("kernels");
        let prefix = format!("linux-image-{release}_");
        let entries = std::fs::read_dir(&dir).map_err(io_err(&dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(entry.path());
            }
        }
        Err(VmError::Missing {
            what: format!("{}/{prefix}*.deb", dir.display()),
            hint: "rebuild the disk: images/vmhost/build.sh ensure",
        })
    }
}

async fn call_script(action: &'static str) -> Result<PathBuf, VmError> {
    let dir = recipe::run("vmhost", action, "the disk's folder", |line| {
        line.starts_with('/')
    })
    .await?;
    Ok(PathBuf::from(dir))
}

/// Returns the disk for the current recipe, building it first if it is not
/// cached (a cold build takes a few minutes; later calls return at once).
pub async fn ensure_image() -> Result<VmImage, VmError> {
    static IMAGE: OnceCell<VmImage> = OnceCell::const_new();
    IMAGE
        .get_or_try_init(|| async {
            let dir = call_script("path").await?;
            if !dir.join("disk.raw").is_file() {
                eprintln!(
                    "baton-tests: building the VM host disk in {} (a few minutes, once)",
                    dir.display()
                );
            }
            Ok(VmImage {
                dir: call_script("ensure").await?,
            })
        })
        .await
        .cloned()
}

/// Checks that QEMU and the firmware are installed, naming what is not.
pub fn check_host_tools() -> Result<(), VmError> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(QEMU).is_file()))
        .unwrap_or(false);
    if !on_path {
        return Err(VmError::Missing {
            what: QEMU.to_owned(),
            hint: INSTALL_HINT,
        });
    }
    for file in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(file).is_file() {
            return Err(VmError::Missing {
                what: file.to_owned(),
                hint: INSTALL_HINT,
            });
        }
    }
    Ok(())
}

/// How to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// A name for logs and errors (also the per-VM folder's prefix).
    pub name: String,
    pub memory_mib: u32,
    /// Guest TCP ports reachable from the test machine: each gets a free
    /// port on the host's 127.0.0.1 (see [`Vm::host_port`]).
    pub forwarded_ports: Vec<u16>,
}

impl VmConfig {
    pub fn new(name: impl Into<String>) -> Self {
        VmConfig {
            name: name.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            forwarded_ports: Vec::new(),
        }
    }

    /// Forwards `guest_port` (TCP) to a free port on the host's loopback.
    pub fn forward(mut self, guest_port: u16) -> Self {
        self.forwarded_ports.push(guest_port);
        self
    }
}

/// A host port forwarded into the guest by QEMU's user network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

/// A running VM. Dropping it kills QEMU and removes its folder.
pub struct Vm {
    name: String,
    dir: tempfile::TempDir,
    serial_log: PathBuf,
    qemu_log: PathBuf,
    forwards: Vec<PortForward>,
    child: Option<Child>,
    started: Instant,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .field("forwards", &self.forwards)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

fn free_port() -> Result<u16, VmError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| VmError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    let port = listener.local_addr().map_err(|source| VmError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    Ok(port.port())
}

impl Vm {
    /// Copies the disk and the firmware variables into a fresh folder and
    /// starts QEMU on them. Returns once QEMU runs; use
    /// [`Vm::wait_for_serial`] to wait for the guest.
    pub async fn start(image: &VmImage, config: VmConfig) -> Result<Vm, VmError> {
        check_host_tools()?;
        let parent = Path::new(VM_DIR_PARENT);
        let dir = tempfile::Builder::new()
            .prefix(&format!("baton-vm-{}-", config.name))
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        let disk = dir.path().join("disk.raw");
        let source = image.disk();
        // A sparse copy per VM: seconds, and only the written blocks take space.
        let status = tokio::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(&source)
            .arg(&disk)
            .status()
            .await
            .map_err(|source| VmError::Spawn {
                program: "cp".to_owned(),
                source,
            })?;
        if !status.success() {
            return Err(VmError::Copy {
                from: source,
                to: disk,
                status,
            });
        }
        let vars = dir.path().join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).map_err(io_err(Path::new(OVMF_VARS)))?;
        let serial_log = dir.path().join("serial.log");
        let qemu_log = dir.path().join("qemu.log");

        let mut forwards = Vec::new();
        let mut netdev = String::from("user,id=net0");
        for &guest in &config.forwarded_ports {
            let host = free_port()?;
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
            forwards.push(PortForward { host, guest });
        }

        let stderr = std::fs::File::create(&qemu_log).map_err(io_err(&qemu_log))?;
        let mut command = Command::new(QEMU);
        command
            .args(["-name", &config.name])
            .args(["-machine", "q35", "-accel", "tcg", "-smp", "1"])
            .args(["-m", &config.memory_mib.to_string()])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .arg("-drive")
            .arg(format!("if=virtio,format=raw,file={}", disk.display()))
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
            // Entropy for the guest: no stall waiting for random numbers.
            .args(["-device", "virtio-rng-pci"])
            .arg("-serial")
            .arg(format!("file:{}", serial_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command.spawn().map_err(|source| VmError::Spawn {
            program: QEMU.to_owned(),
            source,
        })?;
        Ok(Vm {
            name: config.name,
            dir,
            serial_log,
            qemu_log,
            forwards,
            child: Some(child),
            started: Instant::now(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file QEMU writes the guest's serial console to.
    pub fn serial_log_path(&self) -> &Path {
        &self.serial_log
    }

    /// The VM's folder (disk copy, firmware variables, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The host port forwarded to `guest_port`, if it was asked for.
    pub fn host_port(&self, guest_port: u16) -> Option<u16> {
        self.forwards
            .iter()
            .find(|f| f.guest == guest_port)
            .map(|f| f.host)
    }

    /// Everything the serial console printed so far (carriage returns
    /// removed; empty before the firmware wrote anything).
    pub fn serial_output(&self) -> String {
        std::fs::read(&self.serial_log)
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\r', ""))
            .unwrap_or_default()
    }

    /// The release of every kernel that booted, in order: one per boot, from
    /// the kernel's `Linux version <release> …` line.
    pub fn booted_kernels(&self) -> Vec<String> {
        booted_kernels(&self.serial_output())
    }

    /// The lines the guest's report unit printed (prefix removed).
    pub fn report_lines(&self) -> Vec<String> {
        report_lines(&self.serial_output())
    }

    /// Waits until a line of the serial console contains `pattern` after the
    /// first `skip` bytes (0: from the start; pass the log's length to wait
    /// for a line of a later boot) and returns that line. Fails with the
    /// log's tail when QEMU exits or `timeout` passes first.
    pub async fn wait_for_serial_after(
        &mut self,
        skip: usize,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.serial_output();
            if let Some(rest) = output.get(skip.min(output.len())..) {
                // Only whole lines: the last one may still be being written.
                let complete = rest.rfind('\n').map_or("", |end| &rest[..end]);
                if let Some(line) = complete.lines().find(|l| l.contains(pattern)) {
                    return Ok(line.to_owned());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(VmError::Exited {
                    vm: self.name.clone(),
                    status,
                    waiting_for: pattern.to_owned(),
                    stderr: std::fs::read_to_string(&self.qemu_log).unwrap_or_default(),
                    log: self.serial_log.clone(),
                    log_tail: tail(&output, LOG_TAIL_LINES),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    vm: self.name.clone(),
                    waiting_for: pattern.to_owned(),
                    timeout,
                    log: self.serial_log.clone(),
                    log_tail: tail(&output, LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// [`Vm::wait_for_serial_after`] from the start of the log.
    pub async fn wait_for_serial(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, VmError> {
        self.wait_for_serial_after(0, pattern, timeout).await
    }

    /// Kills QEMU (the power cord, not a shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The release of every kernel banner (`Linux version <release> …`) in a
/// console log, in order.
pub fn booted_kernels(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            let at = line.find(KERNEL_BANNER)?;
            line[at + KERNEL_BANNER.len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// The lines starting with [`REPORT_PREFIX`], prefix removed.
pub fn report_lines(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            let at = line.find(REPORT_PREFIX)?;
            Some(line[at + REPORT_PREFIX.len()..].to_owned())
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kernel_per_banner() {
        let log = "BdsDxe: loading Boot0001\n\
                   [    0.000000] Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) (gcc)\n\
                   noise\n\
                   [    0.000000] Linux version 6.1.0-51-cloud-amd64 (debian-kernel@lists.debian.org)\n";
        assert_eq!(
            booted_kernels(log),
            ["6.1.0-50-cloud-amd64", "6.1.0-51-cloud-amd64"]
        );
        assert!(booted_kernels("no kernel here\n").is_empty());
    }

    #[test]
    fn report_lines_drop_the_prefix() {
        let log = "x baton-vmhost: ready kernel=6.1.0-50-cloud-amd64\nother\n";
        assert_eq!(report_lines(log), ["ready kernel=6.1.0-50-cloud-amd64"]);
    }
}
