//! Serializing responses straight into a connection's write buffer.
//!
//! A response is written in one call with its whole body known, so
//! `Content-Length` is always exact and no response is chunked. For `HEAD`
//! the headers (including the length the body would have) are written and
//! the body is left out.
//!
//! A [`CompleteResponse`] is a whole response already serialized for its
//! client: what a request run on another core or node sends back (written
//! to the client unchanged), including the closing error replies built by
//! [`CompleteResponse::closing`] when it could not be run.

use super::date;

/// How the connection that carries a response behaves; decides the
/// `Connection` header and whether a body is sent.
#[derive(Debug, Clone, Copy)]
pub struct ResponseMode {
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (keep-alive must then be announced).
    pub http10: bool,
    /// The request was HEAD: no body.
    pub head_only: bool,
    /// Value of the `X-Served-By` header (`node/core`), if enabled.
    pub served_by: Option<&'static str>,
    /// Value of the `Strict-Transport-Security` header: set on HTTPS
    /// responses when `hsts_max_age` is configured.
    pub hsts: Option<&'static str>,
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        303 => "See Other",
        304 => "Not Modified",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a complete response. `headers` are extra `(name, value)` pairs;
/// values must not contain CR or LF (they are produced by this server).
pub fn write(
    out: &mut Vec<u8>,
    mode: ResponseMode,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    write_head(out, mode, status, content_type, headers, body.len());
    if !mode.head_only && status != 204 && status != 304 {
        out.extend_from_slice(body);
    }
}

/// Writes the status line and headers for a body of `body_len` bytes.
pub fn write_head(
    out: &mut Vec<u8>,
    mode: ResponseMode,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = itoa::Buffer::new();
    out.extend_from_slice(code.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: uringnotes\r\nDate: ");
    date::with_http_date(|d| out.extend_from_slice(d));
    out.extend_from_slice(b"\r\n");
    if !content_type.is_empty() && status != 204 {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(by) = mode.served_by {
        out.extend_from_slice(b"X-Served-By: ");
        out.extend_from_slice(by.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(hsts) = mode.hsts {
        out.extend_from_slice(b"Strict-Transport-Security: ");
        out.extend_from_slice(hsts.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        debug_assert!(
            !value.contains(['\r', '\n']),
            "header {name} carries a line break"
        );
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if status != 204 && status != 304 {
        out.extend_from_slice(b"Content-Length: ");
        let mut len = itoa::Buffer::new();
        out.extend_from_slice(len.format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !mode.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if mode.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A plain-text error or message response.
pub fn write_text(
    out: &mut Vec<u8>,
    mode: ResponseMode,
    status: u16,
    headers: &[(&str, &str)],
    text: &str,
) {
    let mut body = String::with_capacity(text.len() + 1);
    body.push_str(text);
    body.push('\n');
    write(
        out,
        mode,
        status,
        "text/plain; charset=utf-8",
        headers,
        body.as_bytes(),
    );
}

/// A response serialized for the connection that will carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteResponse {
    pub status: u16,
    /// The connection closes after it.
    pub close: bool,
    /// Head and body, exactly as the client gets them.
    pub bytes: Vec<u8>,
}

impl CompleteResponse {
    /// A plain-text error reply with `status` that closes the client's
    /// connection: for a request that another core or node could not
    /// answer (its framing for the client is no longer known to be sound).
    pub fn closing(status: u16, headers: &[(&str, &str)], why: &str) -> CompleteResponse {
        let mut bytes = Vec::new();
        let mode = ResponseMode {
            keep_alive: false,
            http10: false,
            head_only: false,
            served_by: None,
            hsts: None,
        };
        write_text(&mut bytes, mode, status, headers, why);
        CompleteResponse {
            status,
            close: true,
            bytes,
        }
    }

    /// 503 with `Retry-After: 1`: the request could not be run where it was
    /// sent (the node went away, too many requests waiting, ...).
    pub fn unavailable(why: &str) -> CompleteResponse {
        CompleteResponse::closing(503, &[("Retry-After", "1")], why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: ResponseMode = ResponseMode {
        keep_alive: true,
        http10: false,
        head_only: false,
        served_by: None,
        hsts: None,
    };

    #[test]
    fn every_status_the_server_sends_has_its_reason_phrase() {
        // Including those only the admin API (202) and dispatch (502, 504)
        // send, which once went out as "Unknown".
        for status in [
            100, 200, 201, 202, 204, 301, 303, 304, 308, 400, 403, 404, 405, 408, 409, 411, 413,
            414, 415, 417, 429, 431, 500, 501, 502, 503, 504, 505,
        ] {
            assert_ne!(reason(status), "Unknown", "{status}");
        }
    }

    #[test]
    fn writes_a_complete_response() {
        let mut out = Vec::new();
        write(&mut out, KEEP, 200, "text/plain", &[("X-A", "b")], b"hi");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("\r\nContent-Length: 2\r\n"));
        assert!(text.contains("\r\nX-A: b\r\n"));
        assert!(text.contains("\r\nDate: "));
        assert!(!text.contains("Connection:"));
        assert!(text.ends_with("\r\n\r\nhi"));
    }

    #[test]
    fn head_has_length_but_no_body() {
        let mut out = Vec::new();
        write(
            &mut out,
            ResponseMode {
                head_only: true,
                ..KEEP
            },
            200,
            "text/plain",
            &[],
            b"hello",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn connection_header_follows_mode() {
        let mut out = Vec::new();
        write(
            &mut out,
            ResponseMode {
                keep_alive: false,
                ..KEEP
            },
            400,
            "text/plain",
            &[],
            b"",
        );
        assert!(String::from_utf8_lossy(&out).contains("Connection: close\r\n"));
        out.clear();
        write(
            &mut out,
            ResponseMode {
                http10: true,
                ..KEEP
            },
            200,
            "text/plain",
            &[],
            b"",
        );
        assert!(String::from_utf8_lossy(&out).contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn a_closing_reply_says_so() {
        let r = CompleteResponse::unavailable("gone");
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(r.close);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("\r\nRetry-After: 1\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\ngone\n"));
    }

    #[test]
    fn no_content_has_no_length_or_body() {
        let mut out = Vec::new();
        write(&mut out, KEEP, 204, "text/plain", &[], b"ignored");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"));
        assert!(!text.contains("Content-Type"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
