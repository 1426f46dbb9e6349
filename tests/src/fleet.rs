//! The local fleet of simulated hosts used by tests and `make demo`:
//! containers of the `baton-simhost` image running systemd as PID 1 on a
//! private Docker network, with the host paths Baton touches bind-mounted
//! from per-host folders on the machine, and the operations tests need
//! (reboot, kill, stop, start, network cut, exec, files, boot waits).
//! Everything it creates is named with a run id and removed on `Drop`.
//!
//! # Naming (all with the run id `R`, 8 hex digits)
//!
//! - network `baton-R`, an `--internal` bridge on a /24 of 10.213.0.0/16
//!   (host `i` gets `.10+i`, the gateway `.1`): hosts reach each other and
//!   the machine's gateway address, nothing beyond;
//! - host containers `baton-R-<prefix>-<i>`; hostnames `<prefix>-<i>-R`
//!   (or `<prefix>-<i>` with `unique_hostnames: false`);
//! - per-host folders `$TMPDIR/baton-fleet-R/hosts/<hostname>/<host path>`;
//! - every container and the network carry the labels `baton.run=R` and
//!   `baton.fleet.pid=<pid of the test process>`.
//!
//! The machine's Docker socket is mounted into every host at
//! `/var/run/docker.sock`, so containers a host (or the orchestrator on its
//! behalf) runs are siblings on the machine's engine, shared by all hosts.
//! Name them [`Host::sibling_name`] (`<host container>-<purpose>`) or label
//! them `baton.run=R`: the fleet removes every container whose name contains
//! `baton-R-` or `-R-` (a run-unique hostname followed by a purpose) or that
//! carries the label.
//!
//! If a test process dies without running `Drop` (SIGKILL, abort), the next
//! `Fleet::start` on the machine removes what that dead process left
//! (resources whose `baton.fleet.pid` names no live process).
//!
//! A fleet that must outlive its process (`make demo`) is started with
//! [`FleetOptions::owner`] (a name, not a pid: never reaped as left behind)
//! and kept with [`Fleet::leak`]; [`runs_owned_by`] finds its runs again and
//! [`cleanup_run`] removes them.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::docker::{self, DockerError};
use crate::simhost_image::{self, BOOT_ID_PATH, BOOTED_KERNEL_PATH, ImageError};

/// The host paths bind-mounted from each host's folder, so a sibling
/// container (the downloader job) mounting the same folders sees exactly
/// what the host sees. `/run/dbus` carries the host's system bus socket.
pub const HOST_PATHS: &[&str] = &[
    "/var/lib/baton",
    "/etc/systemd/system",
    "/usr/local",
    "/boot",
    "/etc/baton",
    "/run/dbus",
];

/// The file [`Host::fill`] fills a sized host path with, at its top.
pub const FILLER: &str = "fleet-filler";

/// The machine's Docker socket, mounted at the same path in every host.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Label carrying the run id on everything a fleet creates.
pub const LABEL_RUN: &str = "baton.run";
/// Label carrying the pid of the process owning the fleet.
pub const LABEL_PID: &str = "baton.fleet.pid";
/// Label carrying the hostname on host containers.
pub const LABEL_HOST: &str = "baton.fleet.host";

/// Fleet networks are /24s of 10.213.0.0/16.
const SUBNET_PREFIX: [u8; 2] = [10, 213];
/// Host `i` (from 1) gets the address `.HOST_IP_OFFSET + i`.
const HOST_IP_OFFSET: usize = 10;
const MAX_HOSTS: usize = 200;
/// Subnets tried before giving up (others may be used by parallel fleets).
const SUBNET_ATTEMPTS: usize = 64;
/// Seconds systemd gets to shut down cleanly on stop/restart.
const STOP_TIMEOUT_SECS: &str = "20";
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Marks a fleet folder with the owning process, for reaping.
const OWNER_PID_FILE: &str = "owner-pid";

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Image to run; `None` builds or reuses the simulated-host image
    /// ([`simhost_image::ensure_image`]).
    pub image: Option<String>,
    /// Hostnames are `<prefix>-<i>` (i from 1), followed by `-<run id>`
    /// when `unique_hostnames`.
    pub hostname_prefix: String,
    /// Suffix hostnames with the run id, so parallel fleets never share a
    /// hostname (sibling containers or etcd keys named after the host then
    /// cannot collide either). The demo turns it off for `host-1`….
    pub unique_hostnames: bool,
    /// More host paths to bind-mount from the per-host folder, besides
    /// [`HOST_PATHS`] (seeded from the image like them).
    pub extra_host_paths: Vec<String>,
    /// Host paths (bind-mounted ones) whose folder on the machine is a tmpfs of this many
    /// bytes, mounted before the host starts (root on the machine only): the host and its
    /// sibling containers share it, and a test that fills it ([`Host::fill`]) gets a real
    /// `ENOSPC` from the kernel in both. Unmounted when the fleet is removed.
    pub sized_host_paths: Vec<(String, u64)>,
    /// How long a host may take to boot to `running`.
    pub boot_timeout: Duration,
    /// Label the fleet's resources as owned by this name instead of the
    /// current process's pid, so no later `Fleet::start` reaps them when
    /// this process exits (the demo's fleet outlives the demo command).
    /// Must not be a number.
    pub owner: Option<String>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            image: None,
            hostname_prefix: "host".to_owned(),
            unique_hostnames: true,
            extra_host_paths: Vec::new(),
            sized_host_paths: Vec::new(),
            boot_timeout: Duration::from_secs(60),
            owner: None,
        }
    }
}

