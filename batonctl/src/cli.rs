//! `batonctl`'s command line: every subcommand, flag and default (clap derive), and the
//! REST request bodies the flags make.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::api::{
    BatchRequest, RegisterHost, SetMaintenance, SetWindows, StartUpgrade, StrategyKind,
    StrategyRequest,
};
use baton_protocol::documents::{
    DEFAULT_GATE_STATUS, Day, Gate, MaintenanceMode, OnFailure, Window,
};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Output;

use baton_protocol::documents::ApiRole;

/// Baton's operator command line: register hosts, start and follow upgrades through the
/// orchestrator's REST API; build, push and inspect update bundles.
///
/// The API's address, token file, CA file and client certificate come from the flags, else
/// the environment, else the config file (`~/.config/baton/batonctl.toml`: `api`,
/// `token_file`, `ca_file`, `client_cert_file`, `client_key_file`).
/// The token itself may also come from BATON_TOKEN; batonctl never prints it.
#[derive(Debug, Parser)]
#[command(name = "batonctl", version = crate::VERSION, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// How to print answers: lists as a table (default) or a wide table, records as JSON
    /// (default); json or yaml for scripts.
    #[arg(short = 'o', long, value_enum, global = true)]
    pub output: Option<Output>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API is and the credentials for it.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The orchestrator's API (any replica answers reads; writes go to the leader)
    /// [default: https://127.0.0.1:7480].
    #[arg(long, env = "BATON_API", global = true)]
    pub api: Option<String>,
    /// A file holding the API token (as `token create` prints it).
    #[arg(long, env = "BATON_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) the API's certificate is checked against [default: the
    /// system's roots].
    #[arg(long, env = "BATON_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to prove who we are instead of a token (mutual TLS): its
    /// common name names the API token whose role it gets.
    #[arg(
        long,
        env = "BATON_CLIENT_CERT_FILE",
        global = true,
        requires = "client_key_file"
    )]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "BATON_CLIENT_KEY_FILE",
        global = true,
        requires = "client_cert_file"
    )]
    pub client_key_file: Option<PathBuf>,
    /// The config file [default: $XDG_CONFIG_HOME/baton/batonctl.toml, else
    /// ~/.config/baton/batonctl.toml].
    #[arg(long, env = "BATONCTL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// The exit codes, in `--help`.
