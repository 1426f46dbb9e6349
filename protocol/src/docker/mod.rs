//! Docker Engine helpers shared by the orchestrator (which resolves bundles and starts jobs)
//! and `batonctl` (which builds and inspects bundles), through bollard: connecting, pulling,
//! splitting image references, and reading a bundle's manifest out of its image — one
//! implementation for both. Behind the `docker` cargo feature.
//!
//! - [`image`]: pull, pull-if-missing, reference splitting;
//! - [`bundle`]: a bundle image's layout and reading its manifest without running it;
//! - [`signature`]: a bundle's signature beside it in its registry.

pub mod bundle;
pub mod image;
pub mod signature;

pub use bollard::Docker;
pub use bundle::{BUNDLE_DIR, ReadManifest, read_bundle_manifest, read_manifest};
pub use image::{ensure_image, pin, pull, split_reference};

use crate::manifest::ManifestError;

/// Why a Docker Engine call about an image failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// A Docker Engine API call failed.
    #[error("docker {action}: {source}")]
    Docker {
        /// The call and its subject (`pull 127.0.0.1:5000/baton/bundle:2.0.0`).
        action: String,
        /// The error.
        source: bollard::errors::Error,
    },
    /// The Docker Engine reported a failure in a pull stream.
    #[error("docker {action}: {message}")]
    Engine {
        /// The call and its subject.
        action: String,
        /// The engine's message.
        message: String,
    },
    /// The image reference is not valid.
    #[error("image reference {reference:?}: {source}")]
    Reference {
        /// The reference given.
        reference: String,
        /// Why.
        source: ManifestError,
    },
    /// The image is not a bundle.
    #[error("image {image}: {reason}")]
    NotABundle {
        /// The image.
        image: String,
        /// Why.
        reason: String,
    },
    /// The bundle's manifest was refused by the protocol's rules.
    #[error("{path}: {source}")]
    Manifest {
        /// `<image>:/bundle/manifest.json`.
        path: String,
        /// The field at fault and why.
        source: ManifestError,
    },
    /// The archive the engine returned could not be read.
    #[error("{path}: read archive: {source}")]
    Archive {
        /// The file in the image.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl DockerError {
    /// A failed call, for `map_err`.
    pub fn docker(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| DockerError::Docker { action, source }
    }

    /// An error in the engine's progress stream of a push or pull: the engine's message when
    /// it sent one.
    pub fn stream(action: &str) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.to_owned();
        move |e| match e {
            bollard::errors::Error::DockerStreamError { error } => DockerError::Engine {
                action,
                message: error,
            },
            source => DockerError::Docker { action, source },
        }
    }

    /// The request names an image the registry does not have, or one that is not a bundle;
    /// anything else is the engine's or the registry's failure.
    pub fn is_refusal(&self) -> bool {
        let lower = self.to_string().to_lowercase();
        matches!(
            self,
            DockerError::NotABundle { .. }
                | DockerError::Manifest { .. }
                | DockerError::Reference { .. }
        ) || [
            "not found",
            "manifest unknown",
            "does not exist",
            "unauthorized",
            "denied",
            "no such image",
        ]
        .iter()
        .any(|s| lower.contains(s))
    }
}

/// Receives one line per step of long work (a pull, a build, a push).
pub trait Progress: Send + Sync {
    /// Reports one line.
    fn line(&self, line: &str);
}

/// No progress output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn line(&self, _line: &str) {}
}

/// Connects to the Docker Engine named by `DOCKER_HOST` (default: the local socket) and
/// agrees on an API version it speaks (Docker 20.10 speaks 1.41).
pub async fn connect() -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_defaults().map_err(DockerError::docker("connect"))?;
    docker
        .negotiate_version()
        .await
        .map_err(DockerError::docker("version"))
}

/// Whether the engine answered 404: no such container or image.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
