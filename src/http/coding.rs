//! Content codings (RFC 9110 §8.4, §12.5.3): what a client accepts
//! (`Accept-Encoding`), which coding a response uses, and the two
//! compressors (gzip with flate2, brotli with the `brotli` crate).
//!
//! Negotiation, as implemented by [`AcceptEncoding::preferred`]:
//! - no `Accept-Encoding` at all: identity (what nginx and most servers do;
//!   the RFC would allow any coding, but old clients send no header);
//! - each listed coding has a weight (`q`, 0 to 1 in thousandths); a coding
//!   not listed takes the weight of `*` if present, else it is not
//!   acceptable; `q=0` refuses a coding; `x-gzip` is gzip;
//! - the acceptable coding with the highest weight wins, brotli over gzip
//!   on a tie (it is smaller); identity wins only if it is listed with a
//!   higher weight than that coding;
//! - when nothing offered is acceptable, the response is identity even if
//!   the client said `identity;q=0` or `*;q=0`: RFC 9110 §12.1 lets a server
//!   disregard the preference rather than answer 406, and no real client
//!   refuses identity.
//!
//! Output is deterministic (gzip's header carries no time or file name), so
//! every core that compresses the same bytes at the same [`Effort`] makes the
//! same bytes: one strong entity tag per coding stays truthful across cores.

use std::io::Write as _;

use super::trim_ows;

/// The largest weight, `q=1`, in thousandths.
pub const QVALUE_MAX: u16 = 1000;

/// A content coding this server can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
}

impl Coding {
    /// The `Content-Encoding` value (`None` for identity: no header).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
        }
    }

    /// What the entity tag of a representation in this coding ends with:
    /// each coding is its own representation with its own strong tag.
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Gzip => "-gz",
            Coding::Br => "-br",
        }
    }
}

/// The weights a request's `Accept-Encoding` field lines give the codings
/// this server knows (all lines of a request combined, as one list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptEncoding {
    /// The request carried the field (even an empty one).
    present: bool,
    gzip: Option<u16>,
    br: Option<u16>,
    identity: Option<u16>,
    star: Option<u16>,
}

impl AcceptEncoding {
    /// Parses a field value and adds its codings. Unknown codings
    /// (`deflate`, `zstd`, ...) are ignored; an element with a malformed
    /// weight is ignored as a whole. A coding listed twice keeps its higher
    /// weight.
    pub fn add_field(&mut self, value: &[u8]) {
        self.present = true;
        for element in value.split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let name = trim_ows(parts.next().unwrap_or_default());
            if name.is_empty() {
                continue;
            }
            let mut weight = Some(QVALUE_MAX);
            for param in parts {
                let param = trim_ows(param);
                if let [b'q' | b'Q', rest @ ..] = param {
                    if let [b'=', v @ ..] = trim_ows(rest) {
                        weight = parse_qvalue(trim_ows(v));
                    }
                }
            }
            let Some(weight) = weight else { continue };
            let slot = if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip")
            {
                &mut self.gzip
            } else if name.eq_ignore_ascii_case(b"br") {
                &mut self.br
            } else if name.eq_ignore_ascii_case(b"identity") {
                &mut self.identity
            } else if name == b"*" {
                &mut self.star
            } else {
                continue;
            };
            *slot = Some(slot.map_or(weight, |w| w.max(weight)));
        }
    }

    /// The coding to send when gzip and brotli are both on offer (see the
    /// module doc for the rules).
    pub fn preferred(&self) -> Coding {
        if !self.present {
            return Coding::Identity;
        }
        let weight = |listed: Option<u16>| listed.or(self.star).unwrap_or(0);
        let (br, gzip) = (weight(self.br), weight(self.gzip));
        let (best, best_weight) = if br >= gzip {
            (Coding::Br, br)
        } else {
            (Coding::Gzip, gzip)
        };
        if best_weight == 0 {
            return Coding::Identity;
        }
        match self.identity {
            Some(w) if w > best_weight => Coding::Identity,
            _ => best,
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths; `None` if malformed.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (first, rest) = v.split_first()?;
    let fraction = match rest {
        [] => &[][..],
        [b'.', digits @ ..] if digits.len() <= 3 => digits,
        _ => return None,
    };
    let mut thousandths: u16 = 0;
    let mut scale = 100;
    for d in fraction {
        if !d.is_ascii_digit() {
            return None;
        }
        thousandths += u16::from(d - b'0') * scale;
        scale /= 10;
    }
    match first {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(QVALUE_MAX),
        _ => None,
    }
}

/// How hard to compress: the levels trade CPU for bytes, and the right
/// trade depends on how often the same bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effort {
    /// flate2's level, 0-9.
    pub gzip_level: u32,
    /// brotli's quality, 0-11.
    pub brotli_quality: i32,
}

