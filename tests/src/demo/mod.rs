//! `make demo`: a local fleet upgraded end to end and left running to explore — and the
//! same path, with free ports and its own folder, is the end-to-end test
//! (`tests/tests/demo_e2e.rs`).
//!
//! [`up`] starts, all real: a registry (`docker-registry`), simulated hosts in two zones
//! ([`crate::fleet`]), etcd (serving loopback and the fleet's gateway, so agents reach it)
//! and the `baton-orchestrator` binary; registers the hosts through the REST API; builds and
//! pushes the orchestrator image 2.0.0 and the sample bundles 1.0.0 and 2.0.0 (which names
//! that image); installs 1.0.0 on the empty hosts with `batonctl upgrade start … --watch`;
//! starts a rolling upgrade to 2.0.0 with one REST call (a `curl` command, printed and run
//! as printed) and follows it with `batonctl upgrade watch` — the orchestrator first hands
//! over to 2.0.0, in a container labelled with the fleet's run; then prints what every host
//! and the orchestrator ran before and after.
//!
//! # What outlives the demo command, and how it goes away
//!
//! etcd, the registry and the orchestrator run detached (their own process group, output to
//! log files); the fleet is started with an owner name instead of a pid and leaked, so
//! nothing removes it when the command exits. (The test turns [`DemoConfig::detach`] off:
//! its fleet and processes belong to the test process, as the harness's always do.)
//! Everything is recorded as soon as it exists in `<state dir>/state.json` (default
//! `$TMPDIR/baton-demo`): pids with their start times (a recycled pid is never signalled),
//! the fleet's run id, network and folder, and the bundle tags. [`down`] stops the
//! processes, removes the fleet (every container and network of its run, plus any run
//! labelled with the demo's owner, e.g. one whose start was interrupted), untags the
//! bundles and deletes the demo's folders. [`up`] first runs [`down`] on its state dir: a
//! second `make demo` replaces the first.
//!
//! Submodules: `state` (the state file), `daemons` (the detached processes), `commands`
//! (commands printed, then run as printed), `summary` (what is printed at the end),
//! `teardown` (`down` and `status`).

mod commands;
mod daemons;
pub mod etcd_security;
mod signing;
mod state;
mod summary;
mod teardown;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_protocol::api::Health;
use baton_protocol::api::UpgradeInfo;
use baton_protocol::etcd::EtcdError;
use baton_protocol::{Keyspace, UpgradePhase};
use batonctl::bundle::{self, BuildOptions, BundleError, Progress};
use batonctl::client::{ApiClient, ClientError};

use crate::bundles::{self, VERSIONS};
use crate::docker::{self, DockerError};
use crate::fleet::{Fleet, FleetError, FleetOptions, Host};
use crate::registration::registration;

pub use commands::shell_line;
pub use state::{Daemon, DemoHost, DemoState};
pub use summary::{HostVersions, print_explore, read_versions, versions_table};
pub use teardown::{down, status};

use commands::{run_captured, run_streamed};
use daemons::{start_etcd, start_orchestrator, start_registry};
use state::{STATE_SCHEMA, owner_of};
use summary::print_summary;

