//! The client role: reading HTTP/1.x responses off a connection, as cheaply
//! as possible (the load generator, `bench/client.rs`, is its user).
//!
//! A [`ResponseReader`] owns one connection's read buffer. The connection
//! loop reads socket bytes into [`ResponseReader::space`] and asks
//! [`ResponseReader::next`] for complete responses. Heads are parsed with
//! httparse; bodies are never stored, only skipped as they arrive by the
//! same decoder the server reads request bodies with (`body.rs`):
//! `Content-Length`, `Transfer-Encoding: chunked` and (HTTP/1.0 style)
//! bodies delimited by the connection closing are understood.
//!
//! Invariants: `start <= end <= buf.len()`; bytes `buf[start..end]` are
//! received and not yet consumed; while `body` is set, those bytes belong to
//! (or follow) the body of the head already returned by httparse.

/// Bytes of a connection's read buffer, and so the largest response head
/// this client accepts. Also the memory each connection costs: 32 KiB takes
/// a typical page (uringnotes' 100-note page is 22 KB) in one `recv`.
pub const READ_BUFFER_BYTES: usize = 32 * 1024;
/// Most headers in a response head.
const RESPONSE_HEADERS_MAX: usize = 64;

use super::body::{BodyDecoder, ChunkedDecoder};
use super::trim_ows;

/// Why bytes from the server are not a response this client can read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed response head: {0}")]
    Head(String),
    #[error("response head larger than {READ_BUFFER_BYTES} bytes")]
    HeadTooLarge,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    #[error("malformed chunked body")]
    Chunked,
}

/// What [`ResponseReader::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A whole response (head and body) was consumed.
    Response {
        status: u16,
        /// The server will close the connection after this response.
        close: bool,
    },
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone)]
struct InBody {
    status: u16,
    close: bool,
    body: BodyDecoder,
}

