//! `baton-orchestrator`: read the configuration (flags, environment, `--config` file), set up
//! logging, run until SIGTERM/SIGINT.
//!
//! Exit status: 0 when stopped (or handed over to a new version), 2 for a configuration
//! error (as clap's own), 1 for a failure while running — so a service manager can leave
//! a configuration error alone instead of restarting into it (the packaged unit's
//! `RestartPreventExitStatus=2`).

use std::process::ExitCode;

use baton_orchestrator::config::{Config, ConfigError};
use baton_orchestrator::server::RunError;
use baton_protocol::cli::{Logging, init_logging};

/// Exit status of a configuration error.
const CONFIGURATION_ERROR: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        // clap prints its own message and usage, and exits 2 (0 for --help/--version).
        Err(ConfigError::Flags(e)) => e.exit(),
        Err(e) => return failed(&e, CONFIGURATION_ERROR),
    };
    init_logging(Logging::daemon(config.log_json));
    match baton_orchestrator::server::run(config, baton_protocol::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ RunError::Config(_)) => failed(&e, CONFIGURATION_ERROR),
        Err(e) => failed(&e, 1),
    }
}

/// Prints `error` with its causes, as anyhow would, and returns `status`.
fn failed(error: &dyn std::error::Error, status: u8) -> ExitCode {
    eprintln!("Error: baton-orchestrator: {error}");
    let mut source = error.source();
    if source.is_some() {
        eprintln!("\nCaused by:");
    }
    while let Some(cause) = source {
        eprintln!("    {cause}");
        source = cause.source();
    }
    ExitCode::from(status)
}
