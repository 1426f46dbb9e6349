//! `batonctl`: the operator's command line for Baton.

use clap::{Parser, Subcommand};

/// Operate Baton: start and watch upgrades, register hosts, build bundles.
#[derive(Debug, Parser)]
#[command(name = "batonctl", version = baton_protocol::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print batonctl's version.
    Version,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("batonctl {}", baton_protocol::VERSION),
    }
}