pub const EXIT_CODES: &str = "Exit codes: 0 done; 1 an error on this side (a file, the Docker \
Engine, a bundle); 2 a wrong command line; 3 the upgrade followed ended without succeeding; \
4 the server refused the request (4xx); 5 the server could not be reached or could not serve \
(5xx).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print batonctl's version and the server's (the orchestrator that answers).
    Version,
    /// Register and inspect hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// Start, follow and steer upgrades.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Build, push and inspect update bundles (container images; see docs/bundle.md).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make key pairs for signing bundles (docs/security.md, "Signed bundles").
    #[command(subcommand)]
    Key(KeyCommand),
    /// Set a group's maintenance mode (every host labelled group=GROUP).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Maintenance windows of the fleet or of a group: upgrades dispatch new hosts only
    /// while they are open.
    #[command(subcommand)]
    Window(WindowCommand),
    /// Print a shell completion script: `batonctl completion bash > /etc/bash_completion.d/batonctl`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (batonctl.1 and one per subcommand) into a folder.
    Manpages {
        /// The folder (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Set the group's maintenance mode; it applies to hosts that join the group later too.
    Maintenance {
        /// The group (the value of the hosts' `group` label).
        group: String,
        /// The mode.
        #[arg(value_enum)]
        mode: Mode,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// With mode `restart`: reboot the hosts (one at a time) instead of restarting their
        /// managed services.
        #[arg(long)]
        reboot: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WindowCommand {
    /// Set the windows (replacing any): one from the flags, or several as JSON with
    /// --json. A host is dispatched only while the fleet's window and its group's (each if
    /// set) are open; hosts already dispatched finish.
    Set(WindowSet),
    /// Print the windows (exit 1 if none is set).
    Get {
        /// A group's windows instead of the fleet's.
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove the windows (upgrades dispatch at any time again).
    Clear {
        /// A group's windows instead of the fleet's.
        #[arg(long)]
        group: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct WindowSet {
    /// A group's windows instead of the fleet's.
    #[arg(long)]
    pub group: Option<String>,
    /// Days it opens on, comma-separated: mon,tue,wed,thu,fri,sat,sun.
    #[arg(long, value_delimiter = ',', value_parser = day, required_unless_present = "json")]
    pub days: Vec<Day>,
    /// Local opening time, HH:MM.
    #[arg(long, required_unless_present = "json")]
    pub start: Option<String>,
    /// How long it stays open: 2h, 90m (1m … 7d).
    #[arg(long, required_unless_present = "json")]
    pub duration: Option<String>,
    /// IANA time zone of --days and --start, e.g. Europe/Berlin.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// Every window as JSON instead of the flags: `[{"days":["sat"],"start":"02:00",
    /// "duration":"4h","time_zone":"UTC"}, …]`.
    #[arg(long, conflicts_with_all = ["days", "start", "duration"], value_parser = windows_json)]
    pub json: Option<Vec<Window>>,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
}

impl WindowSet {
    /// The `PUT` body.
    pub fn request(self) -> SetWindows {
        let windows = self.json.unwrap_or_else(|| {
            vec![Window {
                days: self.days,
                start: self.start.unwrap_or_default(),
                duration: self.duration.unwrap_or_default(),
                time_zone: self.time_zone,
            }]
        });
        SetWindows {
            windows,
            reason: self.reason,
        }
    }
}

/// A day as `--days` names it.
fn day(s: &str) -> Result<Day, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("{s:?} is not a day: mon, tue, wed, thu, fri, sat or sun"))
}

/// `--json`'s windows.
fn windows_json(s: &str) -> Result<Vec<Window>, String> {
    serde_json::from_str(s).map_err(|e| format!("not a JSON list of windows: {e}"))
}

/// A `--gate-http` flag: `URL` or `URL=STATUS`.
fn http_gate(s: &str) -> Result<Gate, String> {
    let (url, status) = match s.rsplit_once('=') {
        Some((url, status)) if status.bytes().all(|b| b.is_ascii_digit()) && !status.is_empty() => {
            (
                url,
                status
                    .parse()
                    .map_err(|_| format!("{status:?} is not an HTTP status"))?,
            )
        }
        _ => (s, DEFAULT_GATE_STATUS),
    };
    Ok(Gate::Http {
        url: url.to_owned(),
        status,
    })
}

/// A `--gate` flag: one gate as JSON.
fn json_gate(s: &str) -> Result<Gate, String> {
    serde_json::from_str(s).map_err(|e| format!("not a gate: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new ed25519 key pair: OUT.key (the signing key, mode 0600, optionally
    /// passphrase-protected) and OUT.pub (the public key the orchestrator and hosts trust).
    /// Existing files are never overwritten.
    Generate {
        /// Path of the pair without extension, e.g. keys/release-2026.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PassphraseArgs {
    /// A file whose first line is the signing key's passphrase (else BATON_KEY_PASSPHRASE):
    /// seals a new key (`key generate`; without one it is stored unprotected, mode 0600) or
    /// opens a protected one.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// How long the signature is accepted, e.g. 90d, 12h: after that the orchestrator and
    /// the hosts refuse the bundle until it is signed again (so a withheld update cannot
    /// keep hosts on an old bundle forever).
    #[arg(long, default_value = DEFAULT_SIGNATURE_VALIDITY, value_parser = humantime::parse_duration)]
    pub expires_in: std::time::Duration,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

/// Default validity of a signature.
pub const DEFAULT_SIGNATURE_VALIDITY: &str = "90d";

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it (only it, on stdout) this once: redirect it into a file.
    Create {
        /// Its name (`[A-Za-z0-9._-]`, 1..=63).
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List tokens: name, role, created (never a token).
    Ls,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// A token's role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Reads and metrics.
    Viewer,
    /// Also upgrades and maintenance.
    Operator,
    /// Also hosts and tokens.
    Admin,
}

impl From<RoleArg> for ApiRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Viewer => ApiRole::Viewer,
            RoleArg::Operator => ApiRole::Operator,
            RoleArg::Admin => ApiRole::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Register a host (or update its registration).
    Add(HostAdd),
    /// List hosts: labels, agent version, state, bundle, maintenance.
    Ls,
    /// Show one host: spec, alive, desired, status, installed, maintenance (JSON).
    Show {
        /// The host id.
        host: String,
    },
    /// Set a host's maintenance mode.
    Maintenance {
        /// The host id.
        host: String,
        /// The mode.
        #[arg(value_enum)]
        mode: Mode,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// With mode `restart`: reboot the host instead of restarting its managed services.
        #[arg(long)]
        reboot: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    None,
    Paused,
    AutohealingOff,
    Restart,
    Replace,
}

#[derive(Debug, Args)]
pub struct HostAdd {
    /// The host id.
    #[arg(required_unless_present = "from_file")]
    pub id: Option<String>,
    /// The host's Docker Engine: unix:///var/run/docker.sock, or tcp://host:port when the
    /// orchestrator reaches such engines over TLS (--docker-tls-*) or is allowed plain TCP.
    #[arg(long, required_unless_present = "from_file")]
    pub docker: Option<String>,
    /// Register many hosts from FILE ("-": standard input) instead: a JSON array of
    /// registrations, or one registration per line (blank lines and lines starting with #
    /// skipped), each the body of one POST /v1/hosts, e.g.
    /// {"id": "host-1", "docker": "unix:///var/run/docker.sock", "labels": {"group": "edge"}}.
    /// Sent 1,000 per request: a request registers all of its hosts or none (the error names
    /// the host's line or index and its field); requests sent before one refused stay.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["id", "docker", "labels", "path_map", "boot_id_file", "kernel_release_file", "container_prefix"]
    )]
    pub from_file: Option<std::path::PathBuf>,
    /// A label, KEY=VALUE (repeat): group, zone, …
    #[arg(long = "label", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Where the host's Docker Engine finds one of the paths the downloader job mounts,
    /// HOST_PATH=ENGINE_PATH (repeat): /var/lib/baton, /etc/baton, /etc/systemd/system or
    /// /run/dbus, each at itself or under one of the orchestrator's --path-map-root folders.
    #[arg(long = "path-map", value_parser = key_value)]
    pub path_map: Vec<(String, String)>,
    /// The agent's boot id file, if not the kernel's.
    #[arg(long)]
    pub boot_id_file: Option<String>,
    /// The agent's kernel release file, if not the kernel's.
    #[arg(long)]
    pub kernel_release_file: Option<String>,
    /// Prefix of the agent's service container names.
    #[arg(long)]
    pub container_prefix: Option<String>,
    /// The host runs a member of the etcd cluster Baton uses (with etcd authentication on,
    /// its agent gets a maintenance identity for the member's upgrade).
    #[arg(long)]
    pub quorum_member: bool,
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Start an upgrade.
    Start(Box<UpgradeStart>),
    /// List upgrades (* marks the active one).
    Ls,
    /// Show one upgrade (JSON), with its events if asked.
    Show {
        /// The upgrade id.
        id: String,
        /// Also print its audit trail.
        #[arg(long)]
        events: bool,
    },
    /// Pause: in-flight hosts finish, nothing new starts.
    Pause(UpgradeControl),
    /// Resume a paused upgrade (after canaries: approve them).
    Resume(UpgradeControl),
    /// Abort: nothing new starts; the upgrade ends.
    Abort(UpgradeControl),
    /// Follow an upgrade until it ends: a line per phase and host state change. Exits 0 if
    /// it succeeded, 3 if it ended otherwise.
    Watch {
        /// The upgrade id (default: the active one).
        id: Option<String>,
        /// Polling interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

#[derive(Debug, Args)]
pub struct UpgradeControl {
    /// The upgrade id.
    pub id: String,
    /// Why, for the record.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Batches of hosts (backward-compatible bundles).
    Rolling,
    /// Every host at once (needs --allow-downtime).
    AllAtOnce,
    /// One host after the other.
    DaisyChain,
    /// Chosen from the bundle: rolling if it is backward compatible, else all-at-once.
    Auto,
}

/// `--on-failure`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FailurePolicy {
    /// Stop; hosts already upgraded stay on the new version.
    Halt,
    /// Stop and return every host the upgrade changed to the bundle it ran before.
    Revert,
}

#[derive(Debug, Args)]
pub struct UpgradeStart {
    /// The bundle image (a tag is resolved to a digest once).
    pub image: String,
    /// How hosts are dispatched; auto lets the bundle's manifest decide (the record says
    /// what was chosen and why).
    #[arg(long, value_enum, default_value = "auto")]
    pub strategy: Kind,
    /// Rolling (and auto): hosts per batch [auto's default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub batch: Option<i64>,
    /// Rolling: percent of the selected hosts per batch.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "batch")]
    pub batch_percent: Option<i64>,
    /// Rolling: canary hosts, first and alone.
    #[arg(long, allow_negative_numbers = true)]
    pub canary: Option<i64>,
    /// Rolling: pause after the canaries until resumed.
    #[arg(long)]
    pub pause_after_canary: bool,
    /// Rolling: a batch never spans two values of this label.
    #[arg(long)]
    pub zone_label: Option<String>,
    /// Rolling: failed hosts tolerated.
    #[arg(long, allow_negative_numbers = true)]
    pub max_failures: Option<i64>,
    /// All-at-once (and auto, for a bundle that is not backward compatible): accept that
    /// every selected host is down together.
    #[arg(long)]
    pub allow_downtime: bool,
    /// Skip hosts whose maintenance mode is `paused` (reported `Skipped`) instead of
    /// waiting until the mode is lifted.
    #[arg(long)]
    pub skip_paused: bool,
    /// Allow moving hosts to a lower version than they run (refused otherwise).
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Once more hosts fail than tolerated (or a canary fails): halt, or revert every host
    /// the upgrade changed to the exact bundle it ran before, batch by batch (each reverted
    /// batch soaking like an installed one, with --soak) [server's default: halt].
    #[arg(long, value_enum)]
    pub on_failure: Option<FailurePolicy>,
    /// After each batch is done, soak this long (30s, 5m) while its hosts keep passing
    /// their health checks and the gates pass; only then do they succeed. A revert soaks
    /// each reverted batch the same way.
    #[arg(long)]
    pub soak: Option<String>,
    /// A fleet gate during soaks: GET URL must answer 200, or URL=STATUS (repeat).
    #[arg(long = "gate-http", value_parser = http_gate, requires = "soak")]
    pub gate_http: Vec<Gate>,
    /// A fleet gate during soaks as JSON (repeat), e.g.
    /// '{"kind":"prometheus","query":"sum(rate(errors[1m]))","max":0.5}'.
    #[arg(long = "gate", value_parser = json_gate, requires = "soak")]
    pub gates: Vec<Gate>,
    /// Select hosts by label, KEY=VALUE (repeat).
    #[arg(long = "selector", value_parser = key_value)]
    pub selector: Vec<(String, String)>,
    /// Only this host (repeat).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// The upgrade id [default: u-<version>-<date>-<time>].
    #[arg(long)]
    pub id: Option<String>,
    /// Follow it until it ends (as `upgrade watch`).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: the polling interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, requires = "watch")]
    pub interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a bundle image from a source folder holding manifest.template.json and the
    /// component files; refuses bad input before anything is built.
    Build(BuildArgs),
    /// Print the manifest of a bundle image (pulled if needed; the image is not run).
    Inspect {
        /// The bundle image, e.g. 127.0.0.1:5000/baton/bundle@sha256:…
        image: String,
    },
    /// Sign a pushed bundle: its manifest digest, version and manifest sha256, with an
    /// expiry. The signature is pushed beside it, as REPO:sha256-<hex>.sig; prints the
    /// pinned bundle reference.
    Sign {
        /// The bundle image in its registry (a tag or repo@sha256:…).
        image: String,
        /// The signing key file (batonctl key generate).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Check a bundle's signature in its registry against public keys; prints what it
    /// vouches for, exits non-zero naming the reason if it does not verify.
    Verify {
        /// The bundle image in its registry (a tag or repo@sha256:…).
        image: String,
        /// A trusted public key file (repeat).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The bundle source folder.
    pub dir: PathBuf,
    /// Image reference to build, e.g. 127.0.0.1:5000/baton/bundle:2.0.0
    #[arg(long)]
    pub tag: String,
    /// Push the image to its registry and print the pinned reference (`repo@sha256:…`).
    #[arg(long)]
    pub push: bool,
    /// The bundle's baton-agent binary (built with BATON_BUILD_VERSION=<agent version>)
    /// [default: target/x86_64-unknown-linux-gnu/debug/baton-agent]
    #[arg(long, env = "BATON_BUNDLE_AGENT")]
    pub agent: Option<PathBuf>,
    /// The static baton-downloader binary, the image's entrypoint
    /// [default: target/x86_64-unknown-linux-gnu/debug/baton-downloader]
    #[arg(long, env = "BATON_BUNDLE_DOWNLOADER")]
    pub downloader: Option<PathBuf>,
    /// Do not require `<agent> --version` to report the manifest's agent version.
    #[arg(long)]
    pub no_agent_version_check: bool,
    /// A destination the bundle may install to (repeat or comma-separate; an entry ending
    /// in `/` covers a folder), as the hosts' agents allow it (`install_allow`)
    /// [default: /usr/local/, /opt/, /etc/systemd/system/, /boot/].
    #[arg(long = "allow", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// A destination that may carry setuid or setgid bits (repeat or comma-separate).
    #[arg(long = "allow-setuid", value_delimiter = ',')]
    pub allow_setuid: Vec<String>,
    /// Also write the completed manifest to this file.
    #[arg(long)]
    pub manifest_out: Option<PathBuf>,
    /// Sign the pushed bundle with this signing key (needs --push); without --trust-key
    /// its public key becomes the bundle's trusted key.
    #[arg(long, requires = "push")]
    pub sign: Option<PathBuf>,
    /// A public key the hosts trust once the bundle is installed (repeat): written into the
    /// manifest's `trusted_keys`. Listing the current and the next key rotates keys.
    #[arg(long = "trust-key")]
    pub trust_keys: Vec<PathBuf>,
    #[command(flatten)]
    pub signing: SignArgs,
}

/// A `KEY=VALUE` flag without the `=` or with an empty key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not KEY=VALUE")]
pub struct NotKeyValue(String);

/// Parses `KEY=VALUE` (the value may be empty or hold more `=`).
pub fn key_value(s: &str) -> Result<(String, String), NotKeyValue> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(NotKeyValue(s.to_owned())),
    }
}

impl From<Mode> for MaintenanceMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::None => MaintenanceMode::None,
            Mode::Paused => MaintenanceMode::Paused,
            Mode::AutohealingOff => MaintenanceMode::AutohealingOff,
            Mode::Restart => MaintenanceMode::Restart,
            Mode::Replace => MaintenanceMode::Replace,
        }
    }
}

impl From<Kind> for StrategyKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Rolling => StrategyKind::Rolling,
            Kind::AllAtOnce => StrategyKind::AllAtOnce,
            Kind::DaisyChain => StrategyKind::DaisyChain,
            Kind::Auto => StrategyKind::Auto,
        }
    }
}