impl Effort {
    /// Compressed once per process (the built-in assets): the smallest output.
    pub const ONCE: Effort = Effort {
        gzip_level: 9,
        brotli_quality: 11,
    };
    /// Compressed once per version of a cached body (the notes page, on each
    /// core when the first request of that coding asks for it; every new
    /// note is a new version). Measured on a 24.8 KB page of 100 varied
    /// notes (release build, this 2-core VM): gzip 9 makes 4,234 bytes in
    /// 0.25 ms (GNU `gzip -9`: 4,247); brotli 6 makes 3,831 bytes in
    /// 0.45 ms, where brotli 9 saves 7 more bytes for 5.2 ms and brotli 11
    /// takes about 80 ms. `benches/micro.rs` (`page_compress`) measures them.
    pub const CACHED: Effort = Effort {
        gzip_level: 9,
        brotli_quality: 6,
    };
    /// Compressed for every response (JSON lists, older pages, metrics):
    /// fast levels, still most of the gain on text (the same page: gzip 1,
    /// 5,059 bytes in 0.05 ms; brotli 4, 4,224 bytes in 0.2-0.3 ms).
    pub const PER_REQUEST: Effort = Effort {
        gzip_level: 1,
        brotli_quality: 4,
    };
}

/// Brotli's window (log2 bytes): 4 MiB covers any body this server sends.
const BROTLI_WINDOW_LOG2: i32 = 22;

/// Why a body could not be compressed (writing to memory does not fail in
/// practice; the caller then sends identity).
#[derive(Debug, thiserror::Error)]
#[error("{coding:?} compression failed: {source}")]
pub struct CompressError {
    coding: Coding,
    source: std::io::Error,
}

/// Appends `input` compressed with `coding` to `out` (identity: a copy).
pub fn compress_into(
    coding: Coding,
    effort: Effort,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    let wrap = |source| CompressError { coding, source };
    match coding {
        Coding::Identity => out.extend_from_slice(input),
        Coding::Gzip => {
            let mut encoder = flate2::GzBuilder::new().write(
                std::mem::take(out),
                flate2::Compression::new(effort.gzip_level),
            );
            encoder.write_all(input).map_err(wrap)?;
            *out = encoder.finish().map_err(wrap)?;
        }
        Coding::Br => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: effort.brotli_quality,
                lgwin: BROTLI_WINDOW_LOG2,
                size_hint: input.len(),
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &input[..], out, &params).map_err(wrap)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn pick(lines: &[&str]) -> Coding {
        let mut ae = AcceptEncoding::default();
        for l in lines {
            ae.add_field(l.as_bytes());
        }
        ae.preferred()
    }

    #[test]
    fn negotiation_follows_the_weights() {
        assert_eq!(pick(&[]), Coding::Identity, "no header: identity");
        assert_eq!(pick(&[""]), Coding::Identity, "empty header: identity");
        assert_eq!(pick(&["gzip"]), Coding::Gzip);
        assert_eq!(pick(&["x-gzip"]), Coding::Gzip);
        assert_eq!(pick(&["GZIP"]), Coding::Gzip);
        assert_eq!(pick(&["br"]), Coding::Br);
        assert_eq!(pick(&["gzip, deflate, br, zstd"]), Coding::Br, "tie: br");
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.5"]), Coding::Gzip);
        assert_eq!(pick(&["gzip ; q=0.8 , br ; Q=0.9"]), Coding::Br);
        assert_eq!(pick(&["gzip;q=0"]), Coding::Identity, "refused");
        assert_eq!(pick(&["br;q=0, gzip"]), Coding::Gzip);
        assert_eq!(pick(&["*"]), Coding::Br);
        assert_eq!(pick(&["*;q=0.5, br;q=0"]), Coding::Gzip);
        assert_eq!(pick(&["*;q=0"]), Coding::Identity);
        assert_eq!(pick(&["identity"]), Coding::Identity);
        assert_eq!(pick(&["identity;q=0"]), Coding::Identity, "fallback");
        assert_eq!(pick(&["identity;q=0, gzip"]), Coding::Gzip);
        assert_eq!(pick(&["gzip;q=0.5, identity"]), Coding::Identity);
        assert_eq!(pick(&["gzip;q=0.5, identity;q=0.5"]), Coding::Gzip);
        assert_eq!(pick(&["deflate, zstd"]), Coding::Identity);
        assert_eq!(pick(&["gzip;q=2"]), Coding::Identity, "malformed weight");
        assert_eq!(pick(&["gzip;q=0.5.1"]), Coding::Identity);
        assert_eq!(pick(&["gzip;q=", "br;q=0.001"]), Coding::Br);
        assert_eq!(
            pick(&["gzip;q=0", "gzip"]),
            Coding::Gzip,
            "higher weight kept"
        );
        assert_eq!(pick(&["identity", "gzip"]), Coding::Gzip, "lines combine");
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.123"), Some(123));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        for bad in [&b""[..], b"1.5", b"2", b"0.1234", b"a", b".5", b"0,5"] {
            assert_eq!(
                parse_qvalue(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn compressed_bodies_decode_to_the_input() {
        let input: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("<li>note {i}</li>").into_bytes())
            .collect();
        for effort in [Effort::ONCE, Effort::CACHED, Effort::PER_REQUEST] {
            let mut gz = Vec::new();
            compress_into(Coding::Gzip, effort, &input, &mut gz).unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
            let mut br = Vec::new();
            compress_into(Coding::Br, effort, &input, &mut br).unwrap();
            let mut back = Vec::new();
            brotli::Decompressor::new(&br[..], 4096)
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
            assert!(gz.len() < input.len() / 4 && br.len() < input.len() / 4);
            let mut again = Vec::new();
            compress_into(Coding::Gzip, effort, &input, &mut again).unwrap();
            assert_eq!(gz, again, "deterministic output");
        }
    }
}
