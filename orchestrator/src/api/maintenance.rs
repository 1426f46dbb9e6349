//! `PUT /v1/hosts/{host}/maintenance` and `PUT /v1/groups/{group}/maintenance`: set a
//! maintenance mode (`none` clears it). A group's mode applies to every host whose `group`
//! label names it, including hosts registered later; a host's own mode (other than `none`)
//! wins over its group's. `reboot: true` (mode `restart` only) reboots the host instead of
//! restarting its managed services.

use axum::Json;
use axum::extract::{Path, State};
use baton_protocol::api::SetMaintenance;
use baton_protocol::documents::{HostSpec, Maintenance, MaintenanceMode, SCHEMA_VERSION, now};
use baton_protocol::etcd;
use baton_protocol::{GroupName, HostKey};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{BadRequest, Conflict, NotFound, Unavailable};
use crate::api::hosts::path_host;
use crate::api::json::ApiJson;
use crate::store::{self, Written};

async fn set(state: &AppState, key: &str, req: SetMaintenance) -> Result<Maintenance, ApiError> {
    if req.reboot && req.mode != MaintenanceMode::Restart {
        return Err(ApiError::bad_request(format!(
            "reboot: only valid with mode restart, not {}",
            req.mode.name()
        )));
    }
    let fence = state.require_leader().await?;
    let doc = Maintenance {
        schema_version: SCHEMA_VERSION,
        mode: req.mode,
        reason: req.reason,
        since: now(),
        reboot: req.reboot,
    };
    for _ in 0..store::WRITE_ATTEMPTS {
        let read_at = etcd::read::<Maintenance>(state.client(), key)
            .await?
            .map_or(0, |m| m.mod_revision);
        let written = store::commit(
            state.client(),
            key,
            vec![store::fence(&fence), store::unchanged(key, read_at)],
            vec![store::put(key, &doc)],
        )
        .await?;
        match written {
            Written::At(_) => {
                tracing::info!(%key, mode = ?doc.mode, reason = %doc.reason, "maintenance mode set");
                return Ok(doc);
            }
            Written::Conflict => {
                state.require_leader().await?;
            }
        }
    }
    Err(ApiError::conflict(format!("{key} kept changing; retry")))
}

/// `PUT /v1/hosts/{host}/maintenance` (the host must be registered).
#[utoipa::path(
    put,
    path = "/v1/hosts/{host}/maintenance",
    operation_id = "setHostMaintenance",
    tag = "maintenance",
    summary = "Set the maintenance mode of a host",
    params(
        ("host" = String, Path, description = "host id"),
    ),
    request_body = SetMaintenance,
    responses(
        (status = 200, description = "the mode set", body = Maintenance),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn host(
    State(state): State<AppState>,
    Path(host): Path<String>,
    ApiJson(req): ApiJson<SetMaintenance>,
) -> Result<Json<Maintenance>, ApiError> {
    let host = path_host(&host)?;
    let ks = state.keyspace();
    if etcd::read::<HostSpec>(state.client(), &ks.host(&host, HostKey::Spec))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "host {host} is not registered"
        )));
    }
    if let Some(identities) = state.identities() {
        // A host registered but never upgraded has no identity yet, and the orchestrator's
        // role no permission on its keys (idempotent).
        identities.grant_host_keys(&host).await?;
    }
    let key = ks.host(&host, HostKey::Maintenance);
    Ok(Json(set(&state, &key, req).await?))
}

/// `PUT /v1/groups/{group}/maintenance`.
#[utoipa::path(
    put,
    path = "/v1/groups/{group}/maintenance",
    operation_id = "setGroupMaintenance",
    tag = "maintenance",
    summary = "Set the maintenance mode of a group",
    params(
        ("group" = String, Path, description = "group name"),
    ),
    request_body = SetMaintenance,
    responses(
        (status = 200, description = "the mode set", body = Maintenance),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    ApiJson(req): ApiJson<SetMaintenance>,
) -> Result<Json<Maintenance>, ApiError> {
    let group = GroupName::new(group).map_err(|e| ApiError::bad_request(format!("group: {e}")))?;
    let key = state.keyspace().group_maintenance(&group);
    Ok(Json(set(&state, &key, req).await?))
}