/// etcd's client port on 127.0.0.1 (and on the fleet's gateway), as a plain `etcdctl`
/// expects.
pub const DEFAULT_ETCD_PORT: u16 = 2379;
/// The registry's port on 127.0.0.1.
pub const DEFAULT_REGISTRY_PORT: u16 = 5000;
/// The orchestrator's REST API port on 127.0.0.1, where `batonctl` looks by default.
pub const DEFAULT_API_PORT: u16 = 7480;
/// Simulated hosts: two zones of two.
pub const DEFAULT_HOSTS: usize = 4;
/// The state file in the state dir.
pub const STATE_FILE: &str = "state.json";
/// The upgrade installing bundle 1.0.0 on the empty hosts.
pub const UPGRADE_V1: &str = "u-1.0.0";
/// The rolling upgrade to bundle 2.0.0.
pub const UPGRADE_V2: &str = "u-2.0.0";
/// The orchestrator version bundle 2.0.0 carries as its orchestrator image (built from
/// `images/orchestrator` and pushed next to the bundles): the rolling upgrade starts with
/// the orchestrator upgrading itself.
pub const ORCHESTRATOR_V2: &str = "2.0.0";
/// The kernel release bundle 2.0.0 boots (images/sample-bundle).
pub const KERNEL_V2: &str = "6.1.0-baton2";
/// The sample bundles' components, by kind: the summary's columns (images/sample-bundle).
pub const COMPONENTS: [(&str, &str); 3] = [
    ("DAEMON", "baton-echo"),
    ("SERVICE", "baton-kv"),
    ("UTILITY", "baton-hello"),
];
/// The label telling the hosts' zones apart (the rolling upgrade's `zone_label`).
pub const ZONE_LABEL: &str = "zone";
/// Every host's group.
pub const GROUP: &str = "edge";

/// What to start, and where.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Holds the state file, logs, etcd's data, the registry's storage and bundle sources.
    pub state_dir: PathBuf,
    /// etcd's client port (on 127.0.0.1 and the fleet's gateway).
    pub etcd_port: u16,
    /// The registry's port on 127.0.0.1.
    pub registry_port: u16,
    /// The REST API's port on 127.0.0.1.
    pub api_port: u16,
    /// How many simulated hosts (at least 2: the rolling upgrade has a canary).
    pub hosts: usize,
    /// Hostnames `host-<i>-<run id>` instead of `host-<i>`, so runs in parallel (tests)
    /// never share a name on the shared Docker Engine.
    pub unique_hostnames: bool,
    /// Where `baton-orchestrator` and `batonctl` are (`target/debug`).
    pub bin_dir: PathBuf,
    /// Let the fleet and the processes outlive this process (the demo). A test sets
    /// `false`: its fleet is then owned by the test process (a later `Fleet::start` reaps
    /// it if the test dies without cleaning up) and the processes stay in the test's
    /// process group (Ctrl-C stops them too).
    pub detach: bool,
}

impl DemoConfig {
    /// The defaults: fixed ports, four hosts, `$TMPDIR/baton-demo`, `target/debug`.
    pub fn new() -> Self {
        DemoConfig {
            state_dir: default_state_dir(),
            etcd_port: DEFAULT_ETCD_PORT,
            registry_port: DEFAULT_REGISTRY_PORT,
            api_port: DEFAULT_API_PORT,
            hosts: DEFAULT_HOSTS,
            unique_hostnames: false,
            bin_dir: bundles::target_dir().join("debug"),
            detach: true,
        }
    }

    fn orchestrator_bin(&self) -> PathBuf {
        self.bin_dir.join("baton-orchestrator")
    }

    fn batonctl_bin(&self) -> PathBuf {
        self.bin_dir.join("batonctl")
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// `$TMPDIR/baton-demo`.
pub fn default_state_dir() -> PathBuf {
    std::env::temp_dir().join("baton-demo")
}

/// The command that removes the demo in `state_dir`.
pub fn down_command(state_dir: &Path) -> String {
    if state_dir == default_state_dir() {
        "make demo-down".to_owned()
    } else {
        shell_line(&[
            "make".to_owned(),
            "demo-down".to_owned(),
            format!("BATON_DEMO_DIR={}", state_dir.display()),
        ])
    }
}

/// A demo step failed; every error names what it was about.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error(
        "127.0.0.1:{port} ({what}) is in use: stop what listens there, or pick another port with {flag} / {env}"
    )]
    PortInUse {
        port: u16,
        what: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("bundle {version}: {source}")]
    Bundle {
        version: String,
        source: BundleError,
    },
    #[error("{what} (pid {pid}) is not ready: {reason}; its log {log}:\n{tail}")]
    NotReady {
        what: String,
        pid: u32,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{call}: {source}")]
    Api { call: String, source: ClientError },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("`{command}` failed ({status}){detail}")]
    Command {
        command: String,
        status: String,
        detail: String,
    },
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("upgrade {id} ended {phase}: {reason} (orchestrator log: {log})")]
    UpgradeFailed {
        id: String,
        phase: UpgradePhase,
        reason: String,
        log: PathBuf,
    },
    #[error("tearing the demo down left problems: {0:?}")]
    Teardown(Vec<String>),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn api_error(call: &str) -> impl FnOnce(ClientError) -> DemoError + '_ {
    move |source| DemoError::Api {
        call: call.to_owned(),
        source,
    }
}

