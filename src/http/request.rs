//! Request heads: parsing (httparse) and the framing rules of RFC 9112.
//!
//! [`parse_head`] is the first of two passes over a connection's buffer: it
//! says whether a whole head is there ([`HeadStatus::Partial`] is an ordinary
//! answer, not an error), validates it, and decides how the body is framed.
//! The result refers to the buffer by offsets, so no bytes are copied.
//!
//! Rules enforced here (each a test in `tests/http_hostile.rs`):
//! - heads over `header_bytes_max` get 431, targets over `uri_bytes_max` 414;
//! - HTTP/1.1 requires exactly one `Host`;
//! - `Content-Length` must be digits only, and all its values equal;
//!   `Content-Length` together with `Transfer-Encoding` is refused (request
//!   smuggling); a transfer coding other than a single final `chunked` is
//!   refused (501 if unknown, 400 otherwise);
//! - `Expect` other than `100-continue` gets 417.
//!
//! Two fields are kept for the handlers: `Accept-Encoding`, parsed into
//! weights while the head is scanned ([`AcceptEncoding`], a few bytes), and
//! `If-None-Match`, kept as spans and read only on the way to a 200
//! ([`IfNoneMatch`]).

use super::coding::AcceptEncoding;
use super::conditional::IfNoneMatch;
use super::error::HttpError;
use super::trim_ows;

/// Most headers a request may carry (more gets 431).
pub const HEADERS_COUNT_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Trace,
    Connect,
    /// A syntactically valid method this server does not implement.
    Other,
}

impl Method {
    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

/// The media type of the body, as far as the routes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Absent,
    Form,
    Json,
    Text,
    Other,
}

/// A byte range within the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub fn get<'b>(&self, head: &'b [u8]) -> &'b [u8] {
        &head[self.start as usize..(self.start + self.len) as usize]
    }
}

/// A validated request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// Path of the target (origin-form, absolute-form reduced to its path).
    pub path: Span,
    /// Query string without the `?`, if any.
    pub query: Option<Span>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    pub keep_alive: bool,
    pub body: BodyFraming,
    pub expect_continue: bool,
    pub content_type: ContentType,
    /// The client accepts text/html (a browser): form posts get a redirect.
    pub accepts_html: bool,
    /// The content codings the client accepts (`Accept-Encoding`).
    pub accept_encoding: AcceptEncoding,
    /// The entity tags the client already holds (`If-None-Match`).
    pub if_none_match: IfNoneMatch,
    /// Bytes of the head, including the blank line.
    pub head_bytes: usize,
}

/// A complete request as bytes, to be run somewhere other than the core
/// that read it (another core, another node): its raw head and body, and how
/// its response must be framed for the client that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRequest {
    pub keep_alive: bool,
    pub http10: bool,
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub header_bytes_max: usize,
    pub uri_bytes_max: usize,
    pub body_bytes_max: usize,
}

#[derive(Debug)]
pub enum HeadStatus {
    Complete(RequestHead),
    /// More bytes are needed.
    Partial,
}

