//! Lists in pages: `?limit=` items (1..=[`MAX_LIMIT`], default [`MAX_LIMIT`]) after
//! `?after=` (the key of the last item of the page before), and a
//! `Link: <…>; rel="next"` header while more follow (RFC 8288, as GitHub's API does). A
//! client reads a list of any size in bounded answers, and the bodies stay plain arrays.

use axum::async_trait;
use axum::extract::{FromRequestParts, Query};
use axum::http::header::LINK;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use crate::api::error::ApiError;
use baton_protocol::names::check_name;

/// Most items one answer holds, and how many a list returns when not asked for fewer.
pub const MAX_LIMIT: usize = 1000;

/// The query parameters of a list whose items are named (hosts, upgrades, tokens), as the
/// OpenAPI document states them.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NamedPage {
    /// Items wanted (1 to 1000; default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The name of the last item already read: the list continues after it. The `Link`
    /// header of a page names the next one.
    pub after: Option<String>,
}

/// The query parameters of an upgrade's events.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventPage {
    /// Events wanted (1 to 1000; default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `seq` of the last event already read.
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    pub after: Option<i64>,
}

/// `?limit=` and `?after=` of a list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// Items wanted, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// The key of the last item already read.
    pub after: Option<String>,
}

impl Default for PageQuery {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            after: None,
        }
    }
}

impl PageQuery {
    /// Reads the query string; refuses, naming the parameter, anything else or a bad value.
    pub fn parse(uri: &Uri) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
        let mut page = Self::default();
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "limit: {value:?} is not a whole number from 1 to {MAX_LIMIT}"
                            ))
                        })?;
                }
                "after" => {
                    // Every list's cursor is a name (an event's seq is one too).
                    check_name("after", &value)
                        .map_err(|e| ApiError::bad_request(format!("after: {e}")))?;
                    page.after = Some(value);
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "{other}: unknown query parameter; lists take limit and after"
                    )));
                }
            }
        }
        Ok(page)
    }

    /// The items of a list in key order that come after `after`.
    pub fn after_key<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &str,
    ) -> impl Iterator<Item = T> {
        let after = self.after.clone();
        items
            .into_iter()
            .filter(move |t| after.as_deref().is_none_or(|a| key(t) > a))
    }

    /// The first `limit` of `items`, and the next page's cursor if more follow.
    pub fn take<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> String,
    ) -> Page<T> {
        let mut items = items.into_iter();
        let page: Vec<T> = items.by_ref().take(self.limit).collect();
        let more = items.next().is_some();
        let next = more.then(|| page.last().map(&key)).flatten();
        Page {
            items: page,
            next,
            limit: self.limit,
        }
    }
}

#[async_trait]
impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(&parts.uri)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Its items.
    pub items: Vec<T>,
    /// The key to pass as `after` for the next page, if there is one.
    pub next: Option<String>,
    /// The limit it was read with (the next page's too).
    pub limit: usize,
}

impl<T> Page<T> {
    /// The same page with each item turned into what the answer shows.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
            limit: self.limit,
        }
    }

    /// The answer to `GET path`: the items, with the next page's link when there is one.
    pub fn answer(self, path: &str) -> Paged<T> {
        Paged {
            link: self.next.map(|after| {
                let query = form_query(&[("limit", &self.limit.to_string()), ("after", &after)]);
                format!("<{path}?{query}>; rel=\"next\"")
            }),
            items: self.items,
        }
    }
}

/// `k=v&…` with the values percent-encoded.
fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let encoded: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={encoded}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A page as an HTTP answer: a JSON array, and a `Link` header to the next page.
#[derive(Debug)]
pub struct Paged<T> {
    items: Vec<T>,
    link: Option<String>,
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        if let Some(link) = self.link.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(LINK, link);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Result<PageQuery, String> {
        let uri: Uri = format!("/v1/hosts?{q}").parse().expect("uri");
        PageQuery::parse(&uri).map_err(|e| e.message)
    }

    #[test]
    fn queries_are_read_and_refused_naming_the_parameter() {
        assert_eq!(query(""), Ok(PageQuery::default()));
        assert_eq!(
            query("limit=2&after=h%2D1"),
            Ok(PageQuery {
                limit: 2,
                after: Some("h-1".into())
            })
        );
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("offset=3", "offset"),
            ("after=a%2Fb", "after"),
        ] {
            let err = query(q).expect_err(q);
            assert!(err.starts_with(field), "{q}: {err}");
        }
    }

    #[test]
    fn pages_follow_each_other_and_the_last_has_no_link() {
        let hosts = ["a", "b", "c", "d", "e"];
        let mut q = PageQuery {
            limit: 2,
            after: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = q.take(q.after_key(hosts, |h| h), |h| (*h).to_owned());
            seen.extend(page.items.iter().copied());
            let Some(next) = page.next.clone() else {
                assert!(page.answer("/v1/hosts").link.is_none());
                break;
            };
            let link = page.answer("/v1/hosts").link.expect("link");
            assert_eq!(
                link,
                format!("</v1/hosts?limit=2&after={next}>; rel=\"next\"")
            );
            q.after = Some(next);
        }
        assert_eq!(seen, hosts);
        // A page that ends exactly at the end has no next page.
        let q = PageQuery {
            limit: 5,
            after: None,
        };
        assert_eq!(q.take(hosts, |h| (*h).to_owned()).next, None);
    }

    #[test]
    fn cursors_are_percent_encoded() {
        assert_eq!(form_query(&[("after", "a b/c")]), "after=a%20b%2Fc");
    }
}
