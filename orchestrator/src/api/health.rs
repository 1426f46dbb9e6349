//! `GET /healthz` (the process answers; its version), `GET /readyz` (etcd answers) and
//! `GET /metrics` (Prometheus text).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use baton_protocol::api::Health;
use baton_protocol::documents::{HostStatus, Upgrade, decode};
use baton_protocol::keys::Key;
use baton_protocol::{HostKey, HostState};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::Unavailable;
use crate::leader::Role;
use crate::metrics::{self, Snapshot};
use crate::store;

/// How long the readiness probe waits for etcd.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

fn health(state: &AppState) -> Health {
    Health {
        status: "ok".to_owned(),
        version: crate::VERSION.to_owned(),
        replica: state.replica().to_owned(),
        role: match state.role() {
            Role::Leader { .. } => "leader",
            Role::Follower => "follower",
        }
        .to_owned(),
    }
}

/// `GET /healthz`.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "The process answers: its version, replica and role",
    responses(
        (status = 200, description = "the process answers", body = Health),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(health(&state))
}

/// `GET /readyz`: 200 once etcd answers a read, else 503 saying why.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "etcd answers",
    responses(
        (status = 200, description = "ready", body = Health),
        (status = 503, response = Unavailable),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let read = store::read_active(state.client(), state.keyspace());
    match tokio::time::timeout(READY_TIMEOUT, read).await {
        Ok(Ok(_)) => Ok(Json(health(&state))),
        Ok(Err(e)) => Err(ApiError::unavailable(format!("etcd: {e}"))),
        Err(_) => Err(ApiError::unavailable(format!(
            "etcd: no answer within {}s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    summary = "Prometheus metrics: upgrades by phase, hosts by state, leader flag, engine counters",
    responses(
        (status = 200, description = "text exposition 0.0.4", body = String, content_type = "text/plain"),
        (status = 503, response = Unavailable),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = tokio::time::timeout(READY_TIMEOUT, snapshot(&state))
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(crate::VERSION, state.counters(), snapshot.as_ref()),
    )
}

async fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    let ks = state.keyspace();
    let mut s = Snapshot::default();
    let (upgrades, _) = store::read_prefix(state.client(), &ks.upgrades_prefix()).await?;
    for (key, value, _) in &upgrades {
        // The records (not their hosts' outcomes).
        if let Ok(Key::Upgrade(_)) = ks.parse(key)
            && let Ok(u) = decode::<Upgrade>(key, value)
        {
            *s.upgrades.entry(u.phase).or_default() += 1;
        }
    }
    let (hosts, _) = store::read_prefix(state.client(), &ks.hosts_prefix()).await?;
    for (key, value, _) in &hosts {
        match ks.parse(key) {
            Ok(Key::Host(_, HostKey::Spec)) => s.hosts += 1,
            Ok(Key::Host(_, HostKey::Alive)) => s.alive += 1,
            Ok(Key::Host(_, HostKey::Status)) => {
                let state: HostState = match decode::<HostStatus>(key, value) {
                    Ok(st) => st.state,
                    Err(_) => continue,
                };
                *s.host_states.entry(state).or_default() += 1;
            }
            _ => {}
        }
    }
    Ok(s)
}
