//! The page's static files, built into the binary: `/app.js`, `/app.css`,
//! `/favicon.svg`. The server fetches nothing from elsewhere and the page
//! links nothing from elsewhere (its Content-Security-Policy forbids it).
//!
//! The page links each file with a version query (`/app.js?v=HASH`, the
//! hash of the file's bytes, computed at compile time), so a browser may
//! cache a versioned URL forever (`immutable`): a new build has new URLs.
//! A request without the current version is answered too, but must be
//! revalidated (`no-cache`).

use std::sync::LazyLock;

use super::{Reply, Request, Route};
use crate::http::response::{self, ResponseMode};

/// One built-in file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// FNV-1a hash of `body`, the `v` of its versioned URL.
    pub hash: u64,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!($file),
            hash: fnv1a(include_bytes!($file)),
        }
    };
}

pub const APP_JS: Asset = asset!(
    "/app.js",
    "../assets/app.js",
    "text/javascript; charset=utf-8"
);
pub const APP_CSS: Asset = asset!("/app.css", "../assets/app.css", "text/css; charset=utf-8");
pub const FAVICON: Asset = asset!("/favicon.svg", "../assets/favicon.svg", "image/svg+xml");

static ASSETS: [&Asset; 3] = [&APP_JS, &APP_CSS, &FAVICON];

/// Each asset's versioned URL and its `v=...` query, in `ASSETS` order.
static VERSIONED: LazyLock<[(String, String); 3]> = LazyLock::new(|| {
    ASSETS.map(|a| {
        let query = format!("v={:016x}", a.hash);
        (format!("{}?{query}", a.path), query)
    })
});

/// The URL the page links for `asset`.
pub fn url(asset: &Asset) -> &'static str {
    let i = ASSETS
        .iter()
        .position(|a| a.path == asset.path)
        .unwrap_or_default();
    &VERSIONED[i].0
}

pub fn find(path: &[u8]) -> Option<usize> {
    ASSETS.iter().position(|a| a.path.as_bytes() == path)
}

/// `GET /app.js` and the others.
pub fn serve(req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    let Some(i) = find(req.path()) else {
        response::write_text(out, mode, 404, &[], "not found");
        return Reply::new(Route::NotFound, 404);
    };
    let asset = ASSETS[i];
    let cache = if req.query() == VERSIONED[i].1.as_bytes() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response::write(
        out,
        mode,
        200,
        asset.content_type,
        &[
            ("Cache-Control", cache),
            ("X-Content-Type-Options", "nosniff"),
        ],
        asset.body,
    );
    Reply::new(Route::Asset, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_urls_carry_the_content_hash() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let js = url(&APP_JS);
        assert!(js.starts_with("/app.js?v="), "{js}");
        assert!(js.ends_with(&format!("{:016x}", fnv1a(APP_JS.body))));
        assert!(url(&FAVICON).starts_with("/favicon.svg?v="));
        assert_eq!(find(b"/app.css"), Some(1));
        assert_eq!(find(b"/nope"), None);
    }
}
