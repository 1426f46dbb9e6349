//! `POST /v1/hosts` (register or re-register a host), `DELETE /v1/hosts/{host}` (remove it,
//! revoking its etcd identity), `GET /v1/hosts` and `GET /v1/hosts/{host}`: each host's
//! spec, liveness, desired state, status, installed versions and maintenance mode, merged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use baton_protocol::api::{HostInfo, RegisterHost};
use baton_protocol::documents::{HostSpec, Maintenance, Upgrade, now};
use baton_protocol::etcd::{self, identity};
use baton_protocol::{HostId, HostKey};
use etcd_client::TxnOp;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{BadRequest, Conflict, NotFound, Unavailable, Unprocessable};
use crate::api::json::ApiJson;
use crate::api::page::{NamedPage, PageQuery, Paged};
use crate::store::{self, Written};
use crate::validate;
use crate::view::{FleetView, HostDocs, Part};

/// The merged view of `host` in `view`.
pub fn info(view: &FleetView, host: &HostId, docs: &HostDocs) -> HostInfo {
    HostInfo {
        id: host.clone(),
        spec: docs.spec.as_ref().map(|s| s.value.clone()),
        alive: docs.alive.as_ref().map(|s| s.value.clone()),
        desired: docs.desired.as_ref().map(|s| s.value.clone()),
        status: docs.status.as_ref().map(|s| s.value.clone()),
        installed: docs.installed.as_ref().map(|s| s.value.clone()),
        maintenance: docs.maintenance.as_ref().map(|s| s.value.clone()),
        group_maintenance: docs
            .group()
            .and_then(|g| view.groups.get(&g))
            .map(|m| m.value.clone()),
        effective_maintenance: view.maintenance(host),
    }
}

/// `GET /v1/hosts`: every host with any document, in id order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    operation_id = "listHosts",
    tag = "hosts",
    summary = "Every host, merged from its keys, in pages",
    params(NamedPage),
    responses(
        (status = 200, description = "hosts in id order", body = Vec<HostInfo>,
            headers(("Link" = String, description = "the next page, while there is one"))),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    page: PageQuery,
) -> Result<Paged<HostInfo>, ApiError> {
    let view = store::read_view(
        state.client(),
        state.keyspace(),
        &[Part::Hosts, Part::Groups],
    )
    .await?;
    let hosts = page.after_key(view.hosts.iter(), |(id, _)| id.as_str());
    Ok(page
        .take(hosts, |(id, _)| id.to_string())
        .map(|(id, docs)| info(&view, id, docs))
        .answer("/v1/hosts"))
}

/// A host id from the path, or 400 naming it.
pub fn path_host(host: &str) -> Result<HostId, ApiError> {
    HostId::new(host).map_err(|e| ApiError::bad_request(format!("host: {e}")))
}

