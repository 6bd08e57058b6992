//! How a body goes out: its validator (`ETag`), how caches may keep it
//! (`Cache-Control`), its content coding (`Content-Encoding`, `Vary`), and
//! the `304 Not Modified` that replaces it when the client already has it.
//!
//! Every handler that answers with a body decides three things here:
//! - **Cache-Control** ([`cache_control`]): what changes (the page, lists)
//!   may be stored but must be revalidated (`no-cache`); what is different
//!   at every request (metrics, status, health, events) is not stored
//!   (`no-store`); what never changes (a note, a versioned asset) is
//!   `immutable` for a year.
//! - **the entity tag**: a 64-bit version from a [`TagHasher`] seeded with
//!   [`SOURCE_TAG_SEED`] (so another build never shares a tag) and fed what
//!   the body is made of (the index's digest, the page's parameters, a
//!   note's id), never the body's bytes; one tag per coding
//!   (`http/conditional.rs`).
//! - **the coding**: bodies of at least [`COMPRESS_BYTES_MIN`] bytes are
//!   negotiated (gzip or brotli, `Vary: Accept-Encoding`, whichever coding
//!   is sent); smaller ones are always identity and carry no `Vary`.
//!
//! Cached bodies (the newest page, the assets) keep their encodings in an
//! [`Encodings`]: each coding is compressed once per version, on the first
//! request that wants it. Bodies rendered per request (JSON lists, older
//! pages, metrics) are compressed per request at [`Effort::PER_REQUEST`]
//! into the core's reused compression buffer ([`respond`]).
//!
//! A 304 carries what RFC 9110 §15.4.5 asks of it: `ETag`, `Cache-Control`,
//! `Vary`, `Date` (and the usual `Server`, `X-Served-By`); no body, no
//! `Content-Length`, no `Content-Type` or `Content-Encoding`.

use std::sync::LazyLock;

use super::Request;
use crate::http::coding::{self, Coding, Effort};
use crate::http::conditional::EntityTag;
use crate::http::response::{self, ResponseMode};

/// `Cache-Control` values, one per kind of resource.
pub mod cache_control {
    /// Changes whenever a note is added: a cache may store it but must ask
    /// (with its `ETag`) before each use.
    pub const REVALIDATE: &str = "no-cache";
    /// Different at every request (counters, health): not worth storing.
    pub const NO_STORE: &str = "no-store";
    /// Never changes (a note; an asset under its versioned URL).
    pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
}

/// Smallest body that is compressed. Below it a response fits in one or
/// two TCP segments either way, and a compressed small body can be larger
/// than the original (gzip adds 18 bytes of framing).
pub const COMPRESS_BYTES_MIN: usize = 1024;

/// Hex digits of `URINGNOTES_SOURCE_HASH` (`build.rs`).
const SOURCE_HASH_HEX_DIGITS: usize = 16;

/// The seed of every entity tag: the hash of the sources this binary was
/// built from (`build.rs`) and the package version.
pub static SOURCE_TAG_SEED: LazyLock<u64> = LazyLock::new(|| {
    let source = env!("URINGNOTES_SOURCE_HASH");
    debug_assert_eq!(source.len(), SOURCE_HASH_HEX_DIGITS);
    let source = u64::from_str_radix(source, 16).unwrap_or_default();
    TagHasher::new(source)
        .bytes(env!("CARGO_PKG_VERSION").as_bytes())
        .finish()
});

/// Builds a 64-bit version from the parts a body is made of. Each part is
/// mixed in with splitmix64's finalizer, so the order of parts matters and
/// similar inputs give unrelated tags.
#[derive(Debug, Clone, Copy)]
pub struct TagHasher(u64);

impl TagHasher {
    pub fn new(seed: u64) -> TagHasher {
        TagHasher(mix(seed))
    }

    pub fn part(self, part: u64) -> TagHasher {
        TagHasher(mix(self.0 ^ mix(part)))
    }

