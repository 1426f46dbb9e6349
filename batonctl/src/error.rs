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
    /// `upgrade watch` without an id, and no upgrade is active.
    #[error("no upgrade is active; name one")]
    NoActiveUpgrade,
    /// An answer could not be printed as JSON.
    #[error(transparent)]
    Print(#[from] serde_json::Error),
}
