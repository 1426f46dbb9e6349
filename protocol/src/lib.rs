//! Baton's shared contract, used by every part.
//!
//! - [`keys`]: the etcd keyspace (the only place keys are built or parsed);
//! - [`names`]: validated host ids, group names and upgrade ids;
//! - [`documents`]: the JSON documents stored under the keys, with `schema_version`;
//! - [`state`]: host states and upgrade phases with their transition rules;
//! - [`manifest`]: the bundle manifest and its validation;
//! - [`etcd`]: compare-and-swap, resumable watches, kept leases, leader election.

pub mod documents;
pub mod etcd;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod state;

pub use keys::{HostKey, Key, Keyspace};
pub use names::{GroupName, HostId, UpgradeId};
pub use state::{HostState, UpgradePhase};

/// Version of this build of Baton (all parts share it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
