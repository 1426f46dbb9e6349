//! `baton-downloader`: the bundle image's entrypoint. Parses the command line, sets up
//! logging (stderr), runs the job against the real file system and the host's systemd, and
//! prints the JSON summary (stdout) or one error line (stderr, exit 1).

use std::process::ExitCode;

use baton_downloader::cli::Cli;
use baton_downloader::fs::RealFs;
use baton_downloader::{JobError, run};
use baton_protocol::cli::{Logging, init_logging};
use clap::Parser;

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
    // Logs go to stderr: stdout carries only the summary.
    init_logging(Logging {
        format: cli.log_format,
        stderr: true,
        timestamps: true,
    });
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
