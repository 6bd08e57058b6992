//! The HTML notes page: `GET /` (and `GET /?before=ID` for older notes).
//!
//! The page works without JavaScript: a plain form posts to `/notes` and the
//! server answers a browser's form post with a redirect back here. Every
//! piece of note text goes through `html_escape_into`, so a note is always
//! shown as text, never interpreted as markup. Rendering reads the archived
//! notes in place and is linear in the notes shown (at most `page_notes`).

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use super::{error, Reply, Request};
use crate::encoding::{self, html_escape_into};
use crate::http::response::{self, ResponseMode};
use crate::http::HttpError;
use crate::metrics::Route;
use crate::server::shard::{NodeInfo, Shard};
use crate::store::index::NoteRef;
use crate::store::note::NoteId;

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
main{max-width:46rem;margin:0 auto;padding:1rem}\
h1{font-size:1.4rem;margin:.5rem 0 1rem}\
form{display:flex;flex-direction:column;gap:.5rem;margin-bottom:1.5rem}\
textarea{width:100%;min-height:5rem;padding:.6rem;font:inherit;border:1px solid #c5cad3;border-radius:.4rem;resize:vertical}\
button{align-self:flex-end;padding:.5rem 1.2rem;font:inherit;border:0;border-radius:.4rem;background:#2456d3;color:#fff;cursor:pointer}\
ol{list-style:none;padding:0;margin:0}\
li{background:#fff;border:1px solid #e0e3e8;border-radius:.4rem;padding:.7rem .9rem;margin-bottom:.6rem}\
li p{margin:0 0 .3rem;white-space:pre-wrap;overflow-wrap:anywhere}\
li small,footer{color:#687085;font-size:.8rem}\
nav{margin:1rem 0}\
footer{border-top:1px solid #e0e3e8;margin-top:2rem;padding-top:.6rem}";

/// `GET /`.
pub fn index(shard: &Shard, req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
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
    let index = shard.index();
    let Some(newest) = index.newest(before.as_ref()) else {
        return error(
            out,
            mode,
            Route::Page,
            &HttpError::invalid("before names an unknown note"),
        );
    };
    let config = shard.config();
    let context = PageContext {
        node: shard.node(),
        page_notes: config.page_notes,
        note_text_bytes_max: config.note_text_bytes_max,
        total_notes: index.len(),
        older_page: before.is_some(),
    };
    let mut page = shard.scratch();
    render(&mut page, newest, &context);
    response::write(out, mode, 200, "text/html; charset=utf-8", &[], &page);
    Reply::new(Route::Page, 200)
}

/// What a page shows besides the notes themselves.
pub struct PageContext<'a> {
    pub node: &'a NodeInfo,
    /// Most notes on one page; more get an "Older notes" link.
    pub page_notes: usize,
    /// The form's `maxlength`.
    pub note_text_bytes_max: usize,
    /// Notes on this node, for the footer.
    pub total_notes: usize,
    /// This page starts after a `before` cursor (it links back to the newest).
    pub older_page: bool,
}

/// Renders the page into `page` (cleared first) from `newest`, the notes
/// newest first. Reads each note in place; linear in the notes shown.
/// Separate from [`index`] so it can be measured on its own (`benches/`).
pub fn render<'n>(
    page: &mut Vec<u8>,
    newest: impl Iterator<Item = &'n NoteRef>,
    context: &PageContext<'_>,
) {
    page.clear();
    page.extend_from_slice(b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>uringnotes</title><style>");
    page.extend_from_slice(STYLE.as_bytes());
    page.extend_from_slice(
        b"</style></head><body><main><h1>uringnotes</h1>\
<form method=\"post\" action=\"/notes\"><label for=\"text\">New note</label>",
    );
    let _ = write!(
        page,
        "<textarea id=\"text\" name=\"text\" required maxlength=\"{}\"></textarea>",
        context.note_text_bytes_max
    );
    page.extend_from_slice(b"<button type=\"submit\">Add note</button></form><ol id=\"notes\">");
    let mut shown = 0usize;
    let mut last: Option<NoteId> = None;
    let mut more = false;
    for note_ref in newest {
        if shown == context.page_notes {
            more = true;
            break;
        }
        let note = note_ref.note();
        let id = note.id();
        let created = SystemTime::UNIX_EPOCH + Duration::from_micros(note.created_at_us());
        let _ = write!(page, "<li id=\"n-{id}\"><p>");
        html_escape_into(page, note.text());
        let _ = write!(
            page,
            "</p><small><time datetime=\"{}\">{}</time> · node {:08x}</small></li>",
            humantime::format_rfc3339_seconds(created),
            humantime::format_rfc3339_seconds(created),
            id.origin.node
        );
        shown += 1;
        last = Some(id);
    }
    page.extend_from_slice(b"</ol>");
    if shown == 0 {
        page.extend_from_slice(b"<p>No notes yet.</p>");
    }
    if let (true, Some(id)) = (more, last) {
        let _ = write!(
            page,
            "<nav><a href=\"/?before={id}\" rel=\"next\">Older notes</a></nav>"
        );
    } else if context.older_page {
        page.extend_from_slice(b"<nav><a href=\"/\">Newest notes</a></nav>");
    }
    page.extend_from_slice(b"<footer>node ");
    html_escape_into(page, &context.node.name);
    let _ = writeln!(
        page,
        " ({:08x}) · {} notes · uringnotes {}</footer></main></body></html>",
        context.node.id,
        context.total_notes,
        env!("CARGO_PKG_VERSION")
    );
}
