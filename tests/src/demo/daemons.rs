//! The demo's long-running processes — the registry, etcd, the orchestrator — started
//! detached and identified by pid and start time, waited for until they answer, and stopped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use baton_protocol::etcd;

use super::etcd_security;
use super::state::{Daemon, DemoState};
use super::{DemoError, api_error, io_error};
use crate::fleet;
use crate::pki::TestPki;
use crate::registry::{self, REGISTRY_BIN};

/// The demo etcd's backend quota: 2 GiB (docs/operations.md, "Sizing etcd").
const ETCD_QUOTA_BYTES: &str = "2147483648";

/// How long a detached process may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

/// Starts `program` with its output to `log`, not waited for: it outlives this process.
/// `detach`: in its own process group, so Ctrl-C in the terminal does not reach it.
fn spawn_daemon(
    name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    detach: bool,
) -> Result<Daemon, DemoError> {
    let out = std::fs::File::create(log).map_err(io_error(log))?;
    let err = out.try_clone().map_err(io_error(log))?;
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if detach {
        command.process_group(0);
    }
    let child = command.spawn().map_err(|e| {
        DemoError::Setup(format!(
            "could not start {name} ({}): {e}{}",
            program.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                " — `make deps` installs etcd and docker-registry"
            } else {
                ""
            }
        ))
    })?;
    let pid = child.id();
    Ok(Daemon {
        name: name.to_owned(),
        pid,
        start_ticks: proc_stat(pid).map_or(0, |s| s.start_ticks),
        log: log.to_owned(),
    })
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    state: char,
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses `/proc/<pid>/stat`: after the command (in parentheses, may hold spaces) come the
/// state (field 3) and, 19 fields later, the start time (field 22).
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Whether the recorded process still runs (same pid, same start; zombies count as gone).
pub(super) fn is_running(daemon: &Daemon) -> bool {
    matches!(proc_stat(daemon.pid), Some(s) if s.state != 'Z' && s.start_ticks == daemon.start_ticks)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `ready` until it says yes; fails if the process exits or after [`START_TIMEOUT`].
async fn wait_ready<F, Fut>(daemon: &Daemon, mut ready: F) -> Result<(), DemoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match ready().await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        let reason = if !is_running(daemon) {
            Some("it exited".to_owned())
        } else if Instant::now() > deadline {
            Some(format!("not ready after {START_TIMEOUT:?} ({last})"))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(DemoError::NotReady {
                what: daemon.name.clone(),
                pid: daemon.pid,
                reason,
                log: daemon.log.clone(),
                tail: log_tail(&daemon.log),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(super) async fn start_registry(
    state: &mut DemoState,
    addr: SocketAddr,
    detach: bool,
) -> Result<(), DemoError> {
    let dir = state.state_dir.join("registry");
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).map_err(io_error(&storage))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, registry::config_yaml(addr, &storage)).map_err(io_error(&config))?;
    let daemon = spawn_daemon(
        "registry",
        Path::new(REGISTRY_BIN),
        &["serve".to_owned(), config.display().to_string()],
        &state.state_dir.join("registry.log"),
        detach,
    )?;
    state.processes.push(daemon.clone());
    state.save()?;
    wait_ready(&daemon, || async move {
        if registry::answers_v2(addr).await {
            Ok(())
        } else {
            Err(format!("GET http://{addr}/v2/ does not answer 200"))
        }
    })
    .await
}

pub(super) async fn start_etcd(state: &mut DemoState, detach: bool) -> Result<(), DemoError> {
    let gateway = state.agent_etcd.clone().unwrap_or_default();
    let peer_port = crate::etcd::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let peer = format!("http://127.0.0.1:{peer_port}");
    let clients = format!("{},{gateway}", state.etcd);
    let data = state.state_dir.join("etcd");
    // TLS with client certificates, and (once up) authentication: docs/security.md.
    let gateway_ip = gateway
        .trim_start_matches("https://")
        .rsplit_once(':')
        .and_then(|(ip, _)| ip.parse().ok());
    let pki = etcd_security::make_pki(state, gateway_ip)?;
    let tls_args = [
        "--cert-file".to_owned(),
        pki.server_cert.display().to_string(),
        "--key-file".to_owned(),
        pki.server_key.display().to_string(),
        "--trusted-ca-file".to_owned(),
        pki.ca.display().to_string(),
        "--client-cert-auth".to_owned(),
    ];
    let args = [
        "--name",
        "demo",
        "--data-dir",
        &data.display().to_string(),
        "--listen-client-urls",
        &clients,
        "--advertise-client-urls",
        &clients,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("demo={peer}"),
        "--initial-cluster-token",
        &format!("baton-demo-{}", state.run_id.as_deref().unwrap_or("x")),
        "--log-level",
        "warn",
        // What docs/operations.md ("Sizing etcd") asks of a production etcd: history older
        // than an hour compacted, and the 2 GiB quota etcd defaults to, said out loud.
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        "1h",
        "--quota-backend-bytes",
        ETCD_QUOTA_BYTES,
    ]
    .map(str::to_owned);
    let args: Vec<String> = args.into_iter().chain(tls_args).collect();
    let daemon = spawn_daemon(
        "etcd",
        Path::new("etcd"),
        &args,
        &state.state_dir.join("etcd.log"),
        detach,
    )?;
    state.processes.push(daemon.clone());
    state.save()?;
    let endpoint = state.etcd.clone();
    let tls = etcd_security::client_tls(state);
    wait_ready(&daemon, || {
        let (endpoint, tls) = (endpoint.clone(), tls.clone());
        async move {
            let client = etcd::connect_tls(&[endpoint], Some(&tls))
                .await
                .map_err(|e| e.to_string())?;
            // Ready once it serves a linearizable read (it has a leader).
            client
                .kv_client()
                .get("/baton-demo-ready", None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    etcd_security::enable_auth(state).await
}

pub(super) async fn start_orchestrator(
    state: &mut DemoState,
    bin: &Path,
    detach: bool,
) -> Result<(), DemoError> {
    let run_id = state.run_id.clone().unwrap_or_default();
    let listen = state.api.trim_start_matches("https://").to_owned();
    // The API over TLS with a certificate of the demo's own CA, and its admin token in a
    // file only the demo's user can read.
    let pki_dir = state.state_dir.join(super::state::API_PKI_DIR);
    std::fs::create_dir_all(&pki_dir).map_err(io_error(&pki_dir))?;
    let pki = TestPki::generate(&pki_dir).map_err(|e| DemoError::Setup(e.to_string()))?;
    let token_file = state.token_file();
    // The simulated hosts' folders live under the fleet's folder on this machine.
    let fleet_root = state
        .fleet_root
        .as_deref()
        .map(|r| r.display().to_string())
        .unwrap_or_default();
    let (_, trusted_key) = super::signing::key_files(state);
    let etcd_tls = etcd_security::client_tls(state);
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let args = [
        // Only bundles signed with the demo's key, only from the demo's registry.
        "--trusted-key",
        &trusted_key.display().to_string(),
        "--allowed-registry",
        &state.registry,
        "--api-tls-cert-file",
        &pki.server_cert.display().to_string(),
        "--api-tls-key-file",
        &pki.server_key.display().to_string(),
        "--admin-token-file",
        &token_file.display().to_string(),
        "--etcd",
        &state.etcd,
        "--agent-etcd",
        state.agent_etcd.as_deref().unwrap_or_default(),
        "--etcd-ca-file",
        &etcd_tls.ca_file.display().to_string(),
        "--etcd-cert-file",
        &path(&etcd_tls.cert_file),
        "--etcd-key-file",
        &path(&etcd_tls.key_file),
        "--etcd-credential-file",
        &state
            .state_dir
            .join(etcd_security::ORCHESTRATOR_CREDENTIAL)
            .display()
            .to_string(),
        "--etcd-admin-credential-file",
        &etcd_security::root_credential_file(state)
            .display()
            .to_string(),
        "--agent-etcd-ca-file",
        etcd_security::HOST_CA,
        "--agent-etcd-cert-file",
        etcd_security::HOST_CERT,
        "--agent-etcd-key-file",
        etcd_security::HOST_KEY,
        "--listen",
        &listen,
        "--replica",
        "demo",
        "--path-map-root",
        &fleet_root,
        // Downloader jobs carry the fleet's run label: the fleet's cleanup removes them.
        "--job-label",
        &format!("{}={run_id}", fleet::LABEL_RUN),
    ]
    .map(str::to_owned);
    let daemon = spawn_daemon(
        "orchestrator",
        bin,
        &args,
        &state.state_dir.join("orchestrator.log"),
        detach,
    )?;
    state.processes.push(daemon.clone());
    state.save()?;
    let api = state.api_client().map_err(api_error("API URL"))?;
    wait_ready(&daemon, || {
        let api = api.clone();
        async move {
            match api.get::<serde_json::Value>("/healthz").await {
                Ok(h) if h["role"] == "leader" => Ok(()),
                Ok(h) => Err(format!("healthz: {h}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// Stops one recorded process: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. A pid now
/// held by another process is left alone.
pub(super) fn stop(daemon: &Daemon) -> Result<bool, String> {
    if !is_running(daemon) {
        return Ok(false);
    }
    let pid = daemon.pid.to_string();
    for (signal, wait) in [("-TERM", STOP_TIMEOUT), ("-KILL", Duration::from_secs(5))] {
        let _ = std::process::Command::new("kill")
            .args([signal, &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !is_running(daemon) {
                return Ok(true);
            }
            std::thread::sleep(POLL);
        }
    }
    Err(format!(
        "{} (pid {}) still runs after SIGKILL",
        daemon.name, daemon.pid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_command() {
        let stat =
            "4242 (etcd (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 9 0 987654 1 2";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                state: 'S',
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_process_is_running_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let ticks = proc_stat(pid).map(|s| s.start_ticks).unwrap_or_default();
        let me = Daemon {
            name: "me".into(),
            pid,
            start_ticks: ticks,
            log: std::path::PathBuf::new(),
        };
        assert!(is_running(&me));
        assert!(!is_running(&Daemon {
            start_ticks: ticks + 1,
            ..me
        }));
    }
}