/// Parses the head at the start of `buf`.
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<HeadStatus, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::HeadTooLarge(limits.header_bytes_max))
        }
        Err(httparse::Error::Version) => {
            // httparse reports any version other than 1.0/1.1 this way, and
            // also a request line with no version at all (HTTP/0.9 style).
            return if looks_like_versioned_request_line(buf) {
                Err(HttpError::VersionNotSupported)
            } else {
                Err(HttpError::bad_request("malformed request line"))
            };
        }
        Err(e) => {
            return Err(HttpError::bad_request(format!(
                "malformed request: {}",
                describe(e)
            )))
        }
    };
    let head_bytes = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= limits.header_bytes_max {
                if !buf[..limits.header_bytes_max].contains(&b'\n') {
                    Err(HttpError::UriTooLong(limits.uri_bytes_max))
                } else {
                    Err(HttpError::HeadTooLarge(limits.header_bytes_max))
                }
            } else {
                Ok(HeadStatus::Partial)
            };
        }
    };
    if head_bytes > limits.header_bytes_max {
        return Err(HttpError::HeadTooLarge(limits.header_bytes_max));
    }
    let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
    else {
        return Err(HttpError::bad_request("malformed request line"));
    };
    let method = Method::from_bytes(method);
    if target.len() > limits.uri_bytes_max {
        return Err(HttpError::UriTooLong(limits.uri_bytes_max));
    }
    let offset_of = |s: &str| (s.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    let target_start = offset_of(target);
    let (path, query) = split_target(target, target_start, method)?;

    let mut hosts = 0usize;
    let mut content_length: Option<usize> = None;
    let mut content_length_overflow = false;
    let mut transfer_codings: Vec<&[u8]> = Vec::new();
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut content_type = ContentType::Absent;
    let mut accepts_html = false;
    let mut accept_encoding = AcceptEncoding::default();
    let mut if_none_match = IfNoneMatch::default();
    for h in req.headers.iter() {
        let name = h.name;
        let value = trim_ows(h.value);
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                    content_length_overflow = true;
                    continue;
                }
                return Err(HttpError::bad_request(
                    "Content-Length must be a decimal number",
                ));
            }
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| HttpError::bad_request("Content-Length must be a decimal number"))?;
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::bad_request("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if !coding.is_empty() {
                    transfer_codings.push(coding);
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HttpError::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let media = trim_ows(value.split(|&b| b == b';').next().unwrap_or(b""));
            content_type = if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
                ContentType::Form
            } else if media.eq_ignore_ascii_case(b"application/json") {
                ContentType::Json
            } else if media.eq_ignore_ascii_case(b"text/plain") {
                ContentType::Text
            } else {
                ContentType::Other
            };
        } else if name.eq_ignore_ascii_case("accept") {
            accepts_html = contains_ignore_case(value, b"text/html");
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            accept_encoding.add_field(value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match.push(Span {
                start: (value.as_ptr() as usize - buf.as_ptr() as usize) as u32,
                len: value.len() as u32,
            });
        }
    }

    if version_minor == 1 && hosts != 1 {
        return Err(HttpError::bad_request(if hosts == 0 {
            "HTTP/1.1 request without a Host header"
        } else {
            "more than one Host header"
        }));
    }
    if hosts > 1 {
        return Err(HttpError::bad_request("more than one Host header"));
    }

    let body = if !transfer_codings.is_empty() {
        if content_length.is_some() || content_length_overflow {
            return Err(HttpError::bad_request(
                "both Content-Length and Transfer-Encoding (refused: request smuggling)",
            ));
        }
        if version_minor == 0 {
            return Err(HttpError::bad_request(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if let Some(unknown) = transfer_codings
            .iter()
            .find(|c| !c.eq_ignore_ascii_case(b"chunked"))
        {
            return Err(HttpError::NotImplemented(
                format!(
                    "transfer coding {:?} is not supported (only chunked)",
                    String::from_utf8_lossy(unknown)
                )
                .into(),
            ));
        }
        if transfer_codings.len() != 1 {
            return Err(HttpError::bad_request("chunked applied more than once"));
        }
        BodyFraming::Chunked
    } else if content_length_overflow {
        return Err(HttpError::too_large(format!(
            "request body is larger than {} bytes",
            limits.body_bytes_max
        )));
    } else if let Some(n) = content_length {
        if n > limits.body_bytes_max {
            return Err(HttpError::too_large(format!(
                "request body of {n} bytes is larger than the limit of {} bytes",
                limits.body_bytes_max
            )));
        }
        if n == 0 {
            BodyFraming::None
        } else {
            BodyFraming::Length(n)
        }
    } else if matches!(method, Method::Post | Method::Put | Method::Patch) {
        return Err(HttpError::LengthRequired);
    } else {
        BodyFraming::None
    };

    let keep_alive = if version_minor == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    Ok(HeadStatus::Complete(RequestHead {
        method,
        path,
        query,
        version_minor,
        keep_alive,
        body,
        expect_continue: expect_continue && version_minor == 1,
        content_type,
        accepts_html,
        accept_encoding,
        if_none_match,
        head_bytes,
    }))
}

/// Splits a request target into path and query spans (RFC 9112 §3.2).
fn split_target(
    target: &str,
    start: u32,
    method: Method,
) -> Result<(Span, Option<Span>), HttpError> {
    let bytes = target.as_bytes();
    let mut path_start = 0usize;
    if bytes.first() == Some(&b'/') {
        // origin-form
    } else if let Some(rest) = strip_prefix_ignore_case(bytes, b"http://")
        .or_else(|| strip_prefix_ignore_case(bytes, b"https://"))
    {
        // absolute-form: keep only the path (the authority is not used).
        let authority_end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        path_start = bytes.len() - rest.len() + authority_end;
        if path_start == bytes.len() || bytes[path_start] == b'?' {
            return Err(HttpError::bad_request(
                "absolute-form target without a path",
            ));
        }
    } else if bytes == b"*" && method == Method::Options {
        return Ok((Span { start, len: 1 }, None));
    } else {
        return Err(HttpError::bad_request("request target must start with '/'"));
    }
    let rel = &bytes[path_start..];
    let (path_len, query) = match rel.iter().position(|&b| b == b'?') {
        Some(q) => (
            q,
            Some(Span {
                start: start + (path_start + q + 1) as u32,
                len: (rel.len() - q - 1) as u32,
            }),
        ),
        None => (rel.len(), None),
    };
    // A fragment is never sent by a conforming client; refuse it rather than
    // guess (it would otherwise end up in the path).
    if rel.contains(&b'#') {
        return Err(HttpError::bad_request("request target contains '#'"));
    }
    Ok((
        Span {
            start: start + path_start as u32,
            len: path_len as u32,
        },
        query,
    ))
}

fn looks_like_versioned_request_line(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let _method = parts.next();
    let _target = parts.next();
    matches!(parts.next(), Some(v) if v.starts_with(b"HTTP/"))
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid version",
    }
}

fn strip_prefix_ignore_case<'a>(v: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &v[prefix.len()..])
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        header_bytes_max: 16 * 1024,
        uri_bytes_max: 8 * 1024,
        body_bytes_max: 64 * 1024,
    };

    fn parse(s: &str) -> Result<HeadStatus, HttpError> {
        parse_head(s.as_bytes(), &LIMITS)
    }

    fn head(s: &str) -> RequestHead {
        match parse(s) {
            Ok(HeadStatus::Complete(h)) => h,
            other => panic!("expected a complete head for {s:?}, got {other:?}"),
        }
    }

    fn status_of(s: &str) -> u16 {
        match parse(s) {
            Err(e) => e.status(),
            other => panic!("expected an error for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_simple_get() {
        let raw = "GET /notes/abc?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = head(raw);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path.get(raw.as_bytes()), b"/notes/abc");
        assert_eq!(h.query.unwrap().get(raw.as_bytes()), b"x=1");
        assert!(h.keep_alive);
        assert_eq!(h.body, BodyFraming::None);
        assert_eq!(h.head_bytes, raw.len());
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n"),
            Ok(HeadStatus::Partial)
        ));
        assert!(matches!(parse("G"), Ok(HeadStatus::Partial)));
    }

    #[test]
    fn absolute_form_is_reduced_to_its_path() {
        let raw = "GET http://example.com/notes?limit=2 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let h = head(raw);
        assert_eq!(h.path.get(raw.as_bytes()), b"/notes");
        assert_eq!(h.query.unwrap().get(raw.as_bytes()), b"limit=2");
    }

    #[test]
    fn http10_closes_unless_asked() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn framing_rules() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").body,
            BodyFraming::Chunked
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            status_of(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
            ),
            400
        );
        assert_eq!(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"
            ),
            413
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n"),
            413
        );
        assert_eq!(status_of("POST / HTTP/1.1\r\nHost: a\r\n\r\n"), 411);
    }

    #[test]
    fn request_line_and_header_errors() {
        assert_eq!(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status_of("GET /\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost a\r\n\r\n"), 400);
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"),
            417
        );
        assert_eq!(status_of("GET notes HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status_of(&long_uri), 414);
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(17000)
        );
        assert_eq!(status_of(&big_head), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            status_of(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
    }

    #[test]
    fn accept_encoding_and_if_none_match_are_kept_for_the_handlers() {
        use crate::http::coding::Coding;
        use crate::http::conditional::EntityTag;
        let tag = EntityTag::new(42, Coding::Gzip);
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip;q=0.5\r\n\
If-None-Match: \"x\"\r\nAccept-Encoding: br;q=0\r\nIf-None-Match:  W/{} \r\n\r\n",
            tag.as_str()
        );
        let h = head(&raw);
        assert_eq!(h.accept_encoding.preferred(), Coding::Gzip);
        assert!(h.if_none_match.is_present());
        assert!(h.if_none_match.matches(raw.as_bytes(), &tag));
        assert!(!h
            .if_none_match
            .matches(raw.as_bytes(), &EntityTag::new(42, Coding::Br)));
        let plain = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(plain.accept_encoding.preferred(), Coding::Identity);
        assert!(!plain.if_none_match.is_present());
    }

    #[test]
    fn content_type_and_accept() {
        let h = head("POST /notes HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded; charset=UTF-8\r\nAccept: text/html,*/*\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.content_type, ContentType::Form);
        assert!(h.accepts_html);
    }
}
