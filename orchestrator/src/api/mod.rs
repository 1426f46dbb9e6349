//! The REST API (axum), served by every replica: reads everywhere, writes only on the
//! leader — a follower answers a write with 503 naming the leader (clients retry there; the
//! follower does not forward, so a request is never applied by a replica that cannot fence
//! its write). See docs/api.md and `GET /openapi.json`.
//!
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`hosts`]: the merged view of each host, and its removal;
//! - [`register`]: host registration, one or many at a time;
//! - [`upgrades`]: starting, listing, showing, pausing, resuming and aborting upgrades;
//! - [`maintenance`]: maintenance modes of hosts and groups;
//! - [`windows`]: maintenance windows of the fleet and of groups;
//! - [`tokens`]: API tokens (create, list, revoke);
//! - [`stream`]: `GET /v1/stream`, the fleet live as server-sent events (the fleet page's
//!   feed; the page itself is [`crate::web`]'s);
//! - [`gate`]: the checks before every handler (`Host`, `Origin`, `Content-Type`, size,
//!   the route's access);
//! - [`openapi`]: the OpenAPI document, generated from the handlers and the wire types;
//! - [`limits`]: the limits the API enforces, as the OpenAPI document states them;
//! - [`json`], [`error`]: request bodies and error answers.

pub mod error;
pub mod gate;
pub mod health;
pub mod hosts;
pub mod json;
pub mod limits;
pub mod maintenance;
pub mod openapi;
pub mod page;
pub mod register;
pub mod stream;
pub mod tokens;
pub mod upgrades;
pub mod windows;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};
use baton_protocol::Keyspace;
use baton_protocol::documents::ApiRole;
use baton_protocol::etcd::{Client, Election};
use tokio::sync::watch;

use crate::api::error::ApiError;
use crate::api::gate::{Gate, WebPolicy};
use crate::auth::Access;
use crate::feed::Feed;
use crate::identities::Identities;
use crate::leader::{self, Role};
use crate::metrics::Counters;
use crate::resolve::Resolver;
use crate::trust::{BundleTrust, Bundles};
use crate::validate::HostPolicy;

