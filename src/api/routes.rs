//! The route table: every path the server answers, once.
//!
//! Each [`Entry`] says which path and methods it answers, which handler runs
//! it, the `route` label its requests are counted under in `/metrics`
//! ([`Route`]), and whether it may run on another core or node
//! (`--dispatch`). The router (`api/mod.rs`), dispatch (`shard/dispatch.rs`)
//! and the metrics (`metrics.rs`) all read this table: adding a route is
//! adding one entry here and its handler.
//!
//! With `--admin-listen`, operator endpoints move to their own listener:
//! each entry says where it is answered ([`Reach`]) and the router is told
//! which listener a request came in on ([`Audience`]). Without it, one
//! listener answers everything.
//!
//! Invariants (checked by the tests below): no two entries answer the same
//! method on the same path, and every entry of one path names the same
//! `Allow` list (the methods of all of them), so a 405 lists them all.

use crate::http::request::Method;

/// What a request was routed to: the `route` label of request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Route {
    Page,
    AddNote,
    NotesCreate,
    NotesList,
    NoteGet,
    Healthz,
    Metrics,
    Status,
    Events,
    Asset,
    Admin,
    NotFound,
    /// The request could not be parsed or framed (no route was chosen).
    Malformed,
    /// Answered by the redirect listener (`--redirect-http`).
    Redirect,
}

impl Route {
    pub const ALL: [Route; 14] = [
        Route::Page,
        Route::AddNote,
        Route::NotesCreate,
        Route::NotesList,
        Route::NoteGet,
        Route::Healthz,
        Route::Metrics,
        Route::Status,
        Route::Events,
        Route::Asset,
        Route::Admin,
        Route::NotFound,
        Route::Malformed,
        Route::Redirect,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Page => "page",
            Route::AddNote => "add_note",
            Route::NotesCreate => "notes_create",
            Route::NotesList => "notes_list",
            Route::NoteGet => "note_get",
            Route::Healthz => "healthz",
            Route::Metrics => "metrics",
            Route::Status => "status",
            Route::Events => "events",
            Route::Asset => "asset",
            Route::Admin => "admin",
            Route::NotFound => "not_found",
            Route::Malformed => "malformed",
            Route::Redirect => "redirect",
        }
    }
}

/// The code that answers an entry (`api::serve` maps each to its function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Page,
    NoteGet,
    NotesList,
    NotesCreate,
    AddNote,
    Events,
    Asset,
    Healthz,
    Metrics,
    Status,
    Fault,
    Partition,
}

/// How an entry matches a path.
#[derive(Debug, Clone, Copy)]
enum PathMatch {
    Exact(&'static [u8]),
    /// Any path starting with this (the rest is the handler's parameter).
    Prefix(&'static [u8]),
    /// One of the page's built-in files (`api/assets.rs`).
    Asset,
}

impl PathMatch {
    fn matches(self, path: &[u8]) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p),
            PathMatch::Asset => super::assets::find(path).is_some(),
        }
    }
}

/// The methods an entry answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Methods {
    /// GET, and HEAD (the same answer without its body).
    GetHead,
    /// GET only (HEAD makes no sense: it would store a note, or open a stream).
    Get,
    Post,
}

impl Methods {
    fn allows(self, method: Method) -> bool {
        match self {
            Methods::GetHead => matches!(method, Method::Get | Method::Head),
            Methods::Get => method == Method::Get,
            Methods::Post => method == Method::Post,
        }
    }
}

/// Which listener answers an entry once `--admin-listen` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The public listener (`--listen`): the notes, the page, its files.
    Public,
    /// The admin listener: metrics, status, fault injection (which
    /// reveal peers' addresses or change the server's behaviour).
    Operator,
    /// Both (`/healthz`: load balancers probe the public address).
    Both,
}

/// The listener a request came in on, as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// No admin listener: the public listener answers every entry.
    Everyone,
    /// The public listener, with an admin listener elsewhere.
    Public,
    /// The admin listener.
    Operator,
}

impl Reach {
    fn serves(self, audience: Audience) -> bool {
        matches!(
            (self, audience),
            (_, Audience::Everyone)
                | (Reach::Both, _)
                | (Reach::Public, Audience::Public)
                | (Reach::Operator, Audience::Operator)
        )
    }
}

/// One route.
#[derive(Debug)]
pub struct Entry {
    path: PathMatch,
    methods: Methods,
    /// The `Allow` header of a 405 on this path: every method answered there.
    pub allow: &'static str,
    pub handler: Handler,
    /// The label its requests are counted under.
    pub route: Route,
    /// May run on another core or node: the notes routes, whose answer is
    /// the same from any shard. Operator endpoints answer for the node and
    /// core asked; an event stream stays on the core that accepted it.
    pub dispatchable: bool,
    /// Exists only with `--fault-injection`; otherwise the path is a 404
    /// like any unknown path, for every method.
    pub fault_injection_only: bool,
    /// Where it is answered when an admin listener is set.
    pub reach: Reach,
}

