//! The page's static files, built into the binary: `/app.js`, `/app.css`,
//! `/favicon.svg`. The server fetches nothing from elsewhere and the page
//! links nothing from elsewhere (its Content-Security-Policy forbids it).
//!
//! The page links each file with a version query (`/app.js?v=HASH`, the
//! hash of the file's bytes, computed at compile time), so a browser may
//! cache a versioned URL forever (`immutable`): a new build has new URLs.
//! A request without the current version is answered too, but must be
//! revalidated (`no-cache`); every answer carries a strong `ETag` (from the
//! file's hash), so that revalidation is a 304.
//!
//! Files of at least `COMPRESS_BYTES_MIN` bytes are compressed once, at
//! start-up ([`prepare`], called before any core serves), with the
//! smallest output ([`Effort::ONCE`]); serving one is then a copy.

use std::sync::LazyLock;

use super::representation::{
    cache_control, write_not_modified, write_ok, Meta, TagHasher, COMPRESS_BYTES_MIN,
    SOURCE_TAG_SEED,
};
use super::{Reply, Request, Route};
use crate::http::coding::{self, Coding, Effort};
use crate::http::conditional::EntityTag;
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

/// An asset's compressed encodings (`None` when it is too small to compress,
/// or its compressor failed: it is then always sent as it is).
struct Encoded {
    gzip: Option<Vec<u8>>,
    br: Option<Vec<u8>>,
    /// The version its entity tags are made of.
    version: u64,
}

/// Kind of entity tag made here, kept apart in the tag hash (`notes.rs`
/// has the others).
const TAG_KIND_ASSET: u64 = 3;

static ENCODED: LazyLock<[Encoded; 3]> = LazyLock::new(|| {
    ASSETS.map(|a| {
        let compress = |coding| {
            if a.body.len() < COMPRESS_BYTES_MIN {
                return None;
            }
            let mut out = Vec::new();
            match coding::compress_into(coding, Effort::ONCE, a.body, &mut out) {
                Ok(()) => Some(out),
                Err(e) => {
                    tracing::warn!(asset = a.path, error = %e, "asset served uncompressed");
                    None
                }
            }
        };
        Encoded {
            gzip: compress(Coding::Gzip),
            br: compress(Coding::Br),
            version: TagHasher::new(*SOURCE_TAG_SEED)
                .part(TAG_KIND_ASSET)
                .part(a.hash)
                .finish(),
        }
    })
});

/// Compresses the assets now (once per process), so that no request waits
/// for it.
pub fn prepare() {
    LazyLock::force(&ENCODED);
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
    let encoded = &ENCODED[i];
    let cache_control = if req.query() == VERSIONED[i].1.as_bytes() {
        cache_control::IMMUTABLE
    } else {
        cache_control::REVALIDATE
    };
    let negotiated = encoded.gzip.is_some() || encoded.br.is_some();
    let wanted = if negotiated {
        req.head.accept_encoding.preferred()
    } else {
        Coding::Identity
    };
    let (coding, body) = match (wanted, &encoded.gzip, &encoded.br) {
        (Coding::Gzip, Some(gz), _) => (Coding::Gzip, &gz[..]),
        (Coding::Br, _, Some(br)) => (Coding::Br, &br[..]),
        _ => (Coding::Identity, asset.body),
    };
    let meta = Meta {
        content_type: asset.content_type,
        cache_control,
        etag: Some(EntityTag::new(encoded.version, coding)),
        negotiated,
        coding,
        extra: &[("X-Content-Type-Options", "nosniff")],
    };
    if meta.not_modified_for(req) {
        write_not_modified(out, mode, &meta);
        return Reply::new(Route::Asset, 304);
    }
    write_ok(out, mode, &meta, body);
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

    #[test]
    fn large_assets_are_compressed_once_small_ones_never() {
        for (a, e) in ASSETS.iter().zip(ENCODED.iter()) {
            let large = a.body.len() >= COMPRESS_BYTES_MIN;
            assert_eq!(e.gzip.is_some(), large, "{}", a.path);
            assert_eq!(e.br.is_some(), large, "{}", a.path);
            if let Some(gz) = &e.gzip {
                assert!(gz.len() < a.body.len(), "{}", a.path);
            }
        }
    }
}
