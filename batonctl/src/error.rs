//! What a `batonctl` command can fail with. Each variant's message is the context an
//! operator reads first; the cause follows it (`batonctl: error: bundle build: <file>: …`).

use baton_protocol::docker::DockerError;

use crate::bundle::BundleError;
use crate::client::ClientError;

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// An API call failed (or the API URL is not usable).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The config file could not be read.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The Docker Engine could not be reached.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// `bundle build` failed.
    #[error("bundle build")]
    Build(#[source] BundleError),
    /// `bundle inspect` failed.
    #[error("bundle inspect")]
    Inspect(#[source] DockerError),
    /// `bundle sign` or `bundle verify` failed.
    #[error("bundle {0}")]
    Signing(&'static str, #[source] BundleError),
    /// `key generate` failed.
    #[error("key generate: {0}")]
    Key(String),
    /// `upgrade watch` gave up on an API that stopped answering.
    #[error("the API did not answer for {secs}s")]
    Unreachable {
        /// How long it waited.
        secs: u64,
        /// The last failure.
        #[source]
        source: ClientError,
    },
    /// A registrations file (`host add --from-file`) could not be read.
    #[error("{file}: {what}")]
    Registrations {
        /// The file.
        file: String,
        /// What is wrong, naming the line.
        what: String,
    },
    /// A request of `host add --from-file` was refused (nothing of it was written).
    #[error("registrations {first} to {last} (the server's [0] is {first})")]
    Bulk {
        /// Where its first registration was read.
        first: String,
        /// Where its last one was read.
        last: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// `upgrade watch` without an id, and no upgrade is active.
    #[error("no upgrade is active; name one")]
    NoActiveUpgrade,
    /// An answer could not be printed as JSON.
    #[error(transparent)]
    Print(#[from] serde_json::Error),
    /// An answer could not be printed as YAML.
    #[error("printing YAML: {0}")]
    Yaml(String),
    /// `batonctl version` could not ask the server its version.
    #[error("the server's version")]
    ServerVersion(#[source] ClientError),
    /// Man pages could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How `batonctl` exits, so a script can tell what happened without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It worked.
    Success = 0,
    /// Something else failed (a file, the Docker Engine, a bundle).
    Error = 1,
    /// The command line is wrong (clap's own code).
    Usage = 2,
    /// The upgrade it followed ended without succeeding (`Failed`, `Aborted`).
    UpgradeFailed = 3,
    /// The server refused the request (a 4xx: bad input, no or weak credential, conflict).
    Refused = 4,
    /// The server could not be reached, or could not serve (connection refused, timeout,
    /// TLS, 5xx such as a follower without a leader).
    Unreachable = 5,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl CtlError {
    /// The exit code this failure gives.
    pub fn exit(&self) -> Exit {
        let client = match self {
            CtlError::Client(e) | CtlError::ServerVersion(e) | CtlError::Bulk { source: e, .. } => {
                e
            }
            CtlError::Unreachable { .. } => return Exit::Unreachable,
            _ => return Exit::Error,
        };
        match client {
            ClientError::Status { status, .. } if status.is_client_error() => Exit::Refused,
            ClientError::Status { .. } | ClientError::Request { .. } => Exit::Unreachable,
            _ => Exit::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::{Method, StatusCode};

    fn status(code: u16) -> CtlError {
        CtlError::Client(ClientError::Status {
            method: Method::GET,
            url: "u".into(),
            status: StatusCode::from_u16(code).expect("status"),
            message: String::new(),
        })
    }

    #[test]
    fn refusals_outages_and_other_failures_exit_apart() {
        assert_eq!(status(422).exit(), Exit::Refused);
        assert_eq!(status(401).exit(), Exit::Refused);
        assert_eq!(status(503).exit(), Exit::Unreachable);
        let unreachable = CtlError::Client(ClientError::Request {
            method: Method::GET,
            url: "u".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(unreachable.exit(), Exit::Unreachable);
        assert_eq!(CtlError::NoActiveUpgrade.exit(), Exit::Error);
        let codes = [
            Exit::Success,
            Exit::Error,
            Exit::Usage,
            Exit::UpgradeFailed,
            Exit::Refused,
            Exit::Unreachable,
        ]
        .map(Exit::code);
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }
}
