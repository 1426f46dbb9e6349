//! `baton-orchestrator`: read the configuration (flags, environment, `--config` file), set up
//! logging, run until SIGTERM/SIGINT.

use anyhow::Context;
use baton_orchestrator::config::{Config, ConfigError};
use baton_protocol::cli::{Logging, init_logging};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load() {
        Ok(config) => config,
        // clap prints its own message and usage, and exits 2 (0 for --help/--version).
        Err(ConfigError::Flags(e)) => e.exit(),
        Err(e) => return Err(e).context("baton-orchestrator"),
    };
    init_logging(Logging::daemon(config.log_json));
    baton_orchestrator::server::run(config, baton_protocol::shutdown::signal())
        .await
        .context("baton-orchestrator")
}
