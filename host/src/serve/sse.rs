//! `/v1/events`: the town's event stream as server-sent events.
//!
//! Each client gets a [`Follower`](crate::town::Follower), which blocks in `XREAD BLOCK` on a
//! connection of its own: an event reaches the client as soon as Redis has it, with no polling.
//! The SSE `id` is the stream id, so a client that reconnects with `Last-Event-ID` (browsers do
//! this themselves) gets exactly the events after the last one it saw; `?since=ID` does the
//! same for a first connection. Without either, the stream starts at now.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream};
use schemars::JsonSchema;
use serde::Deserialize;

use super::extract::Query;
use super::problem::Problem;
use super::App;
use crate::town::{Event, Follower};

/// How long one `XREAD` blocks before it is asked again (keep-alives go out meanwhile).
const BLOCK: Duration = Duration::from_secs(10);

#[derive(Deserialize, JsonSchema)]
pub struct SseQuery {
    /// Start after this event id (as `Last-Event-ID` does on a reconnect).
    pub since: Option<String>,
}

/// One of the `[serve] max_streams` places; given back when the stream ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn sse_event(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.clone())
        .data(serde_json::to_string(e).unwrap_or_default())
}

pub async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<SseQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.since);
    let slot = Slot::take(&app.streams, app.max_streams).ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} live event streams are open, the most this server keeps",
                app.max_streams
            ),
            "close one, or raise [serve] max_streams in tinytown.toml",
        )
    })?;
    let follower = app.town.follow(resume.as_deref(), BLOCK).await?;
    let stream = stream::unfold(
        (follower, VecDeque::<Event>::new(), slot),
        |(mut f, mut queue, slot): (Follower, VecDeque<Event>, Slot)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((Ok(sse_event(&e)), (f, queue, slot)));
                }
                match f.next().await {
                    Ok(batch) => queue.extend(batch),
                    Err(e) => {
                        // Redis went away: end the stream; the client reconnects with
                        // Last-Event-ID and loses nothing.
                        tracing::warn!("event stream ended: {e:#}");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
