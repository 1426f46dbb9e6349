//! `baton-downloader`: the bundle image's entrypoint. Parses the command line, sets up
//! logging (stderr), runs the job against the real file system and the host's systemd, and
//! prints the JSON summary (stdout) or one error line (stderr, exit 1).

use std::io::IsTerminal;
use std::process::ExitCode;

use baton_downloader::cli::{Cli, LogFormat};
use baton_downloader::fs::RealFs;
use baton_downloader::{JobError, run};
use clap::Parser;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Pretty => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn job(cli: &Cli) -> Result<baton_downloader::Summary, JobError> {
    let config = cli.config();
    // Refuse a bad bundle before touching the host's bus: check it first, then connect.
    baton_downloader::bundle::Bundle::open(&config.bundle_dir)?;
    let systemd = baton_systemd_bus::Bus::connect(&config.dbus_socket).await?;
    run(&config, &RealFs, &systemd).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match job(&cli).await {
        Ok(summary) => {
            println!("{}", summary.to_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baton-downloader: error: {}", e.one_line());
            ExitCode::FAILURE
        }
    }
}
