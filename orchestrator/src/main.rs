//! `baton-orchestrator`: parse the configuration, set up logging, run until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = baton_orchestrator::config::Config::parse();
    init_tracing(config.log_json);
    baton_orchestrator::server::run(config, baton_protocol::shutdown::signal())
        .await
        .context("baton-orchestrator")
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
