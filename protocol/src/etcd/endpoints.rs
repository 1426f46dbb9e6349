//! Keeping a client of several etcd members off a member that is down, and signed in
//! across a member's restart.
//!
//! etcd-client balances requests over every endpoint it was given and keeps a member that
//! stopped answering in the rotation: while one member restarts (an etcd upgrade), about
//! one request in three fails at once with `Unavailable` ("tcp connect error"), and a
//! session of many requests rarely survives. [`watch_endpoints`] probes each endpoint's
//! port and takes one that refuses out of the client's rotation until it answers again,
//! never the last one. A client is connected with the endpoints that answer
//! ([`answering`]): over TLS, a member refusing connections fails at once while the others
//! are still shaking hands, so the balancer would hand the first request (signing in) to
//! the member that is down, every time.
//!
//! With authentication on, a client signed in with a password sends a token with every
//! request; etcd's simple tokens live in each member's memory, so a member that restarted
//! answers "invalid auth token" to the tokens given before. The client then signs in again
//! — here, and nowhere else: when a member that was down answers again (before it is put
//! back in the rotation), and whenever a cheap request is refused for its token (a member
//! restarted faster than a probe could see it down). That request is sent each probe
//! interval by a client of several members (which probes them anyway); a client of one
//! member sends it when its owner saw a request fail ([`TokenCheck::now`]: the member may
//! have restarted) and otherwise every two minutes, which keeps the token in use, so an
//! idle client wakes for nothing else.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Credential;
use crate::timer::Timer;

/// How often, and how long at most, each endpoint is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How often a client of one member reads with its token when nothing failed: well within
/// etcd's `--auth-token-ttl` (300 s by default), after which an unused token expires (one
/// that expired all the same is found by the next failed request, and signed in again).
const TOKEN_KEEP_INTERVAL: Duration = Duration::from_secs(120);

/// The key the token probe reads (count only, from the member's own store): a key nobody
/// writes. A user without permission to read it is refused for that after its token was
/// accepted, which is all the probe asks.
const TOKEN_PROBE_KEY: &str = "\0";

/// Probes a client's endpoints while it lives; dropping it stops the probing (the client
/// keeps the rotation it had).
#[derive(Debug)]
pub struct EndpointWatch {
    task: JoinHandle<()>,
    check: TokenCheck,
}

impl EndpointWatch {
    /// A handle to ask for the token to be checked now.
    pub fn token_check(&self) -> TokenCheck {
        self.check.clone()
    }
}

/// Asks an [`EndpointWatch`] to check its client's token at once (and sign in again if it is
/// refused), instead of at its next interval: for the owner of a request that failed.
#[derive(Debug, Clone, Default)]
pub struct TokenCheck(Arc<Notify>);

impl TokenCheck {
    /// Checks the token now (a request made while a check runs is kept for after it).
    pub fn now(&self) {
        self.0.notify_one();
    }
}

impl Drop for EndpointWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing `endpoints` (the ones `client` was connected with) for `client`, and,
/// given the `credential` it signed in with, signing it in again when its token is refused;
/// `None` for a single endpoint without a credential, which has nothing to do.
pub fn watch_endpoints(
    client: &Client,
    endpoints: &[String],
    credential: Option<&Credential>,
) -> Option<EndpointWatch> {
    if endpoints.len() < 2 && credential.is_none() {
        return None;
    }
    let client = client.clone();
    let endpoints = endpoints.to_vec();
    let credential = credential.cloned();
    let check = TokenCheck::default();
    let asked = check.0.clone();
    let pause = if endpoints.len() > 1 {
        PROBE_INTERVAL
    } else {
        TOKEN_KEEP_INTERVAL
    };
    let task = tokio::spawn(async move {
        // Not known until the first probe, which puts every answering endpoint in the
        // rotation: one the client was connected with is replaced by a new connection to
        // it once that one is ready, one it was not (down then) is added.
        let mut in_rotation = vec![false; endpoints.len()];
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    // One wake-up a pause (an idle agent's token read is one of the
                    // few things it wakes for).
                    () = Timer::Os.sleep(pause) => {}
                    () = asked.notified() => {}
                }
            }
            if endpoints.len() > 1 {
                let now = answering(&endpoints).await;
                for (i, keep) in changes(&in_rotation, &now) {
                    let endpoint = &endpoints[i];
                    // A member back from a restart knows none of the tokens given before
                    // it restarted (one down when the client signed in learns the token
                    // as it catches up).
                    if keep
                        && !first
                        && let Some(c) = &credential
                    {
                        sign_in(&client, c, "a member answers again").await;
                    }
                    let changed = if keep {
                        client.add_endpoint(endpoint).await
                    } else {
                        client.remove_endpoint(endpoint).await
                    };
                    match changed {
                        Ok(()) => {
                            in_rotation[i] = keep;
                            tracing::info!(%endpoint, in_rotation = keep, "etcd endpoint {}", if keep { "answers again: back in rotation" } else { "refuses connections: out of rotation" });
                        }
                        Err(error) => {
                            tracing::warn!(%endpoint, %error, "etcd endpoint rotation not changed")
                        }
                    }
                }
            }
            first = false;
            if let Some(c) = &credential
                && token_refused(&client).await
            {
                sign_in(&client, c, "a member refused the session's token").await;
            }
        }
    });
    Some(EndpointWatch { task, check })
}

