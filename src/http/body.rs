//! Decoding HTTP/1.1 message bodies, for both roles: the server reads
//! request bodies with it (`shard/conn.rs`), the bench client skips response
//! bodies with it (`http/client.rs`). One decoder, one set of limits, the
//! way hyper keeps one `decode.rs` for both sides.
//!
//! A [`BodyDecoder`] is fed whatever bytes have arrived and consumes what it
//! can; it never needs a whole chunk in memory at once, and it stops at the
//! end of the body, so the bytes of a pipelined next message are left
//! alone. It appends the body's bytes to a buffer when given one (the
//! server keeps the body) and only counts them otherwise (the bench).
//!
//! Chunked framing is strict (CRLF only, hex sizes without padding or sign)
//! because lenient chunk parsing is a classic source of request smuggling
//! between a proxy and a server. Every part has a bound: the decoded body
//! (`body_bytes_max`, 413), a chunk size line's digits and extensions, and
//! the trailer section.

use super::error::HttpError;

/// Most bytes of chunk extensions accepted on one size line.
pub const CHUNK_EXTENSION_BYTES_MAX: usize = 1024;
/// Most bytes of trailer fields accepted after the last chunk.
pub const TRAILER_BYTES_MAX: usize = 8 * 1024;
/// Hex digits of a chunk size (16 digits already exceed any body limit).
const CHUNK_SIZE_DIGITS_MAX: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: u32,
    },
    /// Inside `;ext` after the size.
    Extension {
        value: u64,
        bytes: usize,
    },
    /// Saw CR after the size line, expecting LF.
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerLineStart,
    TrailerLine,
    TrailerLf {
        empty_line: bool,
    },
    Done,
}

/// How a body is delimited, and how much of it is left.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// `Content-Length`: this many bytes are still to come.
    Length { remaining: u64 },
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// A response without a length: the body ends when the connection
    /// closes (HTTP/1.0 style; never a request, RFC 9112 section 6.3).
    UntilClose,
}

impl BodyDecoder {
    /// Decodes from `input`, appending body bytes to `out` if given.
    /// Returns how many input bytes were consumed.
    pub fn decode(&mut self, input: &[u8], out: Option<&mut Vec<u8>>) -> Result<usize, HttpError> {
        match self {
            BodyDecoder::Length { remaining } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                if let Some(out) = out {
                    out.extend_from_slice(&input[..take]);
                }
                *remaining -= take as u64;
                Ok(take)
            }
            BodyDecoder::Chunked(chunked) => chunked.run(input, out),
            BodyDecoder::UntilClose => {
                if let Some(out) = out {
                    out.extend_from_slice(input);
                }
                Ok(input.len())
            }
        }
    }

    /// True once the whole body was consumed (never for
    /// [`BodyDecoder::UntilClose`], which ends with the stream).
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(chunked) => chunked.is_done(),
            BodyDecoder::UntilClose => false,
        }
    }
}

/// The state machine of a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Largest decoded body accepted (413 beyond).
    body_bytes_max: u64,
    /// Body bytes decoded so far.
    decoded: u64,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies over `body_bytes_max` bytes (the bench
    /// client, which only skips bodies, passes `usize::MAX`).
    pub fn new(body_bytes_max: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            body_bytes_max: body_bytes_max as u64,
            decoded: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many
    /// input bytes were consumed; stops early once the body is complete, so
    /// bytes of a pipelined next request are left alone.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        self.run(input, Some(out))
    }

    fn run(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<usize, HttpError> {
        let bad = |msg: &'static str| Err(HttpError::bad_request(msg));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits == CHUNK_SIZE_DIGITS_MAX {
                            return bad("chunk size too long");
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        State::Size {
                            value: value << 4 | d,
                            digits: digits + 1,
                        }
                    }
                    b';' if digits > 0 => State::Extension { value, bytes: 0 },
                    b'\r' if digits > 0 => State::SizeLf { value },
                    _ => return bad("invalid chunk size"),
                },
                State::Extension { value, bytes } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' | 0 => return bad("invalid chunk extension"),
                    _ if bytes >= CHUNK_EXTENSION_BYTES_MAX => {
                        return bad("chunk extension too long")
                    }
                    _ => State::Extension {
                        value,
                        bytes: bytes + 1,
                    },
                },
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return bad("chunk size line must end with CRLF");
                    }
                    if value == 0 {
                        State::TrailerLineStart
                    } else {
                        if self.decoded.saturating_add(value) > self.body_bytes_max {
                            return Err(HttpError::too_large(format!(
                                "chunked request body is larger than the limit of {} bytes",
                                self.body_bytes_max
                            )));
                        }
                        State::Data { remaining: value }
                    }
                }
                State::Data { remaining } => {
                    let take = ((input.len() - i) as u64).min(remaining) as usize;
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&input[i..i + take]);
                    }
                    self.decoded += take as u64;
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return bad("chunk data must be followed by CRLF");
                    }
                    State::DataLf
                }
                State::DataLf => {
                    if b != b'\n' {
                        return bad("chunk data must be followed by CRLF");
                    }
                    State::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                State::TrailerLineStart => {
                    self.count_trailer()?;
                    if b == b'\r' {
                        State::TrailerLf { empty_line: true }
                    } else if b == b'\n' {
                        return bad("trailer lines must end with CRLF");
                    } else {
                        State::TrailerLine
                    }
                }
                State::TrailerLine => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => State::TrailerLf { empty_line: false },
                        b'\n' | 0 => return bad("invalid trailer line"),
                        _ => State::TrailerLine,
                    }
                }
                State::TrailerLf { empty_line } => {
                    if b != b'\n' {
                        return bad("trailer lines must end with CRLF");
                    }
                    if empty_line {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    State::TrailerLineStart
                }
                State::Done => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILER_BYTES_MAX {
            return Err(HttpError::HeadTooLarge(TRAILER_BYTES_MAX));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = ChunkedDecoder::new(limit);
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        assert!(d.is_done(), "decoder not done after {input:?}");
        Ok((out, n))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let (body, n) = decode_all(
            b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT",
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(
            n,
            b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n".len()
        );
    }

    #[test]
    fn decodes_one_byte_at_a_time() {
        let input = b"A\r\n0123456789\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        for b in input.iter() {
            assert_eq!(d.decode(std::slice::from_ref(b), &mut out).unwrap(), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn refuses_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
        ] {
            let mut d = ChunkedDecoder::new(1 << 20);
            let err = d.decode(bad, &mut Vec::new()).expect_err("must be refused");
            assert_eq!(err.status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn skips_what_it_does_not_keep_and_stops_at_the_end() {
        let input = b"5\r\nhello\r\n0\r\n\r\nNEXT";
        let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(usize::MAX));
        assert_eq!(d.decode(input, None).unwrap(), input.len() - 4);
        assert!(d.is_done());
        let mut d = BodyDecoder::Length { remaining: 3 };
        let mut out = Vec::new();
        assert_eq!(d.decode(b"abcdef", Some(&mut out)).unwrap(), 3);
        assert!(d.is_done());
        assert_eq!(out, b"abc");
    }

    #[test]
    fn enforces_the_body_limit() {
        let mut d = ChunkedDecoder::new(4);
        let err = d.decode(b"5\r\nhello\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(err.status(), 413);
    }
}