/// What the operator's configuration allows callers: where requests may come from, and what
/// a host registration may name.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Origins and `Host` headers.
    pub web: WebPolicy,
    /// Docker endpoints and path maps.
    pub hosts: HostPolicy,
    /// A Prometheus is configured, so soaks may have `prometheus` gates.
    pub prometheus: bool,
}

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
    trust: BundleTrust,
    counters: Arc<Counters>,
    replica: String,
    policy: Policy,
    identities: Option<Identities>,
    feed: Feed,
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
    /// The shared state of one replica; its live streams end when `stopping` becomes true.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        keyspace: Keyspace,
        role: watch::Receiver<Role>,
        bundles: Bundles,
        counters: Arc<Counters>,
        replica: String,
        policy: Policy,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let Bundles { resolver, trust } = bundles;
        let election = Election::new(client.clone(), keyspace.leader());
        let feed = Feed::new(client.clone(), keyspace.clone(), replica.clone(), stopping);
        Self {
            inner: Arc::new(Inner {
                client,
                keyspace,
                role,
                election,
                resolver,
                trust,
                counters,
                replica,
                policy,
                identities: None,
                feed,
            }),
        }
    }

    /// With the etcd identities to manage at registration and removal (etcd with
    /// authentication); a state already shared is left as it is.
    pub fn with_identities(self, identities: Option<Identities>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.identities = identities;
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    /// The etcd identities it manages, when etcd runs with authentication.
    pub fn identities(&self) -> Option<&Identities> {
        self.inner.identities.as_ref()
    }

    /// The replica's live feed (`GET /v1/stream`).
    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// The etcd client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The keyspace.
    pub fn keyspace(&self) -> &Keyspace {
        &self.inner.keyspace
    }

    /// Which bundles and registries are accepted.
    pub fn trust(&self) -> &BundleTrust {
        &self.inner.trust
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

    /// Where requests may come from.
    pub fn web(&self) -> &WebPolicy {
        &self.inner.policy.web
    }

    /// What a host registration may name.
    pub fn hosts(&self) -> &HostPolicy {
        &self.inner.policy.hosts
    }

    /// Whether a Prometheus is configured for the soaks' `prometheus` gates.
    pub fn prometheus(&self) -> bool {
        self.inner.policy.prometheus
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

/// An HTTP method the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Verb {
    /// Lowercase, as in the OpenAPI document.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }

    /// The method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route: what it is, who may call it and what serves it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path as in the OpenAPI document (`/v1/hosts/{host}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// The handler, for that method.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
    /// The largest request body it takes.
    pub max_body: usize,
}

impl Route {
    /// `METHOD /path`.
    pub fn name(&self) -> String {
        format!("{} {}", self.verb.method(), self.path)
    }
}

const ANYONE: Access = Access::Anyone;
const VIEWER: Access = Access::Role(ApiRole::Viewer);
const OPERATOR: Access = Access::Role(ApiRole::Operator);
const ADMIN: Access = Access::Role(ApiRole::Admin);

const fn route(
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
) -> Route {
    Route {
        verb,
        path,
        access,
        handler,
        max_body: gate::MAX_BODY,
    }
}

/// The same route, taking bodies of up to `max_body` bytes.
const fn with_body(route: Route, max_body: usize) -> Route {
    Route { max_body, ..route }
}

/// Every route and the role it needs: the router is built from this table, the OpenAPI
/// document is checked against it, and the access tests walk it.
pub const ROUTES: &[Route] = &[
    route(Verb::Get, "/healthz", ANYONE, |m| on(m, health::healthz)),
    route(Verb::Get, "/readyz", ANYONE, |m| on(m, health::readyz)),
    route(Verb::Get, "/metrics", VIEWER, |m| on(m, health::metrics)),
    route(Verb::Get, "/openapi.json", VIEWER, |m| {
        on(m, openapi::serve)
    }),
    route(Verb::Get, "/v1/hosts", VIEWER, |m| on(m, hosts::list)),
    with_body(
        route(Verb::Post, "/v1/hosts", ADMIN, |m| {
            on(m, register::register)
        }),
        gate::MAX_BULK_BODY,
    ),
    route(Verb::Get, "/v1/hosts/{host}", VIEWER, |m| {
        on(m, hosts::show)
    }),
    route(Verb::Delete, "/v1/hosts/{host}", ADMIN, |m| {
        on(m, hosts::remove)
    }),
    route(Verb::Put, "/v1/hosts/{host}/maintenance", OPERATOR, |m| {
        on(m, maintenance::host)
    }),
    route(Verb::Put, "/v1/groups/{group}/maintenance", OPERATOR, |m| {
        on(m, maintenance::group)
    }),
    route(Verb::Get, "/v1/stream", VIEWER, |m| on(m, stream::stream)),
    route(Verb::Get, "/v1/window", VIEWER, |m| {
        on(m, windows::get_fleet)
    }),
    route(Verb::Put, "/v1/window", OPERATOR, |m| {
        on(m, windows::set_fleet)
    }),
    route(Verb::Delete, "/v1/window", OPERATOR, |m| {
        on(m, windows::clear_fleet)
    }),
    route(Verb::Get, "/v1/groups/{group}/window", VIEWER, |m| {
        on(m, windows::get_group)
    }),
    route(Verb::Put, "/v1/groups/{group}/window", OPERATOR, |m| {
        on(m, windows::set_group)
    }),
    route(Verb::Delete, "/v1/groups/{group}/window", OPERATOR, |m| {
        on(m, windows::clear_group)
    }),
    route(Verb::Get, "/v1/upgrades", VIEWER, |m| on(m, upgrades::list)),
    route(Verb::Post, "/v1/upgrades", OPERATOR, |m| {
        on(m, upgrades::create)
    }),
    route(Verb::Get, "/v1/upgrades/{id}", VIEWER, |m| {
        on(m, upgrades::show)
    }),
    route(Verb::Get, "/v1/upgrades/{id}/events", VIEWER, |m| {
        on(m, upgrades::events)
    }),
    route(Verb::Post, "/v1/upgrades/{id}/pause", OPERATOR, |m| {
        on(m, upgrades::pause)
    }),
    route(Verb::Post, "/v1/upgrades/{id}/resume", OPERATOR, |m| {
        on(m, upgrades::resume)
    }),
    route(Verb::Post, "/v1/upgrades/{id}/abort", OPERATOR, |m| {
        on(m, upgrades::abort)
    }),
    route(Verb::Get, "/v1/tokens", ADMIN, |m| on(m, tokens::list)),
    route(Verb::Post, "/v1/tokens", ADMIN, |m| on(m, tokens::create)),
    route(Verb::Delete, "/v1/tokens/{name}", ADMIN, |m| {
        on(m, tokens::revoke)
    }),
];

/// `/v1/hosts/{host}` as axum 0.7 writes it: `/v1/hosts/:host`.
fn axum_path(path: &str) -> String {
    path.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => format!(":{param}"),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The API's router: every route of [`ROUTES`] behind its [`gate`], and the fleet page
/// ([`crate::web`]).
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in ROUTES {
        let gate = Gate {
            state: state.clone(),
            access: r.access,
            route: r.name(),
            max_body: r.max_body,
        };
        let handler = (r.handler)(r.verb.filter())
            .route_layer(middleware::from_fn_with_state(gate, gate::check))
            .route_layer(DefaultBodyLimit::max(r.max_body));
        router = router.route(&axum_path(r.path), handler);
    }
    router
        .merge(crate::web::router(state.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(gate::MAX_BODY))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {method} {}; see GET /openapi.json",
        uri.path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_axum_paths() {
        assert_eq!(
            axum_path("/v1/hosts/{host}/maintenance"),
            "/v1/hosts/:host/maintenance"
        );
        assert_eq!(axum_path("/healthz"), "/healthz");
    }

    #[test]
    fn only_probes_are_open_and_writes_need_more_than_reading() {
        for r in ROUTES {
            let open = r.access == Access::Anyone;
            assert_eq!(
                open,
                ["/healthz", "/readyz"].contains(&r.path),
                "{}",
                r.name()
            );
            if r.verb != Verb::Get {
                assert!(
                    matches!(r.access, Access::Role(role) if role >= ApiRole::Operator),
                    "{}",
                    r.name()
                );
            }
            if r.path.starts_with("/v1/tokens") {
                assert_eq!(r.access, ADMIN, "{}", r.name());
            }
        }
    }
}
