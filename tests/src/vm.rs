//! Virtual-machine test hosts: the disks built by `images/vmhost/` and QEMU
//! VMs booting a private copy of one, a real Debian kernel and systemd as
//! PID 1, either with UEFI firmware (OVMF) and systemd-boot or with a BIOS
//! (SeaBIOS) and GRUB ([`Firmware`]).
//!
//! What containers cannot show — a real kernel, a real boot loader, a real
//! reboot — a VM does. Every VM runs under TCG (`/dev/kvm` does not run a
//! stock kernel on the test machines), with 1 vCPU and 1 GiB, its serial
//! console written to a log file the tests read: what booted is checked on
//! the console, not taken from what an agent reports.
//!
//! The disks and their cache folder are in `image` (the recipe's `build.sh`
//! builds, [`crate::recipe`]); what a VM gets at boot (Docker's TLS,
//! loopback proxies) in `seed`; commands run in a guest through its Docker
//! Engine in `guest`; reading the serial console in `console`.

mod console;
mod guest;
mod image;
mod seed;

pub use console::{booted_kernels, report_lines};
pub use guest::TOOLS_IMAGE;
pub use image::{Firmware, VmImage, ensure_image};
pub use seed::{FW_CFG_PREFIX, VmSeed};

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::pki::DockerClientTls;
use crate::recipe::RecipeError;
use console::tail;

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
/// util-linux's `setpriv`, which starts QEMU with a parent-death signal: QEMU
/// dies with the thread that started it, even when the test process is
/// killed with SIGKILL and no `Drop` runs.
pub const SETPRIV: &str = "setpriv";
/// The port a guest's Docker Engine serves TLS on (with a seed that has
/// Docker's TLS files).
pub const DOCKER_TLS_PORT: u16 = 2376;
/// Memory of a VM, MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Where per-VM folders (a disk copy, the firmware variables, the logs) go:
/// the disk is gigabytes, sparse, so not a tmpfs.
pub const VM_DIR_PARENT: &str = "/var/tmp";

const INSTALL_HINT: &str =
    "install qemu-system-x86, ovmf and util-linux (setpriv): scripts/install-deps.sh";
