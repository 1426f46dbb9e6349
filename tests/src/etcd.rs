//! Real etcd servers for tests: a single member or a 3-member cluster, each on free ports in
//! its own temp folder, killed and cleaned up on drop.
//!
//! Members can be killed and restarted (same data folder and ports) to test failover.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_protocol::etcd::{Client, Credential, EtcdTls};

use crate::pki::TestPki;

/// How long a member may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Message shown when the `etcd` binary is missing.
pub const INSTALL_HINT: &str =
    "the `etcd` binary was not found: install Debian's etcd-server package (`make deps` does it)";

pub use crate::error::HarnessError;

/// Picks a free TCP port on `ip` for a server the harness starts, below the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`): a port of that range, free when
/// picked, can be taken by any outgoing connection before the server binds it, which busy
/// fleet tests make happen. Ports are tried in turn from a random start, so one process
/// never picks a port twice and two processes rarely pick the same.
pub fn free_port(ip: IpAddr) -> Result<u16, HarnessError> {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let (low, high) = (PORTS_FROM, ephemeral_low().min(PORTS_TO));
    if high > low {
        let span = u32::from(high - low);
        let next =
            NEXT.get_or_init(|| std::sync::atomic::AtomicU32::new(rand::random::<u32>() % span));
        for _ in 0..span {
            let offset = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
            let port = low + offset as u16;
            if TcpListener::bind((ip, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener =
        TcpListener::bind((ip, 0)).map_err(|e| HarnessError(format!("bind {ip}:0: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError(format!("local_addr: {e}")))
}

/// Where [`free_port`] looks: above the well-known and most registered services' ports,
/// below Linux's default ephemeral range.
const PORTS_FROM: u16 = 20_000;
const PORTS_TO: u16 = 32_768;

/// The first port the kernel hands to outgoing connections (32768 when unreadable: Linux's
/// default).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(PORTS_TO)
}

/// One etcd member's fixed identity (survives restarts).
#[derive(Debug, Clone)]
struct MemberConfig {
    name: String,
    data_dir: PathBuf,
    log_file: PathBuf,
    client_ips: Vec<IpAddr>,
    client_port: u16,
    peer_port: u16,
    /// Serve clients over TLS with these files.
    tls: Option<TestPki>,
    /// Require client certificates.
    client_cert_auth: bool,
    /// Serve `/metrics` on plain HTTP on this loopback port (the client port needs a
    /// client certificate).
    metrics_port: Option<u16>,
}

impl MemberConfig {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn client_urls(&self) -> Vec<String> {
        self.client_ips
            .iter()
            .map(|ip| format!("{}://{ip}:{}", self.scheme(), self.client_port))
            .collect()
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

fn spawn_member(
    member: &MemberConfig,
    initial_cluster: &str,
    token: &str,
) -> Result<Child, HarnessError> {
    let log = std::fs::File::create(&member.log_file)
        .map_err(|e| HarnessError(format!("create {}: {e}", member.log_file.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| HarnessError(format!("clone log handle: {e}")))?;
    let urls = member.client_urls().join(",");
    let mut command = Command::new("etcd");
    if let Some(pki) = &member.tls {
        command
            .arg("--cert-file")
            .arg(&pki.server_cert)
            .arg("--key-file")
            .arg(&pki.server_key)
            .arg("--trusted-ca-file")
            .arg(&pki.ca);
        if member.client_cert_auth {
            command.arg("--client-cert-auth");
        }
        if let Some(port) = member.metrics_port {
            command
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{port}"));
        }
    }
    command
        .arg("--name")
        .arg(&member.name)
        .arg("--data-dir")
        .arg(&member.data_dir)
        .arg("--listen-client-urls")
        .arg(&urls)
        .arg("--advertise-client-urls")
        .arg(&urls)
        .arg("--listen-peer-urls")
        .arg(member.peer_url())
        .arg("--initial-advertise-peer-urls")
        .arg(member.peer_url())
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--initial-cluster-token")
        .arg(token)
        .arg("--heartbeat-interval")
        .arg("100")
        .arg("--election-timeout")
        .arg("1000")
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                HarnessError(INSTALL_HINT.to_owned())
            } else {
                HarnessError(format!("spawn etcd {}: {e}", member.name))
            }
        })
}

/// A running etcd cluster of one or more members.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<MemberConfig>,
    children: Vec<Option<Child>>,
    initial_cluster: String,
    token: String,
    client_tls: Option<EtcdTls>,
    /// With authentication on: the `root` user's credential (the harness's own client).
    root: Option<Credential>,
}

/// How a cluster serves clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain HTTP, no authentication.
    None,
    /// TLS requiring a client certificate (no users).
    ClientCerts,
    /// TLS with client certificates and authentication on: users with passwords and roles,
    /// as Baton runs it (docs/security.md). A request's password token names its user; the
    /// shared test client certificate's common name is no user, so it alone gets nothing.
    Auth,
}

/// A single-member etcd server.
pub type EtcdServer = EtcdCluster;

impl EtcdCluster {
    /// One member on 127.0.0.1.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(1, &[]).await
    }

    /// One member listening on 127.0.0.1 and also on `ip` (e.g. a test network's gateway, so
    /// simulated hosts reach it without exposing it beyond the machine).
    pub async fn start_on(ip: IpAddr) -> Result<Self, HarnessError> {
        Self::start_with(1, &[ip]).await
    }

    /// One member on 127.0.0.1 serving clients over TLS and requiring a client certificate
    /// (see [`EtcdCluster::client_tls`]).
    pub async fn start_tls() -> Result<Self, HarnessError> {
        Self::start_impl(1, &[], Security::ClientCerts).await
    }

    /// One member on 127.0.0.1 (and `extra_ips`) serving TLS, with authentication on: the
    /// harness's client is `root` ([`EtcdCluster::root`]); Baton's parts need users.
    pub async fn start_secure(extra_ips: &[IpAddr]) -> Result<Self, HarnessError> {
        Self::start_impl(1, extra_ips, Security::Auth).await
    }

    /// `size` members on 127.0.0.1 (and `extra_ips`) serving TLS, with authentication on,
    /// as [`EtcdCluster::start_secure`] starts one: a cluster that loses and regains
    /// members while Baton runs on it.
    pub async fn start_secure_cluster(
        size: usize,
        extra_ips: &[IpAddr],
    ) -> Result<Self, HarnessError> {
        Self::start_impl(size, extra_ips, Security::Auth).await
    }

    /// `size` members on 127.0.0.1 (plus `extra_ips` for clients).
    pub async fn start_with(size: usize, extra_ips: &[IpAddr]) -> Result<Self, HarnessError> {
        Self::start_impl(size, extra_ips, Security::None).await
    }

    async fn start_impl(
        size: usize,
        extra_ips: &[IpAddr],
        security: Security,
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("baton-etcd-")
            .tempdir()
            .map_err(|e| HarnessError(format!("create temp dir: {e}")))?;
        let pki = match security {
            Security::None => None,
            Security::ClientCerts => Some(TestPki::generate(dir.path())?),
            Security::Auth => {
                let sans: Vec<String> = std::iter::once(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    .chain(extra_ips.iter().copied())
                    .map(|ip| format!("IP:{ip}"))
                    .collect();
                Some(TestPki::generate_for(dir.path(), &sans.join(","))?)
            }
        };
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut client_ips = vec![loopback];
        client_ips.extend(extra_ips.iter().copied().filter(|ip| *ip != loopback));
        let mut members = Vec::new();
        for i in 0..size {
            // A port free on loopback is assumed free on the extra ips too (tests own them).
            let client_port = free_port(loopback)?;
            let peer_port = free_port(loopback)?;
            members.push(MemberConfig {
                name: format!("m{i}"),
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_file: dir.path().join(format!("m{i}.log")),
                client_ips: client_ips.clone(),
                client_port,
                peer_port,
                tls: pki.clone(),
                client_cert_auth: security != Security::None,
                metrics_port: match security {
                    Security::None => None,
                    _ => Some(free_port(loopback)?),
                },
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "baton-test".to_owned());
        let client_tls = pki.map(|p| EtcdTls {
            ca_file: p.ca,
            cert_file: Some(p.client_cert),
            key_file: Some(p.client_key),
            domain: None,
        });
        let mut cluster = Self {
            dir,
            members,
            children: Vec::new(),
            initial_cluster,
            token,
            client_tls,
            root: None,
        };
        for i in 0..size {
            let child = spawn_member(
                &cluster.members[i],
                &cluster.initial_cluster,
                &cluster.token,
            )?;
            cluster.children.push(Some(child));
        }
        for i in 0..size {
            cluster.wait_ready(i).await?;
        }
        if security == Security::Auth {
            cluster.turn_auth_on().await?;
        }
        Ok(cluster)
    }

    /// Switches authentication on ([`enable_auth`]); from then on the harness connects as
    /// root.
    async fn turn_auth_on(&mut self) -> Result<(), HarnessError> {
        let root = enable_auth(&self.client().await?, &self.root_credential_file()).await?;
        self.root = Some(root);
        Ok(())
    }

    /// The file holding `root`'s credential (authentication on), for an orchestrator's
    /// `--etcd-admin-credential-file`.
    pub fn root_credential_file(&self) -> PathBuf {
        self.dir.path().join("root-credential")
    }

    /// With authentication on, `root`'s credential.
    pub fn root(&self) -> Option<&Credential> {
        self.root.as_ref()
    }

    /// A client connected as `credential` (authentication on), over the cluster's TLS.
    pub async fn client_as(&self, credential: &Credential) -> Result<Client, HarnessError> {
        baton_protocol::etcd::connect_as(
            &self.endpoints(),
            self.client_tls.as_ref(),
            Some(credential),
        )
        .await
        .map_err(|e| HarnessError(format!("connect to test etcd as {}: {e}", credential.user)))
    }

    /// Client URLs of every member on loopback, e.g. `http://127.0.0.1:40123`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", m.scheme(), m.client_port))
            .collect()
    }

    /// Where the first member serves `/metrics` without a client certificate (plain HTTP
    /// on loopback).
    pub fn metrics_endpoint(&self) -> String {
        match self.members[0].metrics_port {
            Some(port) => format!("http://127.0.0.1:{port}"),
            None => self.endpoint(),
        }
    }

    /// The first member's loopback client URL.
    pub fn endpoint(&self) -> String {
        self.endpoints().swap_remove(0)
    }

    /// Every member's client port.
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    /// Client URLs of every member on `ip` (must be one it was started on).
    pub fn endpoints_on(&self, ip: IpAddr) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{ip}:{}", m.scheme(), m.client_port))
            .collect()
    }

    /// A client connected to every member.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        baton_protocol::etcd::connect_as(
            &self.endpoints(),
            self.client_tls.as_ref(),
            self.root.as_ref(),
        )
        .await
        .map_err(|e| HarnessError(format!("connect to test etcd: {e}")))
    }

    /// A client connected to member `i` only.
    pub async fn member_client(&self, i: usize) -> Result<Client, HarnessError> {
        baton_protocol::etcd::connect_as(
            &[self.endpoints()[i].clone()],
            self.client_tls.as_ref(),
            self.root.as_ref(),
        )
        .await
        .map_err(|e| HarnessError(format!("connect to test etcd member {i}: {e}")))
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` with its data folder and ports.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Starts the killed members `members` again, all before waiting for any: a member
    /// is ready only once a quorum runs, so members restored after a lost quorum must
    /// start together.
    pub async fn restore(&mut self, members: &[usize]) -> Result<(), HarnessError> {
        for &i in members {
            self.kill(i);
            self.spawn(i)?;
        }
        for &i in members {
            self.wait_ready(i).await?;
        }
        Ok(())
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let child = spawn_member(&self.members[i], &self.initial_cluster, &self.token)?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// The TLS files a client needs (CA and client certificate), for a TLS cluster.
    pub fn client_tls(&self) -> Option<&EtcdTls> {
        self.client_tls.as_ref()
    }

    /// The member's log so far, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_file).unwrap_or_default()
    }

    /// The folder holding data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self, i: usize) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let endpoint = self.endpoints()[i].clone();
        loop {
            if let Some(child) = self.children[i].as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(HarnessError(format!(
                    "etcd member {i} exited with {status}; log:\n{}",
                    self.log(i)
                )));
            }
            if let Ok(mut client) = baton_protocol::etcd::connect_as(
                std::slice::from_ref(&endpoint),
                self.client_tls.as_ref(),
                self.root.as_ref(),
            )
            .await
            {
                // A member is ready once it can serve a linearizable read (it has a leader).
                if client.get("/baton-harness-ready", None).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError(format!(
                    "etcd member {i} not ready after {START_TIMEOUT:?}; log:\n{}",
                    self.log(i)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Creates `root` (etcd's administrator, the only user that may manage users) with a fresh
/// password, switches authentication on through `client` (connected before, without a
/// user), and writes root's credential to `credential_file`.
pub async fn enable_auth(
    client: &Client,
    credential_file: &std::path::Path,
) -> Result<Credential, HarnessError> {
    let root = Credential {
        user: "root".to_owned(),
        password: random_password(),
    };
    let mut auth = client.auth_client();
    let fail = |what: &str, e: etcd_client::Error| HarnessError(format!("etcd {what}: {e}"));
    auth.user_add("root", root.password.as_str(), None)
        .await
        .map_err(|e| fail("user add root", e))?;
    auth.user_grant_role("root", "root")
        .await
        .map_err(|e| fail("user grant-role root", e))?;
    auth.auth_enable()
        .await
        .map_err(|e| fail("auth enable", e))?;
    std::fs::write(credential_file, root.to_file_text())
        .map_err(|e| HarnessError(format!("write {}: {e}", credential_file.display())))?;
    Ok(root)
}

/// 32 random hex digits (a test password).
pub fn random_password() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that no value anywhere in etcd's keyspace contains any of `secrets` (etcd keeps
/// its users' password hashes in its own auth store, outside the keyspace).
pub async fn assert_no_key_holds(client: &Client, secrets: &[&str]) {
    let all = client
        .kv_client()
        .get("\0", Some(etcd_client::GetOptions::new().with_from_key()))
        .await
        .unwrap_or_else(|e| panic!("get everything: {e}"));
    for kv in all.kvs() {
        let value = String::from_utf8_lossy(kv.value());
        for secret in secrets {
            assert!(
                !value.contains(secret),
                "{} holds a secret",
                kv.key_str().unwrap_or("?")
            );
        }
    }
}
