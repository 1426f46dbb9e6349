//! `POST /v1/upgrades` (validate, resolve the bundle once, store the upgrade and `active` in
//! one transaction), `GET /v1/upgrades`, `GET /v1/upgrades/{id}`,
//! `GET /v1/upgrades/{id}/events` and `POST /v1/upgrades/{id}/pause|resume|abort`.
//!
//! A refused request writes nothing: every check comes before the one transaction.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use baton_protocol::api::{Command, Control, EventInfo, StartUpgrade, UpgradeInfo};
use baton_protocol::documents::{
    Active, Event, EventKind, HostOutcome, HostOutcomeState, HostsLayout, OrchestratorUpdate,
    SCHEMA_VERSION, Soak, Strategy, Timestamp, Upgrade, decode, now,
};
use baton_protocol::etcd;
use baton_protocol::keys::Key;
use baton_protocol::{UpgradeId, UpgradePhase};
use etcd_client::TxnOp;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{
    BadGateway, BadRequest, Conflict, NotFound, Unavailable, Unprocessable,
};
use crate::api::json::ApiJson;
use crate::api::page::{EventPage, NamedPage, PageQuery, Paged};
use crate::control;
use crate::engine::execute::EVENT_SOURCE;
use crate::store::{self, CreateRefused, Written};
use crate::view::Part;
use crate::{plan, validate};

fn path_upgrade(id: &str) -> Result<UpgradeId, ApiError> {
    UpgradeId::new(id).map_err(|e| ApiError::bad_request(format!("id: {e}")))
}

async fn active_id(state: &AppState) -> Result<Option<UpgradeId>, ApiError> {
    Ok(store::read_active(state.client(), state.keyspace())
        .await?
        .map(|a| a.value.upgrade_id))
}

/// `GET /v1/upgrades`: every upgrade, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/upgrades",
    operation_id = "listUpgrades",
    tag = "upgrades",
    summary = "Every upgrade, oldest first, in pages",
    params(NamedPage),
    responses(
        (status = 200, description = "upgrades", body = Vec<UpgradeInfo>,
            headers(("Link" = String, description = "the next page, while there is one"))),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    page: PageQuery,
) -> Result<Paged<UpgradeInfo>, ApiError> {
    // The records with their hosts' outcomes (unreadable ones are skipped, logged).
    let view = store::read_view(state.client(), state.keyspace(), &[Part::Upgrades]).await?;
    let active = active_id(&state).await?;
    let mut all: Vec<UpgradeInfo> = view
        .upgrades
        .into_values()
        .map(|u| u.value)
        .map(|u| {
            let is_active = active.as_ref() == Some(&u.id);
            UpgradeInfo::new(u, is_active)
        })
        .collect();
    all.sort_by(|a, b| {
        (&a.upgrade.created_at, &a.upgrade.id).cmp(&(&b.upgrade.created_at, &b.upgrade.id))
    });
    // Oldest first is not the order of the ids: the cursor is found in the list.
    let start = match &page.after {
        None => 0,
        Some(after) => {
            let at = all.iter().position(|u| u.upgrade.id.as_str() == after);
            at.map(|i| i + 1).ok_or_else(|| {
                ApiError::not_found(format!("after: upgrade {after} does not exist"))
            })?
        }
    };
    Ok(page
        .take(all.into_iter().skip(start), |u| u.upgrade.id.to_string())
        .answer("/v1/upgrades"))
}

/// The upgrade with its hosts' outcomes, and the layout its record is stored in.
async fn read(
    state: &AppState,
    id: &UpgradeId,
) -> Result<(etcd::Versioned<Upgrade>, HostsLayout), ApiError> {
    let key = state.keyspace().upgrade(id);
    etcd::read_upgrade(state.client(), state.keyspace(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("upgrade {id} does not exist (no {key})")))
}

