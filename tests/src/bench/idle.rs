//! The real static `baton-agent` left idle: started as systemd would start it (its
//! configuration, `NOTIFY_SOCKET` and `WATCHDOG_USEC` of the unit's `WatchdogSec=30`)
//! against the benchmark's etcd, with a D-Bus system bus of its own (a `dbus-daemon` in a
//! private mount namespace, so this machine's `/run/dbus` is not touched), and watched for
//! a minute once its session is up: its resident memory, how often it woke up (voluntary
//! context switches of all its threads) and was preempted (nonvoluntary ones), and the
//! watchdog pings it sent.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_protocol::etcd::identity::Credential;

use super::proc;
use crate::error::HarnessError;
use crate::etcd::EtcdServer;

/// The unit's `WatchdogSec` (downloader-job's `host_files.rs`).
const WATCHDOG: Duration = Duration::from_secs(30);
/// Time after `READY=1` before measuring: the session's first writes are done.
const SETTLE: Duration = Duration::from_secs(5);

/// What the idle agent did.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Resident memory at the end, in bytes.
    pub rss: u64,
    /// Peak resident memory, in bytes.
    pub peak_rss: u64,
    /// Wake-ups (voluntary context switches) per minute.
    pub wakeups_per_minute: f64,
    /// Preemptions (nonvoluntary context switches) per minute: the agent switched out
    /// while running, mostly for the process its request woke.
    pub preemptions_per_minute: f64,
    /// Watchdog pings per minute.
    pub watchdog_per_minute: f64,
    /// Threads at the end.
    pub threads: usize,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `agent` (the static binary) idle for `window` as host `host` with `credential`.
pub async fn measure(
    agent: &Path,
    etcd: &EtcdServer,
    credential: &Credential,
    dir: &Path,
    window: Duration,
) -> Result<Idle, HarnessError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| HarnessError(format!("{what}: {e}"))
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let config = write_config(etcd, credential, dir)?;
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).map_err(io(&notify_path))?;
    notify.set_nonblocking(true).map_err(io(&notify_path))?;
    // A system bus of its own in a private mount namespace: the agent connects to the
    // fixed /run/dbus/system_bus_socket.
    let script = format!(
        "mount -t tmpfs tmpfs /run/dbus && dbus-daemon --system --fork && exec {} --config {}",
        agent.display(),
        config.display()
    );
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).map_err(io(&log))?;
    let err = out.try_clone().map_err(io(&log))?;
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| HarnessError(format!("unshare (util-linux) for the idle agent: {e}")))?;
    let mut child = Killed(child);
    let pid = child.0.id();
    let mut messages = Vec::new();
    let started = Instant::now();
    while !messages.iter().any(|m: &String| m.contains("READY=1")) {
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(HarnessError(format!(
                "the idle agent exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )));
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(HarnessError(format!(
                "the idle agent sent no READY=1 within 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )));
        }
        drain(&notify, &mut messages);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    drain(&notify, &mut messages);
    messages.clear();
    let gone = || HarnessError(format!("the idle agent (pid {pid}) is gone"));
    let before = proc::context_switches(pid).ok_or_else(gone)?;
    let began = Instant::now();
    tokio::time::sleep(window).await;
    let after = proc::context_switches(pid).ok_or_else(gone)?;
    let minutes = began.elapsed().as_secs_f64() / 60.0;
    drain(&notify, &mut messages);
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    Ok(Idle {
        rss: proc::status_kib(pid, "VmRSS").ok_or_else(gone)? * 1024,
        peak_rss: proc::status_kib(pid, "VmHWM").ok_or_else(gone)? * 1024,
        wakeups_per_minute: after.since(before).voluntary as f64 / minutes,
        preemptions_per_minute: after.since(before).nonvoluntary as f64 / minutes,
        watchdog_per_minute: pings as f64 / minutes,
        threads: proc::threads(pid).unwrap_or(0),
    })
}

fn drain(socket: &UnixDatagram, into: &mut Vec<String>) {
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

/// The agent's configuration: etcd over TLS as `credential`, its files under `dir`.
fn write_config(
    etcd: &EtcdServer,
    credential: &Credential,
    dir: &Path,
) -> Result<PathBuf, HarnessError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| HarnessError(format!("{what}: {e}"))
    };
    let state = dir.join("state");
    let keys = dir.join("trusted-keys");
    for d in [&state, &keys] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let (boot_id, kernel, credential_file) = (
        dir.join("boot-id"),
        dir.join("kernel-release"),
        dir.join("credential"),
    );
    std::fs::write(&boot_id, "idle-boot-1\n").map_err(io(&boot_id))?;
    std::fs::write(&kernel, "6.1.0-bench\n").map_err(io(&kernel))?;
    std::fs::write(&credential_file, credential.to_file_text()).map_err(io(&credential_file))?;
    let text = super::fleet::config_text(
        "idle-agent",
        etcd,
        &state,
        &boot_id,
        &kernel,
        &keys,
        &format!("credential_file = {credential_file:?}\n"),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(path)
}
