//! The notes API: create, list, fetch; and `GET /add_note`, kept compatible
//! with the original server.
//!
//! Note text is validated here, once, for every way of submitting it: it must
//! be valid UTF-8, not blank, and at most `note_text_bytes_max` bytes. A
//! write is answered only after the note is durable (see `store/writer.rs`);
//! if the log cannot take it, the client gets 503 and nothing is claimed.
//!
//! Caching (`representation.rs`): a note never changes, so `GET /notes/ID`
//! is `immutable` with a tag made of its id; a list is `no-cache` with a
//! tag made of the index's digest and the list's parameters, so any new
//! note (from any core or node) changes it. Both are the same on every node
//! that holds the same notes. A 404 for a note id is `no-store`: the note
//! may arrive by replication a moment later. Lists (and large notes) of at
//! least `COMPRESS_BYTES_MIN` bytes are compressed per request.

use std::io::Write as _;

use serde::Deserialize;

use super::render::{write_id, write_note_json};
use super::representation::{cache_control, respond, Rendered, TagHasher, SOURCE_TAG_SEED};
use super::{error, CoreView, Reply, Request, Route};
use crate::encoding;
use crate::http::request::ContentType;
use crate::http::response::{self, ResponseMode};
use crate::http::HttpError;
use crate::store::index::{Digest, NoteRef};
use crate::store::note::NoteId;

/// Notes per `GET /notes` page unless `limit` says otherwise.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Largest `limit` accepted by `GET /notes`.
pub const LIST_LIMIT_MAX: usize = 1000;

const JSON: &str = "application/json";

/// Kinds of entity tag made here, kept apart in the tag hash.
const TAG_KIND_NOTE: u64 = 1;
const TAG_KIND_LIST: u64 = 2;

/// The version of a note's JSON: its id (a note never changes).
fn note_version(id: &NoteId) -> u64 {
    TagHasher::new(*SOURCE_TAG_SEED)
        .part(TAG_KIND_NOTE)
        .part(u64::from(id.origin.node))
        .part(u64::from(id.origin.core))
        .part(id.seq)
        .finish()
}

/// The version of a list: the notes held and the list's parameters.
fn list_version(notes: Digest, limit: usize, before: Option<&NoteId>) -> u64 {
    let mut h = TagHasher::new(*SOURCE_TAG_SEED)
        .part(TAG_KIND_LIST)
        .part(notes.notes)
        .part(notes.id_sum)
        .part(limit as u64)
        .part(u64::from(before.is_some()));
    if let Some(id) = before {
        h = h
            .part(u64::from(id.origin.node))
            .part(u64::from(id.origin.core))
            .part(id.seq);
    }
    h.finish()
}

#[derive(Deserialize)]
struct NoteInput {
    text: String,
}

/// Checks a submitted note text.
pub fn validate_text(text: String, max_bytes: usize) -> Result<String, HttpError> {
    if text.trim().is_empty() {
        return Err(HttpError::invalid("note text is empty"));
    }
    if text.len() > max_bytes {
        return Err(HttpError::ContentTooLarge(
            format!(
                "note text is {} bytes; the limit is {max_bytes} bytes",
                text.len()
            )
            .into(),
        ));
    }
    Ok(text)
}

/// Extracts the note text from a `POST /notes` body by its content type.
pub fn text_from_body(
    content_type: ContentType,
    body: &[u8],
    max_bytes: usize,
) -> Result<String, HttpError> {
    let text = match content_type {
        ContentType::Form => match encoding::form_field(body, "text") {
            None => return Err(HttpError::invalid("form field 'text' is missing")),
            Some(Err(_)) => return Err(HttpError::invalid("note text is not valid UTF-8")),
            Some(Ok(t)) => t,
        },
        ContentType::Json => match serde_json::from_slice::<NoteInput>(body) {
            Ok(input) => input.text,
            Err(e) => return Err(HttpError::invalid(format!("invalid JSON note: {e}"))),
        },
        ContentType::Text | ContentType::Absent => match std::str::from_utf8(body) {
            Ok(t) => t.to_owned(),
            Err(_) => return Err(HttpError::invalid("note text is not valid UTF-8")),
        },
        ContentType::Other => {
            return Err(HttpError::UnsupportedMediaType(
                "send the note as application/x-www-form-urlencoded (text=...), application/json ({\"text\": ...}) or text/plain".into(),
            ))
        }
    };
    validate_text(text, max_bytes)
}

