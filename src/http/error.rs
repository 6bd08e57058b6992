//! Request errors that end in an HTTP error status.
//!
//! Every way a request can be refused has a variant here, and every variant
//! maps to exactly one status code, so the status a client sees for a given
//! fault is decided in one place. The message is sent as the response body:
//! it says precisely what was wrong.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Malformed syntax or framing; the connection is closed afterwards.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// A request that parsed but is invalid for its resource (bad note text,
    /// bad query); the connection stays usable.
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    #[error("request head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// The body is over the limit and was not read; the connection closes.
    #[error("{0}")]
    PayloadTooLarge(Cow<'static, str>),
    /// The body was read, but what it carries is over a limit (a note text).
    #[error("{0}")]
    ContentTooLarge(Cow<'static, str>),
    #[error("HTTP version not supported (use HTTP/1.0 or HTTP/1.1)")]
    VersionNotSupported,
    #[error("{0}")]
    NotImplemented(Cow<'static, str>),
    #[error("a request body needs Content-Length or Transfer-Encoding: chunked")]
    LengthRequired,
    #[error("only the expectation 100-continue is supported")]
    ExpectationFailed,
    #[error("{0}")]
    UnsupportedMediaType(Cow<'static, str>),
    #[error("request not received in time")]
    Timeout,
}

impl HttpError {
    pub fn bad_request(msg: impl Into<Cow<'static, str>>) -> HttpError {
        HttpError::BadRequest(msg.into())
    }

    pub fn invalid(msg: impl Into<Cow<'static, str>>) -> HttpError {
        HttpError::Invalid(msg.into())
    }

    pub fn too_large(msg: impl Into<Cow<'static, str>>) -> HttpError {
        HttpError::PayloadTooLarge(msg.into())
    }

    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) | HttpError::Invalid(_) => 400,
            HttpError::Timeout => 408,
            HttpError::LengthRequired => 411,
            HttpError::PayloadTooLarge(_) | HttpError::ContentTooLarge(_) => 413,
            HttpError::UriTooLong(_) => 414,
            HttpError::UnsupportedMediaType(_) => 415,
            HttpError::ExpectationFailed => 417,
            HttpError::HeadTooLarge(_) => 431,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// Whether the connection must be closed after the error response: the
    /// framing of what follows on the connection can no longer be trusted.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            HttpError::Invalid(_)
                | HttpError::UnsupportedMediaType(_)
                | HttpError::ContentTooLarge(_)
        )
    }
}
