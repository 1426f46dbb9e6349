//! Who may call the REST API: every route declares an [`Access`] in the route table
//! ([`crate::api::ROUTES`]); a caller proves a role with a bearer token whose hash is stored
//! under `tokens/<name>` ([`token`]), or, with mutual TLS, with a client certificate whose
//! common name is such a token's name (the token's record gives the role). Checked on every
//! request against etcd, so a revoked token stops working at once, on every replica, for
//! the certificates naming it too.

pub mod token;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use baton_protocol::TokenName;
use baton_protocol::documents::{ApiRole, ApiToken};
use baton_protocol::etcd;

use crate::api::AppState;
use crate::api::error::ApiError;

pub use self::token::Token;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a credential: liveness and readiness probes (they reveal the version
    /// and the replica's role, nothing of the fleet).
    Anyone,
    /// A caller with at least this role.
    Role(ApiRole),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: ApiRole,
}

/// The common name of the client certificate a connection presented, verified against the
/// clients' CA (`--api-client-ca-file`) in the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertName(pub String);

/// What a refused caller is told to do.
const HOW: &str = "send Authorization: Bearer <token>, or a client certificate whose common name \
     is a token's name; an admin creates tokens with `batonctl token create`";

/// The caller of a request to a route with `access` (`None` for [`Access::Anyone`]), or
/// 401 (no valid credential) / 403 (a role too low), naming what is missing.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    certificate: Option<&ClientCertName>,
    access: Access,
    route: &str,
) -> Result<Option<Caller>, ApiError> {
    let Access::Role(needed) = access else {
        return Ok(None);
    };
    let caller = match (headers.get(AUTHORIZATION), certificate) {
        // A token, when sent, is what the caller chose to act as.
        (Some(_), _) | (None, None) => authenticate(state, headers).await?,
        (None, Some(cert)) => by_certificate(state, cert).await?,
    };
    if caller.role < needed {
        return Err(ApiError::forbidden(format!(
            "Authorization: token {} has role {}; {route} needs role {needed} or higher",
            caller.name, caller.role
        )));
    }
    Ok(Some(caller))
}

/// The caller a client certificate names: the token of its common name, or 401.
async fn by_certificate(state: &AppState, cert: &ClientCertName) -> Result<Caller, ApiError> {
    let unknown = || {
        ApiError::unauthorized(format!(
            "client certificate: its common name {:?} names no API token (or it was revoked); \
             an admin creates one with `batonctl token create {}`",
            cert.0, cert.0
        ))
    };
    let name = TokenName::new(&cert.0).map_err(|_| unknown())?;
    let stored = etcd::read::<ApiToken>(state.client(), &state.keyspace().token(&name))
        .await?
        .ok_or_else(unknown)?;
    Ok(Caller {
        name: name.to_string(),
        role: stored.value.role,
    })
}

/// The caller the request's bearer token names, or 401.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(format!(
            "Authorization: missing; {HOW}"
        )));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized(format!("Authorization: not a bearer token; {HOW}"))
        })?;
    let invalid = || {
        ApiError::unauthorized(format!(
            "Authorization: the token is not valid or was revoked; {HOW}"
        ))
    };
    let token = Token::parse(presented).ok_or_else(invalid)?;
    let key = state.keyspace().token(token.name());
    let stored = etcd::read::<ApiToken>(state.client(), &key)
        .await?
        .ok_or_else(invalid)?;
    if !token.matches(&stored.value) {
        return Err(invalid());
    }
    Ok(Caller {
        name: token.name().to_string(),
        role: stored.value.role,
    })
}
