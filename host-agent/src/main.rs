//! `baton-agent`: parse the command line, load the config, set up logging, run until SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use baton_protocol::agent_config::{self, AgentConfig};
use baton_protocol::cli::{Logging, init_logging};
use clap::Parser;
use tokio::runtime::Handle;

/// Baton host agent: watches this host's keys in etcd, applies updates, reports status.
#[derive(Debug, Parser)]
#[command(name = "baton-agent", version = baton_agent::VERSION)]
struct Cli {
    /// The agent's configuration file (TOML: host_id, etcd_endpoints, prefix, …).
    #[arg(long, env = "BATON_AGENT_CONFIG", default_value = agent_config::DEFAULT_PATH)]
    config: std::path::PathBuf,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "BATON_LOG_JSON")]
    log_json: bool,
}

// One thread: the agent waits on etcd almost all the time, and its host work runs on
// blocking threads that exist only while it works.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // No timestamps: the journal adds its own.
    init_logging(Logging {
        timestamps: false,
        ..Logging::daemon(cli.log_json)
    });
    let config = AgentConfig::load(&cli.config)?;
    let socket = std::path::Path::new(baton_systemd_bus::SYSTEM_BUS_SOCKET);
    let bus = baton_systemd_bus::Bus::connect(socket)
        .await
        .context("baton-agent manages units through the host's systemd")?;
    let host = baton_agent::real_host::RealHost::with_systemd("/", bus, Handle::current());
    let agent = baton_agent::agent::Agent::new(config, Arc::new(host)).context("baton-agent")?;
    agent.run(baton_protocol::shutdown::signal()).await;
    Ok(())
}
