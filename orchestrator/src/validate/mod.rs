//! Validation of API requests, as pure functions: each refusal is a [`FieldError`] naming
//! the request field at fault (`strategy.batch.count`, `hosts[2]`, `path_map["/x"]`), so the
//! API can answer `{"error": "<field>: <reason>"}` before anything is written.
//!
//! By subject: `upgrades` (the request to start one: image, id, host selection, bundle
//! against strategy), `strategy`, `soak` (the soak and its fleet gates), `hosts` (host registration), and the label checks they
//! share in `fields`; all are reachable from here.

mod fields;
mod hosts;
mod soak;
mod strategy;
mod upgrades;

#[cfg(test)]
pub(crate) mod fixtures;

use baton_protocol::manifest::ManifestError;

pub use self::fields::{check_label_key, check_labels};
pub use self::hosts::{HostPolicy, host_spec};
pub use self::soak::soak;
pub use self::strategy::{Requested, strategy};
pub use self::upgrades::{image, no_downgrade, select, upgrade_id};

/// A request field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as a path into the request (`strategy.batch.count`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn from_manifest(e: ManifestError) -> Self {
        Self::new(e.field, e.reason)
    }
}