const fn entry(
    path: PathMatch,
    methods: Methods,
    allow: &'static str,
    handler: Handler,
    route: Route,
    dispatchable: bool,
) -> Entry {
    Entry {
        path,
        methods,
        allow,
        handler,
        route,
        dispatchable,
        fault_injection_only: false,
        reach: Reach::Public,
    }
}

/// An operator endpoint: on the admin listener when there is one.
const fn operator(entry: Entry, reach: Reach) -> Entry {
    Entry { reach, ..entry }
}

const fn admin(path: &'static [u8], handler: Handler) -> Entry {
    Entry {
        path: PathMatch::Exact(path),
        methods: Methods::Post,
        allow: "POST",
        handler,
        route: Route::Admin,
        dispatchable: false,
        fault_injection_only: true,
        reach: Reach::Operator,
    }
}

use Handler as H;
use Methods::{Get, GetHead, Post};
use PathMatch::{Asset, Exact, Prefix};

/// Every route. The order is the order of matching: the hottest first
/// (`GET /notes/{id}`, `GET /`), since no two entries overlap.
pub static TABLE: [Entry; 12] = [
    entry(
        Prefix(b"/notes/"),
        GetHead,
        "GET, HEAD",
        H::NoteGet,
        Route::NoteGet,
        true,
    ),
    entry(
        Exact(b"/"),
        GetHead,
        "GET, HEAD",
        H::Page,
        Route::Page,
        true,
    ),
    entry(
        Exact(b"/notes"),
        GetHead,
        "GET, HEAD, POST",
        H::NotesList,
        Route::NotesList,
        true,
    ),
    entry(
        Exact(b"/notes"),
        Post,
        "GET, HEAD, POST",
        H::NotesCreate,
        Route::NotesCreate,
        true,
    ),
    entry(
        Exact(b"/add_note"),
        Get,
        "GET",
        H::AddNote,
        Route::AddNote,
        true,
    ),
    entry(
        Exact(b"/events"),
        Get,
        "GET",
        H::Events,
        Route::Events,
        false,
    ),
    entry(Asset, GetHead, "GET, HEAD", H::Asset, Route::Asset, false),
    operator(
        entry(
            Exact(b"/healthz"),
            GetHead,
            "GET, HEAD",
            H::Healthz,
            Route::Healthz,
            false,
        ),
        Reach::Both,
    ),
    operator(
        entry(
            Exact(b"/metrics"),
            GetHead,
            "GET, HEAD",
            H::Metrics,
            Route::Metrics,
            false,
        ),
        Reach::Operator,
    ),
    operator(
        entry(
            Exact(b"/_status"),
            GetHead,
            "GET, HEAD",
            H::Status,
            Route::Status,
            false,
        ),
        Reach::Operator,
    ),
    admin(b"/_admin/fault", H::Fault),
    admin(b"/_admin/partition", H::Partition),
];