    /// Adds a byte string (its length first, so `"ab","c"` differs from `"a","bc"`).
    pub fn bytes(self, bytes: &[u8]) -> TagHasher {
        let mut h = self.part(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = h.part(u64::from_le_bytes(word));
        }
        h
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Everything about a response except its body.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub content_type: &'a str,
    pub cache_control: &'static str,
    /// The tag of this representation (in `coding`), if the resource has one.
    pub etag: Option<EntityTag>,
    /// Other codings of this resource exist: `Vary: Accept-Encoding`.
    pub negotiated: bool,
    pub coding: Coding,
    /// Further headers of a 200 (not repeated on a 304).
    pub extra: &'a [(&'a str, &'a str)],
}

/// Most headers [`Meta`] adds: Cache-Control, ETag, Vary, Content-Encoding.
const META_HEADERS_MAX: usize = 4;
/// Most further headers a handler passes in `Meta::extra`.
const EXTRA_HEADERS_MAX: usize = 4;

impl Meta<'_> {
    /// Whether the request's `If-None-Match` names this representation.
    pub fn not_modified_for(&self, req: &Request<'_>) -> bool {
        self.etag
            .as_ref()
            .is_some_and(|tag| req.head.if_none_match.matches(req.raw_head, tag))
    }
}

/// Writes a 200 with `body` (already in `meta.coding`).
pub fn write_ok(out: &mut Vec<u8>, mode: ResponseMode, meta: &Meta<'_>, body: &[u8]) {
    debug_assert!(meta.extra.len() <= EXTRA_HEADERS_MAX);
    let mut headers: [(&str, &str); META_HEADERS_MAX + EXTRA_HEADERS_MAX] =
        [("", ""); META_HEADERS_MAX + EXTRA_HEADERS_MAX];
    let etag = meta.etag;
    let mut n = push_meta(
        &mut headers,
        meta.cache_control,
        etag.as_ref(),
        meta.negotiated,
    );
    if let Some(token) = meta.coding.token() {
        headers[n] = ("Content-Encoding", token);
        n += 1;
    }
    for (slot, h) in headers[n..].iter_mut().zip(meta.extra) {
        *slot = *h;
        n += 1;
    }
    response::write(out, mode, 200, meta.content_type, &headers[..n], body);
}

/// Writes the 304 for a request whose `If-None-Match` named `meta.etag`.
pub fn write_not_modified(out: &mut Vec<u8>, mode: ResponseMode, meta: &Meta<'_>) {
    let mut headers: [(&str, &str); META_HEADERS_MAX] = [("", ""); META_HEADERS_MAX];
    let etag = meta.etag;
    let n = push_meta(
        &mut headers,
        meta.cache_control,
        etag.as_ref(),
        meta.negotiated,
    );
    response::write(out, mode, 304, "", &headers[..n], b"");
}

fn push_meta<'h>(
    headers: &mut [(&'h str, &'h str)],
    cache_control: &'static str,
    etag: Option<&'h EntityTag>,
    negotiated: bool,
) -> usize {
    let mut n = 0;
    headers[n] = ("Cache-Control", cache_control);
    n += 1;
    if let Some(tag) = etag {
        headers[n] = ("ETag", tag.as_str());
        n += 1;
    }
    if negotiated {
        headers[n] = ("Vary", "Accept-Encoding");
        n += 1;
    }
    n
}

/// A response body rendered per request, with what [`respond`] needs to
/// send it.
pub struct Rendered<'a> {
    pub content_type: &'a str,
    pub cache_control: &'static str,
    /// The resource's version (see [`TagHasher`]), if it has a validator.
    pub version: Option<u64>,
    /// Negotiated whatever its size (the page: its tags and `Vary` must
    /// not change kind with the number of notes); otherwise only from
    /// [`COMPRESS_BYTES_MIN`] bytes.
    pub always_negotiated: bool,
    pub extra: &'a [(&'a str, &'a str)],
}

