//! Live updates: `GET /events`, a Server-Sent Events stream of new notes.
//!
//! The handler answers the response head and hands the connection a
//! [`Subscription`] (in [`Reply::stream`]); the connection loop
//! (`shard/conn.rs`, `stream_events`) then keeps the connection open and
//! alternates between waiting (for a note on this core's feed, a heartbeat
//! timer, the client closing, shutdown) and writing what this module
//! formats. The stream is delimited by closing the connection, so the
//! response says `Connection: close` and has no length.
//!
//! Each note is one event, `id:` its note id, `event: note`, `data:` the
//! note as one line of JSON (`render::write_note_json` escapes newlines and
//! `<>&`, so a note can neither end the data line nor inject markup).
//!
//! `?since_us=T` (the page passes the creation time of the newest note it
//! shows) first replays the notes still in the core's feed that were created
//! at or after `T`: nothing added between rendering the page and opening the
//! stream is missed, and an EventSource reconnecting with the same URL
//! catches up the same way (the page drops notes it already shows). When
//! such notes may have left the feed already, or a subscriber falls more than
//! the feed behind, the stream sends one `event: reload` and ends: the
//! page reloads instead of silently missing notes.

use std::rc::Rc;

use super::render::{write_id, write_note_json};
use super::{error, CoreView, Reply, Request, Route};
use crate::encoding;
use crate::http::date;
use crate::http::response::ResponseMode;
use crate::http::HttpError;
use crate::store::feed::{Feed, Next};
use crate::store::index::NoteRef;

/// A comment line is sent after this long without an event, so that a
/// client that went away is noticed (the write fails) and proxies keep the
/// connection open.
pub const HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// Events formatted into one write before the connection sends them; bounds
/// the write buffer when a subscriber is far behind.
pub const EVENTS_PER_WRITE_MAX: usize = 64;
/// Reconnection delay the browser is asked to use after the stream ends.
pub const RETRY_MS: u64 = 1_000;

/// One subscriber: a slot in its core's feed and its cursor in it. Dropping
/// it gives the slot back.
pub struct Subscription {
    feed: Rc<Feed>,
    slot: usize,
    /// Sequence number of the next note to send.
    seq_next: u64,
    /// The notes this subscriber needs are no longer all in the feed.
    lagged: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("slot", &self.slot)
            .field("seq_next", &self.seq_next)
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.unsubscribe(self.slot);
    }
}

/// What [`Subscription::write_ready`] left for the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Send what was written, then wait for news.
    Wait,
    /// Send what was written; more events are ready right away.
    More,
    /// Send what was written, then close: the subscriber lagged.
    End,
}

impl Subscription {
    /// Polls for news: ready when a note this subscriber has not sent yet
    /// exists (or it lagged).
    pub fn poll_news(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.lagged {
            return std::task::Poll::Ready(());
        }
        self.feed.poll_news(self.slot, self.seq_next, cx.waker())
    }

    /// Appends the events that are ready, at most [`EVENTS_PER_WRITE_MAX`].
    pub fn write_ready(&mut self, out: &mut Vec<u8>) -> After {
        for _ in 0..EVENTS_PER_WRITE_MAX {
            if self.lagged {
                out.extend_from_slice(b"event: reload\ndata: behind\n\n");
                return After::End;
            }
            match self.feed.next(self.seq_next) {
                Next::Note(note_ref) => {
                    write_note_event(out, &note_ref);
                    self.seq_next += 1;
                }
                Next::Empty => return After::Wait,
                Next::Lagged => self.lagged = true,
            }
        }
        After::More
    }
}

/// Appends one `note` event.
pub fn write_note_event(out: &mut Vec<u8>, note_ref: &NoteRef) {
    let note = note_ref.note();
    out.extend_from_slice(b"id: ");
    write_id(out, &note.id());
    out.extend_from_slice(b"\nevent: note\ndata: ");
    write_note_json(out, note);
    out.extend_from_slice(b"\n\n");
}

/// Appends a heartbeat (an SSE comment, ignored by clients).
pub fn write_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(b": ping\n\n");
}

/// `GET /events`.
pub fn subscribe(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let mut since_us: Option<u64> = None;
    if let Some(value) = encoding::form_field(req.query(), "since_us") {
        match value.ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(t) => since_us = Some(t),
            None => {
                return error(
                    out,
                    mode,
                    Route::Events,
                    &HttpError::invalid("since_us must be a number of microseconds"),
                )
            }
        }
    }
    if core.shutting_down() {
        return unavailable(out, mode, "the server is shutting down");
    }
    let feed = Rc::clone(core.feed());
    let Some(slot) = feed.subscribe(core.config().sse_subscribers_max_per_core) else {
        return unavailable(out, mode, "too many live-update subscribers on this core");
    };
    let (seq_next, lagged) = match since_us {
        None => (feed.seq_next(), false),
        Some(t) => match feed.start_since(t) {
            Some(seq) => (seq, false),
            None => (feed.seq_next(), true),
        },
    };
    let subscription = Subscription {
        feed,
        slot,
        seq_next,
        lagged,
    };
    write_stream_head(out, mode);
    Reply {
        route: Route::Events,
        status: 200,
        close: false,
        stream: Some(subscription),
    }
}

fn unavailable(out: &mut Vec<u8>, mode: ResponseMode, why: &str) -> Reply {
    crate::http::response::write_text(out, mode, 503, &[("Retry-After", "5")], why);
    Reply::new(Route::Events, 503)
}

/// The response head of an event stream, and the reconnection delay.
fn write_stream_head(out: &mut Vec<u8>, mode: ResponseMode) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: uringnotes\r\nDate: ");
    date::with_http_date(|d| out.extend_from_slice(d));
    if let Some(by) = mode.served_by {
        out.extend_from_slice(b"\r\nX-Served-By: ");
        out.extend_from_slice(by.as_bytes());
    }
    if let Some(hsts) = mode.hsts {
        out.extend_from_slice(b"\r\nStrict-Transport-Security: ");
        out.extend_from_slice(hsts.as_bytes());
    }
    // No Content-Length and no chunking: the body ends when the connection
    // closes. `X-Accel-Buffering: no` keeps a buffering proxy (nginx) from
    // holding events back; a stream is never stored (`no-store`) and never
    // compressed (each event must reach the page when it is sent).
    out.extend_from_slice(
        b"\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
X-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
    );
    let mut ms = itoa::Buffer::new();
    out.extend_from_slice(b"retry: ");
    out.extend_from_slice(ms.format(RETRY_MS).as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::NoteRef;
    use crate::store::note::{self, Note, NoteId, Origin};

    #[test]
    fn an_event_is_one_data_line_with_markup_escaped() {
        let note = Note {
            id: NoteId {
                origin: Origin {
                    node: 0xab,
                    core: 1,
                },
                seq: 7,
            },
            created_at_us: 1,
            text: "a\n\ndata: x\r<img src=x onerror=alert(1)>".into(),
        };
        let r = NoteRef::from_payload(note::archive(&note)).unwrap();
        let mut out = Vec::new();
        write_note_event(&mut out, &r);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: 000000ab-1-7\nevent: note\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        // Exactly three field lines and the blank line ending the event.
        assert_eq!(text.matches('\n').count(), 4, "{text:?}");
        assert!(!text.contains('\r') && !text.contains('<'));
        let json = text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["text"], "a\n\ndata: x\r<img src=x onerror=alert(1)>");
    }
}
