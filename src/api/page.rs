//! The HTML notes page: `GET /` (and `GET /?before=ID` for older notes).
//!
//! The page works without JavaScript: a plain form posts to `/notes` and the
//! server answers a browser's form post with a redirect back here. With
//! JavaScript (`/app.js`, see `assets.rs`), the form posts without a reload
//! and the newest page follows `GET /events` (the `<ol>` carries
//! `data-since`, the creation time of its newest note, for the stream to
//! replay anything added since).
//!
//! The newest page (no `before`) is cached per core: it changes only when
//! a note is added or what the page shows of the cluster (members, names,
//! states) changes, and serving it is then a copy of the rendered body:
//! reads vastly outnumber writes. Its version (the base of its `ETag`) is
//! made of exactly those inputs: the index's [`Digest`] (the same on every
//! core and node holding the same notes), a digest of the members shown,
//! this node's settings and the build; the page's compressed encodings are
//! made once per version and coding, on first demand.
//!
//! Every piece of note text goes through `html_escape_into`, so a note is
//! always shown as text, never interpreted as markup; the
//! Content-Security-Policy header is the second line of defence. Rendering
//! reads the archived notes in place into the core's reused scratch buffer
//! and is linear in the notes shown (at most `page_notes`): no allocation
//! per request.

use std::io::Write as _;

use std::sync::Arc;

use super::assets::{self, APP_CSS, APP_JS, FAVICON};
use super::render::write_id;
use super::representation::{
    cache_control, respond, write_not_modified, write_ok, Encodings, Meta, Rendered, TagHasher,
    SOURCE_TAG_SEED,
};
use super::{error, CoreView, Reply, Request, Route};
use crate::cluster::ClusterView;
use crate::encoding::{self, html_escape_into};
use crate::http::coding::Effort;
use crate::http::conditional::EntityTag;
use crate::http::response::ResponseMode;
use crate::http::HttpError;
use crate::store::index::{Digest, NoteView};
use crate::store::note::NoteId;
use crate::store::NodeInfo;

/// Response headers of the page. The policy allows only this server's own
/// script, style sheet, icon and event stream: even if escaping failed
/// somewhere, an injected inline script or handler would not run.
const PAGE_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
];

const PAGE_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The page's per-core state: the newest page as last rendered, in every
/// coding asked for since, and what its version is made of.
#[derive(Default)]
pub struct PageCache {
    /// The version of the page in `body` (`None` until the first render).
    version: Option<u64>,
    body: Encodings,
    /// What every page of this node starts from (see [`PageCache::seed`]).
    seed: Option<u64>,
    /// The cluster view last seen (compared by pointer: core 0 publishes a
    /// new `Arc` every 200 ms) and the digest of what the page shows of it.
    view: Option<Arc<ClusterView>>,
    view_digest: u64,
}

impl PageCache {
    /// The part of every page's version that is fixed while the process
    /// runs: the build, and what the page shows of this node's settings.
    fn seed(&mut self, core: &impl CoreView) -> u64 {
        *self.seed.get_or_insert_with(|| {
            let node = core.node();
            let config = core.config();
            TagHasher::new(*SOURCE_TAG_SEED)
                .part(u64::from(node.id))
                .bytes(node.name.as_bytes())
                .part(config.page_notes as u64)
                .part(config.note_text_bytes_max as u64)
                .part(u64::from(core.cluster().enabled))
                .finish()
        })
    }

    /// A digest of what the page shows of `view`: each member's node, name
    /// and state, in the order shown. Its loads and lag change every
    /// publication and are not shown, so they leave the page's version
    /// alone.
    fn view_digest(&mut self, view: &Arc<ClusterView>) -> u64 {
        if self.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, view)) {
            return self.view_digest;
        }
        let mut h = TagHasher::new(view.members.len() as u64);
        for m in &view.members {
            h = h
                .part(u64::from(m.node))
                .bytes(m.name.as_bytes())
                .bytes(m.state.label().as_bytes());
        }
        self.view = Some(Arc::clone(view));
        self.view_digest = h.finish();
        self.view_digest
    }
}

/// The version of a page: the node's seed, the notes the index holds, the
/// cluster as shown, and the page's cursor. Equal versions render the same
/// bytes on every core of this node.
fn page_version(seed: u64, notes: Digest, view_digest: u64, before: Option<&NoteId>) -> u64 {
    let mut h = TagHasher::new(seed)
        .part(notes.notes)
        .part(notes.id_sum)
        .part(view_digest);
    if let Some(id) = before {
        h = h
            .part(u64::from(id.origin.node))
            .part(u64::from(id.origin.core))
            .part(id.seq);
    }
    h.finish()
}

