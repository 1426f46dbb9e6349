//! Request bodies: JSON read with the path of the field at fault in every error, so a wrong
//! type deep inside (`strategy.batch.count: invalid type: string "x", expected i64`) or an
//! unknown field (`strategy.bogus: unknown field "bogus"`) says where it is. An empty body reads
//! as `{}` (commands without arguments).

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
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("request body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

#[async_trait]
impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
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
                    gate::too_large(gate::MAX_BODY as u64 + 1)
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
        ];
        for (body, want) in cases {
            let message = refusal::<StartUpgrade>(body);
            assert!(message.contains(want), "{body}: {message}");
        }
        let message = refusal::<RegisterHost>("{\"id\":\"h\",\"docker\":\"x\",\"labels\":[]}");
        assert!(message.starts_with("labels: invalid type"), "{message}");
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        let c: Control = parse(b"").expect("empty");
        assert_eq!(c.reason, None);
    }
}
