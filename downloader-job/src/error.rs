//! The job's error: every variant names the file (or unit) it is about, and renders as one
//! line, because the orchestrator reports the job's last log line as the reason it failed.

use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::agent_config::AgentConfigError;
use baton_protocol::manifest::ManifestError;
use baton_systemd_bus::BusError;

/// Why the job failed or refused the bundle.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A file system operation failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done (`read`, `create`, `fsync`, `rename`, …).
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest was refused by `baton_protocol::manifest`.
    #[error("{path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The field at fault and why.
        source: ManifestError,
    },
    /// Something in the bundle or on the host is not what it may be (a symlink, a device,
    /// a file where a folder belongs, …).
    #[error("{path}: refused: {reason}")]
    Refused {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A package's size differs from its manifest entry.
    #[error("{path}: size {actual} does not match {field}.size {expected} in the manifest")]
    SizeMismatch {
        /// The package file.
        path: PathBuf,
        /// The manifest field of the file (`components[1].files[0]`).
        field: String,
        /// Size from the manifest.
        expected: u64,
        /// Size found (or read so far, when the file grew while read).
        actual: u64,
    },
    /// A package's content differs from its manifest digest.
    #[error("{path}: sha256 {actual} does not match {field}.sha256 {expected} in the manifest")]
    DigestMismatch {
        /// The package file.
        path: PathBuf,
        /// The manifest field of the file.
        field: String,
        /// Digest from the manifest.
        expected: String,
        /// Digest of the content.
        actual: String,
    },
    /// The bundle image the job was given (`--image`, or `image` in its settings) is not
    /// pinned by a digest.
    #[error("--image: {}", source.reason)]
    Image {
        /// Why.
        source: ManifestError,
    },
    /// The bundle's signature was refused (or is missing on a host that trusts keys).
    #[error("bundle signature refused: {reason}")]
    Signature {
        /// Why, naming the key, the expiry or what the signature is for.
        reason: String,
    },
    /// The host's etcd credential the job was given could not be read.
    #[error(transparent)]
    Credential(#[from] baton_protocol::etcd::identity::CredentialError),
    /// The agent configuration given to the job is invalid.
    #[error(transparent)]
    AgentConfig(#[from] AgentConfigError),
    /// A call to the host's systemd failed (the error names the socket, method and unit).
    #[error("{}", systemd_line(.0))]
    Systemd(#[source] BusError),
    /// The agent's unit did not become active.
    #[error(
        "{unit_path}: {unit} did not become active within {timeout:?} (ActiveState={active}, SubState={sub}){rollback}"
    )]
    NotActive {
        /// The unit file on the host.
        unit_path: PathBuf,
        /// The unit.
        unit: String,
        /// How long the job waited.
        timeout: Duration,
        /// Last `ActiveState`.
        active: String,
        /// Last `SubState`.
        sub: String,
        /// What the job did about it (`; rolled back to agent 1.0.0, which is active`).
        rollback: String,
    },
}

/// A failed systemd call, as the job has always put it: `systemd over <socket>: <method>
/// <unit>: <error>`.
fn systemd_line(e: &BusError) -> String {
    match e {
        BusError::Call {
            socket,
            method,
            unit,
            source,
        } => format!(
            "systemd over {}: {method} {unit}: {source}",
            socket.display()
        ),
        other => other.to_string(),
    }
}

impl From<BusError> for JobError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Connect { socket, source } => {
                JobError::io(socket, "connect to the host's system bus", source)
            }
            call => JobError::Systemd(call),
        }
    }
}

impl From<baton_protocol::durable::DurableError> for JobError {
    fn from(e: baton_protocol::durable::DurableError) -> Self {
        JobError::Io {
            path: e.path,
            action: e.action,
            source: e.source,
        }
    }
}

impl JobError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        JobError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// A refusal about `path`.
    pub fn refused(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        JobError::Refused {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The error as exactly one line (nested messages may carry newlines).
    pub fn one_line(&self) -> String {
        self.to_string()
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
