//! What each URL does: the handlers, the one route table, and the shape
//! of a reply.
//!
//! Handlers write their whole response into the connection's write buffer
//! and return a [`Reply`] summarising it (for metrics and for whether the
//! connection continues). They see the core that runs them through the
//! per-core view ([`CoreView`]), never the shard itself. One file per
//! resource:
//! - [`routes`]: the route table (path, methods, handler, metric label,
//!   whether dispatch may run it elsewhere), read by the router below, by
//!   dispatch and by the metrics;
//! - [`view`]: what a handler may see and do on its core, and the
//!   handlers' own per-core state;
//! - [`page`]: the HTML notes page (`GET /`) and its per-core cache;
//! - [`assets`]: the page's script, style sheet and icon, built into the binary;
//! - [`events`]: live updates (`GET /events`, Server-Sent Events);
//! - [`notes`]: the notes JSON API and the original `/add_note`;
//! - [`note_cache`]: each core's notes rendered as JSON, for `GET /notes/{id}`;
//! - [`ops`]: health, metrics and status for operators;
//! - [`redirect`]: the redirect listener's one answer (`--redirect-http`);
//! - [`admin`]: fault injection and the partition hook (`--fault-injection` only);
//! - [`render`]: a note as JSON, a note id as text;
//! - [`representation`]: how a body goes out: `ETag` and `304`,
//!   `Cache-Control`, gzip and brotli (the policy of every handler above).
//!
//! Below this layer: `http` (parsing, responses), `store` (index, feed),
//! `cluster` (its shared view). Above it: the shard, which implements the
//! view and calls [`handle`] or [`serve`].

pub mod admin;
pub mod assets;
pub mod events;
pub mod note_cache;
pub mod notes;
pub mod ops;
pub mod page;
pub mod redirect;
pub mod render;
pub mod representation;
pub mod routes;
pub mod view;

pub use routes::{Audience, Route, Routed};
pub use view::{ApiState, CoreView, ShardStatus};

use crate::http::request::RequestHead;
use crate::http::response::{self, ResponseMode};
use crate::http::HttpError;
use routes::Handler;

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

    /// Where the route table sends this request, on a server with one
    /// listener (or a request that was routed already, elsewhere).
    pub fn route(&self, fault_injection: bool) -> Routed {
        routes::route(self.head.method, self.path(), fault_injection)
    }

    /// Where the route table sends this request, which came in on
    /// `audience`'s listener.
    #[inline]
    pub fn route_for(&self, fault_injection: bool, audience: Audience) -> Routed {
        routes::route_for(self.head.method, self.path(), fault_injection, audience)
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

/// Answers one request on `core`.
pub async fn handle(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let routed = req.route(core.config().fault_injection);
    serve(core, routed, req, out, mode).await
}

/// Answers one request that the route table already looked up.
pub async fn serve(
    core: &impl CoreView,
    routed: Routed,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let entry = match routed {
        Routed::Found(entry) => entry,
        Routed::MethodNotAllowed(entry) => {
            response::write_text(
                out,
                mode,
                405,
                &[("Allow", entry.allow)],
                "method not allowed",
            );
            return Reply::new(entry.route, 405);
        }
        Routed::NotFound => {
            response::write_text(out, mode, 404, &[], "not found");
            return Reply::new(Route::NotFound, 404);
        }
        Routed::NotImplemented => {
            let e = HttpError::NotImplemented("method not implemented".into());
            return error(out, mode, Route::NotFound, &e);
        }
    };
    match entry.handler {
        Handler::NoteGet => notes::get(core, req, out, mode),
        Handler::Page => page::index(core, req, out, mode),
        Handler::NotesList => notes::list(core, req, out, mode),
        Handler::NotesCreate => notes::create(core, req, out, mode).await,
        Handler::AddNote => notes::add_note(core, req, out, mode).await,
        Handler::Events => events::subscribe(core, req, out, mode),
        Handler::Asset => assets::serve(req, out, mode),
        Handler::Healthz => ops::healthz(out, mode),
        Handler::Metrics => ops::metrics(core, req, out, mode),
        Handler::Status => ops::status(core, req, out, mode),
        Handler::Fault => admin::fault(core, req, out, mode),
        Handler::Partition => admin::partition(core, req, out, mode),
    }
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
