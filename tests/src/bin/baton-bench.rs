//! `baton-bench`: `make bench` — Baton at fleet size, measured (`baton_tests::bench`).

use std::path::PathBuf;
use std::time::Duration;

use baton_tests::bench::{self, BenchOptions, Part};
use clap::Parser;

/// Measures an all-at-once and a rolling upgrade at each fleet size, the idle agent and the
/// downloader's staging; prints `bench: NAME=VALUE` lines and writes a JSON report.
#[derive(Debug, Parser)]
#[command(name = "baton-bench", version = baton_protocol::build_version!())]
struct Cli {
    /// Only these parts (every part when not given).
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    only: Vec<Part>,
    /// Fleet sizes, in order.
    #[arg(
        long,
        env = "BENCH_HOSTS",
        value_delimiter = ',',
        default_value = "100,1000,10000"
    )]
    hosts: Vec<usize>,
    /// Seconds the idle agent is watched.
    #[arg(long, env = "BENCH_IDLE_SECS", default_value_t = 60)]
    idle_secs: u64,
    /// The downloader's staging payload, in MiB.
    #[arg(long, env = "BENCH_PAYLOAD_MIB", default_value_t = 256)]
    payload_mib: usize,
    /// The report [default: <cargo target folder>/bench/report.json].
    #[arg(long, env = "BENCH_REPORT")]
    report: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = BenchOptions {
        only: cli.only,
        hosts: cli.hosts,
        idle: Duration::from_secs(cli.idle_secs),
        payload_mib: cli.payload_mib,
        report: cli
            .report
            .unwrap_or_else(|| baton_tests::bundles::target_dir().join("bench/report.json")),
    };
    bench::run(&options).await?;
    Ok(())
}
