//! A small client of the REST API, used by `batonctl` and the tests: JSON in, JSON out (the
//! protocol's [`api`](baton_protocol::api) types); an error answer becomes
//! [`ClientError::Status`] carrying the status and the server's message. It speaks https
//! (checking the server against a CA file, or the system's roots) and plain http, and sends
//! a bearer token when it has one; the token never appears in its `Debug` output or errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_protocol::api::{
    Command, Control, CreateToken, CreatedToken, ErrorBody, EventInfo, Health, HostInfo,
    RegisterHost, RegisteredHost, SetMaintenance, SetWindows, StartUpgrade, TokenInfo, UpgradeInfo,
};
use baton_protocol::documents::{HostSpec, Maintenance, Windows};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, LINK};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default API address (`--api`, `BATON_API`).
pub const DEFAULT_API: &str = "https://127.0.0.1:7480";
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
    /// A file named by a flag could not be used.
    #[error("{flag} {path}: {reason}")]
    File {
        /// The flag (`--ca-file`, `--token-file`).
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
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

/// How a client proves itself and checks the server.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The bearer token sent with every request.
    pub token: Option<String>,
    /// CA certificate (PEM) the server's certificate must chain to [default: the system's
    /// roots].
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM) to present (mutual TLS): the server takes its
    /// common name as the name of the token whose role the client gets.
    pub client_cert: Option<ClientCertFiles>,
}

/// A client certificate chain and its private key, in PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// The key.
    pub key_file: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

impl Credentials {
    /// A token read from `path` (surrounding whitespace trimmed).
    pub fn read_token(path: &Path) -> Result<String, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClientError::File {
            flag: "--token-file",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ClientError::File {
                flag: "--token-file",
                path: path.to_owned(),
                reason: "is empty".to_owned(),
            });
        }
        Ok(token.to_owned())
    }
}

