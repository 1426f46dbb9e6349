//! `batonctl`: the operator's command line for Baton.

use std::path::PathBuf;

use anyhow::Context;
use baton_orchestrator::bundle::{self, binaries::default_static_binary};
use clap::{Args, Parser, Subcommand};

/// Baton's operator command line: build, push and inspect update bundles.
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
    /// Build, push and inspect update bundles (container images; see docs/bundle.md).
    #[command(subcommand)]
    Bundle(BundleCommand),
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Build a bundle image from a source folder holding manifest.template.json and the
    /// component files; refuses bad input before anything is built.
    Build(BuildArgs),
    /// Print the manifest of a bundle image (pulled if needed; the image is not run).
    Inspect {
        /// The bundle image, e.g. 127.0.0.1:5000/baton/bundle@sha256:…
        image: String,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The bundle source folder.
    dir: PathBuf,
    /// Image reference to build, e.g. 127.0.0.1:5000/baton/bundle:2.0.0
    #[arg(long)]
    tag: String,
    /// Push the image to its registry and print the pinned reference (`repo@sha256:…`).
    #[arg(long)]
    push: bool,
    /// The bundle's baton-agent binary (built with BATON_BUILD_VERSION=<agent version>)
    /// [default: target/x86_64-unknown-linux-gnu/debug/baton-agent]
    #[arg(long, env = "BATON_BUNDLE_AGENT")]
    agent: Option<PathBuf>,
    /// The static baton-downloader binary, the image's entrypoint
    /// [default: target/x86_64-unknown-linux-gnu/debug/baton-downloader]
    #[arg(long, env = "BATON_BUNDLE_DOWNLOADER")]
    downloader: Option<PathBuf>,
    /// Do not require `<agent> --version` to report the manifest's agent version.
    #[arg(long)]
    no_agent_version_check: bool,
    /// Also write the completed manifest to this file.
    #[arg(long)]
    manifest_out: Option<PathBuf>,
}

async fn bundle(command: BundleCommand) -> anyhow::Result<()> {
    let docker = bundle::image::connect().await?;
    match command {
        BundleCommand::Build(args) => {
            let options = bundle::BuildOptions {
                dir: args.dir,
                tag: args.tag,
                agent: args
                    .agent
                    .unwrap_or_else(|| default_static_binary("baton-agent")),
                downloader: args
                    .downloader
                    .unwrap_or_else(|| default_static_binary("baton-downloader")),
                push: args.push,
                check_agent_version: !args.no_agent_version_check,
                manifest_out: args.manifest_out,
            };
            let built = bundle::build(&docker, &options, &bundle::Stderr)
                .await
                .context("bundle build")?;
            // stdout: the reference to use from now on.
            println!("{}", built.pushed.as_deref().unwrap_or(&built.tag));
        }
        BundleCommand::Inspect { image } => {
            let manifest = bundle::inspect(&docker, &image, &bundle::Stderr)
                .await
                .context("bundle inspect")?;
            println!("{}", String::from_utf8_lossy(&manifest.to_json()));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("batonctl {}", baton_protocol::VERSION),
        Command::Bundle(command) => bundle(command).await?,
    }
    Ok(())
}