/// Stores a note for a request: durable (and replicated, with `--ack all`)
/// before it returns. Every way of writing a note goes through here.
///
/// Hundreds of writes may wait for the same log batch; none of them holds a
/// write buffer meanwhile, so the few buffers in use stay in the CPU's
/// cache (the first store into a cold one was most of the extra cost of a
/// POST at 512 connections; perf, 2026-11-25).
async fn store(
    core: &impl CoreView,
    text: String,
    out: &mut Vec<u8>,
    mode: ResponseMode,
    route: Route,
) -> Result<NoteRef, Reply> {
    core.park_write_buffer(out);
    let created = core.create_note(text).await;
    core.unpark_write_buffer(out);
    created.map_err(|e| {
        let msg = format!("{e}: the note was not stored");
        response::write_text(out, mode, 503, &[("Retry-After", "1")], &msg);
        Reply::new(route, 503)
    })
}

/// `POST /notes`.
pub async fn create(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let max = core.config().note_text_bytes_max;
    let text = match text_from_body(req.head.content_type, req.body, max) {
        Ok(t) => t,
        Err(e) => return error(out, mode, Route::NotesCreate, &e),
    };
    let note_ref = match store(core, text, out, mode, Route::NotesCreate).await {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let note = note_ref.note();
    if req.head.content_type == ContentType::Form && req.head.accepts_html {
        response::write_text(out, mode, 303, &[("Location", "/")], "note added");
        return Reply::new(Route::NotesCreate, 303);
    }
    // Body and Location rendered into the core's scratch buffer, one after
    // the other (no allocation).
    let mut scratch = core.api_state().scratch();
    write_note_json(&mut scratch, note);
    scratch.push(b'\n');
    let body_len = scratch.len();
    scratch.extend_from_slice(b"/notes/");
    write_id(&mut scratch, &note.id());
    let (body, location) = scratch.split_at(body_len);
    // Only ASCII digits, hex digits and '-' were written.
    let location = std::str::from_utf8(location).unwrap_or("/notes");
    response::write(
        out,
        mode,
        201,
        "application/json",
        &[("Location", location)],
        body,
    );
    Reply::new(Route::NotesCreate, 201)
}

/// `GET /add_note?text=...`: the original server's write, answered 204.
pub async fn add_note(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let max = core.config().note_text_bytes_max;
    let text = match encoding::form_field(req.query(), "text") {
        None => Err(HttpError::invalid("query parameter 'text' is missing")),
        Some(Err(_)) => Err(HttpError::invalid("note text is not valid UTF-8")),
        Some(Ok(t)) => validate_text(t, max),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => return error(out, mode, Route::AddNote, &e),
    };
    if let Err(reply) = store(core, text, out, mode, Route::AddNote).await {
        return reply;
    }
    // A 204 to a GET is cacheable by default (RFC 9110 §15.3.5): a cache
    // must not answer the next identical add in the server's place.
    response::write(
        out,
        mode,
        204,
        "",
        &[("Cache-Control", cache_control::NO_STORE)],
        b"",
    );
    Reply::new(Route::AddNote, 204)
}

/// `GET /notes/{id}`.
pub fn get(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let id = NoteId::parse_bytes(&req.path()[b"/notes/".len()..]).ok();
    let index = core.index();
    let Some(note) = id.and_then(|id| index.get(&id)) else {
        // Not cached: the note may yet arrive from another node.
        response::write(
            out,
            mode,
            404,
            JSON,
            &[("Cache-Control", cache_control::NO_STORE)],
            b"{\"error\":\"no such note\"}\n",
        );
        return Reply::new(Route::NoteGet, 404);
    };
    let note = note.note();
    let state = core.api_state();
    let mut scratch = state.scratch();
    let mut note_json = state.note_json.borrow_mut();
    let body = note_json.rendered(note, &mut scratch);
    let rendered = Rendered {
        content_type: JSON,
        cache_control: cache_control::IMMUTABLE,
        version: Some(note_version(&note.id())),
        always_negotiated: false,
        extra: &[],
    };
    let status = respond(out, mode, req, &rendered, body, &mut state.compressed());
    Reply::new(Route::NoteGet, status)
}

/// `GET /notes?limit=N&before=ID`: newest first, with a cursor for the next page.
pub fn list(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let mut limit = LIST_LIMIT_DEFAULT;
    let mut before: Option<NoteId> = None;
    for (k, v) in encoding::form_pairs(req.query()) {
        match k {
            b"limit" => match std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            {
                Some(n) if (1..=LIST_LIMIT_MAX).contains(&n) => limit = n,
                _ => {
                    let e = HttpError::invalid(format!(
                        "limit must be a number in 1..={LIST_LIMIT_MAX}"
                    ));
                    return error(out, mode, Route::NotesList, &e);
                }
            },
            b"before" => match NoteId::parse_bytes(v).ok() {
                Some(id) => before = Some(id),
                None => {
                    return error(
                        out,
                        mode,
                        Route::NotesList,
                        &HttpError::invalid("before must be a note id"),
                    )
                }
            },
            _ => {}
        }
    }
    // Before the index is read (see `api/page.rs`).
    let notes_digest = core.index_digest();
    let index = core.index();
    let Some(newest) = index.newest(before.as_ref()) else {
        return error(
            out,
            mode,
            Route::NotesList,
            &HttpError::invalid("before names an unknown note"),
        );
    };
    let version = list_version(notes_digest, limit, before.as_ref());
    let state = core.api_state();
    let mut scratch = state.scratch();
    scratch.extend_from_slice(b"{\"notes\":[");
    let mut last: Option<NoteId> = None;
    let mut more = false;
    for (i, note_ref) in newest.enumerate() {
        if i == limit {
            more = true;
            break;
        }
        if i > 0 {
            scratch.push(b',');
        }
        let note = note_ref.note();
        write_note_json(&mut scratch, note);
        last = Some(note.id());
    }
    scratch.extend_from_slice(b"],\"next_before\":");
    match (more, last) {
        (true, Some(id)) => {
            let _ = write!(scratch, "\"{id}\"");
        }
        _ => scratch.extend_from_slice(b"null"),
    }
    scratch.extend_from_slice(b"}\n");
    let rendered = Rendered {
        content_type: JSON,
        cache_control: cache_control::REVALIDATE,
        version: Some(version),
        always_negotiated: false,
        extra: &[],
    };
    let status = respond(out, mode, req, &rendered, &scratch, &mut state.compressed());
    Reply::new(Route::NotesList, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_by_content_type() {
        assert_eq!(
            text_from_body(ContentType::Form, b"text=a+b", 10).unwrap(),
            "a b"
        );
        assert_eq!(
            text_from_body(ContentType::Json, br#"{"text":"hi"}"#, 10).unwrap(),
            "hi"
        );
        assert_eq!(
            text_from_body(ContentType::Text, b"plain", 10).unwrap(),
            "plain"
        );
        assert_eq!(
            text_from_body(ContentType::Absent, b"plain", 10).unwrap(),
            "plain"
        );
        assert_eq!(
            text_from_body(ContentType::Other, b"x", 10)
                .unwrap_err()
                .status(),
            415
        );
        assert_eq!(
            text_from_body(ContentType::Form, b"nottext=1", 10)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            text_from_body(ContentType::Json, b"{", 10)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            text_from_body(ContentType::Text, b"\xff", 10)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            text_from_body(ContentType::Text, b"   ", 10)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            text_from_body(ContentType::Text, b"01234567890", 10)
                .unwrap_err()
                .status(),
            413
        );
    }
}
