//! The downloader job: runs inside a bundle image with the host's paths under `/host`,
//! verifies the bundle's packages against its manifest, stages them on the host, installs
//! the bundle's `baton-agent` with its configuration and systemd unit, and (re)starts the
//! agent through the host's systemd over D-Bus.
//!
//! - [`cli`]: the command line (flags with `BATON_*` environment fallbacks);
//! - [`bundle`]: the bundle as found in the image: manifest, file-type scan, verified reads;
//! - [`verify`]: size-then-sha256 verification while streaming;
//! - [`fs`]: host file system side effects behind [`fs::HostFs`], durable writes;
//! - [`layout`]: where things live on the host;
//! - [`trust`]: the bundle's signature against the host's trusted keys, and installing
//!   the bundle's keys;
//! - [`stage`]: staging `/var/lib/baton/bundles/<version>/` atomically;
//! - [`agent`]: the versioned agent binary and the `current`/`previous` links;
//! - [`host_files`]: `/etc/baton/agent.toml` and `baton-agent.service`;
//! - the host's systemd is `baton_systemd_bus::Systemd` (D-Bus, shared with the agent);
//! - [`job`]: the whole run and its JSON [`job::Summary`].

pub mod agent;
pub mod bundle;
pub mod cli;
pub mod error;
pub mod fs;
pub mod host_files;
pub mod job;
pub mod layout;
pub mod stage;
pub mod trust;
pub mod verify;
pub mod write_behind;

pub use error::JobError;
pub use job::{JobConfig, Summary, run};

/// The version this build reports (see [`baton_protocol::build_version`]).
pub const VERSION: &str = baton_protocol::build_version!();