/// A client of one orchestrator replica.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// TLS settings: the CA file's certificates, else the system's roots; none for a plain
/// `http://` client (which never uses them).
fn tls_config(
    https: bool,
    ca_file: Option<&Path>,
    client_cert: Option<&ClientCertFiles>,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let file_error = |path: &Path, reason: String| ClientError::File {
        flag: "--ca-file",
        path: path.to_owned(),
        reason,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| ClientError::Url {
            url: String::new(),
            reason: "TLS: the crypto provider offers no protocol version",
        })?;
    if !https {
        return Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth());
    }
    let builder = match ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|e| file_error(path, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| file_error(path, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(file_error(path, "holds no PEM certificate".to_owned()));
            }
            builder.with_root_certificates(roots)
        }
        None => builder.with_native_roots().map_err(|e| ClientError::File {
            flag: "--ca-file",
            path: PathBuf::from("(system roots)"),
            reason: format!("{e}; give the API's CA with --ca-file"),
        })?,
    };
    let Some(files) = client_cert else {
        return Ok(builder.with_no_client_auth());
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_error = |reason: String| ClientError::File {
        flag: "--client-cert-file",
        path: files.cert_file.clone(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("holds no PEM certificate".to_owned()));
    }
    let key_error = |reason: String| ClientError::File {
        flag: "--client-key-file",
        path: files.key_file.clone(),
        reason,
    };
    let key =
        PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| key_error(e.to_string()))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| key_error(format!("does not go with the certificate: {e}")))
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`) without credentials.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        Self::with(base, &Credentials::default())
    }

    /// A client of the API at `base` (`https://host:port`, or `http://` on loopback) with
    /// `credentials`.
    pub fn with(base: &str, credentials: &Credentials) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        let (https, rest) = if let Some(rest) = base.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = base.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(ClientError::Url {
                url: base.to_owned(),
                reason: "must start with https:// (or http://)",
            });
        };
        if rest.is_empty() || rest.contains('/') {
            return Err(ClientError::Url {
                url: base.to_owned(),
                reason: "must be https://host:port",
            });
        }
        let tls = tls_config(
            https,
            credentials.ca_file.as_deref(),
            credentials.client_cert.as_ref(),
        )?;
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let authorization = match &credentials.token {
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        ClientError::Url {
                            url: base.to_owned(),
                            reason: "the token holds characters a header cannot carry",
                        }
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            base: base.to_owned(),
            http: Client::builder(TokioExecutor::new()).build(connector),
            authorization,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with this client's token and, with a body, `Content-Type:
    /// application/json`; returns the status and body whatever the status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let json = [("content-type", "application/json")];
        let headers: &[(&str, &str)] = if body.is_some() || method != Method::GET {
            &json
        } else {
            &[]
        };
        self.send(method, path, headers, body).await
    }

    /// Sends a request with this client's token and exactly `headers` besides (no
    /// `Content-Type` unless given); returns the status and body whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let (status, _, body) = self.exchange(method, path, headers, body).await?;
        Ok((status, body))
    }

    /// [`send`](Self::send), with the answer's headers.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base);
        let fail = |reason: String| ClientError::Request {
            method: method.clone(),
            url: url.clone(),
            reason,
        };
        let mut builder = Request::builder().method(method.clone()).uri(&url);
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| fail(e.to_string()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                // The connector's error says why (refused, certificate not trusted…).
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason = format!("{reason}: {s}");
                    source = s.source();
                }
                fail(format!("{reason} (is the orchestrator running there?)"))
            })?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, headers, bytes.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))?
    }

    /// A `GET` of an answer that may never end (`GET /v1/stream`): its status and what of
    /// its body arrived until the first message is complete (a blank line) or `wait` passed,
    /// whichever is first; the connection is then dropped. A finite answer is read whole.
    pub async fn first(
        &self,
        path: &str,
        wait: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base);
        let fail = |reason: String| ClientError::Request {
            method: Method::GET,
            url: url.clone(),
            reason,
        };
        let mut builder = Request::builder().method(Method::GET).uri(&url);
        if let Some(auth) = &self.authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| fail(e.to_string()))?;
        let response = tokio::time::timeout(wait, self.http.request(request))
            .await
            .map_err(|_| fail(format!("no answer within {wait:?}")))?
            .map_err(|e| fail(format!("{e} (is the orchestrator running there?)")))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut read = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while !read.windows(2).any(|w| w == b"\n\n") {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(frame)) => frame.map_err(|e| fail(format!("reading the answer: {e}")))?,
                Ok(None) | Err(_) => break,
            };
            if let Ok(data) = frame.into_data() {
                read.extend_from_slice(&data);
            }
        }
        Ok((status, read))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        Ok(self.call_paged(method, path, body).await?.0)
    }

    /// [`call`](Self::call), with the next page's path from the answer's `Link` header.
    async fn call_paged<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(T, Option<String>), ClientError> {
        let json = [("content-type", "application/json")];
        let headers: &[(&str, &str)] = if body.is_some() || method != Method::GET {
            &json
        } else {
            &[]
        };
        let (status, answer_headers, bytes) =
            self.exchange(method.clone(), path, headers, body).await?;
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
        let value = serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            method,
            url,
            source,
        })?;
        Ok((value, next_page(&answer_headers)))
    }

    /// One page of a list, and the path of the next one if there is one.
    pub async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(Vec<T>, Option<String>), ClientError> {
        self.call_paged(Method::GET, path, None).await
    }

    /// Every item of a list, following its pages.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(page) = next {
            let (mut got, after) = self.page(&page).await?;
            items.append(&mut got);
            next = after;
        }
        Ok(items)
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

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None).await
    }

    /// `POST /v1/tokens`: the new token, shown this once.
    pub async fn create_token(&self, req: &CreateToken) -> Result<CreatedToken, ClientError> {
        self.post("/v1/tokens", req).await
    }

    /// `GET /v1/tokens`.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.list("/v1/tokens").await
    }

    /// `DELETE /v1/tokens/{name}`.
    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfo, ClientError> {
        self.delete(&format!("/v1/tokens/{name}")).await
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Result<Vec<HostInfo>, ClientError> {
        self.list("/v1/hosts").await
    }

    /// `GET /v1/hosts/{host}`.
    pub async fn host(&self, host: &str) -> Result<HostInfo, ClientError> {
        self.get(&format!("/v1/hosts/{host}")).await
    }

    /// `POST /v1/hosts`.
    pub async fn register(&self, req: &RegisterHost) -> Result<HostSpec, ClientError> {
        self.post("/v1/hosts", req).await
    }

    /// `POST /v1/hosts` with many registrations (at most
    /// [`baton_protocol::api::MAX_BULK_REGISTRATIONS`]): all of them, or none.
    pub async fn register_many(
        &self,
        reqs: &[RegisterHost],
    ) -> Result<Vec<RegisteredHost>, ClientError> {
        self.post("/v1/hosts", &reqs).await
    }

    /// `PUT /v1/groups/{group}/maintenance`.
    pub async fn group_maintenance(
        &self,
        group: &str,
        req: &SetMaintenance,
    ) -> Result<Maintenance, ClientError> {
        self.put(&format!("/v1/groups/{group}/maintenance"), req)
            .await
    }

    /// `/v1/window` (the fleet's) or `/v1/groups/{group}/window`.
    fn window_path(group: Option<&str>) -> String {
        match group {
            Some(g) => format!("/v1/groups/{g}/window"),
            None => "/v1/window".to_owned(),
        }
    }

    /// `GET` the fleet's or a group's maintenance windows.
    pub async fn windows(&self, group: Option<&str>) -> Result<Windows, ClientError> {
        self.get(&Self::window_path(group)).await
    }

    /// `PUT` the fleet's or a group's maintenance windows.
    pub async fn set_windows(
        &self,
        group: Option<&str>,
        req: &SetWindows,
    ) -> Result<Windows, ClientError> {
        self.put(&Self::window_path(group), req).await
    }

    /// `DELETE` the fleet's or a group's maintenance windows (the removed ones).
    pub async fn clear_windows(&self, group: Option<&str>) -> Result<Windows, ClientError> {
        self.delete(&Self::window_path(group)).await
    }

    /// `GET /healthz`: the answering orchestrator's version, name and role.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/healthz").await
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
        self.list("/v1/upgrades").await
    }

    /// `GET /v1/upgrades/{id}`.
    pub async fn upgrade(&self, id: &str) -> Result<UpgradeInfo, ClientError> {
        self.get(&format!("/v1/upgrades/{id}")).await
    }

    /// `GET /v1/upgrades/{id}/events`.
    pub async fn events(&self, id: &str) -> Result<Vec<EventInfo>, ClientError> {
        self.list(&format!("/v1/upgrades/{id}/events")).await
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

/// The path of the next page a list's `Link` header names (`<path>; rel="next"`, RFC 8288).
/// Only a path on the same server is followed: the client's token goes nowhere else.
fn next_page(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let is_next = params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
            let path = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            (is_next && path.starts_with('/') && !path.starts_with("//")).then(|| path.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_next_link_to_the_same_server_is_followed() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(LINK, HeaderValue::from_str(v).expect("header"));
            h
        };
        assert_eq!(
            next_page(&headers("</v1/hosts?limit=2&after=h2>; rel=\"next\"")),
            Some("/v1/hosts?limit=2&after=h2".to_owned())
        );
        assert_eq!(
            next_page(&headers("</a>; rel=\"prev\", </b>; rel=\"next\"")),
            Some("/b".to_owned())
        );
        for elsewhere in [
            "<https://evil.example/v1/hosts>; rel=\"next\"",
            "<//evil/x>; rel=\"next\"",
        ] {
            assert_eq!(next_page(&headers(elsewhere)), None, "{elsewhere}");
        }
        assert_eq!(next_page(&HeaderMap::new()), None);
    }

    #[test]
    fn base_urls_are_scheme_host_port() {
        assert_eq!(
            ApiClient::new("http://127.0.0.1:7480/").expect("ok").base(),
            "http://127.0.0.1:7480"
        );
        for bad in ["ftp://x:1", "127.0.0.1:7480", "http://", "https://x:1/v1"] {
            assert!(ApiClient::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_never_shows() {
        let secret = format!("baton_ci_{}", "a".repeat(64));
        let credentials = Credentials {
            token: Some(secret.clone()),
            ca_file: None,
            client_cert: None,
        };
        let client = ApiClient::with("http://127.0.0.1:1", &credentials).expect("client");
        assert!(!format!("{client:?}").contains(&secret));
        assert!(!format!("{credentials:?}").contains(&secret));
    }
}
