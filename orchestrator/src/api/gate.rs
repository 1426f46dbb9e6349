//! The checks every routed request passes before its handler, cheapest first, so a refused
//! request reaches no handler and writes nothing:
//!
//! 1. `Host` must be one the server answers to, and `Origin`, when a browser sends one, the
//!    server's own (`<scheme>://<Host>`: the fleet page, [`crate::web`], served from the same
//!    address) or one it was configured for (403): a web page elsewhere cannot reach the API
//!    through DNS rebinding or a cross-site form;
//! 2. a request with a body (POST, PUT, PATCH) must say `Content-Type: application/json`
//!    (415): the content types a browser may send cross-site without asking first are
//!    refused (a DELETE carries no body, and no browser sends one cross-site without a
//!    preflight, which this server never approves);
//! 3. a declared body larger than [`MAX_BODY`] is refused at once (413; a body that does not
//!    declare its length is cut at the same size while it is read);
//! 4. the route's [`Access`]: a valid bearer token, or a client certificate naming one, with
//!    a high enough role (401, 403).
//!
//! Routes open to anyone (`/healthz`, `/readyz`) skip all four: probes send whatever `Host`
//! their platform uses.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::{self, Access, ClientCertName};

/// Largest request body accepted: the largest request (an upgrade naming a few thousand
/// hosts) is far smaller, and etcd refuses values above 1.5 MiB.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest body of a bulk host registration (`POST /v1/hosts` with up to 1,000 hosts).
pub const MAX_BULK_BODY: usize = 1024 * 1024;

/// The body limit of the route a request is for (set by [`check`] for the body extractor's
/// 413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// Where requests may come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPolicy {
    /// `https`, or `http` (plain HTTP on loopback): the scheme of the server's own origin.
    pub scheme: &'static str,
    /// `Host` values served, lowercase `host:port` (and `host` alone).
    pub hosts: Vec<String>,
    /// `Origin` values accepted, lowercase `scheme://host[:port]`; none by default.
    pub origins: Vec<String>,
}

impl WebPolicy {
    /// The policy of a server serving `scheme` on `addr`, announced as `advertise`, also
    /// answering to `hosts` and to browsers from `origins`. A server on a loopback or
    /// unspecified address answers to its loopback names (`127.0.0.1:port`, `localhost:port`,
    /// `[::1]:port`); one on a specific address to that address.
    pub fn new(
        scheme: &'static str,
        addr: std::net::SocketAddr,
        advertise: Option<&str>,
        hosts: &[String],
        origins: &[String],
    ) -> Self {
        let port = addr.port();
        let mut allowed = Vec::new();
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            allowed.extend([
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ]);
        } else {
            allowed.push(addr.to_string());
        }
        if let Some(url) = advertise {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let authority = rest.split('/').next().unwrap_or(rest);
            allowed.push(authority.to_owned());
        }
        allowed.extend(hosts.iter().cloned());
        let mut hosts: Vec<String> = allowed.iter().map(|h| h.to_ascii_lowercase()).collect();
        hosts.sort();
        hosts.dedup();
        Self {
            scheme,
            hosts,
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether a request to `host` (already allowed) may come from `origin`: the server's
    /// own origin, or a configured one.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let own = format!("{}://{}", self.scheme, host.to_ascii_lowercase());
        origin == own || self.origins.contains(&origin)
    }
}

/// One route's gate: the shared state, the route's access and its name for messages.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The shared state (etcd for tokens, the web policy).
    pub state: AppState,
    /// Who may call the route.
    pub access: Access,
    /// `METHOD /path`, for messages.
    pub route: String,
    /// The largest body it takes.
    pub max_body: usize,
}

