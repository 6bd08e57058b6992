//! The HTML page over plain HTTP against the real binary: pagination at
//! 10,000 notes, security headers, escaping, and the built-in assets.

mod common;

use std::collections::HashSet;

use common::Server;

/// The note ids listed on a page, in order.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("<li id=\"n-")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// The target of the "Older notes" link, if any.
fn older_link(page: &str) -> Option<String> {
    let at = page.find("rel=\"next\"")?;
    let href = page[..at].rfind("href=\"")? + "href=\"".len();
    Some(page[href..].split('"').next()?.to_string())
}

#[test]
fn ten_thousand_notes_are_paged_not_dumped() {
    let server = Server::start(&["--cores", "2", "--fsync", "never"]);
    let mut client = server.connect();
    for i in 0..10_000 {
        let r = client.request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            format!("note {i}").as_bytes(),
        );
        assert_eq!(r.status, 201);
    }
    let expected: Vec<String> = server
        .all_notes()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 10_000);

    let mut seen = Vec::new();
    let mut path = "/".to_string();
    let mut pages = 0;
    loop {
        let r = client.request("GET", &path, &[], b"");
        assert_eq!(r.status, 200, "GET {path}");
        let page = r.text();
        let ids = listed_ids(&page);
        pages += 1;
        assert!(ids.len() <= 100, "{} rows on one page", ids.len());
        assert!(
            r.body.len() < 64 * 1024,
            "a page is small: {} bytes",
            r.body.len()
        );
        assert_eq!(
            page.contains("data-since="),
            path == "/",
            "only the newest page follows live updates"
        );
        seen.extend(ids);
        match older_link(&page) {
            Some(next) => path = next.replace("&amp;", "&"),
            None => {
                assert!(
                    page.contains("href=\"/\">Newest notes"),
                    "the last page links back"
                );
                break;
            }
        }
    }
    assert_eq!(pages, 100);
    assert_eq!(
        seen, expected,
        "every note once, newest first, across the pages"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10_000);
    assert!(client
        .request("GET", "/", &[], b"")
        .text()
        .contains(">10000 notes</span>"));
}

#[test]
fn page_headers_escaping_and_assets() {
    let server = Server::start(&["--cores", "1"]);
    let evil = "<img src=x onerror=alert(1)> \"quoted\" 'single' & </textarea>";
    assert_eq!(server.post_note(evil).status, 201);
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("a CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let page = r.text();
    assert!(
        page.contains(
            "<p>&lt;img src=x onerror=alert(1)&gt; &quot;quoted&quot; &#39;single&#39; &amp; &lt;/textarea&gt;</p>"
        ),
        "{page}"
    );
    assert!(!page.contains("<img"), "no markup from note text");
    assert!(
        !page.contains("<style") && !page.contains("onclick") && !page.contains("<script>"),
        "no inline style or script: the CSP forbids them"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched from elsewhere"
    );

    // Every asset the page links is served, cacheable forever at its
    // versioned URL, and revalidated without the version.
    let linked: Vec<String> = ["href=\"/app.css", "href=\"/favicon.svg", "src=\"/app.js"]
        .iter()
        .map(|attr| {
            let start = page
                .find(attr)
                .unwrap_or_else(|| panic!("{attr} in {page}"));
            let url = &page[start + attr.find('/').unwrap()..];
            url.split('"').next().unwrap().to_string()
        })
        .collect();
    for url in &linked {
        assert!(url.contains("?v="), "{url}");
        let a = server.get(url);
        assert_eq!(a.status, 200, "{url}");
        assert!(!a.body.is_empty());
        assert_eq!(
            a.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{url}"
        );
        let bare = url.split('?').next().unwrap();
        let b = server.get(bare);
        assert_eq!(b.status, 200);
        assert_eq!(b.header("cache-control"), Some("no-cache"));
        assert_eq!(a.body, b.body);
    }
    assert!(server.get("/app.js").text().contains("textContent"));
    assert!(!server.get("/app.js").text().contains("innerHTML"));
    assert_eq!(
        server.get("/favicon.svg").header("content-type"),
        Some("image/svg+xml")
    );
    // The file exists but takes no POST: 405 with the methods it takes
    // (one route table since the restructure; it was a 404 before).
    let post = server.request("POST", "/app.js", &[], b"");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
