//! The redirect listener (`--redirect-http`): plain HTTP that answers every
//! request with a redirect to the same path and query on the HTTPS origin,
//! as nginx's `return 301 https://$host$request_uri` does.
//!
//! The host is the request's `Host` header without its port (a client
//! reached this listener under the name it will use for HTTPS); the port is
//! the HTTPS listener's, left out when it is 443. `GET` and `HEAD` get 301
//! (what every client follows), other methods 308, which keeps the method
//! and body. A `Host` that is not a plain host name or IP literal gets 400:
//! it is copied into the `Location` header, so nothing else may pass.

use super::{Reply, Request, Route};
use crate::http::request::{Method, HEADERS_COUNT_MAX};
use crate::http::response::{self, ResponseMode};

/// Answers `req` with a redirect to `https://HOST[:https_port]TARGET`.
pub fn answer(req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode, https_port: u16) -> Reply {
    let Some(host) = host_of(req.raw_head) else {
        response::write_text(
            out,
            mode,
            400,
            &[],
            "this address only redirects to HTTPS, and needs a valid Host header to say where",
        );
        return Reply::new(Route::Redirect, 400);
    };
    let mut location = String::with_capacity(16 + host.len() + req.path().len());
    location.push_str("https://");
    location.push_str(host);
    if https_port != 443 {
        location.push(':');
        location.push_str(itoa::Buffer::new().format(https_port));
    }
    // The target was checked by the parser: visible ASCII, no spaces.
    location.push_str(&String::from_utf8_lossy(req.path()));
    let query = req.query();
    if !query.is_empty() {
        location.push('?');
        location.push_str(&String::from_utf8_lossy(query));
    }
    let status = if matches!(req.head.method, Method::Get | Method::Head) {
        301
    } else {
        308
    };
    response::write_text(
        out,
        mode,
        status,
        &[("Location", &location)],
        "this site is served over HTTPS",
    );
    Reply::new(Route::Redirect, status)
}

/// The `Host` header's host, without a port; `None` when it is missing or
/// is not a host name, an IPv4 address or a bracketed IPv6 address.
fn host_of(raw_head: &[u8]) -> Option<&str> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(raw_head).ok()?;
    let value = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))?
        .value;
    let value = std::str::from_utf8(value).ok()?.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        let end = rest.find(']')?;
        let literal = &value[..end + 2];
        let inner = &rest[..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        port_ok(&rest[end + 1..])?;
        literal
    } else {
        let (name, port) = match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        };
        if let Some(port) = port {
            port_ok(&format!(":{port}"))?;
        }
        if name.is_empty()
            || name.len() > 253
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return None;
        }
        name
    };
    Some(host)
}

/// `""` or `":DIGITS"`.
fn port_ok(rest: &str) -> Option<()> {
    match rest.strip_prefix(':') {
        None if rest.is_empty() => Some(()),
        Some(digits)
            if !digits.is_empty()
                && digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_gives_the_host_without_its_port() {
        let head = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            host_of(head("notes.example.com").as_bytes()),
            Some("notes.example.com")
        );
        assert_eq!(
            host_of(head("notes.example.com:8080").as_bytes()),
            Some("notes.example.com")
        );
        assert_eq!(host_of(head("127.0.0.1:80").as_bytes()), Some("127.0.0.1"));
        assert_eq!(host_of(head("[::1]:8080").as_bytes()), Some("[::1]"));
        assert_eq!(host_of(head("[::1]").as_bytes()), Some("[::1]"));
        for bad in [
            "",
            "a b",
            "evil.com/path",
            "x:port",
            "[::1",
            "[zz]",
            "a@b",
            "x\"y",
            "h:123456",
        ] {
            assert_eq!(host_of(head(bad).as_bytes()), None, "{bad:?}");
        }
        assert_eq!(host_of(b"GET / HTTP/1.0\r\n\r\n"), None);
    }
}