impl From<FailurePolicy> for OnFailure {
    fn from(policy: FailurePolicy) -> Self {
        match policy {
            FailurePolicy::Halt => OnFailure::Halt,
            FailurePolicy::Revert => OnFailure::Revert,
        }
    }
}

impl HostAdd {
    /// The `POST /v1/hosts` body of the flags (clap makes `id` and `--docker` required
    /// without `--from-file`).
    pub fn request(self) -> RegisterHost {
        RegisterHost {
            id: self.id.unwrap_or_default(),
            labels: self.labels.into_iter().collect(),
            docker: self.docker.unwrap_or_default(),
            path_map: self.path_map.into_iter().collect(),
            boot_id_file: self.boot_id_file,
            kernel_release_file: self.kernel_release_file,
            container_prefix: self.container_prefix,
            quorum_member: self.quorum_member,
        }
    }
}

/// The `PUT /v1/hosts/{host}/maintenance` body.
pub fn maintenance(mode: Mode, reason: String, reboot: bool) -> SetMaintenance {
    SetMaintenance {
        mode: mode.into(),
        reason,
        reboot,
    }
}

impl UpgradeStart {
    /// The `POST /v1/upgrades` body; flags left out stay out of the body (the server's
    /// defaults apply).
    pub fn request(&self) -> StartUpgrade {
        let batch =
            (self.batch.is_some() || self.batch_percent.is_some()).then_some(BatchRequest {
                count: self.batch,
                percent: self.batch_percent,
            });
        StartUpgrade {
            image: self.image.clone(),
            strategy: StrategyRequest {
                kind: self.strategy.into(),
                batch,
                canary: self.canary,
                pause_after_canary: self.pause_after_canary.then_some(true),
                zone_label: self.zone_label.clone(),
                max_failures: self.max_failures,
                allow_downtime: self.allow_downtime.then_some(true),
            },
            selector: self.selector.iter().cloned().collect::<BTreeMap<_, _>>(),
            hosts: (!self.hosts.is_empty()).then(|| self.hosts.clone()),
            id: self.id.clone(),
            skip_paused: self.skip_paused.then_some(true),
            allow_downgrade: self.allow_downgrade.then_some(true),
            on_failure: self.on_failure.map(Into::into),
            soak: self.soak.clone(),
            gates: {
                let gates: Vec<Gate> = self.gate_http.iter().chain(&self.gates).cloned().collect();
                (!gates.is_empty()).then_some(gates)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("batonctl").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(
            key_value("zone=a=b").expect("ok"),
            ("zone".to_owned(), "a=b".to_owned())
        );
        assert_eq!(
            key_value("k=").expect("ok"),
            ("k".to_owned(), String::new())
        );
        for bad in ["", "=v", "novalue"] {
            assert!(key_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upgrade_start_flags_make_the_request() {
        let cli = parse(&[
            "upgrade",
            "start",
            "r/b:2",
            "--strategy",
            "rolling",
            "--batch",
            "2",
            "--canary",
            "1",
            "--pause-after-canary",
            "--selector",
            "group=g",
            "--host",
            "h1",
            "--on-failure",
            "revert",
        ]);
        let Command::Upgrade(UpgradeCommand::Start(start)) = cli.command else {
            panic!("not upgrade start");
        };
        let req = start.request();
        assert_eq!(
            serde_json::to_value(&req).expect("json"),
            serde_json::json!({
                "image": "r/b:2",
                "strategy": {"kind": "rolling", "batch": {"count": 2}, "canary": 1,
                    "pause_after_canary": true},
                "selector": {"group": "g"},
                "hosts": ["h1"],
                "on_failure": "revert",
            })
        );
    }

    #[test]
    fn a_bare_upgrade_start_leaves_the_defaults_to_the_server() {
        let cli = parse(&[
            "upgrade",
            "start",
            "r/b:2",
            "--strategy",
            "all-at-once",
            "--allow-downtime",
        ]);
        let Command::Upgrade(UpgradeCommand::Start(start)) = cli.command else {
            panic!("not upgrade start");
        };
        assert_eq!(
            serde_json::to_value(start.request()).expect("json"),
            serde_json::json!({
                "image": "r/b:2",
                "strategy": {"kind": "all-at-once", "allow_downtime": true},
            })
        );
    }

    #[test]
    fn upgrade_start_lets_the_bundle_choose_by_default() {
        let cli = parse(&["upgrade", "start", "r/b:2"]);
        let Command::Upgrade(UpgradeCommand::Start(start)) = cli.command else {
            panic!("not upgrade start");
        };
        assert_eq!(
            serde_json::to_value(start.request()).expect("json"),
            serde_json::json!({"image": "r/b:2", "strategy": {"kind": "auto"}})
        );
    }

    #[test]
    fn soak_and_gate_flags_make_the_request() {
        let cli = parse(&[
            "upgrade",
            "start",
            "r/b:2",
            "--soak",
            "30s",
            "--gate-http",
            "https://svc/healthz",
            "--gate-http",
            "http://svc/ready=204",
            "--gate",
            r#"{"kind":"prometheus","query":"sum(up)","min":3}"#,
        ]);
        let Command::Upgrade(UpgradeCommand::Start(start)) = cli.command else {
            panic!("not upgrade start");
        };
        let req = serde_json::to_value(start.request()).expect("json");
        assert_eq!(req["soak"], "30s");
        assert_eq!(
            req["gates"],
            serde_json::json!([
                {"kind": "http", "url": "https://svc/healthz", "status": 200},
                {"kind": "http", "url": "http://svc/ready", "status": 204},
                {"kind": "prometheus", "query": "sum(up)", "min": 3}
            ])
        );
        assert!(
            Cli::try_parse_from([
                "batonctl",
                "upgrade",
                "start",
                "r/b:2",
                "--gate-http",
                "http://x/"
            ])
            .is_err(),
            "a gate needs --soak"
        );
    }

    #[test]
    fn window_set_flags_make_one_window() {
        let cli = parse(&[
            "window",
            "set",
            "--group",
            "edge",
            "--days",
            "sat,Sun",
            "--start",
            "02:00",
            "--duration",
            "4h",
            "--time-zone",
            "Europe/Berlin",
        ]);
        let Command::Window(WindowCommand::Set(set)) = cli.command else {
            panic!("not window set");
        };
        assert_eq!(set.group.as_deref(), Some("edge"));
        assert_eq!(
            serde_json::to_value(set.request()).expect("json"),
            serde_json::json!({"windows": [{"days": ["sat", "sun"], "start": "02:00",
                "duration": "4h", "time_zone": "Europe/Berlin"}], "reason": ""})
        );
        assert!(
            Cli::try_parse_from([
                "batonctl",
                "window",
                "set",
                "--days",
                "someday",
                "--start",
                "02:00",
                "--duration",
                "1h"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["batonctl", "window", "set", "--days", "mon"]).is_err());
    }

    #[test]
    fn host_add_flags_make_the_registration() {
        let cli = parse(&[
            "host",
            "add",
            "h1",
            "--docker",
            "tcp://d:2375",
            "--label",
            "group=g",
            "--path-map",
            "/var/lib/baton=/srv/h1",
        ]);
        let Command::Host(HostCommand::Add(add)) = cli.command else {
            panic!("not host add");
        };
        let req = add.request();
        assert_eq!(req.labels.get("group").map(String::as_str), Some("g"));
        assert_eq!(
            req.path_map.get("/var/lib/baton").map(String::as_str),
            Some("/srv/h1")
        );
    }
}