/// `GET /v1/upgrades/{id}`.
#[utoipa::path(
    get,
    path = "/v1/upgrades/{id}",
    operation_id = "showUpgrade",
    tag = "upgrades",
    summary = "One upgrade",
    params(
        ("id" = String, Path, description = "upgrade id"),
    ),
    responses(
        (status = 200, description = "the upgrade", body = UpgradeInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UpgradeInfo>, ApiError> {
    let id = path_upgrade(&id)?;
    let upgrade = read(&state, &id).await?.0.value;
    let active = active_id(&state).await?.as_ref() == Some(&id);
    Ok(Json(UpgradeInfo::new(upgrade, active)))
}

/// `GET /v1/upgrades/{id}/events`: the audit trail, in order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/upgrades/{id}/events",
    operation_id = "upgradeEvents",
    tag = "upgrades",
    summary = "The upgrade's audit trail, in pages",
    params(
        ("id" = String, Path, description = "upgrade id"),
        EventPage,
    ),
    responses(
        (status = 200, description = "events in order", body = Vec<EventInfo>,
            headers(("Link" = String, description = "the next page, while there is one"))),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    page: PageQuery,
) -> Result<Paged<EventInfo>, ApiError> {
    let id = path_upgrade(&id)?;
    let after: Option<u64> = match &page.after {
        None => None,
        Some(a) => Some(a.parse().map_err(|_| {
            ApiError::bad_request(format!("after: {a:?} is not an event's seq (a number)"))
        })?),
    };
    read(&state, &id).await?;
    let ks = state.keyspace();
    let (kvs, _) = store::read_prefix(state.client(), &ks.events_prefix(&id)).await?;
    let events = kvs.iter().filter_map(|(key, value, _)| {
        let Ok(Key::Event(_, seq)) = ks.parse(key) else {
            return None;
        };
        decode::<Event>(key, value)
            .ok()
            .map(|event| EventInfo { seq, event })
    });
    let events = events.filter(|e| after.is_none_or(|a| e.seq > a));
    Ok(page
        .take(events, |e| e.seq.to_string())
        .answer(&format!("/v1/upgrades/{id}/events")))
}

/// `u-<version>-<yyyymmdd>-<hhmmss>` (UTC), or without the version if that is too long.
pub fn default_id(version: &str, now: &Timestamp) -> Option<UpgradeId> {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let date = digits(now.get(..10)?);
    let time = digits(now.get(11..19)?);
    UpgradeId::new(format!("u-{version}-{date}-{time}"))
        .or_else(|_| UpgradeId::new(format!("u-{date}-{time}")))
        .ok()
}

fn strategy_kind(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Rolling { .. } => "rolling",
        Strategy::AllAtOnce { .. } => "all-at-once",
        Strategy::DaisyChain => "daisy-chain",
    }
}

/// `, each batch soaks 30s (gates: …)` for the created event.
fn soak_summary(soak: &Soak) -> String {
    let gates: Vec<String> = soak.gates.iter().map(ToString::to_string).collect();
    if gates.is_empty() {
        format!(", each batch soaks {}", soak.duration)
    } else {
        format!(
            ", each batch soaks {} (gates: {})",
            soak.duration,
            gates.join("; ")
        )
    }
}

fn event(now: &Timestamp, kind: EventKind, message: String) -> Event {
    Event {
        schema_version: SCHEMA_VERSION,
        at: now.clone(),
        source: EVENT_SOURCE.to_owned(),
        host: None,
        kind,
        message,
    }
}

fn active_conflict(id: Option<String>) -> ApiError {
    ApiError::conflict(match id {
        Some(id) => format!(
            "upgrade {id} is active; wait for it to end or abort it (POST /v1/upgrades/{id}/abort)"
        ),
        None => "another upgrade is active".to_owned(),
    })
}

/// `POST /v1/upgrades`: 201 with the stored record; 4xx naming the field, 409 if an upgrade
/// is active, 503 on a follower.
#[utoipa::path(
    post,
    path = "/v1/upgrades",
    operation_id = "startUpgrade",
    tag = "upgrades",
    summary = "Start an upgrade: validated, the image resolved to a digest once, stored with the active key in one transaction",
    request_body = StartUpgrade,
    responses(
        (status = 201, description = "created", body = UpgradeInfo),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 502, response = BadGateway),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<StartUpgrade>,
) -> Result<(StatusCode, Json<UpgradeInfo>), ApiError> {
    let fence = state.require_leader().await?;
    // Everything that needs no Docker and no registry first.
    validate::image(&req.image)?;
    // Nothing is pulled from a registry that is not allowed.
    state.trust().check_registry("image", &req.image)?;
    let requested = validate::strategy(&req.strategy)?;
    let soak = validate::soak(&req, state.prometheus())?;
    let requested_id = req.id.as_deref().map(validate::upgrade_id).transpose()?;
    let ks = state.keyspace();
    let view = store::read_view(state.client(), ks, &[Part::Hosts]).await?;
    let specs = view.specs();
    let selected = validate::select(&req, &specs)?;
    let labels = selected
        .iter()
        .filter_map(|h| Some((h.clone(), specs.get(h)?.labels.clone())))
        .collect();
    // Checked with the request's own (or, for auto, its rolling) settings before the
    // registry is asked, planned again below once the bundle decided.
    plan::batches(requested.candidate(), &labels)?;
    if let Some(active) = store::read_active(state.client(), ks).await? {
        return Err(active_conflict(Some(active.value.upgrade_id.to_string())));
    }
    // The tag is resolved to a digest once; only the digest is stored.
    let resolved = state.resolver().resolve(&req.image).await?;
    let (signature, signed) = state.trust().verify(&resolved)?;
    if let Some(image) = &resolved.manifest.orchestrator_image {
        state
            .trust()
            .check_registry("the bundle's orchestrator_image", image)?;
    }
    let (strategy, strategy_reason) = requested.choose(&resolved.manifest)?;
    let mut plan = plan::batches(&strategy, &labels)?;
    if resolved.manifest.has_quorum_member() {
        plan = plan::one_at_a_time(plan);
    }
    let running = selected
        .iter()
        .filter_map(|h| {
            let installed = &view.hosts.get(h)?.installed.as_ref()?.value;
            Some((h.clone(), installed.bundle_version.clone()?))
        })
        .collect();
    validate::no_downgrade(
        req.allow_downgrade.unwrap_or(false),
        &resolved.manifest.version,
        &running,
    )?;
    let now = now();
    let id = match requested_id {
        Some(id) => id,
        None => default_id(&resolved.manifest.version, &now)
            .ok_or_else(|| ApiError::bad_request("id: cannot derive an id; give one"))?,
    };
    let mut upgrade = Upgrade {
        schema_version: SCHEMA_VERSION,
        id: id.clone(),
        bundle: resolved.pinned.clone(),
        version: resolved.manifest.version.clone(),
        strategy,
        strategy_reason,
        selector: req.selector.clone(),
        phase: UpgradePhase::Pending,
        paused_from: None,
        hosts: plan
            .into_iter()
            .map(|(host, batch)| {
                (
                    host,
                    HostOutcome {
                        state: HostOutcomeState::Pending,
                        reason: String::new(),
                        batch: Some(batch),
                        dispatched_at: None,
                        held_from: None,
                        previous: None,
                        revert: None,
                    },
                )
            })
            .collect(),
        reason: None,
        agent_version: Some(resolved.manifest.agent.version.clone()),
        phase_since: Some(now.clone()),
        canary_approved: false,
        events: 0,
        listed: req.hosts.is_some(),
        skip_paused: req.skip_paused.unwrap_or(false),
        allow_downgrade: req.allow_downgrade.unwrap_or(false),
        on_failure: req.on_failure.unwrap_or_default(),
        task: None,
        orchestrator: resolved.manifest.orchestrator_image.clone().map(|image| {
            OrchestratorUpdate {
                image,
                container: None,
                handed_over_at: None,
            }
        }),
        signature: Some(signature),
        created_at: now.clone(),
        updated_at: now.clone(),
        soak,
        waiting_for_window: None,
    };
    let created = event(
        &now,
        EventKind::Created,
        format!(
            "upgrade to {} (agent {}{}) of {} host(s), {}{}; bundle {} (requested as {}), signed by key {} until {}",
            upgrade.version,
            resolved.manifest.agent.version,
            match &upgrade.orchestrator {
                Some(o) => format!(", orchestrator {} first", o.image),
                None => String::new(),
            },
            upgrade.hosts.len(),
            match &upgrade.strategy_reason {
                Some(why) => format!("{} ({why})", strategy_kind(&upgrade.strategy)),
                None => strategy_kind(&upgrade.strategy).to_owned(),
            },
            match &upgrade.soak {
                Some(soak) => soak_summary(soak),
                None => String::new(),
            },
            upgrade.bundle,
            req.image,
            signed.key_id,
            signed.expires
        ),
    );
    let event_key = ks.event(&id, upgrade.events);
    upgrade.events += 1;
    let active = Active {
        schema_version: SCHEMA_VERSION,
        upgrade_id: id.clone(),
    };
    let ops = vec![
        store::put(&ks.active(), &active),
        store::put(&event_key, &created),
    ];
    match store::create_upgrade(state.client(), ks, &fence, &upgrade, ops).await? {
        Ok(_) => {
            tracing::info!(upgrade = %id, bundle = %upgrade.bundle, hosts = upgrade.hosts.len(), "upgrade created");
            Ok((StatusCode::CREATED, Json(UpgradeInfo::new(upgrade, true))))
        }
        Err(CreateRefused::Active(other)) => Err(active_conflict(other)),
        Err(CreateRefused::Exists) => Err(ApiError::conflict(format!(
            "id: upgrade {id} exists already; choose another id"
        ))),
        Err(CreateRefused::NotLeader) => Err(ApiError::unavailable(format!(
            "replica {} lost leadership while creating the upgrade; retry",
            state.replica()
        ))),
    }
}