/// A failed fleet operation, naming the host, container, path or command.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a fleet has at most {MAX_HOSTS} hosts, {requested} requested")]
    TooManyHosts { requested: usize },
    #[error("invalid host path {path:?}: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("no free /24 in {}.{}.0.0/16 after {attempts} attempts (last: {last})", SUBNET_PREFIX[0], SUBNET_PREFIX[1])]
    NoFreeSubnet { attempts: usize, last: String },
    #[error("copying {from} to {to} failed: {stderr}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        stderr: String,
    },
    #[error("host {host} (container {container}): `{command}` exited with {status}: {stderr}")]
    Exec {
        host: String,
        container: String,
        command: String,
        status: i32,
        stderr: String,
    },
    #[error(
        "host {host} (container {container}) did not finish booting within {timeout:?} (last state: {last})"
    )]
    BootTimeout {
        host: String,
        container: String,
        timeout: Duration,
        last: String,
    },
    #[error("host {host} (container {container}) booted degraded; failed units: {failed_units:?}")]
    Degraded {
        host: String,
        container: String,
        failed_units: Vec<String>,
    },
    #[error("{path}: `{command}` failed: {stderr}")]
    Mount {
        path: PathBuf,
        command: String,
        stderr: String,
    },
    #[error("host {host} (container {container}): `{command}` on the machine failed: {stderr}")]
    Machine {
        host: String,
        container: String,
        command: String,
        stderr: String,
    },
    #[error("fleet owner {owner:?} must be a name, not a number (numbers are pids)")]
    InvalidOwner { owner: String },
    #[error("cleaning up fleet run {run_id} left problems: {problems:?}")]
    Cleanup {
        run_id: String,
        problems: Vec<String>,
    },
}

/// What a command run inside a host returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status of the command (`docker exec` passes it through; docker's
    /// own failures, such as a stopped container, show as 1 or 125-127 with
    /// the reason in `stderr`).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// How a host finished booting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemState {
    /// `systemctl is-system-running` says `running`.
    Running,
    /// It says `degraded`; these units failed.
    Degraded { failed_units: Vec<String> },
}

/// N simulated hosts on a private network. Dropping it removes the
/// containers (including siblings named or labelled with the run id), the
/// network and the per-host folders.
#[derive(Debug)]
pub struct Fleet {
    run_id: String,
    image: String,
    network: String,
    subnet: Ipv4Addr,
    gateway: Ipv4Addr,
    root: PathBuf,
    hosts: Vec<Host>,
    /// The `baton.fleet.pid` label value: this process's pid, or the owner name.
    owner: String,
    cleaned: bool,
}

