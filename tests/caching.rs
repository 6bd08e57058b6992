//! Responses that browsers and caches can use well, against the real
//! binary over real sockets: entity tags and `304 Not Modified`,
//! `Cache-Control` per resource, and gzip/brotli negotiation (every
//! `Accept-Encoding` case; every compressed body decodes to the identity
//! body). The cross-node case is in `tests/cluster.rs`
//! (`a_write_on_another_node_changes_the_tags`), the browser's reload in
//! `tests/browser.rs`.

mod common;

use std::io::Read as _;

use common::{connect_to, Client, Response, Server};

/// The body of `r` with its `Content-Encoding` undone.
fn decoded(r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    match r.header("content-encoding") {
        None => return r.body.clone(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        Some("br") => {
            brotli::Decompressor::new(&r.body[..], 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

fn get(c: &mut Client, path: &str, headers: &[(&str, &str)]) -> Response {
    c.request("GET", path, headers, b"")
}

fn etag(r: &Response) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag: {r:?}"))
        .to_string()
}

/// What RFC 9110 §15.4.5 asks of a 304: the validator and caching
/// headers a 200 would carry, and no body or body metadata.
fn assert_not_modified(r: &Response, tag: &str, cache_control: &str) {
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(tag));
    assert_eq!(r.header("cache-control"), Some(cache_control));
    assert!(r.header("date").is_some(), "a 304 has a Date");
    assert_eq!(r.header("content-length"), None, "{r:?}");
    assert_eq!(r.header("content-type"), None, "{r:?}");
    assert_eq!(r.header("content-encoding"), None, "{r:?}");
}

fn post(c: &mut Client, text: &str) -> String {
    let r = c.request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        text.as_bytes(),
    );
    assert_eq!(r.status, 201);
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn the_page_is_revalidated_with_a_304_until_a_note_changes_it() {
    let server = Server::start(&["--cores", "1"]);
    let mut c = server.connect();
    post(&mut c, "first");
    let r = get(&mut c, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let tag = etag(&r);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"),
        "a strong tag: {tag}"
    );
    assert_eq!(r.header("etag"), get(&mut c, "/", &[]).header("etag"));

    let again = get(&mut c, "/", &[("If-None-Match", &tag)]);
    assert_not_modified(&again, &tag, "no-cache");
    assert_eq!(again.header("vary"), Some("Accept-Encoding"));
    // The weak comparison (RFC 9110 §13.1.2), lists, several lines, `*`.
    for inm in [
        format!("W/{tag}"),
        format!("\"nope\", {tag}"),
        "*".to_string(),
    ] {
        let r = get(&mut c, "/", &[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
    }
    let r = get(
        &mut c,
        "/",
        &[("If-None-Match", "\"nope\""), ("If-None-Match", &tag)],
    );
    assert_eq!(r.status, 304, "field lines combine");
    let r = get(&mut c, "/", &[("If-None-Match", "\"nope\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), get(&mut c, "/", &[]).body.len());
    // HEAD is conditional too.
    let r = c.request("HEAD", "/", &[("If-None-Match", &tag)], b"");
    assert_eq!(r.status, 304);

    post(&mut c, "second");
    let changed = get(&mut c, "/", &[("If-None-Match", &tag)]);
    assert_eq!(changed.status, 200, "a new note changes the page");
    assert!(changed.text().contains("second"));
    let new_tag = etag(&changed);
    assert_ne!(new_tag, tag);
    assert_eq!(get(&mut c, "/", &[("If-None-Match", &new_tag)]).status, 304);

    // Counted like any answer.
    let metrics = get(&mut c, "/metrics", &[]).text();
    assert!(
        metrics.contains("uringnotes_http_requests_total{route=\"page\",status=\"304\"} 7\n"),
        "{metrics}"
    );
}

#[test]
fn every_core_gives_the_page_the_same_tag_and_sees_the_others_writes() {
    let server = Server::start(&["--cores", "2"]);
    let mut c0 = connect_to(server.addr, 0);
    let mut c1 = connect_to(server.addr, 1);
    post(&mut c0, "written through core 0");
    for coding in ["identity", "gzip", "br"] {
        let ae = [("Accept-Encoding", coding)];
        let a = get(&mut c0, "/", &ae);
        let b = get(&mut c1, "/", &ae);
        assert_eq!(etag(&a), etag(&b), "{coding}");
        assert_eq!(a.body, b.body, "same tag, same bytes ({coding})");
        let tag = etag(&a);
        let inm = [("Accept-Encoding", coding), ("If-None-Match", tag.as_str())];
        assert_eq!(get(&mut c1, "/", &inm).status, 304, "{coding}");
        let list_a = get(&mut c0, "/notes?limit=5", &ae);
        assert_eq!(etag(&list_a), etag(&get(&mut c1, "/notes?limit=5", &ae)));
    }
    let page_tag = etag(&get(&mut c1, "/", &[]));
    let list_tag = etag(&get(&mut c1, "/notes", &[]));
    post(&mut c0, "another, through core 0");
    let page = get(&mut c1, "/", &[("If-None-Match", &page_tag)]);
    assert_eq!(page.status, 200, "core 1 sees core 0's note");
    assert!(page.text().contains("another, through core 0"));
    let list = get(&mut c1, "/notes", &[("If-None-Match", &list_tag)]);
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["notes"].as_array().unwrap().len(), 2);
}

#[test]
fn older_pages_lists_and_notes_have_their_own_tags() {
    let server = Server::start(&["--cores", "1", "--page-notes", "2"]);
    let mut c = server.connect();
    let ids: Vec<String> = (0..5).map(|i| post(&mut c, &format!("note {i}"))).collect();

    let older = format!("/?before={}", ids[3]);
    let r = get(&mut c, &older, &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let tag = etag(&r);
    assert_ne!(tag, etag(&get(&mut c, "/", &[("Accept-Encoding", "gzip")])));
    let inm = [("Accept-Encoding", "gzip"), ("If-None-Match", tag.as_str())];
    assert_not_modified(&get(&mut c, &older, &inm), &tag, "no-cache");
    let unknown = get(&mut c, "/?before=00000001-0-1", &[("If-None-Match", "*")]);
    assert_eq!(unknown.status, 400, "no 304 for what would not be a 200");

    let list = get(&mut c, "/notes?limit=2", &[]);
    assert_eq!(list.header("cache-control"), Some("no-cache"));
    let list_tag = etag(&list);
    assert_not_modified(
        &get(&mut c, "/notes?limit=2", &[("If-None-Match", &list_tag)]),
        &list_tag,
        "no-cache",
    );
    for other in [
        "/notes?limit=3",
        "/notes",
        &format!("/notes?limit=2&before={}", ids[2]),
    ] {
        assert_ne!(etag(&get(&mut c, other, &[])), list_tag, "{other}");
    }

    let note = get(&mut c, &format!("/notes/{}", ids[0]), &[]);
    assert_eq!(
        note.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let note_tag = etag(&note);
    assert_ne!(
        note_tag,
        etag(&get(&mut c, &format!("/notes/{}", ids[1]), &[]))
    );
    let r = get(
        &mut c,
        &format!("/notes/{}", ids[0]),
        &[("If-None-Match", &note_tag)],
    );
    assert_not_modified(&r, &note_tag, "public, max-age=31536000, immutable");

    post(&mut c, "newer");
    assert_eq!(
        get(&mut c, &older, &inm).status,
        200,
        "an older page shows the count of all notes"
    );
    assert_eq!(
        get(&mut c, "/notes?limit=2", &[("If-None-Match", &list_tag)]).status,
        200
    );
    assert_eq!(
        get(
            &mut c,
            &format!("/notes/{}", ids[0]),
            &[("If-None-Match", &note_tag)]
        )
        .status,
        304,
        "a note never changes"
    );
    let missing = get(&mut c, "/notes/00000001-0-1", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    assert_eq!(missing.header("etag"), None);
}

#[test]
fn every_accept_encoding_case_on_the_page() {
    let server = Server::start(&["--cores", "1"]);
    let mut c = server.connect();
    for i in 0..30 {
        post(&mut c, &format!("note {i} with some words to compress"));
    }
    let identity = get(&mut c, "/", &[]);
    assert_eq!(identity.header("content-encoding"), None);
    let identity_tag = etag(&identity);
    let cases: [(Option<&str>, Option<&str>); 19] = [
        (None, None),
        (Some(""), None),
        (Some("gzip"), Some("gzip")),
        (Some("x-gzip"), Some("gzip")),
        (Some("GZIP"), Some("gzip")),
        (Some("br"), Some("br")),
        (Some("gzip, deflate, br, zstd"), Some("br")),
        (Some("gzip;q=1.0, br;q=0.5"), Some("gzip")),
        (Some("br;q=0, gzip"), Some("gzip")),
        (Some("gzip;q=0"), None),
        (Some("identity"), None),
        (Some("gzip;q=0.5, identity"), None),
        (Some("identity;q=0, gzip"), Some("gzip")),
        (Some("*"), Some("br")),
        (Some("*;q=0.5, br;q=0"), Some("gzip")),
        (Some("*;q=0"), None),
        (Some("identity;q=0"), None),
        (Some("deflate, zstd"), None),
        (Some("gzip;q=7"), None),
    ];
    for (accept, expected) in cases {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let r = get(&mut c, "/", &headers);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-encoding"),
            expected,
            "Accept-Encoding: {accept:?}"
        );
        assert_eq!(
            r.header("vary"),
            Some("Accept-Encoding"),
            "every negotiated answer varies, whichever coding ({accept:?})"
        );
        assert_eq!(decoded(&r), identity.body, "{accept:?}");
        let tag = etag(&r);
        let suffix = match expected {
            None => "",
            Some("gzip") => "-gz",
            Some(_) => "-br",
        };
        assert_eq!(
            tag,
            format!("{}{suffix}\"", identity_tag.trim_end_matches('"')),
            "one tag per coding ({accept:?})"
        );
        if expected.is_some() {
            assert!(r.body.len() < identity.body.len() / 2, "{accept:?}");
        }
        // HEAD: the same headers, no body.
        let head = c.request("HEAD", "/", &headers, b"");
        assert_eq!(head.status, 200);
        for h in [
            "content-length",
            "content-encoding",
            "etag",
            "vary",
            "cache-control",
        ] {
            assert_eq!(head.header(h), r.header(h), "HEAD {h} ({accept:?})");
        }
        // The 304 needs the tag of the representation this request selects.
        let mut inm = headers.clone();
        inm.push(("If-None-Match", &tag));
        assert_eq!(get(&mut c, "/", &inm).status, 304, "{accept:?}");
        if expected.is_some() {
            let mut other = headers.clone();
            other.push(("If-None-Match", &identity_tag));
            assert_eq!(
                get(&mut c, "/", &other).status,
                200,
                "the identity tag is another representation ({accept:?})"
            );
        }
    }
}

#[test]
fn json_is_compressed_above_the_threshold_and_small_bodies_never() {
    let server = Server::start(&["--cores", "1"]);
    let mut c = server.connect();
    let first = post(&mut c, "a short note");
    for i in 0..40 {
        post(
            &mut c,
            &format!("note {i}: enough JSON to be worth compressing"),
        );
    }
    let gzip = [("Accept-Encoding", "gzip, br;q=0.9")];

    // A small body: identity, no Vary, whatever the client accepts.
    for path in [
        format!("/notes/{first}"),
        "/notes?limit=1".to_string(),
        "/healthz".to_string(),
        "/favicon.svg".to_string(),
    ] {
        let r = get(&mut c, &path, &gzip);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.len() < 1024, "{path}: {} bytes", r.body.len());
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert_eq!(r.header("vary"), None, "{path}");
    }

    let plain = get(&mut c, "/notes?limit=40", &[]);
    assert!(plain.body.len() > 1024);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    for (accept, coding) in [("gzip, br;q=0.9", "gzip"), ("br", "br")] {
        let r = get(&mut c, "/notes?limit=40", &[("Accept-Encoding", accept)]);
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.body.len() < plain.body.len() / 2);
        assert_eq!(
            decoded(&r),
            plain.body,
            "{coding} decodes to the identity body"
        );
        let tag = etag(&r);
        assert_ne!(tag, etag(&plain));
        let inm = [("Accept-Encoding", accept), ("If-None-Match", &tag)];
        assert_eq!(get(&mut c, "/notes?limit=40", &inm).status, 304);
        let head = c.request(
            "HEAD",
            "/notes?limit=40",
            &[("Accept-Encoding", accept)],
            b"",
        );
        assert_eq!(head.header("content-length"), r.header("content-length"));
        assert_eq!(head.header("content-encoding"), Some(coding));
    }

    // Operator pages: never stored, compressed when large.
    for path in ["/metrics", "/_status"] {
        let r = get(&mut c, path, &gzip);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(r.header("etag"), None, "{path}");
        if r.header("content-encoding").is_some() {
            assert!(String::from_utf8(decoded(&r)).is_ok(), "{path}");
        }
    }
    let metrics = get(&mut c, "/metrics", &gzip);
    assert_eq!(metrics.header("content-encoding"), Some("gzip"));
    assert!(String::from_utf8(decoded(&metrics))
        .unwrap()
        .contains("uringnotes_http_requests_total"));
    assert_eq!(
        get(&mut c, "/healthz", &[]).header("cache-control"),
        Some("no-store")
    );
    // A GET that writes: its 204 must not be stored by a cache.
    let add = get(&mut c, "/add_note?text=via+get", &[]);
    assert_eq!(add.status, 204);
    assert_eq!(add.header("cache-control"), Some("no-store"));
}

#[test]
fn assets_are_compressed_once_and_revalidated() {
    let server = Server::start(&["--cores", "1"]);
    let mut c = server.connect();
    let page = get(&mut c, "/", &[]).text();
    let start = page.find("/app.js?v=").expect("the script's URL");
    let versioned = page[start..].split('"').next().unwrap().to_string();
    let plain = get(&mut c, "/app.js", &[]);
    for (path, cache_control) in [
        (versioned.as_str(), "public, max-age=31536000, immutable"),
        ("/app.js", "no-cache"),
    ] {
        for coding in ["gzip", "br"] {
            let r = get(&mut c, path, &[("Accept-Encoding", coding)]);
            assert_eq!(r.header("content-encoding"), Some(coding), "{path}");
            assert_eq!(r.header("cache-control"), Some(cache_control), "{path}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"));
            assert_eq!(decoded(&r), plain.body, "{path} {coding}");
            let tag = etag(&r);
            let inm = [("Accept-Encoding", coding), ("If-None-Match", tag.as_str())];
            assert_not_modified(&get(&mut c, path, &inm), &tag, cache_control);
        }
    }
}

#[test]
fn dispatched_requests_are_conditional_too() {
    // With `--dispatch random` a page request may run on the other core
    // (it is re-parsed there): the answer must not depend on where.
    let server = Server::start(&["--cores", "2", "--dispatch", "random"]);
    let mut c = server.connect();
    post(&mut c, "dispatched");
    let tag = etag(&get(&mut c, "/", &[("Accept-Encoding", "gzip")]));
    let mut cores = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = get(
            &mut c,
            "/",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &tag)],
        );
        assert_eq!(r.status, 304);
        cores.insert(r.header("x-served-by").unwrap().to_string());
    }
    assert_eq!(cores.len(), 2, "both cores answered: {cores:?}");
}
