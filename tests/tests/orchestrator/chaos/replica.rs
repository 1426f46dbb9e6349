//! An orchestrator replica run as a real `baton-orchestrator` process (the debug build of
//! `make orchestrator-bins`), so it can be killed with `SIGKILL` or frozen with `SIGSTOP`
//! as an operator's machine would do it: its configuration in a `--config` file, its
//! output in a log file beside it, its API on a fixed loopback port across restarts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_tests::bundles::target_dir;
use baton_tests::etcd::free_port;
use batonctl::client::ApiClient;

use crate::support::{SimFleet, credentials};

/// One `baton-orchestrator` process.
pub struct Replica {
    pub name: String,
    pub api: ApiClient,
    config_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    frozen: bool,
}

/// The debug `baton-orchestrator`; fails saying how to build it.
fn binary() -> PathBuf {
    let path = target_dir().join("debug/baton-orchestrator");
    assert!(
        path.is_file(),
        "{} is missing: `make orchestrator-bins` (which `make test` runs first)",
        path.display()
    );
    path
}

impl Replica {
    /// Writes replica `name`'s configuration (the fleet's, on a free loopback port) and
    /// starts it.
    pub async fn start(sim: &SimFleet, name: &str) -> Replica {
        let mut config = sim.config(name);
        config.health_timeout = super::HEALTH_TIMEOUT;
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("free port");
        config.listen = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = sim.etcd.dir().join(format!("replica-{name}"));
        std::fs::create_dir_all(&dir).expect("replica folder");
        let config_file = dir.join("orchestrator.toml");
        std::fs::write(&config_file, config.successor_file().expect("config file"))
            .expect("write config file");
        let api = ApiClient::with(&format!("https://{}", config.listen), &credentials(&config))
            .expect("client");
        let mut replica = Replica {
            name: name.to_owned(),
            api,
            config_file,
            log: dir.join("orchestrator.log"),
            child: None,
            frozen: false,
        };
        replica.spawn();
        replica.wait_answering().await;
        replica
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("replica log");
        let err = log.try_clone().expect("replica log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config_file)
            .arg("--replica")
            .arg(&self.name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary().display()));
        self.child = Some(child);
        self.frozen = false;
    }

    /// Waits until its API answers (it may be following).
    async fn wait_answering(&self) {
        let started = Instant::now();
        while self.role().await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "replica {} does not answer after 60 s; its log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `leader` or `follower` as its `/healthz` says, `None` when it does not answer
    /// within two seconds (dead, frozen, starting).
    pub async fn role(&self) -> Option<String> {
        if self.child.is_none() || self.frozen {
            return None;
        }
        let health = self.api.get::<serde_json::Value>("/healthz");
        match tokio::time::timeout(Duration::from_secs(2), health).await {
            Ok(Ok(h)) => h["role"].as_str().map(str::to_owned),
            _ => None,
        }
    }

    /// Waits until it reports `role`, or fails naming `why` after `timeout`.
    pub async fn wait_role(&self, role: &str, timeout: Duration, why: &str) {
        let started = Instant::now();
        loop {
            if self.role().await.as_deref() == Some(role) {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{why}: replica {} is not {role} after {timeout:?}; its log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("replica runs").id()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// `SIGSTOP`: the process stops on the spot, its lease keeps running out.
    pub fn freeze(&mut self) {
        self.signal("STOP");
        self.frozen = true;
    }

    /// `SIGCONT`.
    pub fn thaw(&mut self) {
        self.signal("CONT");
        self.frozen = false;
    }

    /// Whether the process has exited (by itself).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Starts it again (after [`Replica::kill`]) and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_answering().await;
    }

    /// Runs it again if it was killed, frozen or exited.
    pub async fn revive(&mut self) {
        if self.frozen {
            self.thaw();
        }
        if self.exited() {
            self.restart().await;
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.frozen {
            self.thaw();
        }
        self.kill();
    }
}