async fn command(
    state: AppState,
    id: String,
    command: Command,
    body: Control,
) -> Result<Json<UpgradeInfo>, ApiError> {
    let fence = state.require_leader().await?;
    let id = path_upgrade(&id)?;
    let ks = state.keyspace();
    let key = ks.upgrade(&id);
    for _ in 0..store::WRITE_ATTEMPTS {
        let (current, layout) = read(&state, &id).await?;
        let now = now();
        let next = control::apply(&current.value, command, body.reason.as_deref(), &now)
            .map_err(|e| ApiError::conflict(format!("{}: {e}", command.name())))?;
        let Some(mut next) = next else {
            let active = active_id(&state).await?.as_ref() == Some(&id);
            return Ok(Json(UpgradeInfo::new(current.value, active)));
        };
        let message = format!(
            "{} -> {}: {}",
            current.value.phase,
            next.phase,
            next.reason
                .clone()
                .unwrap_or_else(|| format!("{}d by operator", command.name()))
        );
        let event_key = ks.event(&id, next.events);
        next.events += 1;
        let mut guards = vec![
            store::fence(&fence),
            store::unchanged(&key, current.mod_revision),
        ];
        let mut ops = etcd::upgrade_ops(ks, layout, Some(&current.value), &next);
        ops.push(store::put(
            &event_key,
            &event(&now, EventKind::Phase, message),
        ));
        if next.phase.is_terminal()
            && let Some(active) = store::read_active(state.client(), ks).await?
            && active.value.upgrade_id == id
        {
            guards.push(store::unchanged(&ks.active(), active.mod_revision));
            ops.push(TxnOp::delete(ks.active(), None));
        }
        match store::commit(state.client(), &key, guards, ops).await? {
            Written::At(_) => {
                tracing::info!(upgrade = %id, command = command.name(), phase = %next.phase, "upgrade command applied");
                let active = !next.phase.is_terminal();
                return Ok(Json(UpgradeInfo::new(next, active)));
            }
            Written::Conflict => {
                state.require_leader().await?;
            }
        }
    }
    Err(ApiError::conflict(format!(
        "{key} kept changing; retry the {}",
        command.name()
    )))
}

