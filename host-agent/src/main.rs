//! `baton-agent`: the host's updater-daemon.

use clap::Parser;

/// Baton host agent: watches this host's keys in etcd, applies updates, reports status.
#[derive(Debug, Parser)]
#[command(name = "baton-agent", version = baton_protocol::VERSION)]
struct Cli {
    /// The agent's configuration file.
    #[arg(
        long,
        env = "BATON_AGENT_CONFIG",
        default_value = "/etc/baton/agent.toml"
    )]
    config: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "the agent does not run in this build (config {})",
        cli.config.display()
    )
}
