//! The notes API: create, list, fetch; and `GET /add_note`, kept compatible
//! with the original server.
//!
//! Note text is validated here, once, for every way of submitting it: it must
//! be valid UTF-8, not blank, and at most `note_text_bytes_max` bytes. A
//! write is answered only after the note is durable (see `store/writer.rs`);
//! if the log cannot take it, the client gets 503 and nothing is claimed.

use std::io::Write as _;

use serde::Deserialize;

use super::{error, Reply, Request};
use crate::encoding::{self, json_string_into};
use crate::http::request::ContentType;
use crate::http::response::{self, ResponseMode};
use crate::http::HttpError;
use crate::metrics::{CoreMetrics, Route};
use crate::server::shard::{GaugeUnit, Shard};
use crate::store::note::{ArchivedNote, NoteId};
use crate::store::writer::WriteError;

/// Notes per `GET /notes` page unless `limit` says otherwise.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Largest `limit` accepted by `GET /notes`.
pub const LIST_LIMIT_MAX: usize = 1000;

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

/// `POST /notes`.
pub async fn create(
    shard: &Shard,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let max = shard.config().note_text_bytes_max;
    let text = match text_from_body(req.head.content_type, req.body, max) {
        Ok(t) => t,
        Err(e) => return error(out, mode, Route::NotesCreate, &e),
    };
    // Hundreds of POSTs may wait for the same log batch; none of them holds
    // a write buffer meanwhile, so the few buffers in use stay in the CPU's
    // cache (the first store into a cold one was most of the extra cost of
    // a POST at 512 connections; perf, 2026-11-25).
    shard.park_write_buffer(out);
    let created = {
        // Not load for dispatch while it waits (`CoreMetrics::dispatch_load`);
        // a guard, so a cancelled or panicking write ends the wait too.
        let _waiting = GaugeUnit::begin(
            shard,
            CoreMetrics::log_wait_begin,
            CoreMetrics::log_wait_end,
        );
        shard.create_note(text).await
    };
    shard.unpark_write_buffer(out);
    let note = match created {
        Ok(n) => n,
        Err(e) => return write_failed(out, mode, Route::NotesCreate, &e),
    };
    let note = note.note();
    if req.head.content_type == ContentType::Form && req.head.accepts_html {
        response::write_text(out, mode, 303, &[("Location", "/")], "note added");
        return Reply::new(Route::NotesCreate, 303);
    }
    // Body and Location rendered into the core's scratch buffer, one after
    // the other (no allocation).
    let mut scratch = shard.scratch();
    scratch.clear();
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
    shard: &Shard,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let max = shard.config().note_text_bytes_max;
    let text = match encoding::form_field(req.query(), "text") {
        None => {
            return error(
                out,
                mode,
                Route::AddNote,
                &HttpError::invalid("query parameter 'text' is missing"),
            )
        }
        Some(Err(_)) => {
            return error(
                out,
                mode,
                Route::AddNote,
                &HttpError::invalid("note text is not valid UTF-8"),
            )
        }
        Some(Ok(t)) => t,
    };
    let text = match validate_text(text, max) {
        Ok(t) => t,
        Err(e) => return error(out, mode, Route::AddNote, &e),
    };
    if let Err(e) = shard.create_note(text).await {
        return write_failed(out, mode, Route::AddNote, &e);
    }
    response::write(out, mode, 204, "", &[], b"");
    Reply::new(Route::AddNote, 204)
}

fn write_failed(out: &mut Vec<u8>, mode: ResponseMode, route: Route, e: &WriteError) -> Reply {
    let msg = match e {
        WriteError::NoSpace => "the disk is full: the note was not stored".to_string(),
        WriteError::ShuttingDown => {
            "the server is shutting down: the note was not stored".to_string()
        }
        WriteError::Restarting => {
            "this core is restarting after a failure: the note was not stored".to_string()
        }
        WriteError::Io(m) => format!("storage error, the note was not stored: {m}"),
    };
    response::write_text(out, mode, 503, &[("Retry-After", "1")], &msg);
    Reply::new(route, 503)
}

/// `GET /notes/{id}`.
pub fn get(shard: &Shard, req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    let id = NoteId::parse_bytes(&req.path()[b"/notes/".len()..]).ok();
    let index = shard.index();
    let Some(note) = id.and_then(|id| index.get(&id)) else {
        response::write(
            out,
            mode,
            404,
            "application/json",
            &[],
            b"{\"error\":\"no such note\"}\n",
        );
        return Reply::new(Route::NoteGet, 404);
    };
    let mut scratch = shard.scratch();
    scratch.clear();
    write_note_json(&mut scratch, note.note());
    scratch.push(b'\n');
    response::write(out, mode, 200, "application/json", &[], &scratch);
    Reply::new(Route::NoteGet, 200)
}

/// `GET /notes?limit=N&before=ID`: newest first, with a cursor for the next page.
pub fn list(shard: &Shard, req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
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
    let index = shard.index();
    let Some(newest) = index.newest(before.as_ref()) else {
        return error(
            out,
            mode,
            Route::NotesList,
            &HttpError::invalid("before names an unknown note"),
        );
    };
    let mut scratch = shard.scratch();
    scratch.clear();
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
    response::write(out, mode, 200, "application/json", &[], &scratch);
    Reply::new(Route::NotesList, 200)
}

/// Appends one note as a JSON object, read straight from its archive.
/// Hand-formatted (no `fmt` machinery): this is the hot path of the API.
pub fn write_note_json(out: &mut Vec<u8>, note: &ArchivedNote) {
    let id = note.id();
    let created = note.created_at_us();
    out.extend_from_slice(b"{\"id\":\"");
    write_id(out, &id);
    out.extend_from_slice(b"\",\"node\":\"");
    encoding::hex8_into(out, id.origin.node);
    out.extend_from_slice(b"\",\"created_at\":\"");
    encoding::rfc3339_into(out, created, true);
    out.extend_from_slice(b"\",\"created_at_us\":");
    encoding::decimal_into(out, created);
    out.extend_from_slice(b",\"text\":");
    json_string_into(out, note.text());
    out.push(b'}');
}

/// Appends a note id in its text form (`NODE-CORE-SEQ`).
pub fn write_id(out: &mut Vec<u8>, id: &NoteId) {
    encoding::hex8_into(out, id.origin.node);
    out.push(b'-');
    encoding::decimal_into(out, u64::from(id.origin.core));
    out.push(b'-');
    encoding::decimal_into(out, id.seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_json_is_valid_and_complete() {
        use crate::store::note::{self, Note, Origin};
        let n = Note {
            id: NoteId {
                origin: Origin {
                    node: 0x0a0b0c0d,
                    core: 3,
                },
                seq: 77,
            },
            created_at_us: 1_795_602_063_021_880,
            text: "a \"quoted\" <b>\n".into(),
        };
        let bytes = note::archive(&n);
        let mut out = Vec::new();
        write_note_json(&mut out, note::access(&bytes).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "0a0b0c0d-3-77");
        assert_eq!(v["node"], "0a0b0c0d");
        assert_eq!(v["created_at"], "2026-11-25T10:21:03.021880Z");
        assert_eq!(v["created_at_us"], 1_795_602_063_021_880u64);
        assert_eq!(v["text"], "a \"quoted\" <b>\n");
    }

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