const REBUILD_HINT: &str = "rebuild the disks: images/vmhost/build.sh ensure";
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
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("VM {vm}: {what}")]
    Unsupported { vm: String, what: String },
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

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Checks that QEMU, `setpriv` and the firmware are installed, naming what
/// is not (SeaBIOS comes with QEMU; OVMF is a package of its own).
pub fn check_host_tools(firmware: Firmware) -> Result<(), VmError> {
    for program in [QEMU, SETPRIV] {
        if !on_path(program) {
            return Err(VmError::Missing {
                what: program.to_owned(),
                hint: INSTALL_HINT,
            });
        }
    }
    if firmware == Firmware::Bios {
        return Ok(());
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
    pub firmware: Firmware,
    /// Passed to the guest through fw_cfg, installed at every boot.
    pub seed: VmSeed,
}

impl VmConfig {
    pub fn new(name: impl Into<String>) -> Self {
        VmConfig {
            name: name.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            forwarded_ports: Vec::new(),
            firmware: Firmware::default(),
            seed: VmSeed::default(),
        }
    }

    /// Forwards `guest_port` (TCP) to a free port on the host's loopback.
    pub fn forward(mut self, guest_port: u16) -> Self {
        if !self.forwarded_ports.contains(&guest_port) {
            self.forwarded_ports.push(guest_port);
        }
        self
    }

    /// Boots with `firmware` (UEFI by default).
    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Gives the guest `seed`; with Docker's TLS in it, also forwards
    /// [`DOCKER_TLS_PORT`] (see [`Vm::docker_endpoint`]).
    pub fn seed(mut self, seed: VmSeed) -> Self {
        if seed.docker_tls.is_some() {
            self = self.forward(DOCKER_TLS_PORT);
        }
        self.seed = seed;
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
    firmware: Firmware,
    child: Option<Child>,
    started: Instant,
    /// Set once [`TOOLS_IMAGE`] is in the guest's Docker.
    tools_image: OnceCell<()>,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .field("firmware", &self.firmware)
            .field("forwards", &self.forwards)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

/// A free port on loopback for a forward ([`crate::etcd::free_port`]).
fn free_port() -> Result<u16, VmError> {
    crate::etcd::free_port(Ipv4Addr::LOCALHOST.into()).map_err(|e| VmError::Io {
        path: PathBuf::from("127.0.0.1"),
        source: std::io::Error::other(e.to_string()),
    })
}

impl Vm {
    /// Copies the disk (and for UEFI the firmware variables) into a fresh
    /// folder and starts QEMU on them. Returns once QEMU runs; use
    /// [`Vm::wait_for_serial`] to wait for the guest.
    ///
    /// QEMU gets SIGKILL when the thread that called this ends (`setpriv
    /// --pdeathsig`): start VMs from a thread that lives as long as they do
    /// (a test's own, or a runtime worker; not `spawn_blocking`).
    pub async fn start(image: &VmImage, config: VmConfig) -> Result<Vm, VmError> {
        let firmware = config.firmware;
        check_host_tools(firmware)?;
        let parent = Path::new(VM_DIR_PARENT);
        let dir = tempfile::Builder::new()
            .prefix(&format!("baton-vm-{}-", config.name))
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        let disk = dir.path().join("disk.raw");
        let source = image.disk(firmware);
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
        let mut command = Command::new(SETPRIV);
        command
            .args(["--pdeathsig", "KILL", "--", QEMU])
            .args(["-name", &config.name])
            .args(["-machine", "q35", "-accel", "tcg", "-smp", "1"])
            .args(["-m", &config.memory_mib.to_string()])
            // No default devices: OVMF would try a DVD drive first (about
            // 2 s a boot under TCG); every device the VM has is below.
            .arg("-nodefaults")
            .args(["-display", "none", "-monitor", "none"]);
        if firmware == Firmware::Uefi {
            // A private copy of the variable store: it keeps
            // LoaderEntryOneShot and the boot loader's other variables across
            // reboots.
            let vars = dir.path().join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars).map_err(io_err(Path::new(OVMF_VARS)))?;
            command
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        command.args(config.seed.qemu_args(dir.path())?);
        command
            // virtio: the broken kernel lacks exactly this driver.
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
            program: format!("{SETPRIV} … {QEMU}"),
            source,
        })?;
        Ok(Vm {
            name: config.name,
            dir,
            serial_log,
            qemu_log,
            forwards,
            firmware,
            child: Some(child),
            started: Instant::now(),
            tools_image: OnceCell::new(),
        })
    }

    /// The firmware (and so the boot loader) the VM boots with.
    pub fn firmware(&self) -> Firmware {
        self.firmware
    }

    /// The guest's Docker Engine over TLS as the test machine reaches it,
    /// `tcp://127.0.0.1:<port>`, when [`DOCKER_TLS_PORT`] is forwarded (a
    /// seed with Docker's TLS forwards it).
    pub fn docker_endpoint(&self) -> Option<String> {
        self.host_port(DOCKER_TLS_PORT)
            .map(|port| format!("tcp://127.0.0.1:{port}"))
    }

    /// Runs `argv` in the guest as root, in its host PID and network
    /// namespaces, and returns what it printed on stdout: through the
    /// guest's Docker Engine over TLS (`tls`: the client side of the seed's
    /// PKI), in a privileged container of [`TOOLS_IMAGE`], whose entrypoint
    /// is a static busybox (`argv[0]` is an applet: `pkill`, `wget`, `nc`, …;
    /// the guest's files are under `/proc/1/root`). `nsenter -t 1 -m -u -i
    /// -n -p -- /bin/sh -c '<command>'` runs the guest's own programs: the
    /// absolute path matters, busybox runs its own applet for a bare name
    /// (its `sh`, then its `dpkg`). The image is imported on first use. For
    /// fault injection and checks; needs the Docker CLI on the test machine.
    pub async fn guest_exec(
        &self,
        tls: &DockerClientTls,
        argv: &[&str],
    ) -> Result<String, VmError> {
        guest::exec(self, tls, argv).await
    }

    /// Runs the Docker CLI against the guest's Docker Engine over TLS
    /// (`docker -H <docker_endpoint> --tlsverify … <args>`) and returns its
    /// stdout.
    pub async fn docker_cli(
        &self,
        tls: &DockerClientTls,
        args: &[&str],
    ) -> Result<String, VmError> {
        guest::docker_cli(self, tls, args).await
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
