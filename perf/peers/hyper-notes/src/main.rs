//! hyper-notes: the notes server a Rust team would write first, on tokio and
//! axum (hyper underneath). `perf/run` measures uringnotes against it.
//!
//! The same API as uringnotes for the measured routes:
//! - `GET /`: the HTML page, newest 100 notes first, text HTML-escaped;
//! - `GET /notes/{id}`: one note as JSON, or 404;
//! - `POST /notes`: a form body `text=...`; 201 with `Location` and the note
//!   as JSON;
//! - `GET /healthz`: `ok`.
//!
//! Notes live in memory (a `Vec` and a `HashMap` behind an `RwLock`) and each
//! is appended to a log file as one JSON line before it is acknowledged:
//! written, not fsync'd, which matches `uringnotes serve --fsync never`.
//!
//! Usage: `hyper-notes ADDR LOG_FILE` (worker threads: `TOKIO_WORKER_THREADS`).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Notes shown on the page.
const PAGE_NOTES: usize = 100;
/// Longest note text in bytes (uringnotes' default).
const NOTE_TEXT_BYTES_MAX: usize = 4096;
/// This node's id in note ids (uringnotes uses a random one per data dir).
const NODE_ID: u32 = 0x0bad_cafe;

#[derive(Clone, Serialize)]
struct Note {
    id: String,
    node: String,
    created_at: String,
    created_at_us: u64,
    text: String,
}

#[derive(Default)]
struct Store {
    /// Oldest first.
    notes: Vec<Arc<Note>>,
    by_id: HashMap<String, Arc<Note>>,
}

struct App {
    store: RwLock<Store>,
    log: Mutex<std::fs::File>,
    seq: AtomicU64,
}

type Shared = Arc<App>;

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

fn escape_html(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

async fn page(State(app): State<Shared>) -> Html<String> {
    let store = app.store.read().expect("store lock");
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>hyper-notes</title>\
<style>body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f7f9}main{max-width:46rem;margin:0 auto;padding:1rem}\
ol{list-style:none;padding:0}li{background:#fff;border:1px solid #e0e3e8;border-radius:.4rem;padding:.7rem .9rem;margin-bottom:.6rem}\
li p{margin:0 0 .3rem;white-space:pre-wrap}li small{color:#687085;font-size:.8rem}</style></head><body><main>\
<h1>hyper-notes</h1><form method=\"post\" action=\"/notes\"><label for=\"text\">New note</label>\
<textarea id=\"text\" name=\"text\" required maxlength=\"4096\"></textarea><button type=\"submit\">Add note</button></form><ol id=\"notes\">",
    );
    for note in store.notes.iter().rev().take(PAGE_NOTES) {
        html.push_str("<li id=\"n-");
        html.push_str(&note.id);
        html.push_str("\"><p>");
        escape_html(&mut html, &note.text);
        html.push_str("</p><small><time datetime=\"");
        html.push_str(&note.created_at);
        html.push_str("\">");
        html.push_str(&note.created_at);
        html.push_str("</time> · node ");
        html.push_str(&note.node);
        html.push_str("</small></li>");
    }
    html.push_str("</ol><footer>");
    html.push_str(&store.notes.len().to_string());
    html.push_str(" notes · hyper-notes</footer></main></body></html>\n");
    Html(html)
}

async fn get_note(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let store = app.store.read().expect("store lock");
    match store.by_id.get(&id) {
        Some(note) => Json(note.as_ref().clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such note").into_response(),
    }
}

async fn create(State(app): State<Shared>, Form(new): Form<NewNote>) -> Response {
    if new.text.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "text must not be blank").into_response();
    }
    if new.text.len() > NOTE_TEXT_BYTES_MAX {
        return (StatusCode::PAYLOAD_TOO_LARGE, "text is too long").into_response();
    }
    let seq = app.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let now = SystemTime::now();
    let created_at_us = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64;
    let note = Arc::new(Note {
        id: format!("{NODE_ID:08x}-0-{seq}"),
        node: format!("{NODE_ID:08x}"),
        created_at: humantime::format_rfc3339_micros(now).to_string(),
        created_at_us,
        text: new.text,
    });
    let mut line = serde_json::to_vec(note.as_ref()).expect("a note serializes");
    line.push(b'\n');
    if let Err(e) = app.log.lock().expect("log lock").write_all(&line) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("cannot store: {e}")).into_response();
    }
    {
        let mut store = app.store.write().expect("store lock");
        store.by_id.insert(note.id.clone(), Arc::clone(&note));
        store.notes.push(Arc::clone(&note));
    }
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/notes/{}", note.id))],
        Json(note.as_ref().clone()),
    )
        .into_response()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(log_path)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper-notes ADDR LOG_FILE");
        std::process::exit(2);
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| {
            eprintln!("hyper-notes: cannot open {log_path}: {e}");
            std::process::exit(1);
        });
    let app = Arc::new(App {
        store: RwLock::new(Store::default()),
        log: Mutex::new(log),
        seq: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/notes", axum::routing::post(create))
        .route("/notes/{id}", get(get_note))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| {
            eprintln!("hyper-notes: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
    println!(
        "hyper-notes listening on http://{}",
        listener.local_addr().expect("bound address")
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server");
}
