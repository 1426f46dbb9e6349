//! Baton's shared contract, used by every part.
//!
//! - [`agent_config`]: the agent's configuration file, written by the downloader job;
//! - [`durable`]: durable, atomic file writes (temp file, fsync, rename, fsync folder);
//! - [`digest`]: sha256 while streaming, with a size cap;
//! - [`cli`]: what the binaries' command lines share (etcd TLS flags, logging, config file);
//! - [`keys`]: the etcd keyspace (the only place keys are built or parsed);
//! - [`names`]: validated host ids, group names and upgrade ids;
//! - [`documents`]: the JSON documents stored under the keys, with `schema_version`;
//! - [`events`]: the kinds of the events of an upgrade's audit trail;
//! - [`state`]: host states and upgrade phases with their transition rules;
//! - [`manifest`]: the bundle manifest and its validation;
//! - [`api`]: the REST API's request and answer bodies;
//! - [`job`]: the downloader job's settings and its summary line;
//! - [`signing`]: bundle signatures, signing keys, trusted keys, the registry allow-list;
//! - [`staged`]: the record of which image a staged bundle came from;
//! - [`version`]: the order of bundle versions (what a downgrade is);
//! - [`etcd`]: the etcd TLS settings; with the `etcd` feature also compare-and-swap,
//!   resumable watches, kept leases, leader election;
//! - `docker` (feature `docker`): connecting to a Docker Engine, pulling images, reading a
//!   bundle image's manifest.

pub mod agent_config;
pub mod api;
pub mod cli;
pub mod digest;
#[cfg(feature = "docker")]
pub mod docker;
pub mod documents;
pub mod durable;
pub mod etcd;
pub mod events;
pub mod job;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod shutdown;
pub mod signing;
pub mod staged;
pub mod state;
pub mod timer;
pub mod version;

pub use keys::{HostKey, Key, Keyspace};
pub use names::{GroupName, HostId, TokenName, UpgradeId};
pub use state::{HostOutcomeState, HostState, UpgradePhase};

/// The version a binary reports, stamped where it is built: `BATON_BUILD_VERSION` if set
/// (bundles are built with it set to the bundle's version, so the agent and orchestrator
/// they carry report it), else the workspace's version. A macro rather than a constant so
/// the variable is read by the crate that expands it: building another version rebuilds
/// that crate only, not `protocol` and everything above it.
#[macro_export]
macro_rules! build_version {
    () => {
        match option_env!("BATON_BUILD_VERSION") {
            Some(v) => v,
            None => env!("CARGO_PKG_VERSION"),
        }
    };
}