impl Fleet {
    /// Starts `n` hosts and waits until each one's systemd reports
    /// `running` (a `degraded` host is an error naming its failed units).
    pub async fn start(n: usize, options: FleetOptions) -> Result<Fleet, FleetError> {
        if n > MAX_HOSTS {
            return Err(FleetError::TooManyHosts { requested: n });
        }
        let owner = match &options.owner {
            Some(owner) if owner.is_empty() || owner.parse::<u32>().is_ok() => {
                return Err(FleetError::InvalidOwner {
                    owner: owner.clone(),
                });
            }
            Some(owner) => owner.clone(),
            None => std::process::id().to_string(),
        };
        docker::ensure_available().await?;
        for problem in reap_stale_runs() {
            eprintln!("baton-tests: cleaning up after a dead fleet failed: {problem}");
        }
        let image = match &options.image {
            Some(image) => image.clone(),
            None => simhost_image::ensure_image().await?,
        };
        let run_id = random_hex(4).map_err(|source| FleetError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
        let root = std::env::temp_dir().join(format!("baton-fleet-{run_id}"));
        std::fs::create_dir(&root).map_err(|source| FleetError::Io {
            path: root.clone(),
            source,
        })?;
        // From here on, dropping `fleet` (also on `?`) removes what exists.
        let mut fleet = Fleet {
            network: format!("baton-{run_id}"),
            run_id,
            image,
            subnet: Ipv4Addr::UNSPECIFIED,
            gateway: Ipv4Addr::UNSPECIFIED,
            root,
            hosts: Vec::new(),
            owner,
            cleaned: false,
        };
        let pid_file = fleet.root.join(OWNER_PID_FILE);
        std::fs::write(&pid_file, &fleet.owner).map_err(|source| FleetError::Io {
            path: pid_file.clone(),
            source,
        })?;

        fleet.create_network().await?;

        let mut host_paths: Vec<String> = HOST_PATHS.iter().map(|p| (*p).to_owned()).collect();
        for extra in &options.extra_host_paths {
            relative_host_path(extra)?;
            if !host_paths.contains(extra) {
                host_paths.push(extra.clone());
            }
        }
        for (path, _) in &options.sized_host_paths {
            if !host_paths.contains(path) {
                return Err(FleetError::InvalidPath {
                    path: path.clone(),
                    why: "a sized host path must be one of the bind-mounted host paths",
                });
            }
        }
        let seed = fleet.seed_host_paths(&host_paths).await?;

        let [a, b, c, _] = fleet.subnet.octets();
        for i in 1..=n {
            let name = if options.unique_hostnames {
                format!("{}-{i}-{}", options.hostname_prefix, fleet.run_id)
            } else {
                format!("{}-{i}", options.hostname_prefix)
            };
            let offset = u8::try_from(HOST_IP_OFFSET + i).unwrap_or(u8::MAX);
            let host = Host {
                container: format!("baton-{}-{}-{i}", fleet.run_id, options.hostname_prefix),
                root: fleet.root.join("hosts").join(&name),
                name,
                ip: Ipv4Addr::new(a, b, c, offset),
                network: fleet.network.clone(),
                run_id: fleet.run_id.clone(),
                owner: fleet.owner.clone(),
                host_paths: host_paths.clone(),
                boot_timeout: options.boot_timeout,
            };
            for (path, bytes) in &options.sized_host_paths {
                let folder = host.root.join(relative_host_path(path)?);
                create_dir_all(&folder)?;
                run_tool(
                    &folder,
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={bytes},mode=0755"),
                        "tmpfs",
                        &folder.to_string_lossy(),
                    ],
                )
                .await?;
            }
            copy_tree(&seed, &host.root).await?;
            fleet.hosts.push(host);
        }
        let starts = fleet.hosts.iter().map(|host| host.create(&fleet.image));
        futures::future::try_join_all(starts).await?;
        let boots = fleet.hosts.iter().map(Host::wait_running);
        futures::future::try_join_all(boots).await?;
        Ok(fleet)
    }

    async fn create_network(&mut self) -> Result<(), FleetError> {
        let routes = machine_routes();
        let start = random_hex(1)
            .ok()
            .and_then(|h| u8::from_str_radix(&h, 16).ok())
            .unwrap_or(0);
        let mut last = String::from("no candidate tried");
        let mut tried = 0;
        for k in 0..=255u8 {
            if tried >= SUBNET_ATTEMPTS {
                break;
            }
            let third = start.wrapping_add(k);
            let subnet = Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], third, 0);
            if routes
                .iter()
                .any(|&(net, mask)| overlaps(net, mask, subnet, 0xffff_ff00))
            {
                continue;
            }
            tried += 1;
            let gateway = Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], third, 1);
            let cidr = format!("{subnet}/24");
            let result = docker::run(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--internal",
                "--subnet",
                &cidr,
                "--gateway",
                &gateway.to_string(),
                "--label",
                &format!("{LABEL_RUN}={}", self.run_id),
                "--label",
                &format!("{LABEL_PID}={}", self.owner),
                &self.network,
            ])
            .await;
            match result {
                Ok(_) => {
                    self.subnet = subnet;
                    self.gateway = gateway;
                    return Ok(());
                }
                Err(DockerError::Failed { stderr, .. })
                    if stderr.contains("overlaps") || stderr.contains("in use") =>
                {
                    last = format!("{cidr}: {stderr}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(FleetError::NoFreeSubnet {
            attempts: tried,
            last,
        })
    }

    /// Copies the image's contents of every host path into `<root>/seed`,
    /// so a bind mount starts with what the image has there (an empty
    /// `/etc/systemd/system` would drop the image's enabled and masked
    /// units).
    async fn seed_host_paths(&self, host_paths: &[String]) -> Result<PathBuf, FleetError> {
        let seed = self.root.join("seed");
        let container = format!("baton-{}-seed", self.run_id);
        docker::run(&[
            "create",
            "--name",
            &container,
            "--label",
            &format!("{LABEL_RUN}={}", self.run_id),
            "--label",
            &format!("{LABEL_PID}={}", self.owner),
            &self.image,
        ])
        .await?;
        let copied = async {
            for path in host_paths {
                let dest = seed.join(relative_host_path(path)?);
                create_dir_all(&dest)?;
                let from = format!("{container}:{path}/.");
                match docker::run(&["cp", &from, &dest.to_string_lossy()]).await {
                    Ok(_) => {}
                    // Not in the image: the host path starts empty.
                    Err(DockerError::Failed { stderr, .. })
                        if stderr.contains("Could not find the file")
                            || stderr.contains("No such") => {}
                    Err(e) => return Err(FleetError::from(e)),
                }
            }
            Ok(())
        }
        .await;
        let removed = docker::run(&["rm", "-f", &container]).await;
        copied?;
        removed?;
        Ok(seed)
    }

    /// The run id naming everything this fleet created.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The image the hosts run.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The private network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The network's subnet, `10.213.X.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/24", self.subnet)
    }

    /// The machine's address on the private network: listen here (e.g.
    /// etcd) to be reachable from the hosts and the machine, not beyond.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The fleet's folder on the machine (`$TMPDIR/baton-fleet-<run id>`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host with this hostname.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Keeps everything running past this value (and this process): `Drop`
    /// no longer removes anything. Returns the run id, for [`cleanup_run`].
    /// Start the fleet with [`FleetOptions::owner`] so that no later
    /// `Fleet::start` reaps it as left behind by a dead process.
    pub fn leak(mut self) -> String {
        self.cleaned = true;
        self.run_id.clone()
    }

    /// Removes everything now, reporting what could not be removed (`Drop`
    /// does the same but can only print problems).
    pub fn destroy(mut self) -> Result<(), FleetError> {
        self.cleaned = true;
        let problems = cleanup_run(&self.run_id, Some(&self.root));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FleetError::Cleanup {
                run_id: self.run_id.clone(),
                problems,
            })
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        for problem in cleanup_run(&self.run_id, Some(&self.root)) {
            eprintln!("baton-tests: fleet {}: {problem}", self.run_id);
        }
    }
}