/// What a finished demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub state: DemoState,
    /// Every host's `installed` before the rolling upgrade (after 1.0.0).
    pub before: Vec<HostVersions>,
    /// … and after it.
    pub after: Vec<HostVersions>,
    /// The rolling upgrade as the API shows it at the end.
    pub upgrade: UpgradeInfo,
    /// The orchestrator leading before the rolling upgrade (the demo's process)…
    pub orchestrator_before: Health,
    /// … and after it (bundle 2.0.0's, in a container, if it upgraded itself).
    pub orchestrator_after: Health,
    /// The rolling upgrade's soaks that passed (its `soak` events saying so).
    pub soaks_passed: usize,
    /// Time to install 1.0.0 on the empty hosts.
    pub install_took: Duration,
    /// Time the rolling upgrade to 2.0.0 took.
    pub upgrade_took: Duration,
    /// Time of the whole demo.
    pub total: Duration,
}

/// Prints a step with the time since the demo started.
#[derive(Debug)]
struct Narrator {
    started: Instant,
}

impl Narrator {
    fn step(&self, what: &str) {
        println!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// Progress of `bundle build`, indented under the demo's steps: its steps, not their
/// details (the Docker build's and push's own lines are indented).
#[derive(Debug)]
struct Indented;

impl Progress for Indented {
    fn line(&self, line: &str) {
        if !line.starts_with(' ') {
            println!("           {line}");
        }
    }
}

/// Runs the whole demo: see the module documentation. The fleet is left running, also when
/// a step fails (for inspection); [`down`] removes it.
pub async fn up(config: &DemoConfig) -> Result<DemoReport, DemoError> {
    let say = Narrator {
        started: Instant::now(),
    };
    let binaries = preflight(config).await?;
    if config.state_dir.exists() {
        say.step(&format!(
            "a previous demo in {} is being torn down first",
            config.state_dir.display()
        ));
        for line in down(&config.state_dir)? {
            println!("           {line}");
        }
    }
    check_ports(config)?;

    let (state, hosts) = start_fleet(config, &binaries, &say).await?;
    let api = state.api_client().map_err(api_error("API URL"))?;
    say.step(&format!(
        "the API speaks https (CA {}); the admin token is in {} (mode 0600)",
        state.api_pki().ca.display(),
        state.token_file().display()
    ));
    for (host, demo_host) in hosts.iter().zip(&state.hosts) {
        let request = registration(host, &[("group", GROUP), (ZONE_LABEL, &demo_host.zone)]);
        api.register(&request)
            .await
            .map_err(api_error(&format!("POST /v1/hosts ({})", host.name())))?;
        say.step(&format!(
            "registered {} (POST /v1/hosts: group={GROUP}, zone={}, docker {})",
            host.name(),
            demo_host.zone,
            request.docker
        ));
    }

    say.step("installing bundle 1.0.0 on the empty hosts (the downloader job installs the agent)");
    let install_started = Instant::now();
    install_v1(&state, &api).await?;
    let install_took = install_started.elapsed();
    let keyspace = Keyspace::default();
    let client = etcd_security::root_client(&state).await?;
    let before = read_versions(&client, &keyspace, &state.hosts).await?;
    let orchestrator_before = health(&api).await?;

    if let Some(v2) = state.bundles.get("2.0.0") {
        say.step("only signed bundles are accepted: the same 2.0.0, pushed where no signature lies beside it, is refused");
        signing::show_unsigned_refused(&state, &api, v2).await?;
    }

    let upgrade_started = Instant::now();
    let upgrade = roll_out_v2(&state, &api, &orchestrator_before, &say).await?;
    let upgrade_took = upgrade_started.elapsed();
    let after = read_versions(&client, &keyspace, &state.hosts).await?;
    let orchestrator_after = health(&api).await?;
    let soaks_passed = api
        .events(UPGRADE_V2)
        .await
        .map_err(api_error("GET /v1/upgrades/{id}/events"))?
        .iter()
        .filter(|e| e.event.kind == "soak" && e.event.message.contains(" soaked "))
        .count();

    let report = DemoReport {
        state,
        before,
        after,
        upgrade,
        orchestrator_before,
        orchestrator_after,
        soaks_passed,
        install_took,
        upgrade_took,
        total: say.started.elapsed(),
    };
    print_summary(&report);
    Ok(report)
}

/// Checks what the demo needs before anything starts; returns the bundles' binaries.
async fn preflight(config: &DemoConfig) -> Result<bundles::Binaries, DemoError> {
    if config.hosts < 2 {
        return Err(DemoError::Setup(format!(
            "the demo needs at least 2 hosts (a canary and the rest), {} asked",
            config.hosts
        )));
    }
    let binaries = bundles::find_binaries().map_err(DemoError::Setup)?;
    bundles::find_orchestrator_binary(ORCHESTRATOR_V2).map_err(DemoError::Setup)?;
    for bin in [config.orchestrator_bin(), config.batonctl_bin()] {
        if !bin.is_file() {
            return Err(DemoError::Setup(format!(
                "{} is missing: build it first (`cargo build -p baton-orchestrator -p batonctl --bins`; \
                 `make demo` and `make test` do)",
                bin.display()
            )));
        }
    }
    docker::ensure_available().await?;
    Ok(binaries)
}

/// Every port the demo listens on must be free on 127.0.0.1.
fn check_ports(config: &DemoConfig) -> Result<(), DemoError> {
    let ports = [
        (
            config.etcd_port,
            "etcd",
            "--etcd-port",
            "BATON_DEMO_ETCD_PORT",
        ),
        (
            config.registry_port,
            "registry",
            "--registry-port",
            "BATON_DEMO_REGISTRY_PORT",
        ),
        (
            config.api_port,
            "orchestrator API",
            "--api-port",
            "BATON_DEMO_API_PORT",
        ),
    ];
    for (port, what, flag, env) in ports {
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            return Err(DemoError::PortInUse {
                port,
                what,
                flag,
                env,
            });
        }
    }
    Ok(())
}

/// Starts the registry, then the fleet and the bundles side by side, then etcd and the
/// orchestrator — each recorded in the state file as soon as it exists.
async fn start_fleet(
    config: &DemoConfig,
    binaries: &bundles::Binaries,
    say: &Narrator,
) -> Result<(DemoState, Vec<Host>), DemoError> {
    std::fs::create_dir_all(&config.state_dir).map_err(io_error(&config.state_dir))?;
    let mut state = DemoState {
        schema_version: STATE_SCHEMA,
        owner: owner_of(&config.state_dir),
        state_dir: config.state_dir.clone(),
        etcd: format!("https://127.0.0.1:{}", config.etcd_port),
        agent_etcd: None,
        registry: format!("127.0.0.1:{}", config.registry_port),
        api: format!("https://127.0.0.1:{}", config.api_port),
        batonctl: config.batonctl_bin(),
        run_id: None,
        network: None,
        fleet_root: None,
        hosts: Vec::new(),
        processes: Vec::new(),
        images: Vec::new(),
        bundles: BTreeMap::new(),
        started_at: baton_protocol::documents::now(),
    };
    state.save()?;

    say.step(&format!("starting the registry on {}", state.registry));
    let registry_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.registry_port));
    start_registry(&mut state, registry_addr, config.detach).await?;

    say.step(&format!(
        "starting {} simulated hosts (systemd in containers, zones a and b) and building bundles {} \
         (2.0.0 carries orchestrator {ORCHESTRATOR_V2})",
        config.hosts,
        VERSIONS.join(" and ")
    ));
    let options = FleetOptions {
        unique_hostnames: config.unique_hostnames,
        owner: config.detach.then(|| state.owner.clone()),
        ..FleetOptions::default()
    };
    // The tags are recorded before they exist (`down` untags only what exists): an
    // interrupted build leaves nothing `down` does not know of.
    state.images = VERSIONS.map(|v| bundle_tag(&state, v)).to_vec();
    state.images.push(orchestrator_tag(&state));
    state.images.push(format!(
        "{}/{}:2.0.0",
        state.registry,
        signing::UNSIGNED_REPOSITORY
    ));
    state.save()?;
    let (fleet, built) = tokio::join!(
        Fleet::start(config.hosts, options),
        build_bundles(&state, binaries)
    );
    // Both recorded (the fleet leaked) before either error counts, so `down` finds them.
    let built = built.map(|pinned| state.bundles = pinned);
    state.save()?;
    let hosts = record_fleet(&mut state, fleet?, config.etcd_port)?;
    built?;
    say.step(&format!(
        "fleet run {} up on network {} ({})",
        state.run_id.as_deref().unwrap_or("?"),
        state.network.as_deref().unwrap_or("?"),
        hosts
            .iter()
            .map(|h| h.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    say.step(&format!(
        "starting etcd on {} (agents reach it at {})",
        state.etcd,
        state.agent_etcd.as_deref().unwrap_or("?")
    ));
    start_etcd(&mut state, config.detach).await?;
    etcd_security::copy_to_hosts(&state, &hosts)?;
    say.step(&format!(
        "etcd serves TLS with authentication on: each host gets its own identity; a read-only etcdctl: set -a; . {}; set +a",
        state.state_dir.join(etcd_security::ETCDCTL_ENV).display()
    ));
    say.step(&format!("starting baton-orchestrator on {}", state.api));
    start_orchestrator(&mut state, &config.orchestrator_bin(), config.detach).await?;
    Ok((state, hosts))
}

/// Installs bundle 1.0.0 on every host at once, with `batonctl upgrade start … --watch`.
async fn install_v1(state: &DemoState, api: &ApiClient) -> Result<UpgradeInfo, DemoError> {
    let mut args = batonctl_args(state);
    args.extend(
        [
            "upgrade",
            "start",
            &bundle_tag(state, "1.0.0"),
            "--strategy",
            "all-at-once",
            "--allow-downtime",
            "--id",
            UPGRADE_V1,
            "--watch",
        ]
        .map(str::to_owned),
    );
    let watched = run_streamed(&state.batonctl, &args).await;
    outcome(watched, api, UPGRADE_V1, state).await
}

/// `GET /healthz`: the leading orchestrator's version and name.
async fn health(api: &ApiClient) -> Result<Health, DemoError> {
    api.get("/healthz").await.map_err(api_error("GET /healthz"))
}

/// How many install batches an upgrade's plan has.
pub fn batch_count(upgrade: &UpgradeInfo) -> usize {
    upgrade
        .upgrade
        .hosts
        .values()
        .filter_map(|h| h.batch)
        .max()
        .map_or(0, |b| b as usize + 1)
}

/// How long each batch of the upgrade to 2.0.0 soaks.
pub const SOAK: &str = "10s";

/// Starts the upgrade to 2.0.0 (strategy `auto`: the backward-compatible bundle makes it
/// rolling, each batch soaking [`SOAK`]) with one `curl` (printed, then run as printed) and follows it with
/// `batonctl upgrade watch` until it ends.
async fn roll_out_v2(
    state: &DemoState,
    api: &ApiClient,
    orchestrator: &Health,
    say: &Narrator,
) -> Result<UpgradeInfo, DemoError> {
    say.step("upgrade to bundle 2.0.0 with one REST call (the bundle chooses the strategy):");
    // Written out (not serialised) to keep the fields in reading order.
    let body = format!(
        r#"{{"id": "{UPGRADE_V2}", "image": "{}", "strategy": {{"kind": "auto", "canary": 1, "batch": {{"percent": 50}}, "zone_label": "{ZONE_LABEL}", "max_failures": 0}}, "soak": "{SOAK}"}}"#,
        bundle_tag(state, "2.0.0")
    );
    // Run by the shell exactly as printed: the token is read from its file there, never
    // written on a command line.
    let line = format!(
        "{} -X POST -H 'content-type: application/json' -d {} {}/v1/upgrades",
        curl_prefix(state),
        shell_line(&[body]),
        state.api
    );
    let curl = ["sh".to_owned(), "-c".to_owned(), line.clone()];
    println!("\n    $ {line}\n");
    let answer = run_captured(&curl).await?;
    let created: UpgradeInfo = serde_json::from_str(&answer).map_err(|e| DemoError::Command {
        command: shell_line(&curl),
        status: "answered".into(),
        detail: format!(" something that is not an upgrade ({e}): {answer}"),
    })?;
    let batches = batch_count(&created);
    println!(
        "    created upgrade {}: pinned to {}, {} hosts in {batches} batches (canary first, zone by zone)",
        created.upgrade.id,
        created.upgrade.bundle,
        created.upgrade.hosts.len(),
    );
    if let Some(why) = &created.upgrade.strategy_reason {
        println!("    strategy: {why}");
    }
    if let Some(soak) = &created.upgrade.soak {
        println!(
            "    soak: each batch soaks {} once its hosts are done — their agents re-run the health checks —\n    \
             before its hosts succeed and the next batch starts",
            soak.duration
        );
    }
    if let Some(o) = &created.upgrade.orchestrator {
        println!(
            "    the bundle carries orchestrator {ORCHESTRATOR_V2} ({}): orchestrator {} (replica {}) starts it\n    \
             in a container first and hands it the leadership and this upgrade, then exits",
            o.image, orchestrator.version, orchestrator.replica
        );
    }
    println!();

    say.step("following it with batonctl:");
    let mut watch = batonctl_args(state);
    watch.extend(["upgrade", "watch", UPGRADE_V2].map(str::to_owned));
    let watched = run_streamed(&state.batonctl, &watch).await;
    outcome(watched, api, UPGRADE_V2, state).await
}

/// Records the fleet in the state and leaks it (it outlives this process); returns its hosts.
fn record_fleet(
    state: &mut DemoState,
    fleet: Fleet,
    etcd_port: u16,
) -> Result<Vec<Host>, DemoError> {
    let hosts = fleet.hosts().to_vec();
    let half = hosts.len().div_ceil(2);
    state.network = Some(fleet.network().to_owned());
    state.fleet_root = Some(fleet.root().to_owned());
    state.agent_etcd = Some(format!("https://{}:{etcd_port}", fleet.gateway_ip()));
    state.hosts = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| DemoHost {
            name: h.name().to_owned(),
            container: h.container().to_owned(),
            zone: if i < half { "a" } else { "b" }.to_owned(),
        })
        .collect();
    state.run_id = Some(fleet.leak());
    state.save()?;
    Ok(hosts)
}

fn bundle_tag(state: &DemoState, version: &str) -> String {
    format!("{}/baton/bundle:{version}", state.registry)
}

fn orchestrator_tag(state: &DemoState) -> String {
    format!("{}/baton/orchestrator:{ORCHESTRATOR_V2}", state.registry)
}

/// Builds and pushes the orchestrator image, then prepares, builds and pushes both sample
/// bundles (2.0.0 naming the orchestrator image by digest); returns the bundles' pinned
/// references.
async fn build_bundles(
    state: &DemoState,
    binaries: &bundles::Binaries,
) -> Result<BTreeMap<String, String>, DemoError> {
    let docker = bundle::connect()
        .await
        .map_err(|source| DemoError::Bundle {
            version: VERSIONS.join(", "),
            source: source.into(),
        })?;
    let orchestrator =
        bundles::find_orchestrator_binary(ORCHESTRATOR_V2).map_err(DemoError::Setup)?;
    let tag = orchestrator_tag(state);
    Indented.line(&format!("building the orchestrator image {tag}"));
    bundles::build_orchestrator_image(&orchestrator, &tag)
        .await
        .map_err(DemoError::Setup)?;
    let orchestrator_image = bundle::push(&docker, &tag, &Indented)
        .await
        .map_err(|source| DemoError::Bundle {
            version: format!("{ORCHESTRATOR_V2} (the orchestrator image)"),
            source,
        })?;
    let key = signing::generate_key(state).await?;
    let mut pinned = BTreeMap::new();
    for (version, agent) in VERSIONS.iter().zip(&binaries.agents) {
        let source = state.state_dir.join("bundles").join(version);
        bundles::try_prepare_source(version, &source)
            .await
            .map_err(DemoError::Setup)?;
        if *version == ORCHESTRATOR_V2 {
            bundles::set_orchestrator_image(&source, &orchestrator_image)
                .map_err(DemoError::Setup)?;
        }
        let tag = bundle_tag(state, version);
        let built = bundle::build(
            &docker,
            &BuildOptions {
                dir: source,
                tag: tag.clone(),
                agent: agent.clone(),
                downloader: binaries.downloader.clone(),
                push: true,
                check_agent_version: true,
                manifest_out: None,
                install: baton_protocol::manifest::InstallPolicy::default(),
                // The hosts trust the demo's key from the first install on.
                trusted_keys: vec![key.public().clone()],
            },
            &Indented,
        )
        .await
        .map_err(|source| DemoError::Bundle {
            version: (*version).to_owned(),
            source,
        })?;
        let reference = built.pushed.unwrap_or(tag);
        signing::sign(&docker, &reference, version, &key).await?;
        pinned.insert((*version).to_owned(), reference);
    }
    Ok(pinned)
}

/// `batonctl`'s connection flags: the token file and the CA, and `--api URL` when the API
/// is not where `batonctl` looks by default.
fn batonctl_args(state: &DemoState) -> Vec<String> {
    let mut args = Vec::new();
    if state.api != batonctl::client::DEFAULT_API {
        args.extend(["--api".to_owned(), state.api.clone()]);
    }
    args.extend([
        "--token-file".to_owned(),
        state.token_file().display().to_string(),
        "--ca-file".to_owned(),
        state.api_pki().ca.display().to_string(),
    ]);
    args
}

/// `curl` with the demo's CA and its admin token read from the token file by the shell.
fn curl_prefix(state: &DemoState) -> String {
    format!(
        "curl -sS --fail-with-body --cacert {} -H \"Authorization: Bearer $(cat {})\"",
        shell_line(&[state.api_pki().ca.display().to_string()]),
        shell_line(&[state.token_file().display().to_string()]),
    )
}

/// The upgrade once `batonctl` following it (`watched`) returned: an upgrade that did not
/// succeed is the error (with its reason), else a `batonctl` failure (it could not start it).
async fn outcome(
    watched: Result<(), DemoError>,
    api: &ApiClient,
    id: &str,
    state: &DemoState,
) -> Result<UpgradeInfo, DemoError> {
    match (expect_succeeded(api, id, state).await, watched) {
        (Ok(upgrade), Ok(())) => Ok(upgrade),
        (Err(e @ DemoError::UpgradeFailed { .. }), _) | (_, Err(e)) | (Err(e), Ok(())) => Err(e),
    }
}

/// The upgrade, after checking it succeeded.
async fn expect_succeeded(
    api: &ApiClient,
    id: &str,
    state: &DemoState,
) -> Result<UpgradeInfo, DemoError> {
    let upgrade = api
        .upgrade(id)
        .await
        .map_err(api_error(&format!("GET /v1/upgrades/{id}")))?;
    if upgrade.upgrade.phase == UpgradePhase::Succeeded {
        Ok(upgrade)
    } else {
        Err(DemoError::UpgradeFailed {
            id: id.to_owned(),
            phase: upgrade.upgrade.phase,
            reason: upgrade.upgrade.reason.clone().unwrap_or_default(),
            log: state.log("orchestrator"),
        })
    }
}
