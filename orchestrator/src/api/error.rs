//! The API's one error type: a status and a message naming what is wrong, answered as
//! `{"error": "<message>"}` (the protocol's [`ErrorBody`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton_protocol::api::ErrorBody;
use baton_protocol::etcd::EtcdError;

use crate::resolve::ResolveError;
use crate::validate::FieldError;

/// OpenAPI's description of the error answers, one reusable response per status.
pub mod responses {
    use baton_protocol::api::ErrorBody;
    use utoipa::ToResponse;

    /// The body is not JSON of the expected shape, or a path segment is not a valid name;
    /// the message names the field.
    #[derive(Debug, ToResponse)]
    pub struct BadRequest(pub ErrorBody);

    /// No valid credential: `Authorization: Bearer <token>` is missing, malformed, unknown or
    /// revoked.
    #[derive(Debug, ToResponse)]
    pub struct Unauthorized(pub ErrorBody);

    /// The token's role is too low for the route, or `Origin`/`Host` is not one the server
    /// was configured for.
    #[derive(Debug, ToResponse)]
    pub struct Forbidden(pub ErrorBody);

    /// The body is larger than the server accepts.
    #[derive(Debug, ToResponse)]
    pub struct TooLarge(pub ErrorBody);

    /// A write without `Content-Type: application/json`.
    #[derive(Debug, ToResponse)]
    pub struct UnsupportedMediaType(pub ErrorBody);

    /// No such host or upgrade.
    #[derive(Debug, ToResponse)]
    pub struct NotFound(pub ErrorBody);

    /// Conflicts with the current state (an upgrade is active; the command does not apply).
    #[derive(Debug, ToResponse)]
    pub struct Conflict(pub ErrorBody);

    /// A field's value is refused (bad image, unknown host, empty selection, bad batch…);
    /// the message names the field.
    #[derive(Debug, ToResponse)]
    pub struct Unprocessable(pub ErrorBody);

    /// The Docker Engine or the registry failed while resolving the bundle.
    #[derive(Debug, ToResponse)]
    pub struct BadGateway(pub ErrorBody);

    /// Not the leader (the message names it) or etcd unreachable.
    #[derive(Debug, ToResponse)]
    pub struct Unavailable(pub ErrorBody);
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the body is not a request of the expected shape.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no valid credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the caller may not do this, or the request comes from a place (`Origin`,
    /// `Host`) the server does not serve.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 422: the request is well formed but refused (an untrusted bundle, a registry not
    /// allowed).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 503: cannot serve this now (not the leader, etcd unreachable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "request failed");
        } else {
            tracing::info!(status = %self.status, error = %self.message, "request refused");
        }
        let status = self.status;
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"baton\""),
            );
        }
        response
    }
}

/// A field refused by validation: 422.
impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

/// etcd could not be reached or answered an error: 503.
impl From<EtcdError> for ApiError {
    fn from(e: EtcdError) -> Self {
        Self::unavailable(e.to_string())
    }
}

/// The image is refused (422, naming the `image` field) or Docker failed (502).
impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Refused { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, format!("image: {e}"))
            }
            ResolveError::Unavailable { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, format!("image: {e}"))
            }
        }
    }
}
