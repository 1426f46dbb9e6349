//! The REST API (axum), served by every replica: reads everywhere, writes only on the
//! leader — a follower answers a write with 503 naming the leader (clients retry there; the
//! follower does not forward, so a request is never applied by a replica that cannot fence
//! its write). See docs/api.md and `GET /openapi.json`.
//!
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`hosts`]: registration and the merged view of each host;
//! - [`upgrades`]: starting, listing, showing, pausing, resuming and aborting upgrades;
//! - [`maintenance`]: maintenance modes of hosts and groups;
//! - [`openapi`]: the OpenAPI document, generated from the handlers and the wire types;
//! - [`json`], [`error`]: request bodies and error answers.

pub mod error;
pub mod health;
pub mod hosts;
pub mod json;
pub mod maintenance;
pub mod openapi;
pub mod upgrades;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use axum::routing::{get, post, put};
use baton_protocol::Keyspace;
use baton_protocol::etcd::{Client, Election};
use tokio::sync::watch;

use crate::api::error::ApiError;
use crate::leader::{self, Role};
use crate::metrics::Counters;
use crate::resolve::Resolver;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    keyspace: Keyspace,
    role: watch::Receiver<Role>,
    election: Election,
    resolver: Arc<dyn Resolver>,
    counters: Arc<Counters>,
    replica: String,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("replica", &self.inner.replica)
            .field("keyspace", &self.inner.keyspace)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The shared state of one replica.
    pub fn new(
        client: Client,
        keyspace: Keyspace,
        role: watch::Receiver<Role>,
        resolver: Arc<dyn Resolver>,
        counters: Arc<Counters>,
        replica: String,
    ) -> Self {
        let election = Election::new(client.clone(), keyspace.leader());
        Self {
            inner: Arc::new(Inner {
                client,
                keyspace,
                role,
                election,
                resolver,
                counters,
                replica,
            }),
        }
    }

    /// The etcd client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The keyspace.
    pub fn keyspace(&self) -> &Keyspace {
        &self.inner.keyspace
    }

    /// The bundle resolver.
    pub fn resolver(&self) -> &dyn Resolver {
        self.inner.resolver.as_ref()
    }

    /// Metrics.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// This replica's role now.
    pub fn role(&self) -> Role {
        self.inner.role.borrow().clone()
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The leadership key fencing writes, or 503 naming the leader.
    pub async fn require_leader(&self) -> Result<String, ApiError> {
        match self.role() {
            Role::Leader { key } => Ok(key),
            Role::Follower => {
                let leader = leader::current_leader(&self.inner.election, &self.inner.keyspace)
                    .await
                    .map_or_else(
                        || "no leader is elected yet; retry shortly".to_owned(),
                        |l| format!("send writes to the leader, {l}"),
                    );
                Err(ApiError::unavailable(format!(
                    "replica {} is not the leader: {leader}",
                    self.inner.replica
                )))
            }
        }
    }
}

/// Every route: (method, path as in the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/v1/hosts"),
    ("post", "/v1/hosts"),
    ("get", "/v1/hosts/{host}"),
    ("put", "/v1/hosts/{host}/maintenance"),
    ("put", "/v1/groups/{group}/maintenance"),
    ("get", "/v1/upgrades"),
    ("post", "/v1/upgrades"),
    ("get", "/v1/upgrades/{id}"),
    ("get", "/v1/upgrades/{id}/events"),
    ("post", "/v1/upgrades/{id}/pause"),
    ("post", "/v1/upgrades/{id}/resume"),
    ("post", "/v1/upgrades/{id}/abort"),
];

/// The API's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/hosts", get(hosts::list).post(hosts::register))
        .route("/v1/hosts/:host", get(hosts::show))
        .route("/v1/hosts/:host/maintenance", put(maintenance::host))
        .route("/v1/groups/:group/maintenance", put(maintenance::group))
        .route("/v1/upgrades", get(upgrades::list).post(upgrades::create))
        .route("/v1/upgrades/:id", get(upgrades::show))
        .route("/v1/upgrades/:id/events", get(upgrades::events))
        .route("/v1/upgrades/:id/pause", post(upgrades::pause))
        .route("/v1/upgrades/:id/resume", post(upgrades::resume))
        .route("/v1/upgrades/:id/abort", post(upgrades::abort))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {method} {}; see GET /openapi.json",
        uri.path()
    ))
}
