//! Errors of bundle building and inspection; each names the file, field, tag or Docker call
//! it is about.

use std::path::PathBuf;

use baton_protocol::docker::DockerError;
use baton_protocol::manifest::ManifestError;

/// Why a bundle could not be built, pushed or inspected.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The template is not JSON.
    #[error("{path}: not valid JSON: {source}")]
    TemplateJson {
        /// The template file.
        path: PathBuf,
        /// The parse error (with line and column).
        source: serde_json::Error,
    },
    /// The completed manifest (or a template field) was refused by the protocol's rules.
    #[error("{path}: {source}")]
    Manifest {
        /// The template (or manifest) file.
        path: PathBuf,
        /// The field at fault and why.
        source: ManifestError,
    },
    /// A file the manifest lists cannot be used.
    #[error("{path} (manifest field {field}): {reason}")]
    Source {
        /// The file on disk.
        path: PathBuf,
        /// The manifest field naming it.
        field: String,
        /// Why.
        reason: String,
    },
    /// The template states a size or digest the file does not have.
    #[error("{path}: template field {field} says {expected}, the file has {actual}")]
    Mismatch {
        /// The file on disk.
        path: PathBuf,
        /// The template field (`components[0].files[1].sha256`).
        field: String,
        /// Value in the template.
        expected: String,
        /// Value of the file.
        actual: String,
    },
    /// The downloader binary cannot run in a `FROM scratch` image.
    #[error(
        "{path}: dynamically linked (interpreter {interpreter}); the bundle's entrypoint runs FROM scratch: build it static (`make static`)"
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// Its ELF interpreter.
        interpreter: String,
    },
    /// The agent binary does not report the manifest's agent version.
    #[error(
        "{path}: `--version` reports {reported:?}, manifest field agent.version is {expected:?} (build it with BATON_BUILD_VERSION={expected})"
    )]
    AgentVersion {
        /// The agent binary.
        path: PathBuf,
        /// `agent.version` of the manifest.
        expected: String,
        /// What the binary printed.
        reported: String,
    },
    /// The image reference is not valid.
    #[error("image reference {reference:?}: {source}")]
    Reference {
        /// The reference given.
        reference: String,
        /// Why.
        source: ManifestError,
    },
    /// A file changed between being hashed and being sent to the Docker Engine.
    #[error("{path} (manifest field {field}) changed while the bundle was being built: {reason}")]
    Changed {
        /// The file.
        path: PathBuf,
        /// The manifest field.
        field: String,
        /// What differs.
        reason: String,
    },
    /// The bundle's signature was refused (or could not be made).
    #[error("{image}: {reason}")]
    Signature {
        /// The bundle.
        image: String,
        /// Why (in the message, not as a source: it is the whole story).
        reason: baton_protocol::signing::SignatureError,
    },
    /// A key file could not be read or written.
    #[error(transparent)]
    Key(#[from] baton_protocol::signing::KeyError),
    /// A Docker Engine call failed (connect, build, push, pull, inspect), or the image is
    /// not a bundle.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

impl BundleError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        BundleError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// A Docker Engine error in `action`, for `map_err`.
    pub(crate) fn docker(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let docker = DockerError::docker(action);
        move |source| BundleError::Docker(docker(source))
    }

    /// The engine reported `message` as the failure of `action`.
    pub(crate) fn engine(action: impl Into<String>, message: impl Into<String>) -> Self {
        BundleError::Docker(DockerError::Engine {
            action: action.into(),
            message: message.into(),
        })
    }
}