/// The middleware: the four checks, then the handler.
pub async fn check(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    if gate.access == Access::Anyone {
        return next.run(request).await;
    }
    request.extensions_mut().insert(BodyLimit(gate.max_body));
    if let Err(e) = web(
        gate.state.web(),
        request.method(),
        request.headers(),
        gate.max_body,
    ) {
        return e.into_response();
    }
    let certificate = request.extensions().get::<ClientCertName>();
    let authorized = auth::authorize(
        &gate.state,
        request.headers(),
        certificate,
        gate.access,
        &gate.route,
    );
    match authorized.await {
        Ok(caller) => {
            // Who changed what: the log names the token of every write.
            if let Some(caller) = caller
                && request.method() != Method::GET
            {
                tracing::info!(token = %caller.name, role = %caller.role, route = %gate.route, path = %request.uri().path(), "API write");
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Checks 1 to 3.
pub fn web(
    policy: &WebPolicy,
    method: &Method,
    headers: &HeaderMap,
    max_body: usize,
) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::forbidden("Host: missing; send the server's host:port"))?;
    if !policy.host_allowed(host) {
        return Err(ApiError::forbidden(format!(
            "Host: {host:?} is not served here; call the API by its configured address (--advertise, --api-allowed-host)"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !policy.origin_allowed(origin, host) {
            return Err(ApiError::forbidden(format!(
                "Origin: {origin:?} is not allowed; browsers may only call the API from its own page or an origin given with --api-allowed-origin"
            )));
        }
    }
    if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type: {content_type:?}; a {method} must send Content-Type: application/json"
                ),
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > max_body as u64
    {
        return Err(too_large(length, max_body));
    }
    Ok(())
}

/// 413 naming the limit.
pub fn too_large(length: u64, limit: usize) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body: {length} bytes or more; the limit is {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy() -> WebPolicy {
        WebPolicy {
            scheme: "https",
            hosts: vec!["127.0.0.1:7480".into(), "baton.example:7480".into()],
            origins: vec!["https://ui.example".into()],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn status(method: Method, pairs: &[(&'static str, &str)]) -> u16 {
        match web(&policy(), &method, &headers(pairs), MAX_BODY) {
            Ok(()) => 200,
            Err(e) => e.status.as_u16(),
        }
    }

    #[test]
    fn a_server_answers_to_its_names() {
        let p = WebPolicy::new(
            "https",
            "0.0.0.0:7480".parse().expect("addr"),
            Some("https://Orch-1.example:7480/"),
            &["baton.lan:7480".to_owned()],
            &["https://ui.example/".to_owned()],
        );
        for host in [
            "127.0.0.1:7480",
            "localhost:7480",
            "orch-1.example:7480",
            "baton.lan:7480",
        ] {
            assert!(p.host_allowed(host), "{host}");
        }
        assert!(!p.host_allowed("evil.example:7480"));
        assert!(p.origin_allowed("https://ui.example", "127.0.0.1:7480"));
        let p = WebPolicy::new(
            "https",
            "10.0.0.5:7480".parse().expect("addr"),
            None,
            &[],
            &[],
        );
        assert_eq!(p.hosts, ["10.0.0.5:7480"]);
        assert!(p.origins.is_empty());
    }

    #[test]
    fn refusals_in_order() {
        let json = ("content-type", "application/json");
        assert_eq!(status(Method::GET, &[("host", "127.0.0.1:7480")]), 200);
        assert_eq!(status(Method::GET, &[("host", "BATON.example:7480")]), 200);
        assert_eq!(status(Method::GET, &[]), 403);
        assert_eq!(status(Method::GET, &[("host", "evil.example:7480")]), 403);
        assert_eq!(status(Method::GET, &[("host", "127.0.0.1:7481")]), 403);
        let local = ("host", "127.0.0.1:7480");
        assert_eq!(status(Method::POST, &[local, json]), 200);
        assert_eq!(
            status(
                Method::POST,
                &[local, ("content-type", "application/json; charset=utf-8")]
            ),
            200
        );
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert_eq!(
                status(Method::POST, &[local, ("content-type", ct)]),
                415,
                "{ct}"
            );
        }
        assert_eq!(status(Method::PUT, &[local]), 415);
        assert_eq!(status(Method::PATCH, &[local]), 415);
        assert_eq!(status(Method::DELETE, &[local]), 200);
        assert_eq!(
            status(
                Method::POST,
                &[local, json, ("origin", "https://evil.example")]
            ),
            403
        );
        assert_eq!(
            status(
                Method::POST,
                &[local, json, ("origin", "https://ui.example")]
            ),
            200
        );
        // The server's own page: its origin is the scheme and the Host it was called by.
        assert_eq!(
            status(
                Method::POST,
                &[local, json, ("origin", "https://127.0.0.1:7480")]
            ),
            200
        );
        for origin in [
            "http://127.0.0.1:7480",
            "https://127.0.0.1:7481",
            "https://baton.example:7480",
            "null",
        ] {
            assert_eq!(
                status(Method::POST, &[local, json, ("origin", origin)]),
                403,
                "{origin}"
            );
        }
        assert_eq!(
            status(Method::POST, &[local, json, ("content-length", "65537")]),
            413
        );
        assert_eq!(
            status(Method::POST, &[local, json, ("content-length", "65536")]),
            200
        );
    }
}