/// One simulated host: a container running systemd, its hostname and
/// address on the fleet network, and its folder of bind-mounted host paths.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    container: String,
    ip: Ipv4Addr,
    network: String,
    run_id: String,
    owner: String,
    root: PathBuf,
    host_paths: Vec<String>,
    boot_timeout: Duration,
}

impl Host {
    async fn create(&self, image: &str) -> Result<(), FleetError> {
        let ip = self.ip.to_string();
        let labels = [
            format!("{LABEL_RUN}={}", self.run_id),
            format!("{LABEL_PID}={}", self.owner),
            format!("{LABEL_HOST}={}", self.name),
        ];
        let mut mounts = Vec::new();
        for path in &self.host_paths {
            let machine = self.root.join(relative_host_path(path)?);
            mounts.push(format!("{}:{path}", machine.display()));
        }
        // /var/run is a link to /run inside; name the real mount point.
        mounts.push(format!("{DOCKER_SOCKET}:/run/docker.sock"));
        mounts.push("/sys/fs/cgroup:/sys/fs/cgroup:rw".to_owned());

        let mut args: Vec<&str> = vec![
            "run",
            "--detach",
            "--name",
            &self.container,
            "--hostname",
            &self.name,
            "--network",
            &self.network,
            "--ip",
            &ip,
            "--network-alias",
            &self.name,
            // systemd as PID 1 without --privileged (refused here).
            "--env",
            "container=docker",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "--cgroupns=host",
            // `docker stop` = clean halt; systemd exits, the container stops.
            "--stop-signal",
            "SIGRTMIN+3",
            "--stop-timeout",
            STOP_TIMEOUT_SECS,
            // `systemctl reboot` inside exits the container; the engine
            // starts it again, like a reboot. `docker stop`/`kill` stay down.
            "--restart",
            "unless-stopped",
        ];
        for label in &labels {
            args.extend(["--label", label.as_str()]);
        }
        for mount in &mounts {
            args.extend(["--volume", mount.as_str()]);
        }
        args.push(image);
        docker::run(&args).await?;
        Ok(())
    }

    /// The hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's name (`baton-<run id>-<prefix>-<i>`).
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The host's address on the fleet network.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The run id of the fleet this host belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The host's folder on the machine; host path `/x/y` is `root()/x/y`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every bind-mounted host path with its folder on the machine: mount
    /// these into a sibling container to share the host's view.
    pub fn host_paths(&self) -> Vec<(String, PathBuf)> {
        self.host_paths
            .iter()
            .map(|p| (p.clone(), self.root.join(p.trim_start_matches('/'))))
            .collect()
    }

    /// Where a file of the host lives on the machine, if it is under one of
    /// the bind-mounted host paths.
    pub fn machine_path(&self, path: &str) -> Result<Option<PathBuf>, FleetError> {
        let relative = relative_host_path(path)?;
        let mounted = self.host_paths.iter().any(|p| {
            let p = Path::new(p.trim_start_matches('/'));
            relative.starts_with(p)
        });
        Ok(mounted.then(|| self.root.join(relative)))
    }

    /// A name for a container this host runs on the shared engine
    /// (`<host container>-<purpose>`), removed with the fleet.
    pub fn sibling_name(&self, purpose: &str) -> String {
        format!("{}-{purpose}", self.container)
    }

