//! etcd helpers every part uses: connecting, compare-and-swap updates, prefix reads in
//! pages, resumable watches, leases kept alive with a loss signal, leader election, and a
//! client of several members kept off one that is down and signed in again after one
//! restarted — behind the `etcd` cargo
//! feature, so a part that only names the TLS settings ([`EtcdTls`], always here: the
//! downloader job writes them into the agent's configuration) does not build the gRPC stack.

#[cfg(feature = "etcd")]
pub mod auth;
#[cfg(feature = "etcd")]
mod cas;
#[cfg(feature = "etcd")]
mod election;
#[cfg(feature = "etcd")]
mod endpoints;
pub mod identity;
#[cfg(feature = "etcd")]
mod lease;
#[cfg(feature = "etcd")]
mod range;
#[cfg(feature = "etcd")]
mod records;
mod tls;
#[cfg(feature = "etcd")]
mod watch;

#[cfg(feature = "etcd")]
use std::time::Duration;

#[cfg(feature = "etcd")]
pub use cas::{
    Change, Known, Updated, Versioned, create, delete_if_unchanged, put_all_if_unchanged,
    put_if_unchanged, put_leased, read, update, update_known,
};
#[cfg(feature = "etcd")]
pub use election::{Election, Leadership, Observer};
#[cfg(feature = "etcd")]
pub use endpoints::{EndpointWatch, TokenCheck, is_invalid_auth_token, watch_endpoints};
#[cfg(feature = "etcd")]
pub use etcd_client::Client;
pub use identity::Credential;
#[cfg(feature = "etcd")]
pub use lease::{Keeping, KeptLease};
#[cfg(feature = "etcd")]
pub use range::{Kv, PAGE_BYTES, PAGE_KEYS, prefix_end, read_prefix, read_prefix_at};
#[cfg(feature = "etcd")]
pub use records::{read_upgrade, upgrade_ops};
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

/// How many times a request refused for a concurrent change of etcd's users and roles is
/// sent again.
#[cfg(feature = "etcd")]
const AUTH_RACE_RETRIES: u32 = 4;

/// The pause before the first of those, doubled before each next one (10, 20, 40, 80 ms):
/// while an orchestrator makes hosts' identities, changes follow one another a few
/// milliseconds apart, and a request sent again at once would often meet the next.
#[cfg(feature = "etcd")]
const AUTH_RACE_PAUSE: Duration = Duration::from_millis(10);

/// etcd refused a request because its users or roles changed while the request was in
/// flight ("revision of auth store is old": with authentication on, every credential the
/// orchestrator issues changes them). Nothing was done; the request can be sent again.
#[cfg(feature = "etcd")]
pub fn is_auth_revision_race(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s) if s.message().contains("revision of auth store is old"))
}

/// Runs `request`, again (a few times) while etcd answers [`is_auth_revision_race`].
#[cfg(feature = "etcd")]
pub async fn retry_auth_race<T, F, Fut>(mut request: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut retries = 0;
    loop {
        match request().await {
            Err(e) if is_auth_revision_race(&e) && retries < AUTH_RACE_RETRIES => {
                tokio::time::sleep(AUTH_RACE_PAUSE * 2u32.pow(retries)).await;
                retries += 1;
            }
            answer => return answer,
        }
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
    connect_with(endpoints, tls, credential, Pings::default()).await
}

/// HTTP/2 pings on a client's connections: how a connection that died silently (a host cut
/// off the network) is found, ending the requests waiting on it.
#[cfg(feature = "etcd")]
#[derive(Debug, Clone, Copy)]
pub struct Pings {
    /// Time without anything read from the connection before a ping is sent.
    pub every: Duration,
    /// Time the ping's answer has before the connection counts as dead.
    pub answer_within: Duration,
}

#[cfg(feature = "etcd")]
impl Default for Pings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(10),
            answer_within: Duration::from_secs(5),
        }
    }
}

