//! Request bodies: JSON read with the path of the field at fault in every error, so a wrong
//! type deep inside (`strategy.batch.count: invalid type: string "x", expected i64`) or an
//! unknown field (`strategy.bogus: unknown field "bogus"`) says where it is. An empty body, or
//! `null`, reads as `{}` (commands without arguments).

use axum::async_trait;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;
use crate::api::gate;

/// Time a client has to send a request's body once its header arrived.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Parses a request body.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let trimmed = bytes.trim_ascii();
    let text: &[u8] = if trimmed.is_empty() || trimmed == b"null" {
        b"{}"
    } else {
        bytes
    };
    let value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    typed(value)
}

/// Reads a JSON value as `T` (whole numbers written with a fraction read as integers), the
/// path of the field at fault in the error (`[3].docker` in an array).
pub fn typed<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<T, ApiError> {
    integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("request body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// JSON has one number type: `2.0` is the integer 2 to JSON Schema (and so to the OpenAPI
/// document), so a whole number written with a fraction reads as an integer.
fn integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| is below 2^53.
                #[allow(clippy::cast_possible_truncation)]
                let whole = f as i64;
                *value = serde_json::Value::from(whole);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integers),
        _ => {}
    }
}

#[async_trait]
impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<gate::BodyLimit>()
            .map_or(gate::MAX_BODY, |l| l.0);
        let read = Bytes::from_request(req, state);
        let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, read)
            .await
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "request body: not received within {}s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| {
                // Past the size limit (a body that did not declare its length): 413.
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    gate::too_large(limit as u64 + 1, limit)
                } else {
                    ApiError::bad_request(format!("request body: {e}"))
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_protocol::api::{Control, RegisterHost, StartUpgrade};

    fn refusal<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        let err = parse::<T>(body.as_bytes()).expect_err(body);
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
        err.message
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("{\"image\": ", "malformed JSON"),
            ("not json", "malformed JSON"),
            (
                "{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\"}} {}",
                "malformed JSON: trailing characters",
            ),
            (
                "{\"strategy\":{\"kind\":\"rolling\"}}",
                "missing field `image`",
            ),
            (
                "{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\",\"bogus\":1}}",
                "strategy.bogus: unknown field `bogus`",
            ),
            (
                "{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\"},\"extra\":1}",
                "extra: unknown field `extra`",
            ),
            (
                "{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\",\"batch\":{\"count\":\"two\"}}}",
                "strategy.batch.count: invalid type",
            ),
            (
                "{\"image\":\"x\",\"strategy\":{\"kind\":\"sideways\"}}",
                "strategy.kind: unknown variant `sideways`",
            ),
            (
                "{\"image\":7,\"strategy\":{\"kind\":\"rolling\"}}",
                "image: invalid type",
            ),
            (
                "{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\"},\"on_failure\":\"rollback\"}",
                "on_failure: unknown variant `rollback`",
            ),
        ];
        for (body, want) in cases {
            let message = refusal::<StartUpgrade>(body);
            assert!(message.contains(want), "{body}: {message}");
        }
        let start: StartUpgrade = parse(
            b"{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\",\"canary\":2.0,\"batch\":{\"count\":1e0}}}",
        )
        .expect("whole numbers with a fraction are integers");
        assert_eq!(start.strategy.canary, Some(2));
        let message = refusal::<StartUpgrade>(
            "{\"image\":\"x\",\"strategy\":{\"kind\":\"rolling\",\"canary\":2.5}}",
        );
        assert!(
            message.starts_with("strategy.canary: invalid type"),
            "{message}"
        );
        let message = refusal::<RegisterHost>("{\"id\":\"h\",\"docker\":\"x\",\"labels\":[]}");
        assert!(message.starts_with("labels: invalid type"), "{message}");
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        let c: Control = parse(b"").expect("empty");
        assert_eq!(c.reason, None);
        let c: Control = parse(b" null ").expect("null");
        assert_eq!(c.reason, None);
    }
}