    /// Runs a command inside the host (`docker exec`).
    pub async fn exec(&self, command: &[&str]) -> Result<ExecOutput, FleetError> {
        let mut args = vec!["exec", self.container.as_str()];
        args.extend_from_slice(command);
        let out = docker::output(&args).await?;
        Ok(ExecOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs a command inside the host; a non-zero exit is an error. Returns
    /// stdout.
    pub async fn exec_ok(&self, command: &[&str]) -> Result<String, FleetError> {
        let out = self.exec(command).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(self.exec_error(command, &out))
        }
    }

    /// Runs a `sh -c` script inside the host; a non-zero exit is an error.
    pub async fn sh(&self, script: &str) -> Result<String, FleetError> {
        self.exec_ok(&["sh", "-c", script]).await
    }

    fn exec_error(&self, command: &[&str], out: &ExecOutput) -> FleetError {
        FleetError::Exec {
            host: self.name.clone(),
            container: self.container.clone(),
            command: command.join(" "),
            status: out.status,
            stderr: out.stderr.trim().to_owned(),
        }
    }

    /// Reads a file of the host: through its folder on the machine when the
    /// path is bind-mounted, else with `cat` inside (the host must run).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>, FleetError> {
        if let Some(machine) = self.machine_path(path)? {
            return tokio::fs::read(&machine)
                .await
                .map_err(|source| FleetError::Io {
                    path: machine,
                    source,
                });
        }
        let command = ["cat", "--", path];
        let mut args = vec!["exec", self.container.as_str()];
        args.extend_from_slice(&command);
        let out = docker::output(&args).await?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(self.exec_error(
                &command,
                &ExecOutput {
                    status: out.status.code().unwrap_or(-1),
                    stdout: String::new(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                },
            ))
        }
    }

    /// [`Host::read_file`] as trimmed UTF-8 text (one-line files).
    pub async fn read_line(&self, path: &str) -> Result<String, FleetError> {
        let bytes = self.read_file(path).await?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
    }

    /// Whether a file exists on the host (same routes as `read_file`).
    pub async fn file_exists(&self, path: &str) -> Result<bool, FleetError> {
        if let Some(machine) = self.machine_path(path)? {
            return Ok(machine.exists());
        }
        Ok(self.exec(&["test", "-e", path]).await?.success())
    }

