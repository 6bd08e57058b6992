//! The request mix: which requests a benchmark sends, in what proportion,
//! and their bytes on the wire.
//!
//! A mix is written `METHOD PATH[:WEIGHT],...`, for example
//! `GET /:80,GET /notes:10,POST /notes:10`. Each request picks an entry at
//! random in proportion to the weights (a per-connection xorshift generator:
//! no shared state, no syscalls). Request heads are rendered once, when the
//! mix is built; a request with a body (POST, PUT, PATCH) gets a form body
//! `text=...` whose text is unique in the run (run id, connection, sequence),
//! so a notes server stores a distinct note for each.
//!
//! Invariant: every template's bytes form one complete HTTP/1.1 request
//! (or a head that [`Mix::write_request`] completes with a body).

use std::io::Write as _;

/// Most entries a mix may have.
pub const MIX_ENTRIES_MAX: usize = 64;
/// Largest weight of one entry.
pub const MIX_WEIGHT_MAX: u32 = 1_000_000;
/// Most extra headers (`--header`) per request.
pub const HEADERS_MAX: usize = 32;

/// Why a mix or a header is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    #[error("bad --mix {spec:?}: {why}")]
    Mix { spec: String, why: String },
    #[error("bad --header {header:?}: {why}")]
    Header { header: String, why: &'static str },
}

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct MixEntry {
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    pub weight: u32,
    /// The request has a generated body (POST, PUT, PATCH).
    pub has_body: bool,
    /// A HEAD request: its response has no body whatever its headers say.
    pub is_head: bool,
    /// Rendered head: complete (ending in the blank line) when `!has_body`;
    /// otherwise everything up to (not including) `Content-Length`.
    head: Vec<u8>,
}

/// The parsed, rendered request mix.
#[derive(Debug, Clone)]
pub struct Mix {
    pub entries: Vec<MixEntry>,
    /// Running sums of the weights, for picking an entry.
    cumulative: Vec<u32>,
    /// An id for this run, part of every generated body so texts are unique
    /// across runs against the same server too.
    run_id: u32,
}

/// One `--mix` entry before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub method: String,
    pub path: String,
    pub weight: u32,
}

/// Parses `METHOD PATH[:WEIGHT],...`.
pub fn parse_spec(spec: &str) -> Result<Vec<EntrySpec>, MixError> {
    let err = |why: String| MixError::Mix {
        spec: spec.to_string(),
        why,
    };
    let mut out = Vec::new();
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(err("empty entry (expected METHOD PATH[:WEIGHT])".into()));
        }
        let (method, rest) = item
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(format!("{item:?} is not METHOD PATH[:WEIGHT]")))?;
        let rest = rest.trim();
        // The weight is what follows the last ':' if that is all digits, so
        // a path may itself contain ':'.
        let (path, weight) = match rest.rsplit_once(':') {
            Some((p, w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
                let weight: u32 = w
                    .parse()
                    .ok()
                    .filter(|w| (1..=MIX_WEIGHT_MAX).contains(w))
                    .ok_or_else(|| {
                        err(format!(
                            "weight {w} of {item:?} must be from 1 to {MIX_WEIGHT_MAX}"
                        ))
                    })?;
                (p, weight)
            }
            Some((_, "")) => return Err(err(format!("{item:?} ends in ':' without a weight"))),
            _ => (rest, 1),
        };
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(err(format!(
                "method {method:?} must be upper-case letters (GET, POST, ...)"
            )));
        }
        if !path.starts_with('/') {
            return Err(err(format!("path {path:?} must start with '/'")));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(err(format!("path {path:?} contains spaces or controls")));
        }
        out.push(EntrySpec {
            method: method.to_string(),
            path: path.to_string(),
            weight,
        });
    }
    if out.len() > MIX_ENTRIES_MAX {
        return Err(err(format!("more than {MIX_ENTRIES_MAX} entries")));
    }
    Ok(out)
}

/// Checks `Name: value` headers and renders them as header lines.
pub fn render_headers(headers: &[String]) -> Result<String, MixError> {
    if headers.len() > HEADERS_MAX {
        return Err(MixError::Header {
            header: headers[HEADERS_MAX].clone(),
            why: "too many headers (at most 32)",
        });
    }
    let mut out = String::new();
    for h in headers {
        let bad = |why| MixError::Header {
            header: h.clone(),
            why,
        };
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| bad("expected NAME: VALUE"))?;
        let name = name.trim();
        let value = value.trim();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(bad("the name must be an HTTP token"));
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(bad("the value contains control characters"));
        }
        for reserved in ["host", "content-length", "transfer-encoding", "connection"] {
            if name.eq_ignore_ascii_case(reserved) {
                return Err(bad("Host, Content-Length, Transfer-Encoding and Connection are set by the benchmark"));
            }
        }
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    Ok(out)
}

