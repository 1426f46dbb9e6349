//! `GET|PUT|DELETE /v1/window` and `/v1/groups/{group}/window`: the maintenance windows
//! upgrades dispatch new hosts in — the whole fleet's, and a group's (both apply to a host
//! of the group). Stored under `window` and `groups/<group>/window`; the engine reads them
//! ([`crate::engine::decide`], `window`).

use axum::Json;
use axum::extract::{Path, State};
use baton_protocol::GroupName;
use baton_protocol::api::SetWindows;
use baton_protocol::documents::{SCHEMA_VERSION, Windows, now, rules};
use baton_protocol::etcd;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{BadRequest, Conflict, NotFound, Unavailable, Unprocessable};
use crate::api::json::ApiJson;
use crate::store::{self, Written};

fn path_group(group: &str) -> Result<GroupName, ApiError> {
    GroupName::new(group).map_err(|e| ApiError::bad_request(format!("group: {e}")))
}

async fn read(state: &AppState, key: &str, what: &str) -> Result<Windows, ApiError> {
    etcd::read::<Windows>(state.client(), key)
        .await?
        .map(|w| w.value)
        .ok_or_else(|| ApiError::not_found(format!("{what} has no maintenance windows")))
}

/// Writes `doc` (or deletes, when `None`) at `key`, guarded by what was read and by the
/// leadership; the document replaced, if any.
async fn write(
    state: &AppState,
    key: &str,
    doc: Option<&Windows>,
) -> Result<Option<Windows>, ApiError> {
    let fence = state.require_leader().await?;
    for _ in 0..store::WRITE_ATTEMPTS {
        let current = etcd::read::<Windows>(state.client(), key).await?;
        let read_at = current.as_ref().map_or(0, |w| w.mod_revision);
        let op = match doc {
            Some(doc) => store::put(key, doc),
            None => etcd_client::TxnOp::delete(key, None),
        };
        let written = store::commit(
            state.client(),
            key,
            vec![store::fence(&fence), store::unchanged(key, read_at)],
            vec![op],
        )
        .await?;
        match written {
            Written::At(_) => {
                tracing::info!(%key, set = doc.is_some(), "maintenance windows changed");
                return Ok(current.map(|w| w.value));
            }
            Written::Conflict => {
                state.require_leader().await?;
            }
        }
    }
    Err(ApiError::conflict(format!("{key} kept changing; retry")))
}

/// Checks the request (422 naming `windows[i].<field>`) and stores it at `key`.
async fn set(state: &AppState, key: &str, req: SetWindows) -> Result<Windows, ApiError> {
    rules(&req.windows).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let doc = Windows {
        schema_version: SCHEMA_VERSION,
        windows: req.windows,
        reason: req.reason,
        since: now(),
    };
    write(state, key, Some(&doc)).await?;
    Ok(doc)
}

async fn clear(state: &AppState, key: &str, what: &str) -> Result<Windows, ApiError> {
    write(state, key, None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{what} has no maintenance windows")))
}

/// `GET /v1/window`.
#[utoipa::path(
    get,
    path = "/v1/window",
    operation_id = "getFleetWindow",
    tag = "maintenance",
    summary = "The whole fleet's maintenance windows",
    responses(
        (status = 200, description = "the windows", body = Windows),
        (status = 404, response = NotFound),
    )
)]
pub async fn get_fleet(State(state): State<AppState>) -> Result<Json<Windows>, ApiError> {
    let key = state.keyspace().fleet_window();
    Ok(Json(read(&state, &key, "the fleet").await?))
}

/// `PUT /v1/window`.
#[utoipa::path(
    put,
    path = "/v1/window",
    operation_id = "setFleetWindow",
    tag = "maintenance",
    summary = "Set the whole fleet's maintenance windows: upgrades dispatch new hosts only while one is open",
    request_body = SetWindows,
    responses(
        (status = 200, description = "the windows set", body = Windows),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub async fn set_fleet(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SetWindows>,
) -> Result<Json<Windows>, ApiError> {
    let key = state.keyspace().fleet_window();
    Ok(Json(set(&state, &key, req).await?))
}

/// `DELETE /v1/window`.
#[utoipa::path(
    delete,
    path = "/v1/window",
    operation_id = "clearFleetWindow",
    tag = "maintenance",
    summary = "Remove the whole fleet's maintenance windows (upgrades dispatch at any time again)",
    responses(
        (status = 200, description = "the windows removed", body = Windows),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn clear_fleet(State(state): State<AppState>) -> Result<Json<Windows>, ApiError> {
    let key = state.keyspace().fleet_window();
    Ok(Json(clear(&state, &key, "the fleet").await?))
}

/// `GET /v1/groups/{group}/window`.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/window",
    operation_id = "getGroupWindow",
    tag = "maintenance",
    summary = "A group's maintenance windows",
    params(("group" = String, Path, description = "group name")),
    responses(
        (status = 200, description = "the windows", body = Windows),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn get_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Windows>, ApiError> {
    let group = path_group(&group)?;
    let key = state.keyspace().group_window(&group);
    Ok(Json(read(&state, &key, &format!("group {group}")).await?))
}

/// `PUT /v1/groups/{group}/window`.
#[utoipa::path(
    put,
    path = "/v1/groups/{group}/window",
    operation_id = "setGroupWindow",
    tag = "maintenance",
    summary = "Set a group's maintenance windows: its hosts are dispatched only while one is open (and the fleet's, if any)",
    params(("group" = String, Path, description = "group name")),
    request_body = SetWindows,
    responses(
        (status = 200, description = "the windows set", body = Windows),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub async fn set_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    ApiJson(req): ApiJson<SetWindows>,
) -> Result<Json<Windows>, ApiError> {
    let group = path_group(&group)?;
    let key = state.keyspace().group_window(&group);
    Ok(Json(set(&state, &key, req).await?))
}

/// `DELETE /v1/groups/{group}/window`.
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/window",
    operation_id = "clearGroupWindow",
    tag = "maintenance",
    summary = "Remove a group's maintenance windows",
    params(("group" = String, Path, description = "group name")),
    responses(
        (status = 200, description = "the windows removed", body = Windows),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn clear_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Windows>, ApiError> {
    let group = path_group(&group)?;
    let key = state.keyspace().group_window(&group);
    Ok(Json(clear(&state, &key, &format!("group {group}")).await?))
}