    /// Writes a file of the host (creating parent folders): through its
    /// folder on the machine when bind-mounted, else inside the host.
    pub async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), FleetError> {
        if let Some(machine) = self.machine_path(path)? {
            if let Some(parent) = machine.parent() {
                create_dir_all(parent)?;
            }
            return tokio::fs::write(&machine, contents)
                .await
                .map_err(|source| FleetError::Io {
                    path: machine,
                    source,
                });
        }
        let script = r#"mkdir -p "$(dirname "$1")" && cat > "$1""#;
        docker::run_with_stdin(
            &[
                "exec",
                "-i",
                &self.container,
                "sh",
                "-c",
                script,
                "sh",
                path,
            ],
            contents,
        )
        .await?;
        Ok(())
    }

    /// Removes a file of the host if it exists.
    pub async fn remove_file(&self, path: &str) -> Result<(), FleetError> {
        if let Some(machine) = self.machine_path(path)? {
            return match tokio::fs::remove_file(&machine).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FleetError::Io {
                    path: machine,
                    source: e,
                }),
                _ => Ok(()),
            };
        }
        self.exec_ok(&["rm", "-f", "--", path]).await?;
        Ok(())
    }

    /// Fills the file system of the sized host path `path` ([`FleetOptions::sized_host_paths`])
    /// with one file, [`FILLER`] at its top, until `leave` bytes (rounded up to its pages)
    /// are free: the next write past them fails with `ENOSPC` from the kernel, in the host
    /// and in its sibling containers alike. Returns the bytes left free.
    pub async fn fill(&self, path: &str, leave: u64) -> Result<u64, FleetError> {
        let folder = self.sized_folder(path)?;
        let filler = folder.join(FILLER);
        let grow = free_bytes(&folder).await?.saturating_sub(leave);
        if grow > 0 {
            run_tool(
                &filler,
                "fallocate",
                &["--length", &grow.to_string(), &filler.to_string_lossy()],
            )
            .await?;
        }
        free_bytes(&folder).await
    }

    /// Removes what [`Host::fill`] put in `path`.
    pub async fn unfill(&self, path: &str) -> Result<(), FleetError> {
        let filler = self.sized_folder(path)?.join(FILLER);
        match tokio::fs::remove_file(&filler).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FleetError::Io {
                path: filler,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// The machine folder of a sized host path: one of the host's mounts.
    fn sized_folder(&self, path: &str) -> Result<PathBuf, FleetError> {
        let folder = self.root.join(relative_host_path(path)?);
        if mounts_under(&folder).contains(&folder) {
            Ok(folder)
        } else {
            Err(FleetError::InvalidPath {
                path: path.to_owned(),
                why: "not a sized host path of this fleet (FleetOptions::sized_host_paths)",
            })
        }
    }

    /// This boot's id (`/run/baton/boot-id`, fresh on every boot).
    pub async fn boot_id(&self) -> Result<String, FleetError> {
        self.read_line(BOOT_ID_PATH).await
    }

    /// The kernel release the simulated bootloader booted.
    pub async fn booted_kernel(&self) -> Result<String, FleetError> {
        self.read_line(BOOTED_KERNEL_PATH).await
    }

    /// Closes the host's established TCP connections to `to` on any of `ports`, as a broken
    /// link would, even while the process holding them is frozen (`ss -K` in the host's
    /// network namespace, from the machine: its `nsenter` and `ss`, and a kernel built with
    /// `CONFIG_INET_DIAG_DESTROY`). Returns how many it closed.
    pub async fn close_connections(
        &self,
        to: Ipv4Addr,
        ports: &[u16],
    ) -> Result<usize, FleetError> {
        let pid = docker::run(&["inspect", "--format", "{{.State.Pid}}", &self.container]).await?;
        let ports: Vec<String> = ports.iter().map(|p| format!("dport = :{p}")).collect();
        let filter = format!("dst {to} and ( {} )", ports.join(" or "));
        let args = [
            "--target",
            pid.trim(),
            "--net",
            "ss",
            "--kill",
            "--no-header",
            "--tcp",
            "state",
            "established",
            &filter,
        ];
        let failed = |stderr: String| FleetError::Machine {
            host: self.name.clone(),
            container: self.container.clone(),
            command: format!("nsenter {}", args.join(" ")),
            stderr,
        };
        let out = tokio::process::Command::new("nsenter")
            .args(args)
            .output()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        // `ss --kill` lists the sockets it closed, one a line, and skips those the kernel
        // cannot close.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count())
    }

    /// The container's state as Docker reports it (`running`, `exited`,
    /// `restarting`, …).
    pub async fn container_state(&self) -> Result<String, FleetError> {
        Ok(docker::run(&["inspect", "--format", "{{.State.Status}}", &self.container]).await?)
    }

    /// The units systemd lists as failed.
    pub async fn failed_units(&self) -> Result<Vec<String>, FleetError> {
        let out = self
            .exec_ok(&[
                "systemctl",
                "list-units",
                "--failed",
                "--plain",
                "--no-legend",
            ])
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// Waits until systemd finished booting: `running`, or `degraded` with
    /// the failed units. Errors after `timeout`.
    pub async fn wait_booted(&self, timeout: Duration) -> Result<SystemState, FleetError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec(&["systemctl", "is-system-running"]).await?;
            let state = out.stdout.trim();
            match state {
                "running" => return Ok(SystemState::Running),
                "degraded" => {
                    return Ok(SystemState::Degraded {
                        failed_units: self.failed_units().await?,
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let last = if state.is_empty() {
                    out.stderr.trim().to_owned()
                } else {
                    state.to_owned()
                };
                return Err(FleetError::BootTimeout {
                    host: self.name.clone(),
                    container: self.container.clone(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until systemd says `running`; `degraded` is an error naming
    /// the failed units.
    pub async fn wait_running(&self) -> Result<(), FleetError> {
        match self.wait_booted(self.boot_timeout).await? {
            SystemState::Running => Ok(()),
            SystemState::Degraded { failed_units } => Err(FleetError::Degraded {
                host: self.name.clone(),
                container: self.container.clone(),
                failed_units,
            }),
        }
    }

    /// Waits until the host runs a boot other than `old_boot_id` and has
    /// finished booting; returns the new boot id. Use after something inside
    /// the host (the agent) asked for a reboot.
    pub async fn wait_rebooted(&self, old_boot_id: &str) -> Result<String, FleetError> {
        let deadline = Instant::now() + self.boot_timeout;
        loop {
            let out = self.exec(&["cat", BOOT_ID_PATH]).await?;
            let id = out.stdout.trim();
            if out.success() && !id.is_empty() && id != old_boot_id {
                let id = id.to_owned();
                self.wait_running().await?;
                return Ok(id);
            }
            if Instant::now() >= deadline {
                return Err(FleetError::BootTimeout {
                    host: self.name.clone(),
                    container: self.container.clone(),
                    timeout: self.boot_timeout,
                    last: format!("still boot {old_boot_id} or not up: {}", out.stderr.trim()),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Reboots the host: clean systemd shutdown, container restart, waits
    /// until `running`. Returns the new boot id.
    pub async fn reboot(&self) -> Result<String, FleetError> {
        let old = self.boot_id().await.unwrap_or_default();
        docker::run(&["restart", "--time", STOP_TIMEOUT_SECS, &self.container]).await?;
        self.wait_rebooted(&old).await
    }

    /// Reboots the way software on the host does (`systemctl reboot`, as
    /// the agent does over D-Bus): systemd shuts down, the container exits,
    /// the restart policy brings it back. Returns the new boot id.
    pub async fn systemctl_reboot(&self) -> Result<String, FleetError> {
        let old = self.boot_id().await?;
        // The exec may be cut off by the shutdown; its result says nothing.
        let _ = self.exec(&["systemctl", "reboot"]).await?;
        self.wait_rebooted(&old).await
    }

    /// Power cut: SIGKILL to systemd; the host stays down until `start`.
    pub async fn kill(&self) -> Result<(), FleetError> {
        docker::run(&["kill", &self.container]).await?;
        Ok(())
    }

    /// Clean shutdown; the host stays down until `start`.
    pub async fn stop(&self) -> Result<(), FleetError> {
        docker::run(&["stop", "--time", STOP_TIMEOUT_SECS, &self.container]).await?;
        Ok(())
    }

    /// Powers a stopped or killed host on and waits until `running`.
    pub async fn start(&self) -> Result<(), FleetError> {
        docker::run(&["start", &self.container]).await?;
        self.wait_running().await
    }

    /// Cuts the host off the fleet network (it keeps running).
    pub async fn disconnect(&self) -> Result<(), FleetError> {
        docker::run(&["network", "disconnect", &self.network, &self.container]).await?;
        Ok(())
    }

    /// Reconnects the host with its address and hostname alias.
    pub async fn reconnect(&self) -> Result<(), FleetError> {
        let ip = self.ip.to_string();
        docker::run(&[
            "network",
            "connect",
            "--ip",
            &ip,
            "--alias",
            &self.name,
            &self.network,
            &self.container,
        ])
        .await?;
        Ok(())
    }
}

/// `"/var/lib/baton"` → `"var/lib/baton"`, refusing relative paths, `.`,
/// `..` and the root itself.
fn relative_host_path(path: &str) -> Result<PathBuf, FleetError> {
    let invalid = |why| FleetError::InvalidPath {
        path: path.to_owned(),
        why,
    };
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid("not absolute"));
    }
    let mut relative = PathBuf::new();
    for component in p.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => relative.push(part),
            _ => return Err(invalid("contains . or ..")),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(invalid("is the root"));
    }
    Ok(relative)
}

fn create_dir_all(path: &Path) -> Result<(), FleetError> {
    std::fs::create_dir_all(path).map_err(|source| FleetError::Io {
        path: path.to_owned(),
        source,
    })
}

/// `cp -a from/. to/`: keeps owners, modes and symlinks (the unit links in
/// /etc/systemd/system point into the host's own file system).
/// Bytes an unprivileged writer may still use on the file system holding `folder`.
async fn free_bytes(folder: &Path) -> Result<u64, FleetError> {
    let out = tokio::process::Command::new("stat")
        .args(["--file-system", "--format", "%a %S"])
        .arg(folder)
        .output()
        .await
        .map_err(|source| FleetError::Io {
            path: folder.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (out.status.success(), fields.next(), fields.next()) {
        (true, Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
        _ => Err(FleetError::Mount {
            path: folder.to_owned(),
            command: "stat --file-system".to_owned(),
            stderr: format!("{text} {}", String::from_utf8_lossy(&out.stderr)),
        }),
    }
}

/// Runs a tool of the machine about `path`; fails naming it with the tool's stderr.
async fn run_tool(path: &Path, tool: &str, args: &[&str]) -> Result<(), FleetError> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .map_err(|source| FleetError::Io {
            path: PathBuf::from(tool),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FleetError::Mount {
            path: path.to_owned(),
            command: format!("{tool} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Every mount point at or under `root` (sized host paths), deepest first.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    // Field 5 is the mount point (spaces escaped as \040, which fleet paths never hold).
    let mut mounts: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts
}

async fn copy_tree(from: &Path, to: &Path) -> Result<(), FleetError> {
    create_dir_all(to)?;
    let out = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .output()
        .await
        .map_err(|source| FleetError::Io {
            path: PathBuf::from("cp"),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FleetError::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The machine's IPv4 routes (network, mask), default route excluded, from
/// /proc/net/route (addresses in the kernel's little-endian hex).
fn machine_routes() -> Vec<(u32, u32)> {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let parse = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| u32::from(Ipv4Addr::from(v.to_le_bytes())))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let net = parse(fields.get(1)?)?;
            let mask = parse(fields.get(7)?)?;
            (mask != 0).then_some((net, mask))
        })
        .collect()
}

fn overlaps(net: u32, mask: u32, candidate: Ipv4Addr, candidate_mask: u32) -> bool {
    let common = mask & candidate_mask;
    net & common == u32::from(candidate) & common
}

/// Removes every container, network and folder of run `run_id` (`root`:
/// the fleet's folder, [`Fleet::root`]); returns what could not be removed.
/// Blocking (used by `Drop`).
pub fn cleanup_run(run_id: &str, root: Option<&Path>) -> Vec<String> {
    let mut problems = Vec::new();
    let name_filter = format!("name=baton-{run_id}-");
    // Containers named after a host's (run-unique) hostname, `<prefix>-<i>-R-…`.
    let hostname_filter = format!("name=-{run_id}-");
    let label_filter = format!("label={LABEL_RUN}={run_id}");

    let mut containers = BTreeSet::new();
    for filter in [&name_filter, &hostname_filter, &label_filter] {
        match docker::run_blocking(&["ps", "--all", "--quiet", "--no-trunc", "--filter", filter]) {
            Ok(out) => containers.extend(out.lines().map(str::to_owned)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !containers.is_empty() {
        let mut args = vec!["rm", "--force", "--volumes"];
        args.extend(containers.iter().map(String::as_str));
        if let Err(e) = docker::run_blocking(&args) {
            problems.push(e.to_string());
        }
    }

    let network_name = format!("baton-{run_id}");
    let mut networks = BTreeSet::new();
    match docker::run_blocking(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &label_filter,
    ]) {
        Ok(out) => networks.extend(out.lines().map(str::to_owned)),
        Err(e) => problems.push(e.to_string()),
    }
    match docker::run_blocking(&["network", "ls", "--format", "{{.Name}}"]) {
        Ok(out) if out.lines().any(|n| n == network_name) => {
            networks.insert(network_name);
        }
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    for network in &networks {
        if let Err(e) = docker::run_blocking(&["network", "rm", network]) {
            problems.push(e.to_string());
        }
    }

    if let Some(root) = root {
        // Sized host paths are tmpfs mounts: unmounted (the containers using them are gone)
        // before their folders are removed.
        for mount in mounts_under(root) {
            match std::process::Command::new("umount").arg(&mount).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(format!(
                    "umount {}: {}",
                    mount.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => problems.push(format!("umount {}: {e}", mount.display())),
            }
        }
        match std::fs::remove_dir_all(root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("{}: {e}", root.display()));
            }
            _ => {}
        }
    }
    problems
}

/// The run ids of every fleet whose containers or network are labelled as
/// owned by `owner` ([`FleetOptions::owner`]).
pub fn runs_owned_by(owner: &str) -> Result<BTreeSet<String>, FleetError> {
    let filter = format!("label={LABEL_PID}={owner}");
    let format = format!("{{{{.Label \"{LABEL_RUN}\"}}}}");
    let mut runs = BTreeSet::new();
    for listing in [
        docker::run_blocking(&["ps", "--all", "--filter", &filter, "--format", &format])?,
        docker::run_blocking(&["network", "ls", "--filter", &filter, "--format", &format])?,
    ] {
        runs.extend(
            listing
                .lines()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(runs)
}

/// Cleans up after fleets whose owning process died without dropping them
/// (their `baton.fleet.pid` names no live process); returns problems.
fn reap_stale_runs() -> Vec<String> {
    let alive =
        |pid: &str| pid.parse::<u32>().is_err() || Path::new("/proc").join(pid.trim()).exists();
    let mut stale = BTreeSet::new();
    let format = format!("{{{{.Label \"{LABEL_RUN}\"}}}} {{{{.Label \"{LABEL_PID}\"}}}}");
    let pid_filter = format!("label={LABEL_PID}");
    let listings = [
        docker::run_blocking(&["ps", "--all", "--filter", &pid_filter, "--format", &format]),
        docker::run_blocking(&[
            "network",
            "ls",
            "--filter",
            &pid_filter,
            "--format",
            &format,
        ]),
    ];
    for listing in listings.into_iter().flatten() {
        for line in listing.lines() {
            if let Some((run, pid)) = line.split_once(' ')
                && !run.is_empty()
                && !alive(pid)
            {
                stale.insert(run.to_owned());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(run) = name.strip_prefix("baton-fleet-")
                && let Ok(pid) = std::fs::read_to_string(entry.path().join(OWNER_PID_FILE))
                && !alive(&pid)
            {
                stale.insert(run.to_owned());
            }
        }
    }
    stale
        .iter()
        .flat_map(|run| {
            eprintln!("baton-tests: removing what dead fleet run {run} left behind");
            let root = std::env::temp_dir().join(format!("baton-fleet-{run}"));
            cleanup_run(run, Some(&root))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_made_relative() {
        assert_eq!(
            relative_host_path("/var/lib/baton").unwrap(),
            PathBuf::from("var/lib/baton")
        );
    }

    #[test]
    fn relative_host_path_refuses_relative() {
        assert!(relative_host_path("var/lib").is_err());
    }

    #[test]
    fn relative_host_path_refuses_dot_dot() {
        assert!(relative_host_path("/boot/../etc").is_err());
    }

    #[test]
    fn relative_host_path_refuses_root() {
        assert!(relative_host_path("/").is_err());
    }

    #[test]
    fn overlapping_subnets_are_detected() {
        let net = u32::from(Ipv4Addr::new(10, 0, 0, 0));
        assert!(overlaps(
            net,
            0xff00_0000,
            Ipv4Addr::new(10, 213, 4, 0),
            0xffff_ff00
        ));
        assert!(!overlaps(
            u32::from(Ipv4Addr::new(10, 213, 5, 0)),
            0xffff_ff00,
            Ipv4Addr::new(10, 213, 4, 0),
            0xffff_ff00
        ));
    }

    #[test]
    fn proc_routes_parse_as_network_order() {
        // 172.17.0.0/16 as the kernel prints it on little-endian machines.
        let v = u32::from_str_radix("000011AC", 16).unwrap();
        assert_eq!(
            Ipv4Addr::from(v.to_le_bytes()),
            Ipv4Addr::new(172, 17, 0, 0)
        );
    }
}
