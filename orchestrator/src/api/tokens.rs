//! `POST /v1/tokens` (create: the only answer that shows a token), `GET /v1/tokens` (names,
//! roles and creation times, never a secret) and `DELETE /v1/tokens/{name}` (revoke: it
//! stops working at once, on every replica). Admin only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use baton_protocol::TokenName;
use baton_protocol::api::{CreateToken, CreatedToken, TokenInfo};
use baton_protocol::documents::{ApiToken, decode};
use baton_protocol::etcd;
use etcd_client::TxnOp;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{BadRequest, Conflict, NotFound, Unavailable};
use crate::api::json::ApiJson;
use crate::api::page::{NamedPage, PageQuery, Paged};
use crate::auth::Token;
use crate::store::{self, Written};

fn token_name(field: &str, name: &str) -> Result<TokenName, ApiError> {
    TokenName::new(name).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

/// `GET /v1/tokens`: every token, by name, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    summary = "Every API token: name, role, creation time (never the token), in pages",
    params(NamedPage),
    responses(
        (status = 200, description = "tokens by name", body = Vec<TokenInfo>,
            headers(("Link" = String, description = "the next page, while there is one"))),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    page: PageQuery,
) -> Result<Paged<TokenInfo>, ApiError> {
    let (kvs, _) = store::read_prefix(state.client(), &state.keyspace().tokens_prefix()).await?;
    let tokens = kvs
        .iter()
        .filter_map(|(key, value, _)| match decode::<ApiToken>(key, value) {
            Ok(t) => Some(TokenInfo::from(&t)),
            Err(error) => {
                tracing::warn!(%error, "skipping an unreadable token record");
                None
            }
        });
    let tokens = page.after_key(tokens, |t| t.name.as_str());
    Ok(page
        .take(tokens, |t| t.name.to_string())
        .answer("/v1/tokens"))
}

/// `POST /v1/tokens`: 201 with the token, shown this once; 409 if the name is taken.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "createToken",
    tag = "tokens",
    summary = "Create an API token; the answer is the only place the token is ever shown",
    request_body = CreateToken,
    responses(
        (status = 201, description = "created", body = CreatedToken),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = token_name("name", &req.name)?;
    let fence = state.require_leader().await?;
    let token = Token::generate(name.clone());
    let record = token.record(req.role);
    let key = state.keyspace().token(&name);
    let written = store::commit(
        state.client(),
        &key,
        vec![store::fence(&fence), store::unchanged(&key, 0)],
        vec![store::put(&key, &record)],
    )
    .await?;
    match written {
        Written::At(_) => {
            tracing::info!(token = %name, role = %req.role, "API token created");
            Ok((
                StatusCode::CREATED,
                Json(CreatedToken {
                    info: TokenInfo::from(&record),
                    token: token.expose().to_owned(),
                }),
            ))
        }
        Written::Conflict => {
            state.require_leader().await?;
            Err(ApiError::conflict(format!(
                "name: token {name} exists already; revoke it first (DELETE /v1/tokens/{name}) or choose another name"
            )))
        }
    }
}

/// `DELETE /v1/tokens/{name}`: the revoked token's record; 404 if there is none.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    operation_id = "revokeToken",
    tag = "tokens",
    summary = "Revoke an API token: it stops working at once",
    params(
        ("name" = String, Path, description = "token name"),
    ),
    responses(
        (status = 200, description = "revoked", body = TokenInfo),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let name = token_name("name", &name)?;
    let fence = state.require_leader().await?;
    let key = state.keyspace().token(&name);
    for _ in 0..store::WRITE_ATTEMPTS {
        let Some(current) = etcd::read::<ApiToken>(state.client(), &key).await? else {
            return Err(ApiError::not_found(format!(
                "token {name} does not exist (no {key}); see GET /v1/tokens"
            )));
        };
        let written = store::commit(
            state.client(),
            &key,
            vec![
                store::fence(&fence),
                store::unchanged(&key, current.mod_revision),
            ],
            vec![TxnOp::delete(key.as_str(), None)],
        )
        .await?;
        match written {
            Written::At(_) => {
                tracing::info!(token = %name, "API token revoked");
                return Ok(Json(TokenInfo::from(&current.value)));
            }
            Written::Conflict => {
                state.require_leader().await?;
            }
        }
    }
    Err(ApiError::conflict(format!("{key} kept changing; retry")))
}