impl Mix {
    /// Renders the entries for `authority` (the Host header) with the extra
    /// header lines `headers` (as made by [`render_headers`]).
    pub fn new(specs: &[EntrySpec], authority: &str, headers: &str, run_id: u32) -> Mix {
        assert!(!specs.is_empty(), "a mix has at least one entry");
        let user_content_type = headers
            .split("\r\n")
            .any(|l| l.len() > 13 && l[..13].eq_ignore_ascii_case("content-type:"));
        let mut cumulative = Vec::with_capacity(specs.len());
        let mut sum = 0u32;
        let entries = specs
            .iter()
            .map(|s| {
                sum += s.weight;
                cumulative.push(sum);
                let has_body = matches!(s.method.as_str(), "POST" | "PUT" | "PATCH");
                let mut head = format!(
                    "{} {} HTTP/1.1\r\nHost: {authority}\r\n{headers}",
                    s.method, s.path
                )
                .into_bytes();
                if has_body && !user_content_type {
                    head.extend_from_slice(b"Content-Type: application/x-www-form-urlencoded\r\n");
                }
                if !has_body {
                    head.extend_from_slice(b"\r\n");
                }
                MixEntry {
                    method: s.method.clone(),
                    path: s.path.clone(),
                    weight: s.weight,
                    has_body,
                    is_head: s.method == "HEAD",
                    head,
                }
            })
            .collect();
        Mix {
            entries,
            cumulative,
            run_id,
        }
    }

    /// Appends request `entry` to `out`; `conn` and `seq` make a body unique.
    pub fn write_request(&self, out: &mut Vec<u8>, entry: usize, conn: u32, seq: u64) {
        let e = &self.entries[entry];
        out.extend_from_slice(&e.head);
        if e.has_body {
            // `text=bench+RUN+CONN+SEQ`: form-encoded, '+' is a space.
            let mut body = [0u8; 64];
            let body_len = {
                let mut cursor = std::io::Cursor::new(&mut body[..]);
                let _ = write!(cursor, "text=bench+{:08x}+{conn}+{seq}", self.run_id);
                cursor.position() as usize
            };
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&body[..body_len]);
        }
    }

    /// Picks an entry in proportion to the weights.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        if self.entries.len() == 1 {
            return 0;
        }
        let total = *self.cumulative.last().unwrap_or(&1);
        let r = (rng.next_u64() % u64::from(total)) as u32;
        self.cumulative.iter().position(|&c| r < c).unwrap_or(0)
    }
}

/// A small, fast, per-connection pseudo-random generator (xorshift64*).
/// Not for anything but spreading requests over the mix.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // xorshift must not start at 0; mix the seed so nearby seeds diverge.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let m = parse_spec("GET /:80,GET /notes:10,POST /notes:10").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[2],
            EntrySpec {
                method: "POST".into(),
                path: "/notes".into(),
                weight: 10
            }
        );
        let m = parse_spec("GET /a:b").unwrap();
        assert_eq!((m[0].path.as_str(), m[0].weight), ("/a:b", 1));
    }

    #[test]
    fn bad_mixes_are_refused() {
        for bad in [
            "",
            "GET",
            "GET /:0",
            "GET /:",
            "get /",
            "GET notes",
            "GET /:80,,GET /",
            "GET /:99999999999",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let specs = parse_spec("GET /a:80,GET /b:10,POST /c:10").unwrap();
        let mix = Mix::new(&specs, "h", "", 1);
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[mix.pick(&mut rng)] += 1;
        }
        assert!((78_000..82_000).contains(&counts[0]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[1]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn requests_are_complete_and_bodies_unique() {
        let specs = parse_spec("GET /x,POST /notes").unwrap();
        let headers = render_headers(&["Accept: text/html".to_string()]).unwrap();
        let mix = Mix::new(&specs, "127.0.0.1:80", &headers, 0xabcd);
        let mut out = Vec::new();
        mix.write_request(&mut out, 0, 3, 9);
        assert_eq!(
            out,
            b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:80\r\nAccept: text/html\r\n\r\n"
        );
        let mut a = Vec::new();
        let mut b = Vec::new();
        mix.write_request(&mut a, 1, 3, 9);
        mix.write_request(&mut b, 1, 3, 10);
        let text = String::from_utf8(a.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Type: application/x-www-form-urlencoded"));
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        assert_eq!(body, "text=bench+0000abcd+3+9");
        assert_ne!(a, b);
    }

    #[test]
    fn reserved_or_malformed_headers_are_refused() {
        for bad in ["NoColon", "Host: x", "Bad Name: v", "X: a\u{1}b"] {
            assert!(render_headers(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }
}