/// One connection's response buffer and parser state.
pub struct ResponseReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    body: Option<InBody>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader::new()
    }
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader {
            buf: vec![0u8; READ_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            body: None,
        }
    }

    /// Forgets everything buffered (for a new connection).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.body = None;
    }

    /// The free space to read into. Moves a partial head to the front first,
    /// so the space is never empty unless a head fills the whole buffer
    /// (which [`Self::next`] reports as [`ProtocolError::HeadTooLarge`]).
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`Self::space`] as received.
    pub fn filled(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.buf.len());
        self.end += n;
    }

    /// Whether the response in progress ends when the connection closes;
    /// if so, [`Self::finish_at_close`] completes it.
    pub fn ends_at_close(&self) -> bool {
        matches!(
            self.body,
            Some(InBody {
                body: BodyDecoder::UntilClose,
                ..
            })
        )
    }

    /// Completes a close-delimited response at the end of the stream.
    pub fn finish_at_close(&mut self) -> Option<Next> {
        let b = self.body.take()?;
        debug_assert!(matches!(b.body, BodyDecoder::UntilClose));
        self.start = self.end;
        Some(Next::Response {
            status: b.status,
            close: true,
        })
    }

    /// Consumes the next complete response, if it is all there.
    /// `head_request` says the request was HEAD (no body follows the head).
    pub fn next(&mut self, head_request: bool) -> Result<Next, ProtocolError> {
        loop {
            if let Some(in_body) = self.body.as_mut() {
                let input = &self.buf[self.start..self.end];
                let used = in_body
                    .body
                    .decode(input, None)
                    .map_err(|_| ProtocolError::Chunked)?;
                self.start += used;
                if !in_body.body.is_done() {
                    return Ok(Next::NeedMore);
                }
                let (status, close) = (in_body.status, in_body.close);
                self.body = None;
                return Ok(Next::Response { status, close });
            }
            if self.start == self.end {
                return Ok(Next::NeedMore);
            }
            let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
            let mut resp = httparse::Response::new(&mut headers);
            let head_bytes = match resp.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if self.end - self.start == self.buf.len() {
                        return Err(ProtocolError::HeadTooLarge);
                    }
                    return Ok(Next::NeedMore);
                }
                Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
                Err(e) => return Err(ProtocolError::Head(e.to_string())),
            };
            let status = resp.code.unwrap_or(0);
            let version_minor = resp.version.unwrap_or(1);
            let mut close = version_minor == 0;
            let mut length: Option<u64> = None;
            let mut chunked = false;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let v = std::str::from_utf8(h.value)
                        .ok()
                        .map(str::trim)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or(ProtocolError::ContentLength)?;
                    if length.is_some_and(|l| l != v) {
                        return Err(ProtocolError::ContentLength);
                    }
                    length = Some(v);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                    if !trim_ows(last).eq_ignore_ascii_case(b"chunked") {
                        return Err(ProtocolError::TransferEncoding);
                    }
                    chunked = true;
                } else if h.name.eq_ignore_ascii_case("connection") {
                    for token in h.value.split(|&b| b == b',') {
                        let token = trim_ows(token);
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") && version_minor == 0 {
                            close = false;
                        }
                    }
                }
            }
            self.start += head_bytes;
            if (100..200).contains(&status) && status != 101 {
                // An interim response: the real one follows.
                continue;
            }
            let body = if head_request || status == 204 || status == 304 || status == 101 {
                BodyDecoder::Length { remaining: 0 }
            } else if chunked {
                // Skipped, never stored: no limit on its size.
                BodyDecoder::Chunked(ChunkedDecoder::new(usize::MAX))
            } else if let Some(remaining) = length {
                BodyDecoder::Length { remaining }
            } else {
                close = true;
                BodyDecoder::UntilClose
            };
            self.body = Some(InBody {
                status,
                close,
                body,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes and collects the responses.
    fn read_all(wire: &[u8], step: usize, head_request: bool) -> Vec<Next> {
        let mut r = ResponseReader::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            let space = r.space();
            space[..piece.len()].copy_from_slice(piece);
            r.filled(piece.len());
            loop {
                match r.next(head_request).expect("valid response") {
                    Next::NeedMore => break,
                    resp => out.push(resp),
                }
            }
        }
        out
    }

    const OK: Next = Next::Response {
        status: 200,
        close: false,
    };

    #[test]
    fn pipelined_length_delimited_responses_at_every_split() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        for step in 1..wire.len() {
            assert_eq!(
                read_all(wire, step, false),
                vec![
                    OK,
                    Next::Response {
                        status: 404,
                        close: false
                    },
                    Next::Response {
                        status: 200,
                        close: true
                    }
                ],
                "split every {step} bytes"
            );
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: v\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(
                read_all(wire, step, false),
                vec![
                    OK,
                    Next::Response {
                        status: 201,
                        close: false
                    }
                ],
                "split every {step} bytes"
            );
        }
    }

    #[test]
    fn head_requests_and_bodiless_statuses_have_no_body() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(read_all(wire, 7, true), vec![OK, OK]);
        let wire = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            read_all(wire, 3, false),
            vec![
                Next::Response {
                    status: 204,
                    close: false
                },
                OK
            ]
        );
    }

    #[test]
    fn http_1_0_closes_unless_kept_alive_and_may_end_at_close() {
        let wire = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_all(wire, 4, false), vec![OK]);
        let mut r = ResponseReader::new();
        let wire = b"HTTP/1.0 200 OK\r\n\r\nbody until close";
        r.space()[..wire.len()].copy_from_slice(wire);
        r.filled(wire.len());
        assert_eq!(r.next(false), Ok(Next::NeedMore));
        assert!(r.ends_at_close());
        assert_eq!(
            r.finish_at_close(),
            Some(Next::Response {
                status: 200,
                close: true
            })
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for wire in [
            &b"NOT HTTP\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut r = ResponseReader::new();
            r.space()[..wire.len()].copy_from_slice(wire);
            r.filled(wire.len());
            assert!(
                r.next(false).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn an_endless_head_is_refused_not_buffered_forever() {
        let mut r = ResponseReader::new();
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        while wire.len() < READ_BUFFER_BYTES {
            wire.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        let mut fed = 0;
        let result = loop {
            let space = r.space();
            let n = space.len().min(wire.len() - fed);
            space[..n].copy_from_slice(&wire[fed..fed + n]);
            r.filled(n);
            fed += n;
            match r.next(false) {
                Ok(Next::NeedMore) if fed < wire.len() => continue,
                other => break other,
            }
        };
        assert_eq!(result, Err(ProtocolError::HeadTooLarge));
    }
}