/// [`connect_as`] with `pings` instead of the default ones.
#[cfg(feature = "etcd")]
pub async fn connect_with(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    credential: Option<&Credential>,
    pings: Pings,
) -> Result<Client, EtcdError> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        // No per-request timeout: it would also cut watches, keep-alive streams and
        // campaigns every few seconds. A dead connection is found by HTTP/2 keep-alive.
        .with_keep_alive(pings.every, pings.answer_within);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options()?);
    }
    if let Some(c) = credential {
        options = options.with_user(c.user.as_str(), c.password.as_str());
    }
    // Only the members that accept connections now (all, if none does): the first request
    // (signing in) would otherwise go to one that is down. [`watch_endpoints`] puts the
    // others in once they answer.
    let mut reached: Vec<&String> = endpoints.iter().collect();
    if endpoints.len() > 1 {
        let answering = endpoints::answering(endpoints).await;
        if answering.contains(&true) {
            reached = endpoints
                .iter()
                .zip(answering)
                .filter_map(|(e, up)| up.then_some(e))
                .collect();
        }
    }
    Client::connect(reached, Some(options))
        .await
        .map_err(EtcdError::request("connect", endpoints.join(",")))
}

/// Connects as `credential` to the first of `endpoints` that answers, alone: for
/// operations on etcd's users and roles, which a client balancing over every member would
/// send, one request in as many as there are members, to a member that is down (a
/// restarting member answers `Unavailable`). Errors with the last endpoint's failure.
#[cfg(feature = "etcd")]
pub async fn connect_first_answering(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    credential: Option<&Credential>,
) -> Result<Client, EtcdError> {
    let mut last = None;
    for endpoint in endpoints {
        match connect_as(std::slice::from_ref(endpoint), tls, credential).await {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(EtcdError::Request {
        op: "connect",
        key: String::new(),
        source: etcd_client::Error::InvalidArgs("no etcd endpoint given".to_owned()),
    }))
}

/// Signs `client` in again as `credential`: a new token for it and every clone of it.
#[cfg(feature = "etcd")]
pub async fn sign_in_again(client: &Client, credential: &Credential) -> Result<(), EtcdError> {
    let mut auth = client.auth_client();
    let (user, password) = (credential.user.clone(), credential.password.clone());
    match auth.set_client_auth(user.clone(), password.clone()).await {
        // A member may refuse the sign-in itself for the forgotten token it carries: sign
        // in without one.
        Err(e) if is_invalid_auth_token(&e) => {
            auth.remove_client_auth();
            auth.set_client_auth(user, password).await
        }
        answer => answer,
    }
    .map_err(EtcdError::request("authenticate", credential.user.clone()))
}

/// etcd refused a user's name or password (as opposed to not answering).
#[cfg(feature = "etcd")]
pub fn is_authentication_failure(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s) if s.message().contains("authentication failed"))
}

#[cfg(all(test, feature = "etcd"))]
mod tests {
    use super::*;

    fn race() -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::invalid_argument(
            "etcdserver: revision of auth store is old",
        ))
    }

    #[test]
    fn a_forgotten_token_and_a_refused_password_are_told_apart_from_other_refusals() {
        let status = |s: tonic::Status| etcd_client::Error::GRpcStatus(s);
        let forgotten = status(tonic::Status::unauthenticated(
            "etcdserver: invalid auth token",
        ));
        let refused = status(tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        let down = status(tonic::Status::unavailable("tcp connect error"));
        assert!(is_invalid_auth_token(&forgotten));
        assert!(!is_invalid_auth_token(&refused) && !is_invalid_auth_token(&down));
        assert!(is_authentication_failure(&refused));
        assert!(!is_authentication_failure(&forgotten) && !is_authentication_failure(&down));
    }

    #[tokio::test]
    async fn a_request_refused_for_an_auth_change_in_flight_is_sent_again_a_few_times() {
        let mut calls = 0;
        let answer = retry_auth_race(|| {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(race()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(answer.ok(), Some(3));

        let mut calls = 0;
        let started = std::time::Instant::now();
        let answer: Result<(), _> = retry_auth_race(|| {
            calls += 1;
            async { Err(race()) }
        })
        .await;
        assert!(answer.is_err_and(|e| is_auth_revision_race(&e)));
        assert_eq!(calls, 1 + AUTH_RACE_RETRIES);
        // Paused between the tries: 10 + 20 + 40 + 80 ms.
        assert!(
            started.elapsed() >= AUTH_RACE_PAUSE * 15,
            "{:?}",
            started.elapsed()
        );

        // Any other refusal is answered at once.
        let mut calls = 0;
        let answer: Result<(), _> = retry_auth_race(|| {
            calls += 1;
            async {
                Err(etcd_client::Error::GRpcStatus(
                    tonic::Status::permission_denied("etcdserver: permission denied"),
                ))
            }
        })
        .await;
        assert!(answer.is_err_and(|e| !is_auth_revision_race(&e)));
        assert_eq!(calls, 1);
    }
}
