//! Routing: which handler answers a request, and the shape of a reply.
//!
//! Handlers write their whole response into the connection's write buffer
//! and return a [`Reply`] summarising it (for metrics and for whether the
//! connection continues). One file per resource:
//! - [`page`]: the HTML notes page (`GET /`);
//! - [`assets`]: the page's script, style sheet and icon, built into the binary;
//! - [`events`]: live updates (`GET /events`, Server-Sent Events);
//! - [`notes`]: the notes JSON API and the original `/add_note`;
//! - [`ops`]: health, metrics and status for operators;
//! - [`admin`]: fault injection (`--fault-injection` only).

pub mod admin;
pub mod assets;
pub mod events;
pub mod notes;
pub mod ops;
pub mod page;
pub mod partition;

use crate::http::request::{Method, RequestHead};
use crate::http::response::{self, ResponseMode};
use crate::http::HttpError;
use crate::metrics::Route;
use crate::server::shard::Shard;

/// A parsed request as handlers see it.
pub struct Request<'a> {
    pub head: &'a RequestHead,
    /// The raw head bytes the spans in `head` point into.
    pub raw_head: &'a [u8],
    pub body: &'a [u8],
}

impl Request<'_> {
    pub fn path(&self) -> &[u8] {
        self.head.path.get(self.raw_head)
    }

    pub fn query(&self) -> &[u8] {
        self.head.query.map_or(&[][..], |q| q.get(self.raw_head))
    }
}

/// What a handler answered.
#[derive(Debug)]
pub struct Reply {
    pub route: Route,
    pub status: u16,
    /// Close the connection after this response.
    pub close: bool,
    /// The response head is written and the body is an event stream: the
    /// connection keeps streaming events of this subscription until it
    /// closes (`events.rs`).
    pub stream: Option<events::Subscription>,
}

impl Reply {
    pub fn new(route: Route, status: u16) -> Reply {
        Reply {
            route,
            status,
            close: false,
            stream: None,
        }
    }
}

/// Answers one request.
pub async fn handle(
    shard: &Shard,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let method = req.head.method;
    if method == Method::Other {
        return error(
            out,
            mode,
            Route::NotFound,
            &HttpError::NotImplemented("method not implemented".into()),
        );
    }
    let path = req.path();
    let get = matches!(method, Method::Get | Method::Head);
    match path {
        b"/" if get => page::index(shard, req, out, mode),
        b"/" => method_not_allowed(out, mode, Route::Page, "GET, HEAD"),
        b"/events" if method == Method::Get => events::subscribe(shard, req, out, mode),
        b"/events" => method_not_allowed(out, mode, Route::Events, "GET"),
        p if get && assets::find(p).is_some() => assets::serve(req, out, mode),
        b"/add_note" if method == Method::Get => notes::add_note(shard, req, out, mode).await,
        b"/add_note" => method_not_allowed(out, mode, Route::AddNote, "GET"),
        b"/notes" if get => notes::list(shard, req, out, mode),
        b"/notes" if method == Method::Post => notes::create(shard, req, out, mode).await,
        b"/notes" => method_not_allowed(out, mode, Route::NotesList, "GET, HEAD, POST"),
        b"/healthz" if get => ops::healthz(shard, out, mode),
        b"/healthz" => method_not_allowed(out, mode, Route::Healthz, "GET, HEAD"),
        b"/metrics" if get => ops::metrics(shard, out, mode),
        b"/metrics" => method_not_allowed(out, mode, Route::Metrics, "GET, HEAD"),
        b"/_status" if get => ops::status(shard, out, mode),
        b"/_status" => method_not_allowed(out, mode, Route::Status, "GET, HEAD"),
        b"/_admin/partition" if method == Method::Post && shard.config().fault_injection => {
            partition::partition(shard, req, out, mode)
        }
        p if p.starts_with(b"/notes/") && get => notes::get(shard, req, out, mode),
        p if p.starts_with(b"/notes/") => {
            method_not_allowed(out, mode, Route::NoteGet, "GET, HEAD")
        }
        b"/_admin/fault" => admin::fault(shard, req, out, mode),
        _ => not_found(out, mode),
    }
}

fn not_found(out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    response::write_text(out, mode, 404, &[], "not found");
    Reply::new(Route::NotFound, 404)
}

fn method_not_allowed(out: &mut Vec<u8>, mode: ResponseMode, route: Route, allow: &str) -> Reply {
    response::write_text(out, mode, 405, &[("Allow", allow)], "method not allowed");
    Reply::new(route, 405)
}

/// Writes the response for an [`HttpError`]; closes the connection when the
/// error leaves the framing of the stream in doubt.
pub fn error(out: &mut Vec<u8>, mut mode: ResponseMode, route: Route, e: &HttpError) -> Reply {
    let close = e.closes_connection() || !mode.keep_alive;
    mode.keep_alive = !close;
    response::write_text(out, mode, e.status(), &[], &e.to_string());
    Reply {
        route,
        status: e.status(),
        close,
        stream: None,
    }
}