/// `GET /v1/hosts/{host}`.
#[utoipa::path(
    get,
    path = "/v1/hosts/{host}",
    operation_id = "showHost",
    tag = "hosts",
    summary = "One host: spec, alive, desired, status, installed, maintenance",
    params(
        ("host" = String, Path, description = "host id"),
    ),
    responses(
        (status = 200, description = "the host", body = HostInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(host): Path<String>,
) -> Result<Json<HostInfo>, ApiError> {
    let host = path_host(&host)?;
    let ks = state.keyspace();
    let (kvs, revision) = store::read_prefix(state.client(), &ks.host_prefix(&host)).await?;
    let mut view = FleetView::default();
    view.load(ks, Part::Hosts, &kvs, revision);
    let Some(docs) = view.hosts.get(&host).cloned() else {
        return Err(ApiError::not_found(format!(
            "host {host} is not known (no key under {})",
            ks.host_prefix(&host)
        )));
    };
    if let Some(group) = docs.group() {
        let key = ks.group_maintenance(&group);
        if let Some(m) = etcd::read::<Maintenance>(state.client(), &key).await? {
            view.groups.insert(group, m);
        }
    }
    Ok(Json(info(&view, &host, &docs)))
}

/// `POST /v1/hosts`: 201 when registered, 200 when an existing registration was updated (or
/// already so). Labels and endpoints may change; `registered_at` is kept.
#[utoipa::path(
    post,
    path = "/v1/hosts",
    operation_id = "registerHost",
    tag = "hosts",
    summary = "Register (or update) a host",
    request_body = RegisterHost,
    responses(
        (status = 201, description = "registered", body = HostSpec),
        (status = 200, description = "updated, or already so", body = HostSpec),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterHost>,
) -> Result<(StatusCode, Json<HostSpec>), ApiError> {
    let fence = state.require_leader().await?;
    let mut spec = validate::host_spec(&req, state.hosts(), now())?;
    let key = state.keyspace().host(&spec.host, HostKey::Spec);
    if let Some(identities) = state.identities() {
        // First: the orchestrator's role may write the spec only once the host has its own
        // identity (idempotent, like the registration).
        identities.register(&spec.host, spec.quorum_member).await?;
    }
    for _ in 0..store::WRITE_ATTEMPTS {
        let existing = etcd::read::<HostSpec>(state.client(), &key).await?;
        let read_at = existing.as_ref().map_or(0, |e| e.mod_revision);
        if let Some(e) = &existing {
            spec.registered_at = e.value.registered_at.clone();
            if e.value == spec {
                return Ok((StatusCode::OK, Json(spec)));
            }
        }
        let written = store::commit(
            state.client(),
            &key,
            vec![store::fence(&fence), store::unchanged(&key, read_at)],
            vec![store::put(&key, &spec)],
        )
        .await?;
        match written {
            Written::At(_) => {
                tracing::info!(host = %spec.host, docker = %spec.docker, "host registered");
                let status = if existing.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                return Ok((status, Json(spec)));
            }
            Written::Conflict => {
                state.require_leader().await?;
            }
        }
    }
    Err(ApiError::conflict(format!(
        "{key} kept changing during the registration; retry"
    )))
}

/// `DELETE /v1/hosts/{host}`: the host's etcd identity is revoked (its agent's next write is
/// denied) and its keys are deleted. Refused (409) while the upgrade in progress names it.
#[utoipa::path(
    delete,
    path = "/v1/hosts/{host}",
    operation_id = "removeHost",
    tag = "hosts",
    summary = "Remove a host: its etcd identity is revoked and its keys deleted",
    params(
        ("host" = String, Path, description = "host id"),
    ),
    responses(
        (status = 200, description = "removed; the registration it had", body = HostSpec),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(host): Path<String>,
) -> Result<Json<HostSpec>, ApiError> {
    let fence = state.require_leader().await?;
    let host = path_host(&host)?;
    let ks = state.keyspace();
    let client = state.client();
    let spec_key = ks.host(&host, HostKey::Spec);
    let Some(spec) = etcd::read::<HostSpec>(client, &spec_key).await? else {
        return Err(ApiError::not_found(format!(
            "host {host} is not registered (no {spec_key})"
        )));
    };
    let active = store::read_active(client, ks).await?;
    if let Some(active) = &active {
        let id = &active.value.upgrade_id;
        if let Some(u) = etcd::read::<Upgrade>(client, &ks.upgrade(id)).await?
            && !u.value.phase.is_terminal()
            && u.value.hosts.contains_key(&host)
        {
            return Err(ApiError::conflict(format!(
                "host {host} is part of upgrade {id} ({}); remove it once that upgrade has ended",
                u.value.phase
            )));
        }
    }
    // The orchestrator's keys of the host, only if no upgrade started meanwhile.
    let active_key = ks.active();
    let guards = vec![
        store::fence(&fence),
        store::unchanged(&spec_key, spec.mod_revision),
        store::unchanged(&active_key, active.map_or(0, |a| a.mod_revision)),
    ];
    let ops = identity::ORCHESTRATOR_HOST_WRITES
        .iter()
        .map(|k| TxnOp::delete(ks.host(&host, *k), None))
        .collect();
    if let Written::Conflict = store::commit(client, &spec_key, guards, ops).await? {
        return Err(ApiError::conflict(format!(
            "{spec_key} or {active_key} changed while the host was being removed; retry"
        )));
    }
    // Then its identity, and then its own reports (which only an identity allowed to manage
    // users may delete once authentication is on): it cannot write them again.
    let reports_client = match state.identities() {
        Some(identities) => {
            identities.remove(&host).await?;
            identities.admin().await?
        }
        None => client.clone(),
    };
    reports_client
        .kv_client()
        .delete(
            ks.host_prefix(&host),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .map_err(|source| etcd::EtcdError::Request {
            op: "delete",
            key: ks.host_prefix(&host),
            source,
        })?;
    tracing::info!(%host, "host removed; its etcd identity revoked");
    Ok(Json(spec.value))
}