/// etcd refused a request's token: the member that answered does not know it (it
/// restarted since the client signed in, or the token expired unused).
pub fn is_invalid_auth_token(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s) if s.message().contains("invalid auth token"))
}

/// Whether a cheap read (one member's own store, count only) is refused for its token.
async fn token_refused(client: &Client) -> bool {
    let options = GetOptions::new().with_serializable().with_count_only();
    let mut kv = client.kv_client();
    let read = kv.get(TOKEN_PROBE_KEY, Some(options));
    matches!(
        tokio::time::timeout(PROBE_INTERVAL, read).await,
        Ok(Err(e)) if is_invalid_auth_token(&e)
    )
}

/// Signs `client` in again as `credential` (every clone of it uses the new token); a
/// failure is logged and tried again at the next refusal.
async fn sign_in(client: &Client, credential: &Credential, why: &str) {
    let signing_in = super::sign_in_again(client, credential);
    match tokio::time::timeout(super::CONNECT_TIMEOUT, signing_in).await {
        Ok(Ok(())) => tracing::info!(user = %credential.user, why, "signed in to etcd again"),
        Ok(Err(error)) => {
            tracing::warn!(user = %credential.user, why, %error, "signing in to etcd again failed")
        }
        Err(_) => {
            tracing::warn!(user = %credential.user, why, "signing in to etcd again took too long")
        }
    }
}

/// The endpoints to put back (`true`) or take out (`false`) of the rotation, given which
/// are in it and which answer now: never the last one out (a client with no endpoint
/// could not recover), the first ones first.
fn changes(in_rotation: &[bool], answering: &[bool]) -> Vec<(usize, bool)> {
    let mut left = in_rotation.iter().filter(|r| **r).count();
    let mut out = Vec::new();
    for (i, (&was, &now)) in in_rotation.iter().zip(answering).enumerate() {
        if was == now {
            continue;
        }
        if now {
            left += 1;
            out.push((i, true));
        } else if left > 1 {
            left -= 1;
            out.push((i, false));
        }
    }
    out
}

/// Whether each endpoint's port accepts a connection within [`PROBE_INTERVAL`] (probed
/// together).
pub(super) async fn answering(endpoints: &[String]) -> Vec<bool> {
    futures::future::join_all(endpoints.iter().map(|e| reachable(e))).await
}

/// Whether the endpoint's port accepts a connection within [`PROBE_INTERVAL`].
async fn reachable(endpoint: &str) -> bool {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    let connecting = tokio::net::TcpStream::connect(authority);
    matches!(
        tokio::time::timeout(PROBE_INTERVAL, connecting).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case: name, in rotation, answering, the changes expected.
    type Case<'a> = (&'a str, &'a [bool], &'a [bool], &'a [(usize, bool)]);

    #[test]
    fn a_member_that_refuses_goes_out_and_comes_back_but_the_last_one_stays() {
        let cases: &[Case] = &[
            ("all answer", &[true, true, true], &[true, true, true], &[]),
            (
                "one down",
                &[true, true, true],
                &[true, false, true],
                &[(1, false)],
            ),
            (
                "back",
                &[true, false, true],
                &[true, true, true],
                &[(1, true)],
            ),
            (
                "still down",
                &[true, false, true],
                &[true, false, true],
                &[],
            ),
            (
                "all down",
                &[true, true, true],
                &[false, false, false],
                &[(0, false), (1, false)],
            ),
            (
                "last one kept",
                &[false, true, false],
                &[false, false, false],
                &[],
            ),
            (
                "swap",
                &[false, true],
                &[true, false],
                &[(0, true), (1, false)],
            ),
        ];
        for (name, in_rotation, answering, expected) in cases {
            assert_eq!(changes(in_rotation, answering), expected.to_vec(), "{name}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_not_reachable_an_open_one_is() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = format!("http://{}", listener.local_addr().expect("addr"));
        assert!(reachable(&open).await);
        drop(listener);
        assert!(!reachable(&open).await);
    }
}