/// `POST /v1/upgrades/{id}/pause`.
#[utoipa::path(
    post,
    path = "/v1/upgrades/{id}/pause",
    operation_id = "pauseUpgrade",
    tag = "upgrades",
    summary = "Pause: in-flight hosts finish, nothing new starts",
    params(
        ("id" = String, Path, description = "upgrade id"),
    ),
    request_body = Control,
    responses(
        (status = 200, description = "the upgrade after the command", body = UpgradeInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Control>,
) -> Result<Json<UpgradeInfo>, ApiError> {
    command(state, id, Command::Pause, body).await
}

/// `POST /v1/upgrades/{id}/resume`.
#[utoipa::path(
    post,
    path = "/v1/upgrades/{id}/resume",
    operation_id = "resumeUpgrade",
    tag = "upgrades",
    summary = "Resume where it was paused (after canaries: approve them)",
    params(
        ("id" = String, Path, description = "upgrade id"),
    ),
    request_body = Control,
    responses(
        (status = 200, description = "the upgrade after the command", body = UpgradeInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Control>,
) -> Result<Json<UpgradeInfo>, ApiError> {
    command(state, id, Command::Resume, body).await
}

/// `POST /v1/upgrades/{id}/abort`.
#[utoipa::path(
    post,
    path = "/v1/upgrades/{id}/abort",
    operation_id = "abortUpgrade",
    tag = "upgrades",
    summary = "Abort: nothing new starts; the active key is cleared",
    params(
        ("id" = String, Path, description = "upgrade id"),
    ),
    request_body = Control,
    responses(
        (status = 200, description = "the upgrade after the command", body = UpgradeInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn abort(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Control>,
) -> Result<Json<UpgradeInfo>, ApiError> {
    command(state, id, Command::Abort, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_carry_version_and_time() {
        let now = "2026-11-21T23:30:05.123Z".to_owned();
        assert_eq!(
            default_id("2.0.0", &now).expect("id").as_str(),
            "u-2.0.0-20261121-233005"
        );
        let long = "1".repeat(48);
        assert_eq!(
            default_id(&long, &now).expect("id").as_str(),
            "u-20261121-233005"
        );
    }
}
