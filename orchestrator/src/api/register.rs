//! `POST /v1/hosts`: register (or re-register) one host, or up to
//! [`MAX_BULK_REGISTRATIONS`] in one request. Every registration is checked before anything
//! is written — one refused: `422` naming its index and field (`[3].docker: …`), nothing
//! written; the specs are then written in transactions of [`CHUNK`] hosts, each guarded by
//! the leadership and by the revision each spec was read at.
//!
//! A registration reads nothing but the specs it names and changes nothing in etcd's users
//! and roles (the host's identity comes with its first downloader job, see
//! [`crate::identities`]), so its cost does not grow with the fleet. With the identities
//! managed, the specs are written through the administrative identity: the orchestrator's
//! everyday role may write a host's keys only once the host has its identity.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use baton_protocol::api::{
    MAX_BULK_REGISTRATIONS, RegisterAnswer, RegisterHost, RegisterHosts, Registered, RegisteredHost,
};
use baton_protocol::documents::{self, HostSpec, now};
use baton_protocol::etcd::{Client, EtcdError};
use baton_protocol::{HostId, HostKey};
use etcd_client::{Txn, TxnOp, TxnOpResponse};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{BadRequest, Conflict, TooLarge, Unavailable, Unprocessable};
use crate::api::json::{self, ApiJson};
use crate::store::{self, Written};
use crate::validate;

/// Hosts per transaction: a guard and a write each, within etcd's 128 operations.
pub const CHUNK: usize = 100;

/// `POST /v1/hosts`: one registration (`201` registered, `200` updated or already so, with
/// the spec), or an array of them (`200` with each host's outcome, in order).
#[utoipa::path(
    post,
    path = "/v1/hosts",
    operation_id = "registerHost",
    tag = "hosts",
    summary = "Register (or update) a host, or up to 1,000 hosts in one request (all checked first; one refused: none written)",
    request_body = RegisterHosts,
    responses(
        (status = 201, description = "one host, registered", body = HostSpec),
        (status = 200, description = "one host updated or already so (its spec), or, for an array, each host's outcome in the request's order", body = RegisterAnswer),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<RegisterAnswer>), ApiError> {
    let (requests, many) = match body {
        serde_json::Value::Array(items) => {
            if items.len() > MAX_BULK_REGISTRATIONS {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body: {} registrations; at most {MAX_BULK_REGISTRATIONS} in one request",
                        items.len()
                    ),
                ));
            }
            let requests: Vec<RegisterHost> = json::typed(serde_json::Value::Array(items))?;
            (requests, true)
        }
        one => (vec![json::typed::<RegisterHost>(one)?], false),
    };
    let specs = check(&state, &requests, many)?;
    let fence = state.require_leader().await?;
    let writer = match state.identities() {
        Some(identities) => identities.admin().await?,
        None => state.client().clone(),
    };
    let mut answers = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(CHUNK) {
        let written = write_chunk(&state, &writer, &fence, chunk).await;
        if let (Err(_), Some(identities)) = (&written, state.identities()) {
            // The administrative session may be what failed.
            identities.forget().await;
        }
        answers.extend(written?);
    }
    if many {
        return Ok((StatusCode::OK, Json(RegisterAnswer::Many(answers))));
    }
    let Some(one) = answers.pop() else {
        return Err(ApiError::unprocessable("request body: nothing registered"));
    };
    let status = if one.outcome == Registered::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(RegisterAnswer::One(one.spec))))
}

