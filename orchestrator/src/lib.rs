//! The Baton system-updater: takes REST calls to upgrade the fleet and drives upgrades from
//! etcd state. Several replicas may run; one is elected leader through etcd and runs the
//! upgrade engine; every replica serves the API (writes only on the leader).
//!
//! - [`server`]: one replica — `run(config, shutdown)`;
//! - [`config`]: flags and environment; [`listen`]: the API's listener (TLS, timeouts);
//! - [`api`]: the REST API (axum); [`auth`]: who may call it (bearer tokens, roles);
//! - [`web`]: the fleet page at `/`; [`feed`]: what its live stream (`GET /v1/stream`)
//!   reads, kept current by etcd watches;
//! - [`leader`]: the election and the leader's engine lifetime;
//! - [`engine`]: the upgrade engine (pure decisions, guarded commits, downloader jobs);
//! - [`control`]: pause, resume, abort;
//! - [`validate`], [`plan`]: checks of request bodies (the protocol's
//!   [`api`](baton_protocol::api) types), the batch plan;
//! - [`resolve`]: bundle tag → digest, manifest and signature, once; [`trust`]: which
//!   bundles and registries are accepted (signatures, registry allow-list);
//! - [`store`], [`view`]: etcd reads and guarded writes, and the view they build;
//! - [`docker`]: Docker Engine endpoints;
//! - [`metrics`]: Prometheus metrics.
//!
//! The operator CLI, its API client and the bundle builder are the `batonctl` crate.

pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod docker;
pub mod engine;
pub mod feed;
pub mod identities;
pub mod leader;
pub mod listen;
pub mod metrics;
pub mod plan;
pub mod resolve;
pub mod server;
pub mod store;
pub mod trust;
pub mod validate;
pub mod view;
pub mod web;

/// The version this build reports (see [`baton_protocol::build_version`]).
pub const VERSION: &str = baton_protocol::build_version!();
