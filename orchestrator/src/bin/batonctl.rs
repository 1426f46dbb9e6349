//! `batonctl`: the operator's command line for Baton.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use baton_orchestrator::bundle::{self, binaries::default_static_binary};
use baton_orchestrator::client::{ApiClient, ClientError, DEFAULT_API};
use baton_orchestrator::control;
use baton_orchestrator::display;
use baton_orchestrator::request::{
    BatchRequest, RegisterHost, SetMaintenance, StartUpgrade, StrategyKind, StrategyRequest,
};
use baton_protocol::documents::MaintenanceMode;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Baton's operator command line: register hosts, start and follow upgrades through the
/// orchestrator's REST API; build, push and inspect update bundles.
#[derive(Debug, Parser)]
#[command(name = "batonctl", version = baton_protocol::VERSION)]
struct Cli {
    /// The orchestrator's API (any replica answers reads; writes go to the leader).
    #[arg(long, env = "BATON_API", default_value = DEFAULT_API, global = true)]
    api: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print batonctl's version.
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
}

#[derive(Debug, Subcommand)]
enum HostCommand {
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
enum Mode {
    None,
    Paused,
    AutohealingOff,
    Restart,
    Replace,
}

#[derive(Debug, Args)]
struct HostAdd {
    /// The host id.
    id: String,
    /// The host's Docker Engine: unix:///var/run/docker.sock or tcp://host:port.
    #[arg(long)]
    docker: String,
    /// A label, KEY=VALUE (repeat): group, zone, …
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// A bind mount of the downloader job, HOST_PATH=ENGINE_PATH (repeat).
    #[arg(long = "path-map", value_parser = key_value)]
    path_map: Vec<(String, String)>,
    /// The agent's boot id file, if not the kernel's.
    #[arg(long)]
    boot_id_file: Option<String>,
    /// The agent's kernel release file, if not the kernel's.
    #[arg(long)]
    kernel_release_file: Option<String>,
    /// Prefix of the agent's service container names.
    #[arg(long)]
    container_prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UpgradeCommand {
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
    /// it succeeded, 1 otherwise.
    Watch {
        /// The upgrade id (default: the active one).
        id: Option<String>,
        /// Polling interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

#[derive(Debug, Args)]
struct UpgradeControl {
    /// The upgrade id.
    id: String,
    /// Why, for the record.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Rolling,
    AllAtOnce,
    DaisyChain,
}

#[derive(Debug, Args)]
struct UpgradeStart {
    /// The bundle image (a tag is resolved to a digest once).
    image: String,
    /// How hosts are dispatched.
    #[arg(long, value_enum, default_value = "rolling")]
    strategy: Kind,
    /// Rolling: hosts per batch.
    #[arg(long, allow_negative_numbers = true)]
    batch: Option<i64>,
    /// Rolling: percent of the selected hosts per batch.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "batch")]
    batch_percent: Option<i64>,
    /// Rolling: canary hosts, first and alone.
    #[arg(long, allow_negative_numbers = true)]
    canary: Option<i64>,
    /// Rolling: pause after the canaries until resumed.
    #[arg(long)]
    pause_after_canary: bool,
    /// Rolling: a batch never spans two values of this label.
    #[arg(long)]
    zone_label: Option<String>,
    /// Rolling: failed hosts tolerated.
    #[arg(long, allow_negative_numbers = true)]
    max_failures: Option<i64>,
    /// All-at-once: accept that every selected host is down together.
    #[arg(long)]
    allow_downtime: bool,
    /// Skip hosts whose maintenance mode is `paused` (reported `Skipped`) instead of
    /// waiting until the mode is lifted.
    #[arg(long)]
    skip_paused: bool,
    /// Select hosts by label, KEY=VALUE (repeat).
    #[arg(long = "selector", value_parser = key_value)]
    selector: Vec<(String, String)>,
    /// Only this host (repeat).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// The upgrade id [default: u-<version>-<date>-<time>].
    #[arg(long)]
    id: Option<String>,
    /// Follow it until it ends (as `upgrade watch`).
    #[arg(long)]
    watch: bool,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn pretty<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn host(api: &ApiClient, command: HostCommand) -> anyhow::Result<()> {
    match command {
        HostCommand::Add(a) => {
            let req = RegisterHost {
                id: a.id,
                labels: a.labels.into_iter().collect(),
                docker: a.docker,
                path_map: a.path_map.into_iter().collect(),
                boot_id_file: a.boot_id_file,
                kernel_release_file: a.kernel_release_file,
                container_prefix: a.container_prefix,
            };
            pretty(&api.register(&req).await?)
        }
        HostCommand::Ls => {
            println!("{}", display::hosts_table(&api.hosts().await?));
            Ok(())
        }
        HostCommand::Show { host } => pretty(&api.host(&host).await?),
        HostCommand::Maintenance {
            host,
            mode,
            reason,
            reboot,
        } => {
            let mode = match mode {
                Mode::None => MaintenanceMode::None,
                Mode::Paused => MaintenanceMode::Paused,
                Mode::AutohealingOff => MaintenanceMode::AutohealingOff,
                Mode::Restart => MaintenanceMode::Restart,
                Mode::Replace => MaintenanceMode::Replace,
            };
            pretty(
                &api.host_maintenance(
                    &host,
                    &SetMaintenance {
                        mode,
                        reason,
                        reboot,
                    },
                )
                .await?,
            )
        }
    }
}

/// How long `watch` waits for an API that stopped answering (an orchestrator restart, or a
/// self-update's hand-over, about a second) before it gives up.
const WATCH_UNREACHABLE: Duration = Duration::from_secs(60);

/// Prints progress until the upgrade ends; whether it succeeded.
async fn watch(api: &ApiClient, id: &str, interval: Duration) -> anyhow::Result<bool> {
    let mut seen = display::Watched::default();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        let polled: Result<_, ClientError> =
            async { Ok((api.upgrade(id).await?, api.hosts().await?)) }.await;
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let (upgrade, hosts) = match polled {
            Ok(answer) => {
                unreachable_since = None;
                answer
            }
            Err(e) if e.is_unreachable() => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    println!(
                        "{at} the API does not answer ({e}); retrying for up to {}s",
                        WATCH_UNREACHABLE.as_secs()
                    );
                    std::time::Instant::now()
                });
                if since.elapsed() > WATCH_UNREACHABLE {
                    return Err(anyhow::Error::new(e).context(format!(
                        "the API did not answer for {}s",
                        WATCH_UNREACHABLE.as_secs()
                    )));
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (lines, now) = display::watch_lines(&seen, &upgrade, &hosts);
        for line in lines {
            println!("{at} {line}");
        }
        seen = now;
        if upgrade.upgrade.phase.is_terminal() {
            return Ok(upgrade.upgrade.phase == baton_protocol::UpgradePhase::Succeeded);
        }
        tokio::time::sleep(interval).await;
    }
}

async fn upgrade(api: &ApiClient, command: UpgradeCommand) -> anyhow::Result<bool> {
    let control = |c: UpgradeControl, command| async move {
        pretty(&api.command(&c.id, command, c.reason).await?)
    };
    match command {
        UpgradeCommand::Start(s) => {
            let batch = (s.batch.is_some() || s.batch_percent.is_some()).then_some(BatchRequest {
                count: s.batch,
                percent: s.batch_percent,
            });
            let kind = match s.strategy {
                Kind::Rolling => StrategyKind::Rolling,
                Kind::AllAtOnce => StrategyKind::AllAtOnce,
                Kind::DaisyChain => StrategyKind::DaisyChain,
            };
            let req = StartUpgrade {
                image: s.image,
                strategy: StrategyRequest {
                    kind,
                    batch,
                    canary: s.canary,
                    pause_after_canary: s.pause_after_canary.then_some(true),
                    zone_label: s.zone_label,
                    max_failures: s.max_failures,
                    allow_downtime: s.allow_downtime.then_some(true),
                },
                selector: s.selector.into_iter().collect::<BTreeMap<_, _>>(),
                hosts: (!s.hosts.is_empty()).then_some(s.hosts),
                id: s.id,
                skip_paused: s.skip_paused.then_some(true),
            };
            let started = api.start(&req).await?;
            let id = started.upgrade.id.to_string();
            if s.watch {
                return watch(api, &id, Duration::from_secs(1)).await;
            }
            pretty(&started)?;
        }
        UpgradeCommand::Ls => println!("{}", display::upgrades_table(&api.upgrades().await?)),
        UpgradeCommand::Show { id, events } => {
            pretty(&api.upgrade(&id).await?)?;
            if events {
                for e in api.events(&id).await? {
                    let host = e.event.host.map(|h| format!(" {h}")).unwrap_or_default();
                    println!(
                        "{} #{} {}{host}: {}",
                        e.event.at, e.seq, e.event.kind, e.event.message
                    );
                }
            }
        }
        UpgradeCommand::Pause(c) => control(c, control::Command::Pause).await?,
        UpgradeCommand::Resume(c) => control(c, control::Command::Resume).await?,
        UpgradeCommand::Abort(c) => control(c, control::Command::Abort).await?,
        UpgradeCommand::Watch { id, interval } => {
            let id = match id {
                Some(id) => id,
                None => api
                    .upgrades()
                    .await?
                    .into_iter()
                    .find(|u| u.active)
                    .map(|u| u.upgrade.id.to_string())
                    .context("no upgrade is active; name one")?,
            };
            return watch(api, &id, interval).await;
        }
    }
    Ok(true)
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Build a bundle image from a source folder holding manifest.template.json and the
    /// component files; refuses bad input before anything is built.
    Build(BuildArgs),
    /// Print the manifest of a bundle image (pulled if needed; the image is not run).
    Inspect {
        /// The bundle image, e.g. 127.0.0.1:5000/baton/bundle@sha256:…
        image: String,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The bundle source folder.
    dir: PathBuf,
    /// Image reference to build, e.g. 127.0.0.1:5000/baton/bundle:2.0.0
    #[arg(long)]
    tag: String,
    /// Push the image to its registry and print the pinned reference (`repo@sha256:…`).
    #[arg(long)]
    push: bool,
    /// The bundle's baton-agent binary (built with BATON_BUILD_VERSION=<agent version>)
    /// [default: target/x86_64-unknown-linux-gnu/debug/baton-agent]
    #[arg(long, env = "BATON_BUNDLE_AGENT")]
    agent: Option<PathBuf>,
    /// The static baton-downloader binary, the image's entrypoint
    /// [default: target/x86_64-unknown-linux-gnu/debug/baton-downloader]
    #[arg(long, env = "BATON_BUNDLE_DOWNLOADER")]
    downloader: Option<PathBuf>,
    /// Do not require `<agent> --version` to report the manifest's agent version.
    #[arg(long)]
    no_agent_version_check: bool,
    /// Also write the completed manifest to this file.
    #[arg(long)]
    manifest_out: Option<PathBuf>,
}

async fn bundle(command: BundleCommand) -> anyhow::Result<()> {
    let docker = bundle::image::connect().await?;
    match command {
        BundleCommand::Build(args) => {
            let options = bundle::BuildOptions {
                dir: args.dir,
                tag: args.tag,
                agent: args
                    .agent
                    .unwrap_or_else(|| default_static_binary("baton-agent")),
                downloader: args
                    .downloader
                    .unwrap_or_else(|| default_static_binary("baton-downloader")),
                push: args.push,
                check_agent_version: !args.no_agent_version_check,
                manifest_out: args.manifest_out,
            };
            let built = bundle::build(&docker, &options, &bundle::Stderr)
                .await
                .context("bundle build")?;
            // stdout: the reference to use from now on.
            println!("{}", built.pushed.as_deref().unwrap_or(&built.tag));
        }
        BundleCommand::Inspect { image } => {
            let manifest = bundle::inspect(&docker, &image, &bundle::Stderr)
                .await
                .context("bundle inspect")?;
            println!("{}", String::from_utf8_lossy(&manifest.to_json()));
        }
    }
    Ok(())
}

/// Runs the command; `Ok(false)` when it worked but reports failure (an upgrade that did not
/// succeed).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Version => println!("batonctl {}", baton_protocol::VERSION),
        Command::Bundle(command) => bundle(command).await?,
        Command::Host(command) => host(&ApiClient::new(&cli.api)?, command).await?,
        Command::Upgrade(command) => return upgrade(&ApiClient::new(&cli.api)?, command).await,
    }
    Ok(true)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            // The message names what failed; no backtrace for an operator's mistake.
            eprintln!("batonctl: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
