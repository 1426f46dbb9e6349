//! `batonctl`: parse the command line, run it, and exit with a code a script can act on
//! ([`Exit`]: 0 done, 1 an error here, 2 a wrong command line, 3 the upgrade failed, 4
//! refused by the server, 5 the server unreachable).

use std::process::ExitCode;

use batonctl::error::Exit;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let exit = match batonctl::run(batonctl::cli::Cli::parse()).await {
        Ok(true) => Exit::Success,
        Ok(false) => Exit::UpgradeFailed,
        Err(e) => {
            let exit = e.exit();
            // The message names what failed, then each cause; no backtrace for an
            // operator's mistake.
            eprintln!("batonctl: error: {:#}", anyhow::Error::new(e));
            exit
        }
    };
    ExitCode::from(exit.code())
}
