//! `batonctl`: parse the command line, run it, exit 0 on success, 1 on an error or an
//! upgrade that did not succeed.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    match batonctl::run(batonctl::cli::Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            // The message names what failed, then each cause; no backtrace for an
            // operator's mistake.
            eprintln!("batonctl: error: {:#}", anyhow::Error::new(e));
            ExitCode::FAILURE
        }
    }
}
