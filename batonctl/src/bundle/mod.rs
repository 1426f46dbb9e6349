//! Update bundles as container images: `batonctl bundle build` and `batonctl bundle inspect`.
//!
//! A bundle image is built `FROM scratch` and holds `/bundle/manifest.json` (the protocol
//! [`Manifest`](baton_protocol::manifest::Manifest)), every package at `/bundle/<path>`, and
//! the static `baton-downloader` as its entrypoint (docs/bundle.md).
//!
//! - [`template`]: a bundle source folder's manifest template, completed with sizes and
//!   digests and validated before anything is built;
//! - [`binaries`]: the downloader and agent binaries put into the bundle, and their checks;
//! - [`context`]: the build context, streamed to the Docker Engine as a tar;
//! - [`build`]: building and pushing through the Docker Engine API (bollard);
//! - [`sign`]: signing a pushed bundle and verifying its signature;
//! - [`progress`]: progress lines for long work.
//!
//! Connecting to the engine and reading a bundle image's manifest are the protocol's
//! ([`baton_protocol::docker`]), shared with the orchestrator, and re-exported here.

pub mod binaries;
pub mod build;
pub mod context;
pub mod error;
pub mod progress;
pub mod sign;
pub mod template;

pub use baton_protocol::docker::{connect, read_manifest};
pub use build::{BuildOptions, Built, build, push};
pub use error::BundleError;
pub use progress::{Progress, Quiet, Stderr};
pub use sign::{Signed, sign, verify};
pub use template::{Prepared, TEMPLATE_FILE, prepare};
