//! etcd helpers every part uses: connecting, compare-and-swap updates, resumable watches,
//! leases kept alive with a loss signal, and leader election — behind the `etcd` cargo
//! feature, so a part that only names the TLS settings ([`EtcdTls`], always here: the
//! downloader job writes them into the agent's configuration) does not build the gRPC stack.

#[cfg(feature = "etcd")]
pub mod auth;
#[cfg(feature = "etcd")]
mod cas;
#[cfg(feature = "etcd")]
mod election;
pub mod identity;
#[cfg(feature = "etcd")]
mod lease;
mod tls;
#[cfg(feature = "etcd")]
mod watch;

#[cfg(feature = "etcd")]
use std::time::Duration;

#[cfg(feature = "etcd")]
pub use cas::{
    Change, Updated, Versioned, create, delete_if_unchanged, put_if_unchanged, put_leased, read,
    update,
};
#[cfg(feature = "etcd")]
pub use election::{Election, Leadership, Observer};
#[cfg(feature = "etcd")]
pub use etcd_client::Client;
pub use identity::Credential;
#[cfg(feature = "etcd")]
pub use lease::KeptLease;
pub use tls::EtcdTls;
#[cfg(feature = "etcd")]
pub use watch::{KvChange, ResumableWatch, WatchUpdate, fresh_changes};

#[cfg(feature = "etcd")]
use crate::documents::DocumentError;

/// How long connecting may take.
#[cfg(feature = "etcd")]
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd operation failed.
#[cfg(feature = "etcd")]
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The request failed (connection, timeout, server error).
    #[error("etcd {op} {key}: {source}")]
    Request {
        /// What was being done (`get`, `txn`, `watch`, …).
        op: &'static str,
        /// The key or prefix concerned.
        key: String,
        /// The client error.
        source: etcd_client::Error,
    },
    /// A stored document could not be read.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// A compare-and-swap kept losing races.
    #[error("etcd update of {key}: still conflicting after {attempts} attempts")]
    Contended {
        /// The key.
        key: String,
        /// How many times it tried.
        attempts: u32,
    },
    /// A TLS file could not be read.
    #[error("etcd TLS file {path}: {source}")]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The lease backing an operation expired or was revoked.
    #[error("etcd lease {lease:x} was lost")]
    LeaseLost {
        /// The lease id.
        lease: i64,
    },
}

#[cfg(feature = "etcd")]
impl EtcdError {
    pub(crate) fn request(
        op: &'static str,
        key: impl Into<String>,
    ) -> impl FnOnce(etcd_client::Error) -> Self {
        let key = key.into();
        move |source| EtcdError::Request { op, key, source }
    }
}

/// Connects to etcd with Baton's timeouts; `endpoints` like `http://127.0.0.1:2379`.
#[cfg(feature = "etcd")]
pub async fn connect(endpoints: &[String]) -> Result<Client, EtcdError> {
    connect_tls(endpoints, None).await
}

/// Connects to etcd, over TLS when `tls` is given (`https://` endpoints).
#[cfg(feature = "etcd")]
pub async fn connect_tls(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Client, EtcdError> {
    connect_as(endpoints, tls, None).await
}

/// Connects to etcd over TLS when `tls` is given, as `credential`'s user when given (etcd
/// with authentication on; without it the client is anonymous, or its TLS certificate's
/// common name with client-certificate authentication).
#[cfg(feature = "etcd")]
pub async fn connect_as(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    credential: Option<&Credential>,
) -> Result<Client, EtcdError> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        // No per-request timeout: it would also cut watches, keep-alive streams and
        // campaigns every few seconds. A dead connection is found by HTTP/2 keep-alive.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(tls) = tls {
        options = options.with_tls(tls.options()?);
    }
    if let Some(c) = credential {
        options = options.with_user(c.user.as_str(), c.password.as_str());
    }
    Client::connect(endpoints, Some(options))
        .await
        .map_err(EtcdError::request("connect", endpoints.join(",")))
}