/// Where the table sends a request.
#[derive(Debug, Clone, Copy)]
pub enum Routed {
    /// The entry that answers it.
    Found(&'static Entry),
    /// The path exists but not for this method: 405 with the entry's `Allow`.
    MethodNotAllowed(&'static Entry),
    NotFound,
    /// A method this server does not implement at all (501).
    NotImplemented,
}

impl Routed {
    /// The metrics label of the answer.
    pub fn route(self) -> Route {
        match self {
            Routed::Found(e) | Routed::MethodNotAllowed(e) => e.route,
            Routed::NotFound | Routed::NotImplemented => Route::NotFound,
        }
    }

    /// Whether the request may run on another core or node.
    pub fn dispatchable(self) -> bool {
        matches!(self, Routed::Found(e) if e.dispatchable)
    }
}

/// Looks a request up in the table, for a server with one listener.
/// `fault_injection`: whether the `--fault-injection` entries exist.
pub fn route(method: Method, path: &[u8], fault_injection: bool) -> Routed {
    route_for(method, path, fault_injection, Audience::Everyone)
}

/// Looks a request that came in on `audience`'s listener up in the table:
/// an entry that listener does not answer is a 404 like an unknown path.
pub fn route_for(method: Method, path: &[u8], fault_injection: bool, audience: Audience) -> Routed {
    if method == Method::Other {
        return Routed::NotImplemented;
    }
    let mut path_known: Option<&'static Entry> = None;
    for e in &TABLE {
        if (e.fault_injection_only && !fault_injection)
            || !e.reach.serves(audience)
            || !e.path.matches(path)
        {
            continue;
        }
        if e.methods.allows(method) {
            return Routed::Found(e);
        }
        path_known.get_or_insert(e);
    }
    match path_known {
        Some(e) => Routed::MethodNotAllowed(e),
        None => Routed::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: [Method; 4] = [Method::Get, Method::Head, Method::Post, Method::Other];
    const PATHS: [&[u8]; 13] = [
        b"/",
        b"/notes",
        b"/notes/x",
        b"/add_note",
        b"/events",
        b"/app.js",
        b"/healthz",
        b"/metrics",
        b"/_status",
        b"/_admin/fault",
        b"/_admin/partition",
        b"/nope",
        b"/notesx",
    ];

    #[test]
    fn no_two_entries_answer_the_same_request() {
        for path in PATHS {
            for method in METHODS {
                let answering = TABLE
                    .iter()
                    .filter(|e| e.path.matches(path) && e.methods.allows(method))
                    .count();
                assert!(
                    answering <= 1,
                    "{method:?} {:?}",
                    String::from_utf8_lossy(path)
                );
            }
        }
    }

    #[test]
    fn entries_of_one_path_share_one_allow_list_naming_all_their_methods() {
        for path in PATHS {
            let entries: Vec<&Entry> = TABLE.iter().filter(|e| e.path.matches(path)).collect();
            for e in &entries {
                assert_eq!(e.allow, entries[0].allow);
                let named = match e.methods {
                    Methods::GetHead => &["GET", "HEAD"][..],
                    Methods::Get => &["GET"][..],
                    Methods::Post => &["POST"][..],
                };
                for m in named {
                    assert!(e.allow.contains(m), "{} lacks {m}", e.allow);
                }
            }
        }
    }

    #[test]
    fn routing_follows_the_table() {
        let found = |m, p: &[u8]| match route(m, p, false) {
            Routed::Found(e) => Some(e.handler),
            _ => None,
        };
        assert_eq!(found(Method::Get, b"/notes/abc"), Some(Handler::NoteGet));
        assert_eq!(found(Method::Head, b"/"), Some(Handler::Page));
        assert_eq!(found(Method::Post, b"/notes"), Some(Handler::NotesCreate));
        assert_eq!(found(Method::Get, b"/notes"), Some(Handler::NotesList));
        assert_eq!(found(Method::Get, b"/app.css"), Some(Handler::Asset));
        assert!(matches!(
            route(Method::Post, b"/notes/x", false),
            Routed::MethodNotAllowed(e) if e.allow == "GET, HEAD"
        ));
        assert!(matches!(
            route(Method::Head, b"/add_note", false),
            Routed::MethodNotAllowed(e) if e.route == Route::AddNote
        ));
        assert!(matches!(
            route(Method::Get, b"/nope", false),
            Routed::NotFound
        ));
        assert!(matches!(
            route(Method::Other, b"/", false),
            Routed::NotImplemented
        ));
    }

    #[test]
    fn admin_routes_exist_only_with_fault_injection() {
        for path in [&b"/_admin/fault"[..], b"/_admin/partition"] {
            for method in [Method::Get, Method::Post] {
                assert!(matches!(route(method, path, false), Routed::NotFound));
            }
            assert!(matches!(route(Method::Post, path, true), Routed::Found(_)));
            assert!(matches!(
                route(Method::Get, path, true),
                Routed::MethodNotAllowed(_)
            ));
        }
    }

    #[test]
    fn an_admin_listener_takes_the_operator_endpoints_and_shares_healthz() {
        let found = |p: &[u8], method, audience| {
            matches!(route_for(method, p, true, audience), Routed::Found(_))
        };
        for p in [&b"/metrics"[..], b"/_status"] {
            assert!(found(p, Method::Get, Audience::Everyone));
            assert!(
                !found(p, Method::Get, Audience::Public),
                "{p:?} off the public listener"
            );
            assert!(matches!(
                route_for(Method::Get, p, true, Audience::Public),
                Routed::NotFound
            ));
            assert!(found(p, Method::Get, Audience::Operator));
        }
        for p in [&b"/_admin/fault"[..], b"/_admin/partition"] {
            assert!(!found(p, Method::Post, Audience::Public));
            assert!(found(p, Method::Post, Audience::Operator));
        }
        for audience in [Audience::Everyone, Audience::Public, Audience::Operator] {
            assert!(
                found(b"/healthz", Method::Get, audience),
                "healthz on {audience:?}"
            );
        }
        for p in [&b"/"[..], b"/notes/x", b"/notes", b"/events", b"/app.js"] {
            assert!(found(p, Method::Get, Audience::Public));
            assert!(
                !found(p, Method::Get, Audience::Operator),
                "{p:?} not on the admin listener"
            );
        }
    }

    #[test]
    fn only_the_notes_routes_are_dispatched() {
        for e in &TABLE {
            let notes = matches!(
                e.route,
                Route::Page
                    | Route::NoteGet
                    | Route::NotesList
                    | Route::NotesCreate
                    | Route::AddNote
            );
            assert_eq!(e.dispatchable, notes, "{:?}", e.route);
        }
    }
}