/// Every registration checked (a field of item `i` of an array is named `[i].field`), and no
/// host named twice.
fn check(
    state: &AppState,
    requests: &[RegisterHost],
    many: bool,
) -> Result<Vec<HostSpec>, ApiError> {
    let at = now();
    let mut seen: BTreeMap<HostId, usize> = BTreeMap::new();
    let mut specs = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        let spec = validate::host_spec(req, state.hosts(), at.clone()).map_err(|mut e| {
            if many {
                e.field = format!("[{i}].{}", e.field);
            }
            e
        })?;
        if let Some(first) = seen.insert(spec.host.clone(), i) {
            return Err(ApiError::unprocessable(format!(
                "[{i}].id: {} is registered by [{first}] already in this request",
                spec.host
            )));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Writes one chunk's specs (each `registered_at` kept from a spec already stored), retried
/// from a fresh read when one changed meanwhile.
async fn write_chunk(
    state: &AppState,
    writer: &Client,
    fence: &str,
    specs: &[HostSpec],
) -> Result<Vec<RegisteredHost>, ApiError> {
    let ks = state.keyspace();
    let keys: Vec<String> = specs
        .iter()
        .map(|s| ks.host(&s.host, HostKey::Spec))
        .collect();
    for _ in 0..store::WRITE_ATTEMPTS {
        let existing = read_specs(state.client(), &keys).await?;
        let mut guards = vec![store::fence(fence)];
        let mut ops = Vec::new();
        let mut answers = Vec::with_capacity(specs.len());
        let mut demoted = Vec::new();
        for ((spec, key), existing) in specs.iter().zip(&keys).zip(existing) {
            let mut spec = spec.clone();
            let outcome = match existing {
                Some((stored, revision)) => {
                    spec.registered_at.clone_from(&stored.registered_at);
                    if stored.quorum_member && !spec.quorum_member {
                        demoted.push(spec.host.clone());
                    }
                    if stored == spec {
                        Registered::Unchanged
                    } else {
                        guards.push(store::unchanged(key, revision));
                        ops.push(store::put(key, &spec));
                        Registered::Updated
                    }
                }
                None => {
                    guards.push(store::unchanged(key, 0));
                    ops.push(store::put(key, &spec));
                    Registered::Created
                }
            };
            answers.push(RegisteredHost { outcome, spec });
        }
        if ops.is_empty() {
            return Ok(answers);
        }
        // A host no longer running a member of the cluster loses its maintenance user (etcd's
        // `root` role) first: it must not outlive the registration that says so.
        if let Some(identities) = state.identities() {
            for host in &demoted {
                identities.remove_maintenance(host).await?;
            }
        }
        let first = keys.first().map_or("", String::as_str);
        match store::commit(writer, first, guards, ops).await? {
            Written::At(_) => {
                for a in answers
                    .iter()
                    .filter(|a| a.outcome != Registered::Unchanged)
                {
                    tracing::info!(host = %a.spec.host, docker = %a.spec.docker, outcome = ?a.outcome, "host registered");
                }
                return Ok(answers);
            }
            Written::Conflict => {
                state.require_leader().await?;
            }
        }
    }
    Err(ApiError::conflict(format!(
        "{} kept changing during the registration; retry",
        keys.join(", ")
    )))
}

/// The specs stored under `keys` (at most [`CHUNK`]), with their revisions, in one
/// transaction of reads.
async fn read_specs(
    client: &Client,
    keys: &[String],
) -> Result<Vec<Option<(HostSpec, i64)>>, EtcdError> {
    let first = keys.first().map_or("", String::as_str);
    let txn = Txn::new().and_then(
        keys.iter()
            .map(|k| TxnOp::get(k.as_str(), None))
            .collect::<Vec<_>>(),
    );
    let resp = baton_protocol::etcd::retry_auth_race(|| {
        let (mut kv, txn) = (client.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(|source| EtcdError::Request {
        op: "txn",
        key: first.to_owned(),
        source,
    })?;
    let mut out = Vec::with_capacity(keys.len());
    for (key, op) in keys.iter().zip(resp.op_responses()) {
        let found = match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
            _ => None,
        };
        out.push(match found {
            Some((bytes, revision)) => {
                Some((documents::decode::<HostSpec>(key, &bytes)?, revision))
            }
            None => None,
        });
    }
    Ok(out)
}