/// `GET /`: the newest page from the core's cache (rendered when the notes
/// or the cluster view changed, compressed once per coding and version);
/// `GET /?before=ID`: rendered, and compressed if asked, per request. Both
/// answer 304 when `If-None-Match` names the page's current tag, without
/// rendering anything.
pub fn index(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let mut before: Option<NoteId> = None;
    if let Some(value) = encoding::form_field(req.query(), "before") {
        match value.ok().and_then(|v| v.parse::<NoteId>().ok()) {
            Some(id) => before = Some(id),
            None => {
                return error(
                    out,
                    mode,
                    Route::Page,
                    &HttpError::invalid("before must be a note id"),
                )
            }
        }
    }
    // Before the index is read: the view then holds every note the digest
    // names, so a page cached or tagged under it never misses one of them.
    let notes_digest = core.index_digest();
    let index = core.index();
    if before.as_ref().is_some_and(|id| !index.contains(id)) {
        return error(
            out,
            mode,
            Route::Page,
            &HttpError::invalid("before names an unknown note"),
        );
    }
    let cluster = core.cluster();
    // The membership as last published (a lock-free load, no copy).
    let view = cluster.view.load_full();
    let state = core.api_state();
    let mut cache = state.page.borrow_mut();
    let seed = cache.seed(core);
    let view_digest = cache.view_digest(&view);
    let version = page_version(seed, notes_digest, view_digest, before.as_ref());
    // The page is always negotiated, so that its `Vary` and tags do not
    // change kind as notes are added: even an empty page (about 1 KB,
    // near COMPRESS_BYTES_MIN) shrinks by half.
    let coding = req.head.accept_encoding.preferred();
    let meta = |coding| Meta {
        content_type: PAGE_CONTENT_TYPE,
        cache_control: cache_control::REVALIDATE,
        etag: Some(EntityTag::new(version, coding)),
        negotiated: true,
        coding,
        extra: &PAGE_HEADERS,
    };
    let wanted = meta(coding);
    if wanted.not_modified_for(req) {
        write_not_modified(out, mode, &wanted);
        return Reply::new(Route::Page, 304);
    }
    let config = core.config();
    let context = PageContext {
        node: core.node(),
        page_notes: config.page_notes,
        note_text_bytes_max: config.note_text_bytes_max,
        total_notes: index.len(),
        before,
        view: &view,
        cluster_enabled: cluster.enabled,
    };
    // `before` is known (checked above), so there is always an iterator.
    let Some(newest) = index.newest(before.as_ref()) else {
        return error(
            out,
            mode,
            Route::Page,
            &HttpError::invalid("before names an unknown note"),
        );
    };
    if before.is_some() {
        drop(cache);
        let mut page = state.scratch();
        render(&mut page, newest, &context);
        let rendered = Rendered {
            content_type: PAGE_CONTENT_TYPE,
            cache_control: cache_control::REVALIDATE,
            version: Some(version),
            always_negotiated: true,
            extra: &PAGE_HEADERS,
        };
        let status = respond(out, mode, req, &rendered, &page, &mut state.compressed());
        return Reply::new(Route::Page, status);
    }
    if cache.version != Some(version) {
        cache.body.replace(|page| render(page, newest, &context));
        cache.version = Some(version);
    }
    let (body, sent) = cache.body.get(coding, Effort::CACHED);
    // The encoding really sent: identity if the compressor failed.
    let sent = if sent == coding { wanted } else { meta(sent) };
    write_ok(out, mode, &sent, body);
    Reply::new(Route::Page, 200)
}

/// What the page shows besides the notes.
pub struct PageContext<'a> {
    pub node: &'a NodeInfo,
    /// Most notes on one page; more get an "Older notes" link.
    pub page_notes: usize,
    /// The form's `maxlength`.
    pub note_text_bytes_max: usize,
    /// Notes on this node, for the footer.
    pub total_notes: usize,
    /// The cursor this page starts after (`None`: the newest page).
    pub before: Option<NoteId>,
    /// Cluster members for the footer and origin names.
    pub view: &'a ClusterView,
    pub cluster_enabled: bool,
}

