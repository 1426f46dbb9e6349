//! The real `baton-orchestrator` process for the benchmark: started from the build's
//! binary against the benchmark's etcd (TLS and authentication, its own identity made at
//! first start), serving its API over TLS with an admin token, trusting the tests' release
//! key and the loopback registry, its hosts' folders under the benchmark's folder; stopped
//! when dropped. Its peak resident memory is read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_orchestrator::auth::Token;
use baton_protocol::TokenName;
use batonctl::client::{ApiClient, Credentials};

use crate::bundles::target_dir;
use crate::error::HarnessError;
use crate::etcd::{EtcdServer, free_port};
use crate::pki::TestPki;
use crate::signing::TestKey;

/// How long the process may take to lead.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The environment variable that sets the orchestrator's `RUST_LOG` (default
/// [`DEFAULT_LOG_FILTER`]): `info` logs every job and decision, for reading a failed run.
pub const LOG_FILTER_ENV: &str = "BENCH_ORCHESTRATOR_LOG";
/// The orchestrator's log filter unless [`LOG_FILTER_ENV`] says otherwise: what went wrong,
/// without a line per host and step.
const DEFAULT_LOG_FILTER: &str = "warn";

/// The running orchestrator.
#[derive(Debug)]
pub struct OrchestratorProcess {
    child: Child,
    /// Its API, as the admin.
    pub api: ApiClient,
    log: PathBuf,
}

/// The build profile of this binary, and so of the orchestrator it runs: `make bench` builds
/// both in release (a benchmark of debug builds measures the wrong thing), `make test`
/// in debug.
pub const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OrchestratorProcess {
    /// Starts `target/<PROFILE>/baton-orchestrator` against `etcd`, with its files in `dir`,
    /// its log in `log` (kept after the run, so a failed upgrade can be read), hosts'
    /// folders under `hosts_root` and `extra` flags, and waits until it leads.
    pub async fn start(
        etcd: &EtcdServer,
        dir: &Path,
        log: &Path,
        hosts_root: &Path,
        extra: &[String],
    ) -> Result<Self, HarnessError> {
        let binary = target_dir().join(PROFILE).join("baton-orchestrator");
        if !binary.exists() {
            return Err(HarnessError(format!(
                "{} is missing: build it with `cargo build{} -p baton-orchestrator`",
                binary.display(),
                if PROFILE == "release" {
                    " --release"
                } else {
                    ""
                }
            )));
        }
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |e: std::io::Error| HarnessError(format!("{what}: {e}"))
        };
        let api_dir = dir.join("api");
        std::fs::create_dir_all(&api_dir).map_err(io(&api_dir))?;
        let pki = TestPki::generate(&api_dir)?;
        let token_file = api_dir.join("admin-token");
        let token = Token::generate(
            TokenName::new("admin").map_err(|e| HarnessError(format!("token name: {e}")))?,
        );
        std::fs::write(&token_file, format!("{}\n", token.expose())).map_err(io(&token_file))?;
        let tls = etcd
            .client_tls()
            .ok_or_else(|| HarnessError("the benchmark's etcd serves TLS".to_owned()))?;
        let port = free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
        let path = |p: &Path| p.display().to_string();
        let mut args: Vec<String> = vec![
            "--etcd".into(),
            etcd.endpoints().join(","),
            "--agent-etcd".into(),
            etcd.endpoints().join(","),
            "--etcd-ca-file".into(),
            path(&tls.ca_file),
            "--agent-etcd-ca-file".into(),
            "/etc/baton/etcd-ca.pem".into(),
            "--api-tls-cert-file".into(),
            path(&pki.server_cert),
            "--api-tls-key-file".into(),
            path(&pki.server_key),
            "--admin-token-file".into(),
            path(&token_file),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--replica".into(),
            "bench".into(),
            "--path-map-root".into(),
            path(hosts_root),
            "--trusted-key".into(),
            path(&TestKey::Release.public_file()),
            "--allowed-registry".into(),
            "127.0.0.1".into(),
        ];
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            args.extend([
                "--etcd-cert-file".into(),
                path(cert),
                "--etcd-key-file".into(),
                path(key),
            ]);
        }
        if etcd.root().is_some() {
            args.extend([
                "--etcd-credential-file".into(),
                path(&dir.join("orchestrator-credential")),
                "--etcd-admin-credential-file".into(),
                path(&etcd.root_credential_file()),
            ]);
        }
        args.extend(extra.iter().cloned());
        let log = log.to_path_buf();
        if let Some(folder) = log.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
        let out = std::fs::File::create(&log).map_err(io(&log))?;
        let err = out.try_clone().map_err(io(&log))?;
        let filter =
            std::env::var(LOG_FILTER_ENV).unwrap_or_else(|_| DEFAULT_LOG_FILTER.to_owned());
        let child = Command::new(&binary)
            .args(&args)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(&binary))?;
        let credentials = Credentials {
            token: Some(token.expose().to_owned()),
            ca_file: Some(api_dir.join("ca.pem")),
            client_cert: None,
        };
        let api = ApiClient::with(&format!("https://127.0.0.1:{port}"), &credentials)
            .map_err(|e| HarnessError(format!("API client: {e}")))?;
        let mut orchestrator = OrchestratorProcess { child, api, log };
        orchestrator.wait_leader().await?;
        Ok(orchestrator)
    }

    async fn wait_leader(&mut self) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            let last = match self.api.get::<serde_json::Value>("/healthz").await {
                Ok(h) if h["role"] == "leader" => return Ok(()),
                Ok(h) => h.to_string(),
                Err(e) => e.to_string(),
            };
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                return Err(HarnessError(format!(
                    "baton-orchestrator did not lead ({}; last answer: {last}); log {}:\n{}",
                    exited.map_or("still running".to_owned(), |s| s.to_string()),
                    self.log.display(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        super::proc::status_kib(self.child.id(), "VmHWM").map(|k| k * 1024)
    }

    /// Where its log is.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// The last lines of its log, and where the whole log is.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{}\n(the whole log: {})",
            lines[lines.len().saturating_sub(30)..].join("\n"),
            self.log.display()
        )
    }
}
