//! Keeping a client of several etcd members off a member that is down.
//!
//! etcd-client balances requests over every endpoint it was given and keeps a member that
//! stopped answering in the rotation: while one member restarts (an etcd upgrade), about
//! one request in three fails at once with `Unavailable` ("tcp connect error"), and a
//! session of many requests rarely survives. [`watch_endpoints`] probes each endpoint's
//! port and takes one that refuses out of the client's rotation until it answers again,
//! never the last one.

use std::time::Duration;

use etcd_client::Client;
use tokio::task::JoinHandle;

/// How often, and how long at most, each endpoint is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Probes a client's endpoints while it lives; dropping it stops the probing (the client
/// keeps the rotation it had).
#[derive(Debug)]
pub struct EndpointWatch {
    task: JoinHandle<()>,
}

impl Drop for EndpointWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing `endpoints` (the ones `client` was connected with) for `client`;
/// `None` for a single endpoint, which has nowhere else to go.
pub fn watch_endpoints(client: &Client, endpoints: &[String]) -> Option<EndpointWatch> {
    if endpoints.len() < 2 {
        return None;
    }
    let client = client.clone();
    let endpoints = endpoints.to_vec();
    let task = tokio::spawn(async move {
        let mut in_rotation = vec![true; endpoints.len()];
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let probes = endpoints.iter().map(|e| reachable(e));
            let answering = futures::future::join_all(probes).await;
            for (i, keep) in changes(&in_rotation, &answering) {
                let endpoint = &endpoints[i];
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
    });
    Some(EndpointWatch { task })
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
