//! `baton-downloader`: the bundle image's entrypoint.

use clap::Parser;

/// Verify this bundle's packages and stage them on the host (host paths under --host-root),
/// then install and (re)start the bundle's baton-agent.
#[derive(Debug, Parser)]
#[command(name = "baton-downloader", version = baton_protocol::VERSION)]
struct Cli {
    /// Where the bundle's files are (its manifest.json at the top).
    #[arg(long, default_value = "/bundle")]
    bundle: std::path::PathBuf,
    /// Where the host's root is mounted.
    #[arg(long, default_value = "/host")]
    host_root: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "staging bundle {} onto {} is not implemented in this build",
        cli.bundle.display(),
        cli.host_root.display()
    )
}
