//! `baton-demo`: the local fleet of `make demo` — `up` upgrades it end to end and leaves it
//! running, `status` shows it, `down` removes it (`baton_tests::demo`).

use std::path::PathBuf;

use baton_tests::demo::{self, DemoConfig};
use clap::{Parser, Subcommand};

/// A local Baton fleet: simulated hosts, etcd, a registry and the orchestrator, upgraded
/// from bundle 1.0.0 to 2.0.0 and left running to explore.
#[derive(Debug, Parser)]
#[command(name = "baton-demo", version = baton_protocol::build_version!())]
struct Cli {
    /// Folder of the demo's state file, logs and data [default: $TMPDIR/baton-demo].
    #[arg(long, env = "BATON_DEMO_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the fleet (tearing down a previous demo first), install bundle 1.0.0, roll
    /// out 2.0.0 with one REST call, print the summary; the fleet keeps running.
    Up {
        /// etcd's client port on 127.0.0.1 and on the fleet's gateway.
        #[arg(long, env = "BATON_DEMO_ETCD_PORT", default_value_t = demo::DEFAULT_ETCD_PORT)]
        etcd_port: u16,
        /// The registry's port on 127.0.0.1.
        #[arg(long, env = "BATON_DEMO_REGISTRY_PORT", default_value_t = demo::DEFAULT_REGISTRY_PORT)]
        registry_port: u16,
        /// The orchestrator's REST API port on 127.0.0.1.
        #[arg(long, env = "BATON_DEMO_API_PORT", default_value_t = demo::DEFAULT_API_PORT)]
        api_port: u16,
        /// Simulated hosts (half in zone a, half in zone b).
        #[arg(long, env = "BATON_DEMO_HOSTS", default_value_t = demo::DEFAULT_HOSTS)]
        hosts: usize,
        /// Where baton-orchestrator and batonctl are [default: target/debug].
        #[arg(long, env = "BATON_DEMO_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Show what of the demo runs, and how to explore it.
    Status,
    /// Stop and remove everything the demo made: processes, containers, network, folders.
    Down,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let state_dir = cli.state_dir.unwrap_or_else(demo::default_state_dir);
    match cli.command {
        Command::Up {
            etcd_port,
            registry_port,
            api_port,
            hosts,
            bin_dir,
        } => {
            let mut config = DemoConfig::new();
            config.state_dir = state_dir.clone();
            config.etcd_port = etcd_port;
            config.registry_port = registry_port;
            config.api_port = api_port;
            config.hosts = hosts;
            if let Some(dir) = bin_dir {
                config.bin_dir = dir;
            }
            if let Err(e) = demo::up(&config).await {
                eprintln!("\nbaton-demo: {e}");
                if matches!(demo::DemoState::load(&state_dir), Ok(Some(_))) {
                    eprintln!(
                        "\nWhat started is left running for inspection (logs in {}); \
                         `{}` removes it.",
                        state_dir.display(),
                        demo::down_command(&state_dir)
                    );
                }
                std::process::exit(1);
            }
        }
        Command::Status => {
            if !demo::status(&state_dir).await? {
                std::process::exit(1);
            }
        }
        Command::Down => {
            let done = demo::down(&state_dir)?;
            if done.is_empty() {
                println!("no demo to remove in {}", state_dir.display());
            }
            for line in done {
                println!("{line}");
            }
        }
    }
    Ok(())
}
