//! The target of a benchmark: an `http://` or `https://` URL, parsed and
//! resolved once.
//!
//! Only what a load generator needs is accepted: the `http` or `https`
//! scheme, a host (name, IPv4 address or bracketed IPv6 address), an
//! optional port (80 or 443 by default) and an optional path with query.
//! The host is resolved before the run starts, so every connection goes to
//! the same address and no lookup happens while measuring; for `https` it
//! is also the name the server's certificate is checked against (SNI).
//! Other schemes, user info and fragments are refused with a message saying
//! so rather than silently ignored.

use std::net::{SocketAddr, ToSocketAddrs};

/// Longest URL accepted (a request target beyond this is not a benchmark).
pub const URL_BYTES_MAX: usize = 8192;

/// Why a URL cannot be benchmarked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("invalid URL {0:?}: expected http://HOST[:PORT][/PATH] or https://...")]
    Malformed(String),
    #[error("invalid URL {0:?}: only http:// and https:// are supported")]
    Scheme(String),
    #[error("invalid URL {url:?}: {why}")]
    Invalid { url: String, why: &'static str },
    #[error("cannot resolve host {host:?}: {why}")]
    Resolve { host: String, why: String },
}

/// A parsed and resolved URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as the user gave it (for reports).
    pub url: String,
    /// `https`: connections speak TLS.
    pub tls: bool,
    /// The host without brackets: the TLS server name.
    pub host: String,
    /// The value of the `Host` header: the authority as written (host and,
    /// if given, port).
    pub authority: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
    /// Where connections go (the first address the host resolved to).
    pub addr: SocketAddr,
}

/// The parts of a URL before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    pub tls: bool,
    pub authority: String,
    /// Host without brackets (an IPv6 literal is bare here).
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Splits an `http://` or `https://` URL into its parts, without resolving
/// the host.
pub fn parse(url: &str) -> Result<ParsedUrl, UrlError> {
    let malformed = || UrlError::Malformed(url.to_string());
    if url.len() > URL_BYTES_MAX {
        return Err(UrlError::Invalid {
            url: url.chars().take(64).collect(),
            why: "longer than 8192 bytes",
        });
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UrlError::Invalid {
            url: url.to_string(),
            why: "contains spaces or control characters",
        });
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(malformed)?;
    let tls = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return Err(UrlError::Scheme(url.to_string()));
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.contains('#') {
        return Err(UrlError::Invalid {
            url: url.to_string(),
            why: "a fragment (#...) is never sent to a server",
        });
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err(UrlError::Invalid {
            url: url.to_string(),
            why: "user information is not supported",
        });
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(malformed)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(malformed)?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(malformed());
    }
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(UrlError::Invalid {
                    url: url.to_string(),
                    why: "the port must be a number from 1 to 65535",
                })
            }
        },
    };
    Ok(ParsedUrl {
        tls,
        authority: authority.to_string(),
        host: host.to_string(),
        port,
        path,
    })
}

/// Parses `url` and resolves its host.
pub fn resolve(url: &str) -> Result<Target, UrlError> {
    let parsed = parse(url)?;
    let resolve_err = |why: String| UrlError::Resolve {
        host: parsed.host.clone(),
        why,
    };
    let addr = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| resolve_err(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_err("no address".into()))?;
    Ok(Target {
        url: url.to_string(),
        tls: parsed.tls,
        host: parsed.host,
        authority: parsed.authority,
        path: parsed.path,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_path_are_split() {
        let p = parse("http://127.0.0.1:8080/notes?limit=5").unwrap();
        assert_eq!(p.host, "127.0.0.1");
        assert_eq!(p.port, 8080);
        assert_eq!(p.authority, "127.0.0.1:8080");
        assert_eq!(p.path, "/notes?limit=5");
    }

    #[test]
    fn defaults_are_port_80_and_root_path() {
        let p = parse("http://localhost").unwrap();
        assert_eq!((p.port, p.path.as_str()), (80, "/"));
        assert_eq!(parse("http://h?x=1").unwrap().path, "/?x=1");
    }

    #[test]
    fn https_urls_default_to_port_443() {
        let p = parse("https://localhost/notes").unwrap();
        assert!(p.tls);
        assert_eq!((p.port, p.host.as_str()), (443, "localhost"));
        assert!(!parse("HTTP://localhost").unwrap().tls);
        assert_eq!(parse("https://h:8443/").unwrap().port, 8443);
    }

    #[test]
    fn ipv6_literals_keep_their_brackets_in_the_host_header() {
        let p = parse("http://[::1]:9000/").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.port, 9000);
        assert_eq!(p.authority, "[::1]:9000");
        assert_eq!(resolve("http://[::1]:9000/").unwrap().addr.port(), 9000);
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for bad in [
            "",
            "127.0.0.1:8080",
            "http://",
            "http://:80/",
            "http://[::1/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:8x/",
            "http://u@h/",
            "http://h/#frag",
            "http://h/a b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(matches!(
            parse("ftp://example.com/"),
            Err(UrlError::Scheme(_))
        ));
    }

    #[test]
    fn an_unresolvable_host_is_an_error() {
        assert!(matches!(
            resolve("http://no-such-host.invalid/"),
            Err(UrlError::Resolve { .. })
        ));
    }
}