/// Answers a `GET`/`HEAD` whose 200 would carry `body` (rendered for this
/// request): 304 if the client holds this representation, else the body,
/// compressed at [`Effort::PER_REQUEST`] into `compressed` when it is large
/// enough and the client accepts a coding. Returns the status sent.
pub fn respond(
    out: &mut Vec<u8>,
    mode: ResponseMode,
    req: &Request<'_>,
    rendered: &Rendered<'_>,
    body: &[u8],
    compressed: &mut Vec<u8>,
) -> u16 {
    let negotiated = rendered.always_negotiated || body.len() >= COMPRESS_BYTES_MIN;
    let mut coding = if negotiated {
        req.head.accept_encoding.preferred()
    } else {
        Coding::Identity
    };
    let meta = |coding| Meta {
        content_type: rendered.content_type,
        cache_control: rendered.cache_control,
        etag: rendered.version.map(|v| EntityTag::new(v, coding)),
        negotiated,
        coding,
        extra: rendered.extra,
    };
    let mut sending = meta(coding);
    if sending.not_modified_for(req) {
        write_not_modified(out, mode, &sending);
        return 304;
    }
    let mut sent = body;
    if coding != Coding::Identity {
        compressed.clear();
        match coding::compress_into(coding, Effort::PER_REQUEST, body, compressed) {
            Ok(()) => sent = compressed,
            Err(e) => {
                tracing::warn!(error = %e, "sending the body uncompressed");
                coding = Coding::Identity;
                sending = meta(coding);
            }
        }
    }
    write_ok(out, mode, &sending, sent);
    200
}

/// A cached body in every coding a client asked for: identity, and each
/// other coding compressed once, on first demand, until the body changes.
#[derive(Default)]
pub struct Encodings {
    identity: Vec<u8>,
    gzip: Option<Vec<u8>>,
    br: Option<Vec<u8>>,
    /// Buffers of dropped encodings, reused by the next compression (the
    /// page changes with every note: no allocation per version).
    spare: Vec<Vec<u8>>,
}

/// Buffers kept in `Encodings::spare` (one per compressed coding).
const SPARE_BUFFERS_MAX: usize = 2;

impl Encodings {
    /// A new body: the compressed encodings of the old one are dropped.
    /// `fill` writes the new identity body into the (cleared) buffer.
    pub fn replace(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        for old in [self.gzip.take(), self.br.take()].into_iter().flatten() {
            if self.spare.len() < SPARE_BUFFERS_MAX {
                self.spare.push(old);
            }
        }
        self.identity.clear();
        fill(&mut self.identity);
    }

    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The body in `coding` (compressing it now if this is the first
    /// request for it), and the coding it is really in: identity if the
    /// compressor failed.
    pub fn get(&mut self, coding: Coding, effort: Effort) -> (&[u8], Coding) {
        let slot = match coding {
            Coding::Identity => return (&self.identity, Coding::Identity),
            Coding::Gzip => &mut self.gzip,
            Coding::Br => &mut self.br,
        };
        if slot.is_none() {
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            match coding::compress_into(coding, effort, &self.identity, &mut buf) {
                Ok(()) => *slot = Some(buf),
                Err(e) => {
                    tracing::warn!(error = %e, "sending the body uncompressed");
                    return (&self.identity, Coding::Identity);
                }
            }
        }
        match slot {
            Some(body) => (body, coding),
            None => (&self.identity, Coding::Identity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_every_part_and_its_order() {
        let a = TagHasher::new(1).part(2).part(3).finish();
        assert_eq!(a, TagHasher::new(1).part(2).part(3).finish());
        assert_ne!(a, TagHasher::new(1).part(3).part(2).finish());
        assert_ne!(a, TagHasher::new(2).part(2).part(3).finish());
        assert_ne!(
            TagHasher::new(0).bytes(b"ab").bytes(b"c").finish(),
            TagHasher::new(0).bytes(b"a").bytes(b"bc").finish()
        );
        assert_ne!(*SOURCE_TAG_SEED, 0);
    }

    #[test]
    fn encodings_compress_once_per_body() {
        let mut e = Encodings::default();
        e.replace(|b| b.extend(std::iter::repeat_n(b'x', 5000)));
        let (gz, coding) = e.get(Coding::Gzip, Effort::PER_REQUEST);
        assert_eq!(coding, Coding::Gzip);
        let first = gz.as_ptr();
        assert!(gz.len() < 100);
        assert_eq!(e.get(Coding::Gzip, Effort::PER_REQUEST).0.as_ptr(), first);
        e.replace(|b| b.extend_from_slice(b"new"));
        assert_eq!(e.identity(), b"new");
        let (gz, _) = e.get(Coding::Gzip, Effort::PER_REQUEST);
        assert!(gz.len() > 3, "the new body, compressed");
    }
}
