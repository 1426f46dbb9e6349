//! The fleet page, served at `/` by every replica: one HTML page, its script, style sheet
//! and icon, embedded in the binary (no Node toolchain, no CDN, nothing fetched at build or
//! run time). The page holds no data: after a login with an API token it reads everything
//! through the API ([`crate::api`]) — `GET /v1/stream` live, the upgrades' events, and the
//! pause, resume and abort routes — with the token in an `Authorization` header, so every
//! data route keeps its role check. Serving the page itself needs no credential. See
//! docs/web.md.
//!
//! Every answer carries a Content-Security-Policy that allows only this server's own
//! script, style, images and connections (no inline script, no frames, no form posts),
//! and `Cache-Control: no-cache`, so a replica that was updated serves its own page.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;
use crate::api::gate;

/// The page's Content-Security-Policy: its own script, style and connections only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

/// Every file of the page.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("assets/favicon.svg"),
    },
];

/// The page's routes. Like the API, it answers only to the `Host` names it serves (a page
/// reached through DNS rebinding would be another origin's).
pub fn router(state: AppState) -> Router<AppState> {
    let mut router = Router::new();
    for asset in ASSETS {
        let asset = *asset;
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router.route_layer(middleware::from_fn_with_state(state, check_host))
}

fn serve(asset: Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match gate::web(
        state.web(),
        request.method(),
        request.headers(),
        gate::MAX_BODY,
    ) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_no_inline_script() {
        let html = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            assert!(html.contains(asset.path), "{} is not used", asset.path);
        }
        // Every script is a file of its own (the policy allows no inline script).
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/").count()
        );
        assert!(!html.contains("style="), "inline styles are refused");
        assert!(!html.contains("http://") && !html.contains("https://"));
        let js = ASSETS[1].body;
        for forbidden in [
            "eval(",
            "innerHTML",
            "localStorage",
            "document.cookie",
            "new Function",
        ] {
            assert!(!js.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
    }
}