/// Renders the page into `page` (cleared first) from `newest`, the notes
/// newest first. Reads each note in place; linear in the notes shown.
/// Separate from [`index`] so it can be measured on its own (`benches/`).
pub fn render<'n>(
    page: &mut Vec<u8>,
    newest: impl Iterator<Item = NoteView<'n>>,
    context: &PageContext<'_>,
) {
    let node = context.node;
    let view = context.view;
    let before = context.before;
    let node_name = |id: u32| -> Option<&str> {
        if id == node.id {
            return Some(&node.name);
        }
        view.members
            .iter()
            .find(|m| m.node == id)
            .map(|m| m.name.as_str())
    };
    page.clear();
    page.extend_from_slice(
        b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>uringnotes \xc2\xb7 ",
    );
    html_escape_into(page, &node.name);
    let _ = write!(
        page,
        "</title><link rel=\"stylesheet\" href=\"{}\"><link rel=\"icon\" type=\"image/svg+xml\" href=\"{}\">\
<script src=\"{}\" defer></script></head><body><header><h1>uringnotes</h1><span id=\"live\" hidden></span></header><main>\
<form method=\"post\" action=\"/notes\"><label for=\"text\">New note</label>\
<textarea id=\"text\" name=\"text\" rows=\"3\" required maxlength=\"{}\" placeholder=\"Write a note\u{2026}\"></textarea>\
<div class=\"row\"><output id=\"status\" for=\"text\"></output><button type=\"submit\">Add note</button></div></form>",
        assets::url(&APP_CSS),
        assets::url(&FAVICON),
        assets::url(&APP_JS),
        context.note_text_bytes_max
    );
    let mut notes = newest.peekable();
    if before.is_none() {
        // Only the newest page follows live updates; `data-since` is where
        // the event stream starts (see the module doc).
        let since_us = notes.peek().map_or(0, |r| r.note().created_at_us());
        let _ = write!(page, "<ol id=\"notes\" data-since=\"{since_us}\">");
    } else {
        page.extend_from_slice(b"<ol id=\"notes\">");
    }
    let mut shown = 0usize;
    let mut last: Option<NoteId> = None;
    let mut more = false;
    for note_ref in notes {
        if shown == context.page_notes {
            more = true;
            break;
        }
        let note = note_ref.note();
        let id = note.id();
        page.extend_from_slice(b"<li id=\"n-");
        write_id(page, &id);
        page.extend_from_slice(b"\"><p>");
        html_escape_into(page, note.text());
        page.extend_from_slice(b"</p><small><time datetime=\"");
        // `2026-11-25T10:21:03Z` for the attribute; shown as
        // `2026-11-25 10:21:03 UTC` (the script localises it).
        let stamp_start = page.len();
        encoding::rfc3339_into(page, note.created_at_us(), false);
        let stamp_end = page.len();
        page.extend_from_slice(b"\">");
        let shown_start = page.len();
        page.extend_from_within(stamp_start..stamp_end - 1);
        page[shown_start + 10] = b' ';
        page.extend_from_slice(" UTC</time> \u{b7} node ".as_bytes());
        match node_name(id.origin.node) {
            Some(name) => html_escape_into(page, name),
            None => encoding::hex8_into(page, id.origin.node),
        }
        page.extend_from_slice(b"</small></li>");
        shown += 1;
        last = Some(id);
    }
    page.extend_from_slice(b"</ol>");
    if shown == 0 {
        page.extend_from_slice(b"<p id=\"empty\">No notes yet.</p>");
    }
    if let (true, Some(id)) = (more, last) {
        let _ = write!(
            page,
            "<nav><a href=\"/?before={id}\" rel=\"next\">Older notes</a></nav>"
        );
    } else if before.is_some() {
        page.extend_from_slice(b"<nav><a href=\"/\">Newest notes</a></nav>");
    }
    // The footer names this node and, in a cluster, every member with its
    // state; `data-node` lets the script name the origin of live notes.
    let _ = write!(
        page,
        "</main><footer>node <b data-node=\"{:08x}\">",
        node.id
    );
    html_escape_into(page, &node.name);
    let _ = write!(page, "</b> ({:08x})", node.id);
    if context.cluster_enabled {
        page.extend_from_slice(" \u{b7} cluster:".as_bytes());
        if view.members.is_empty() {
            page.extend_from_slice(b" no peers yet");
        }
        for (i, m) in view.members.iter().enumerate() {
            let _ = write!(
                page,
                "{} <span data-node=\"{:08x}\">",
                if i == 0 { "" } else { "," },
                m.node
            );
            html_escape_into(page, &m.name);
            let _ = write!(page, "</span> {}", m.state);
        }
    }
    let notes_total = context.total_notes;
    let _ = writeln!(
        page,
        " \u{b7} <span id=\"count\" data-n=\"{notes_total}\">{notes_total} {}</span> \u{b7} uringnotes {}</footer></body></html>",
        if notes_total == 1 { "note" } else { "notes" },
        env!("CARGO_PKG_VERSION")
    );
}
