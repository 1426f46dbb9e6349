//! Shared by the orchestrator tests: an orchestrator replica run in-process on a free
//! loopback port against a real etcd, serving https with a test certificate and reached with
//! the admin token of its admin token file, tiny bundle images built with the real Docker Engine
//! and pushed to a real registry, a snapshot of the whole keyspace to prove that a refused
//! request wrote nothing, and the real parts of a test on the simulated fleet.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use baton_orchestrator::auth::Token;
use baton_orchestrator::config::Config;
use baton_orchestrator::server::{self, RunError};
use baton_protocol::TokenName;
use baton_protocol::etcd::{Client, EtcdTls};
use baton_tests::bundles;
pub use baton_tests::bundles::{RemoveImages, push_tiny_bundle, tiny_manifest};
use baton_tests::etcd::EtcdServer;
use baton_tests::fleet::{Fleet, FleetOptions, LABEL_RUN};
use baton_tests::pki::TestPki;
use baton_tests::registration::registration;
use baton_tests::registry::Registry;
use baton_tests::signing::{self, TestKey};
use batonctl::client::{ApiClient, Credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One orchestrator replica running in this process.
pub struct Orchestrator {
    pub api: ApiClient,
    pub url: String,
    pub replica: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl Orchestrator {
    /// Starts `config` on a free port of 127.0.0.1 (bound as `baton-orchestrator` binds it,
    /// shareable with a self-updated successor).
    pub async fn start(config: Config) -> Orchestrator {
        Self::start_at(config, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Starts `config` on `addr`, which another replica may be serving already (both listen
    /// with `SO_REUSEPORT`, as a self-update's two versions do).
    pub async fn start_at(mut config: Config, addr: std::net::SocketAddr) -> Orchestrator {
        let listener = server::bind(addr).expect("bind");
        let addr = listener.local_addr().expect("addr");
        config.listen = addr;
        let credentials = credentials(&config);
        let scheme = if config.api_tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        let replica = config.replica_name();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(config, listener, None, async move {
            let _ = stopped.await;
        }));
        let url = format!("{scheme}://{addr}");
        Orchestrator {
            api: ApiClient::with(&url, &credentials).expect("client"),
            url,
            replica,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Waits until `/healthz` reports `role` (`leader` or `follower`).
    pub async fn wait_role(&self, role: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last = String::from("no answer");
        while started.elapsed() < timeout {
            match self.api.get::<serde_json::Value>("/healthz").await {
                Ok(h) if h["role"] == role => return started.elapsed(),
                Ok(h) => last = h.to_string(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} did not become {role} within {timeout:?}: {last}",
            self.replica
        );
    }

    /// Waits until it stopped by itself (after handing leadership over); fails if it does
    /// not within `timeout` or ended with an error.
    pub async fn wait_exit(mut self, timeout: Duration) {
        let task = self.task.take().expect("running");
        tokio::time::timeout(timeout, task)
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {timeout:?}", self.replica))
            .expect("task")
            .expect("the orchestrator ran without error");
    }

    /// Shuts it down (resigning leadership) and waits until it stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the orchestrator stops within 20 s")
                .expect("task")
                .expect("the orchestrator ran without error");
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A configuration for replica `replica` against `etcd`, with short timeouts, serving https
/// with the test certificate of `etcd`'s folder and the admin token file there (every
/// replica of a test shares both).
pub fn config(etcd: &EtcdServer, replica: &str) -> Config {
    let mut c = config_in(etcd.endpoints(), etcd.dir(), replica);
    if let Some(tls) = etcd.client_tls() {
        use_etcd_tls(&mut c, tls);
    }
    if etcd.root().is_some() {
        use_etcd_auth(&mut c, etcd.dir(), &etcd.root_credential_file());
    }
    c
}

/// The orchestrator reaches etcd over `tls`.
pub fn use_etcd_tls(c: &mut Config, tls: &EtcdTls) {
    c.tls.etcd_ca_file = Some(tls.ca_file.clone());
    c.tls.etcd_cert_file = tls.cert_file.clone();
    c.tls.etcd_key_file = tls.key_file.clone();
}

/// Authentication on: the orchestrator's own identity (made by it at first start, in the
/// test folder `dir` every replica shares) and root's (`root_credential_file`) for managing
/// the hosts' identities.
pub fn use_etcd_auth(c: &mut Config, dir: &Path, root_credential_file: &Path) {
    c.etcd_credential_file = Some(dir.join("orchestrator-credential"));
    c.etcd_admin_credential_file = Some(root_credential_file.to_owned());
}

/// The agents' downloader jobs point them at the etcd TLS files
/// [`install_agent_etcd_tls`] put on the hosts.
pub fn give_agents_etcd_tls(c: &mut Config) {
    c.agent_etcd_ca_file = Some(PathBuf::from(AGENT_ETCD_CA));
    c.agent_etcd_cert_file = Some(PathBuf::from(AGENT_ETCD_CERT));
    c.agent_etcd_key_file = Some(PathBuf::from(AGENT_ETCD_KEY));
}

/// Puts the CA and the client certificate etcd requires on every host of `fleet`, in its
/// /etc/baton.
pub fn install_agent_etcd_tls(fleet: &Fleet, tls: &EtcdTls) {
    for host in fleet.hosts() {
        let etc = host.root().join("etc/baton");
        std::fs::create_dir_all(&etc).expect("etc/baton");
        for (name, from) in agent_tls_files(tls) {
            std::fs::copy(&from, etc.join(name)).expect("copy etcd TLS file to the host");
        }
    }
}

/// A configuration for replica `replica` against the etcd at `endpoints` (plain, without
/// authentication), with short timeouts, serving https with the test certificate and the
/// admin token file of the test folder `dir` (every replica of a test shares both).
pub fn config_in(endpoints: Vec<String>, dir: &Path, replica: &str) -> Config {
    let mut c = Config::new(endpoints);
    c.replica = Some(replica.to_owned());
    c.leader_ttl = 3;
    let api = api_files_in(dir);
    c.api_tls_cert_file = Some(api.pki.server_cert);
    c.api_tls_key_file = Some(api.pki.server_key);
    c.admin_token_file = Some(api.admin_token_file);
    // Simulated hosts keep their folders under the machine's temporary folder.
    c.path_map_roots = vec![std::env::temp_dir().display().to_string()];
    // Bundles signed with the tests' release key, from the tests' loopback registries.
    c.trusted_keys = vec![TestKey::Release.public_file()];
    c.allowed_registries = vec!["127.0.0.1".to_owned()];
    c
}

/// The API's files of one test: a PKI and an admin token file, beside `etcd`'s data.
pub struct ApiFiles {
    pub pki: TestPki,
    pub admin_token_file: PathBuf,
}

/// Makes (once) and returns the API files of `etcd`'s test.
pub fn api_files(etcd: &EtcdServer) -> ApiFiles {
    api_files_in(etcd.dir())
}

/// Makes (once) and returns the API files of the test whose folder is `dir`.
pub fn api_files_in(dir: &Path) -> ApiFiles {
    let dir = dir.join("api");
    let pki = if dir.join("server.pem").exists() {
        TestPki::at(&dir)
    } else {
        std::fs::create_dir_all(&dir).expect("API folder");
        TestPki::generate(&dir).expect("API test PKI")
    };
    // Made here, as an operator would, so the test's client has the token before the
    // orchestrator starts; the orchestrator stores its hash when it starts.
    let admin_token_file = dir.join("admin-token");
    if !admin_token_file.exists() {
        let token = Token::generate(TokenName::new("admin").expect("name"));
        std::fs::write(&admin_token_file, format!("{}\n", token.expose())).expect("token file");
    }
    ApiFiles {
        pki,
        admin_token_file,
    }
}

/// The client credentials that go with `config`: its admin token and the CA of its
/// certificate (the test PKI keeps `ca.pem` beside the server certificate).
pub fn credentials(config: &Config) -> Credentials {
    Credentials {
        token: config
            .admin_token_file
            .as_deref()
            .map(|f| Credentials::read_token(f).expect("admin token file")),
        ca_file: config
            .api_tls_cert_file
            .as_deref()
            .and_then(Path::parent)
            .map(|dir| dir.join("ca.pem")),
        client_cert: None,
    }
}

/// Where the hosts of the simulated fleet keep etcd's CA and client certificate.
const AGENT_ETCD_CA: &str = "/etc/baton/etcd-ca.pem";
const AGENT_ETCD_CERT: &str = "/etc/baton/etcd-client.pem";
const AGENT_ETCD_KEY: &str = "/etc/baton/etcd-client-key.pem";

/// The files of `tls` as they are named on the hosts.
fn agent_tls_files(tls: &EtcdTls) -> Vec<(&'static str, PathBuf)> {
    fn name(p: &'static str) -> &'static str {
        p.rsplit('/').next().unwrap_or(p)
    }
    let mut files = vec![(name(AGENT_ETCD_CA), tls.ca_file.clone())];
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        files.push((name(AGENT_ETCD_CERT), cert.clone()));
        files.push((name(AGENT_ETCD_KEY), key.clone()));
    }
    files
}

/// The real parts of a test on the simulated fleet: a registry, the hosts, and an etcd
/// server that their agents reach on the fleet's gateway.
pub struct SimFleet {
    pub registry: Registry,
    pub fleet: Fleet,
    pub etcd: EtcdServer,
}

impl SimFleet {
    /// Starts a registry, `hosts` simulated hosts and etcd; fails saying what is missing
    /// (Docker, etcd, the simulated-host image's tools).
    pub async fn start(hosts: usize) -> SimFleet {
        Self::start_with(hosts, 1).await
    }

    /// [`SimFleet::start`] on an etcd cluster of `members` members (every one reachable
    /// by the hosts; the clients of Baton's parts are given all of them).
    pub async fn start_with(hosts: usize, members: usize) -> SimFleet {
        Self::start_with_options(hosts, members, FleetOptions::default()).await
    }

    /// [`SimFleet::start_with`] with the hosts started with `options`.
    pub async fn start_with_options(
        hosts: usize,
        members: usize,
        options: FleetOptions,
    ) -> SimFleet {
        bundles::require_docker().await;
        let registry = Registry::start().await.expect("registry");
        let fleet = Fleet::start(hosts, options).await.expect("start fleet");
        // TLS and authentication on, as Baton runs (docs/security.md): each host gets its
        // own identity from the orchestrator; the CA and the client certificate etcd
        // requires are on every host, in its /etc/baton.
        let etcd = EtcdServer::start_secure_cluster(members, &[IpAddr::V4(fleet.gateway_ip())])
            .await
            .expect("etcd");
        install_agent_etcd_tls(&fleet, etcd.client_tls().expect("TLS"));
        SimFleet {
            registry,
            fleet,
            etcd,
        }
    }

    /// A configuration for replica `replica` (see [`config`]) whose downloader jobs give the
    /// agents etcd on the fleet's gateway and carry the fleet's run label (its cleanup
    /// removes them).
    pub fn config(&self, replica: &str) -> Config {
        let mut c = config(&self.etcd, replica);
        c.agent_etcd = self.etcd.endpoints_on(IpAddr::V4(self.fleet.gateway_ip()));
        give_agents_etcd_tls(&mut c);
        c.job_labels = vec![(LABEL_RUN.into(), self.fleet.run_id().to_owned())];
        c
    }

    /// The sample bundle `version` (images/sample-bundle, carrying the agent built as that
    /// version), built, signed and pushed to the fleet's registry as `baton/bundle:<version>`:
    /// its tag, and the guard that removes the local image when dropped.
    pub async fn sample_bundle(&self, version: &str) -> (String, RemoveImages) {
        let bins = bundles::binaries();
        let agent = bundles::VERSIONS
            .iter()
            .position(|v| *v == version)
            .unwrap_or_else(|| panic!("no agent is built as {version}"));
        let sources = tempfile::tempdir().expect("tmp");
        let dir = sources.path().join(version);
        bundles::prepare_source(version, &dir).await;
        let tag = format!("{}:{version}", self.registry.reference("baton/bundle"));
        bundles::build_bundle(version, &dir, &tag, &bins.agents[agent], &bins.downloader).await;
        (tag.clone(), RemoveImages(vec![tag]))
    }

    /// Starts a replica with `config`, waits until it leads and registers every host of the
    /// fleet in group `edge` through its API.
    pub async fn leader(&self, config: Config) -> Orchestrator {
        let orch = Orchestrator::start(config).await;
        orch.wait_role("leader", Duration::from_secs(20)).await;
        for host in self.fleet.hosts() {
            orch.api
                .register(&registration(host, &[("group", "edge")]))
                .await
                .expect("register");
        }
        orch
    }
}

/// Every key under `/baton/` with its value and `mod_revision`: equal snapshots mean
/// nothing was written in between (byte for byte).
pub async fn keyspace(client: &Client) -> BTreeMap<String, (Vec<u8>, i64)> {
    let resp = client
        .kv_client()
        .get(
            "/baton/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (kv.value().to_vec(), kv.mod_revision()),
            )
        })
        .collect()
}

/// Keys under a prefix.
pub async fn keys_under(client: &Client, prefix: &str) -> Vec<String> {
    keyspace(client)
        .await
        .into_keys()
        .filter(|k| k.starts_with(prefix))
        .collect()
}

/// Builds a test bundle whose downloader job is `job_script` (run by a static busybox, so it
/// can record its flags in the host's folder and print a summary line) with the tiny
/// manifest of `version`, and pushes it as `<registry>/baton-test/<name>:<version>`;
/// returns that reference. The local images are removed when `images` drops.
pub async fn push_job_bundle(
    registry: &Registry,
    name: &str,
    version: &str,
    job_script: &str,
    images: &mut RemoveImages,
) -> String {
    let ctx = tempfile::tempdir().expect("temp dir");
    let dir = ctx.path();
    std::fs::create_dir_all(dir.join("bundle")).expect("mkdir");
    std::fs::write(
        dir.join("bundle/manifest.json"),
        serde_json::to_vec(&tiny_manifest(version, true)).expect("json"),
    )
    .expect("manifest");
    std::fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("/bin/busybox (Debian busybox-static) is needed");
    std::fs::write(dir.join("job.sh"), job_script).expect("job.sh");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox job.sh /\nCOPY bundle/ /bundle/\nENTRYPOINT [\"/busybox\", \"sh\", \"/job.sh\"]\n",
    )
    .expect("Dockerfile");
    let unique = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let local = format!("baton-{name}-{unique}:{version}");
    bundles::build_image(dir, &local).await;
    images.0.push(local.clone());
    let repository = format!("baton-test/{name}");
    let pinned = registry
        .push(&local, &repository, version)
        .await
        .expect("push");
    signing::sign(&pinned, TestKey::Release).await;
    let tag = format!("{}:{version}", registry.reference(&repository));
    images.0.push(tag.clone());
    tag
}

/// A TCP port that accepts connections and never answers: a Docker endpoint on which every
/// call hangs (a downloader job that takes forever), so an upgrade stays in progress.
pub async fn black_hole() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (format!("tcp://{addr}"), task)
}

/// Longest a fleet test waits for one condition (an upgrade, a join).
pub const FLEET_TIMEOUT: Duration = Duration::from_secs(600);

/// Polls until `done` returns something; fails naming `what` after [`FLEET_TIMEOUT`].
pub async fn until<T, F, Fut>(what: &str, mut done: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = done().await {
            eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
            return v;
        }
        assert!(
            started.elapsed() < FLEET_TIMEOUT,
            "{what}: not within {FLEET_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An HTTP endpoint on loopback answering every request with the status it is set to: the
/// fleet gate the tests turn bad.
pub struct GateEndpoint {
    /// Its URL (`http://127.0.0.1:<port>/healthz`).
    pub url: String,
    status: Arc<AtomicU16>,
}

impl GateEndpoint {
    /// Serves on a free loopback port, answering `status`.
    pub async fn start(status: u16) -> GateEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/healthz", listener.local_addr().expect("addr"));
        let status = Arc::new(AtomicU16::new(status));
        let answer = status.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let code = answer.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0u8; 2048];
                    let _ = conn.read(&mut request).await;
                    let head = format!(
                        "HTTP/1.1 {code} Gate\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                });
            }
        });
        GateEndpoint { url, status }
    }

    /// Answers `status` from now on.
    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}
