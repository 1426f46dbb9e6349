//! `GET /v1/stream`: the fleet live, as server-sent events (`text/event-stream`), from the
//! replica's [`Feed`](crate::feed::Feed) (etcd watches, no polling). The first message is a
//! `snapshot` of everything; then `host`, `host-removed`, `upgrade` and `event` messages
//! say what changed, each change at most [`WINDOW`] late (changes within it are sent
//! together, one message per host or upgrade). A comment every [`KEEP_ALIVE`] tells the
//! client the connection is alive. The stream ends when the replica stops (a restart, a
//! self-update, a failover); `retry:` tells the client when to connect again, and a new
//! connection starts with a new snapshot, so nothing is missed.
//!
//! Read by the fleet page with `fetch()` (an `EventSource` cannot send the bearer token),
//! and by any SSE client that can.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::error::responses::{BadRequest, Unavailable};
use crate::feed::{Message, Subscription};

/// How long changes are gathered before they are sent.
pub const WINDOW: Duration = Duration::from_millis(250);
/// How often an idle stream sends a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a client waits before it connects again (the `retry:` field).
pub const RETRY: Duration = Duration::from_secs(2);

/// `GET /v1/stream`.
#[utoipa::path(
    get,
    path = "/v1/stream",
    operation_id = "streamFleet",
    tag = "stream",
    summary = "The fleet live: server-sent events from etcd watches",
    description = "A text/event-stream that never ends while the replica runs. Messages (the SSE `event:` field, JSON in `data:`): `snapshot` first (a FleetSnapshot: every host, the upgrades in progress and the 20 most recent others), then `host` (a HostInfo as it is now), `host-removed` (a HostRemoved), `upgrade` (an UpgradeInfo as it is now) and `event` (an UpgradeEvent: an entry just added to an upgrade's trail; older ones are read from /v1/upgrades/{id}/events). A `snapshot` may come again (the client had fallen behind, or etcd was read anew): it replaces everything. Comments (`: keep-alive`) come every 15 s. The stream ends when the replica stops; connect again after `retry:` milliseconds: the new stream starts with a snapshot.",
    responses(
        (status = 200, description = "server-sent events", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub async fn stream(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    if let Some(query) = uri.query() {
        return Err(ApiError::bad_request(format!(
            "query: {query:?}; /v1/stream takes no query parameter"
        )));
    }
    let subscription = state.feed().subscribe();
    let mut response = Sse::new(events(subscription))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer answers (nginx) would hold the messages back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Where a stream is.
enum Phase {
    /// Waiting for the snapshot.
    Start(Subscription),
    /// Sending changes.
    Live(Subscription),
}

/// The subscription's messages as SSE events: the snapshot (with the `retry:` field), then
/// the changes, until the replica stops.
fn events(subscription: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Phase::Start(subscription), |phase| async move {
        match phase {
            Phase::Start(mut sub) => {
                let snapshot = sub.snapshot().await?;
                let events: Vec<Event> = encode(snapshot).into_iter().collect();
                let events = events.into_iter().map(|e| e.retry(RETRY)).collect();
                Some((events, Phase::Live(sub)))
            }
            Phase::Live(mut sub) => {
                let messages = sub.next(WINDOW).await?;
                let events = messages.into_iter().filter_map(encode).collect();
                Some((events, Phase::Live(sub)))
            }
        }
    })
    .flat_map(|events: Vec<Event>| stream::iter(events.into_iter().map(Ok)))
}

/// One message as an SSE event: its kind in `event:`, its JSON in `data:`.
fn encode(message: Message) -> Option<Event> {
    let event = Event::default();
    let encoded = match &message {
        Message::Snapshot(s) => event.event("snapshot").json_data(s),
        Message::Host(h) => event.event("host").json_data(h),
        Message::HostRemoved(r) => event.event("host-removed").json_data(r),
        Message::Upgrade(u) => event.event("upgrade").json_data(u),
        Message::Event(e) => event.event("event").json_data(e),
    };
    encoded
        .map_err(|error| tracing::warn!(%error, "live feed: a message could not be encoded"))
        .ok()
}
