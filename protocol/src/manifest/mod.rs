//! The bundle manifest (`manifest.json` at the root of a bundle image) and its validation.
//!
//! A manifest names every file the bundle ships with its size and sha256, so the downloader
//! can verify while copying; validation refuses anything that could escape the bundle or the
//! host's managed paths, and every refusal names the field at fault
//! (e.g. `components[2].files[0].path`).
//!
//! The types are in `types`, the rules a manifest must follow in `validate`, and the checks
//! of single fields (paths, digests, versions, image references), which other parts use on
//! their own input too, in `checks`; a quorum cluster's member (`quorum`) in `quorum`; all
//! are reachable from here.

mod checks;
mod dests;
mod quorum;
mod types;
mod validate;

pub use self::checks::{
    check_absolute_path, check_image_ref, check_relative_path, check_sha256, check_version,
    image_digest,
};
pub use self::dests::{
    BATON_OWN_PATHS, DEFAULT_INSTALL_ALLOW, InstallPolicy, check_install_entry,
    default_install_allow,
};
pub use self::quorum::{QuorumCluster, QuorumMember};
pub use self::types::{AgentPackage, Component, ComponentKind, FileEntry, HealthCheck, Manifest};

/// Manifest schema this build writes and the newest it reads.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

/// Largest manifest accepted, so a hostile image cannot make a reader allocate without bound.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// A manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest field {field}: {reason}")]
pub struct ManifestError {
    /// The offending field, as a path (`components[1].files[0].sha256`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ManifestError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests;
