//! A small client of the REST API, used by `batonctl` and the tests: JSON in, JSON out (the
//! protocol's [`api`](baton_protocol::api) types); an error answer becomes
//! [`ClientError::Status`] carrying the status and the server's message.

use std::time::Duration;

use baton_protocol::api::{
    Command, Control, ErrorBody, EventInfo, HostInfo, RegisterHost, SetMaintenance, StartUpgrade,
    UpgradeInfo,
};
use baton_protocol::documents::{HostSpec, Maintenance};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default API address (`--api`, `BATON_API`).
pub const DEFAULT_API: &str = "http://127.0.0.1:7480";
/// Longest a request may take (creating an upgrade pulls the bundle).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API URL is not usable.
    #[error("API URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The request could not be made.
    #[error("{method} {url}: {reason}")]
    Request {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The API answered an error.
    #[error("{method} {url}: {status}: {message}")]
    Status {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The server's `error` message (or the body).
        message: String,
    },
    /// The request body could not be encoded.
    #[error("{method} {url}: encoding the request: {source}")]
    Encode {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The encoding error.
        source: serde_json::Error,
    },
    /// The answer is not what was expected.
    #[error("{method} {url}: unexpected answer: {source}")]
    Decode {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The status of an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Nothing answered (refused, reset, timed out): the API may come back (a restart, an
    /// orchestrator self-update's hand-over).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Request { .. })
    }

    /// The server's message of an error answer.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// A client of one orchestrator replica.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        let Some(rest) = base.strip_prefix("http://") else {
            return Err(ClientError::Url {
                url: base.to_owned(),
                reason: "must start with http://",
            });
        };
        if rest.is_empty() || rest.contains('/') {
            return Err(ClientError::Url {
                url: base.to_owned(),
                reason: "must be http://host:port",
            });
        }
        Ok(Self {
            base: base.to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; returns the status and body whatever the status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base);
        let fail = |reason: String| ClientError::Request {
            method: method.clone(),
            url: url.clone(),
            reason,
        };
        let mut builder = Request::builder().method(method.clone()).uri(&url);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| fail(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| fail(format!("{e} (is the orchestrator running there?)")))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, bytes.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))?
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.raw(method.clone(), path, body).await?;
        let url = format!("{}{path}", self.base);
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Status {
                method,
                url,
                status,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            method,
            url,
            source,
        })
    }

    fn encode<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(body).map_err(|source| ClientError::Encode {
            method,
            url: format!("{}{path}", self.base),
            source,
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = self.encode(Method::POST, path, body)?;
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = self.encode(Method::PUT, path, body)?;
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Result<Vec<HostInfo>, ClientError> {
        self.get("/v1/hosts").await
    }

    /// `GET /v1/hosts/{host}`.
    pub async fn host(&self, host: &str) -> Result<HostInfo, ClientError> {
        self.get(&format!("/v1/hosts/{host}")).await
    }

    /// `POST /v1/hosts`.
    pub async fn register(&self, req: &RegisterHost) -> Result<HostSpec, ClientError> {
        self.post("/v1/hosts", req).await
    }

    /// `PUT /v1/hosts/{host}/maintenance`.
    pub async fn host_maintenance(
        &self,
        host: &str,
        req: &SetMaintenance,
    ) -> Result<Maintenance, ClientError> {
        self.put(&format!("/v1/hosts/{host}/maintenance"), req)
            .await
    }

    /// `GET /v1/upgrades`.
    pub async fn upgrades(&self) -> Result<Vec<UpgradeInfo>, ClientError> {
        self.get("/v1/upgrades").await
    }

    /// `GET /v1/upgrades/{id}`.
    pub async fn upgrade(&self, id: &str) -> Result<UpgradeInfo, ClientError> {
        self.get(&format!("/v1/upgrades/{id}")).await
    }

    /// `GET /v1/upgrades/{id}/events`.
    pub async fn events(&self, id: &str) -> Result<Vec<EventInfo>, ClientError> {
        self.get(&format!("/v1/upgrades/{id}/events")).await
    }

    /// `POST /v1/upgrades`.
    pub async fn start(&self, req: &StartUpgrade) -> Result<UpgradeInfo, ClientError> {
        self.post("/v1/upgrades", req).await
    }

    /// `POST /v1/upgrades/{id}/pause|resume|abort`.
    pub async fn command(
        &self,
        id: &str,
        command: Command,
        reason: Option<String>,
    ) -> Result<UpgradeInfo, ClientError> {
        self.post(
            &format!("/v1/upgrades/{id}/{}", command.name()),
            &Control { reason },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls() {
        assert_eq!(
            ApiClient::new("http://127.0.0.1:7480/").expect("ok").base(),
            "http://127.0.0.1:7480"
        );
        for bad in ["https://x:1", "127.0.0.1:7480", "http://", "http://x:1/v1"] {
            assert!(ApiClient::new(bad).is_err(), "{bad}");
        }
    }
}
