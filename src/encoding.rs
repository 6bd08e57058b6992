//! Text encodings at the edges: escaping for HTML and JSON output, and
//! strict decoding of percent-encoded query strings and form bodies.
//!
//! Escaping is context-specific and written straight into the output
//! buffer: HTML text and attribute values escape `& < > " '`; JSON strings
//! escape quotes, backslashes and every control character, and also `<`,
//! `>` and `&` so JSON embedded in a page or an SSE stream can never close
//! a `<script>` element. Decoding refuses invalid UTF-8 instead of
//! replacing it, so a stored note is exactly what the client sent.

/// Appends `s` escaped for HTML text or a quoted attribute value. Clean
/// runs are found 16 bytes at a time (`clean_prefix_len`): the notes page
/// escapes the text of every note it shows.
pub fn html_escape_into(out: &mut Vec<u8>, s: &str) {
    escape_runs(out, s.as_bytes(), HTML_SPECIAL, false, |out, b| {
        out.extend_from_slice(match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            _ => b"&#39;",
        })
    });
}

/// The bytes HTML text and attribute values escape.
const HTML_SPECIAL: &[u8] = b"&<>\"'";
/// The bytes JSON strings escape besides the controls below 0x20 (the
/// others of `JSON_ESCAPE`).
const JSON_SPECIAL: &[u8] = b"\"\\<>&\x7f";

/// For each byte, what JSON needs instead of it: 0 = itself, b'u' =
/// `\u00XX`, otherwise the letter after a backslash. `<`, `>`, `&` and DEL
/// are escaped too, so JSON can sit inside HTML or an event stream safely.
const JSON_ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'<' as usize] = b'u';
    t[b'>' as usize] = b'u';
    t[b'&' as usize] = b'u';
    t[0x7f] = b'u';
    t
};

/// Appends `s` as a JSON string literal, quotes included. Runs of bytes that
/// need no escaping are copied at once (the common case is a single run),
/// and the search for the next byte to escape looks at 16 bytes per step
/// (see `clean_prefix_len`): this runs over the text of every note served.
pub fn json_string_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    escape_runs(out, bytes, JSON_SPECIAL, true, |out, b| {
        match JSON_ESCAPE[b as usize] {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
            esc => out.extend_from_slice(&[b'\\', esc]),
        }
    });
    out.push(b'"');
}

/// Appends `bytes` to `out`: runs without a byte to escape (see
/// `clean_prefix_len`) are copied at once, each byte to escape goes through
/// `escape`.
#[inline(always)]
fn escape_runs(
    out: &mut Vec<u8>,
    bytes: &[u8],
    special: &[u8],
    controls: bool,
    mut escape: impl FnMut(&mut Vec<u8>, u8),
) {
    let mut i = 0;
    loop {
        let run = clean_prefix_len(&bytes[i..], special, controls);
        out.extend_from_slice(&bytes[i..i + run]);
        i += run;
        let Some(&b) = bytes.get(i) else { return };
        escape(out, b);
        i += 1;
    }
}

/// Length of the longest prefix of `bytes` with none of the bytes in
/// `special` and, if `controls`, none below 0x20: what an escaper can copy
/// as it is.
#[inline(always)]
fn clean_prefix_len(bytes: &[u8], special: &[u8], controls: bool) -> usize {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        let mut i = 0;
        while i + 16 <= bytes.len() {
            let mask = escape_mask16(&bytes[i..i + 16], special, controls);
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
        if i == bytes.len() {
            return i;
        }
        // The tail: the last 16 bytes, ignoring the lanes already checked.
        let last = bytes.len() - 16;
        let mask = escape_mask16(&bytes[last..], special, controls) >> (i - last);
        return if mask != 0 {
            i + mask.trailing_zeros() as usize
        } else {
            bytes.len()
        };
    }
    bytes
        .iter()
        .position(|&b| (controls && b < 0x20) || special.contains(&b))
        .unwrap_or(bytes.len())
}

/// Bit `k` set when `chunk[k]` is one of `special` or, if `controls`,
/// below 0x20: 16 bytes at a time with SSE2 (part of x86_64 itself, so no
/// feature detection is needed).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn escape_mask16(chunk: &[u8], special: &[u8], controls: bool) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };
    assert!(chunk.len() >= 16);
    // SAFETY: `chunk` has at least 16 bytes (asserted above; the callers'
    // bounds make the check free) and an unaligned load needs no
    // alignment. The other intrinsics are plain SSE2 arithmetic.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let mut hits = _mm_setzero_si128();
        for &c in special {
            hits = _mm_or_si128(hits, _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8)));
        }
        let mut mask = _mm_movemask_epi8(hits) as u32;
        if controls {
            // Lanes >= 0x20 (unsigned) are the ones max(v, 0x20) leaves as they are.
            let printable = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x20)), v);
            mask |= !_mm_movemask_epi8(printable) as u32 & 0xffff;
        }
        mask
    }
}

/// Appends `v` as exactly 8 lowercase hex digits.
pub fn hex8_into(out: &mut Vec<u8>, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 8];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&buf);
}

/// Appends a decimal integer.
pub fn decimal_into(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes `v` (below 100) as two digits at `at`.
fn two_digits(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// Appends a UTC timestamp in RFC 3339: `2026-11-25T10:21:03Z`, with six
/// fractional digits when `micros` is set. Years outside 0..=9999 are clamped.
/// Formatted in a stack buffer and appended at once (every note served
/// carries one).
pub fn rfc3339_into(out: &mut Vec<u8>, unix_us: u64, micros: bool) {
    let secs = (unix_us / 1_000_000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let y = y.clamp(0, 9999) as u32;
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    two_digits(&mut buf, 0, y / 100);
    two_digits(&mut buf, 2, y % 100);
    two_digits(&mut buf, 5, mo);
    two_digits(&mut buf, 8, d);
    two_digits(&mut buf, 11, sod / 3600);
    two_digits(&mut buf, 14, sod / 60 % 60);
    two_digits(&mut buf, 17, sod % 60);
    if micros {
        let frac = (unix_us % 1_000_000) as u32;
        two_digits(&mut buf, 20, frac / 10_000);
        two_digits(&mut buf, 22, frac / 100 % 100);
        two_digits(&mut buf, 24, frac % 100);
        out.extend_from_slice(&buf);
    } else {
        buf[19] = b'Z';
        out.extend_from_slice(&buf[..20]);
    }
}

/// Why percent-encoded text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("text is not valid UTF-8")]
    NotUtf8,
}

/// Decodes `application/x-www-form-urlencoded` bytes (`+` is a space).
/// A `%` not followed by two hex digits is kept literally, as browsers do.
pub fn form_decode(input: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        // Copy the run up to the next byte that needs decoding at once.
        let run = input[i..]
            .iter()
            .position(|&b| b == b'+' || b == b'%')
            .unwrap_or(input.len() - i);
        out.extend_from_slice(&input[i..i + run]);
        i += run;
        if i == input.len() {
            break;
        }
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len()
                && hex(input[i + 1]).is_some()
                && hex(input[i + 2]).is_some() =>
            {
                out.push(hex(input[i + 1]).unwrap_or(0) << 4 | hex(input[i + 2]).unwrap_or(0));
                i += 3;
                continue;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Iterates the raw `name=value` pairs of a query string or form body.
pub fn form_pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        })
}

/// The decoded value of the first field called `name`, if present.
pub fn form_field(input: &[u8], name: &str) -> Option<Result<String, DecodeError>> {
    form_pairs(input)
        .find(|(k, _)| {
            // Keys are almost never encoded: compare raw bytes unless they are.
            if k.contains(&b'%') || k.contains(&b'+') {
                form_decode(k).is_ok_and(|k| k == name)
            } else {
                *k == name.as_bytes()
            }
        })
        .map(|(_, v)| form_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup() {
        let mut out = Vec::new();
        html_escape_into(&mut out, "<script>alert('x') & \"y\"</script>");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn json_escapes_controls_and_markup() {
        let mut out = Vec::new();
        json_string_into(&mut out, "a\"b\\c\nd\u{1}</script>é");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001\\u003c/script\\u003eé\"");
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}</script>é");
    }

    /// The escaping as the table alone defines it, byte by byte.
    fn json_reference(s: &str) -> Vec<u8> {
        let mut out = vec![b'"'];
        for &b in s.as_bytes() {
            match JSON_ESCAPE[b as usize] {
                0 => out.push(b),
                b'u' => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                esc => out.extend_from_slice(&[b'\\', esc]),
            }
        }
        out.push(b'"');
        out
    }

    /// HTML escaping byte by byte.
    fn html_reference(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '&' => "&amp;".to_string(),
                '<' => "&lt;".to_string(),
                '>' => "&gt;".to_string(),
                '"' => "&quot;".to_string(),
                '\'' => "&#39;".to_string(),
                c => c.to_string(),
            })
            .collect()
    }

    /// Strings of `len` characters with `c` at `pos`, for every ASCII
    /// character and two multi-byte ones, at every position of strings
    /// that cover the 16-byte blocks, the overlapping tail and the short
    /// path of the escapers.
    fn one_special_each() -> impl Iterator<Item = String> {
        let mut specials: Vec<char> = (0u8..=0x7f).map(char::from).collect();
        specials.extend(['é', '€']);
        (0..40usize).flat_map(move |len| {
            let specials = specials.clone();
            (0..len).flat_map(move |pos| {
                specials.clone().into_iter().map(move |c| {
                    let mut s = "a".repeat(pos);
                    s.push(c);
                    s.push_str(&"b".repeat(len - pos - 1));
                    s
                })
            })
        })
    }

    #[test]
    fn html_fast_scan_agrees_with_the_reference() {
        for s in one_special_each() {
            let mut out = Vec::new();
            html_escape_into(&mut out, &s);
            assert_eq!(String::from_utf8(out).unwrap(), html_reference(&s), "{s:?}");
        }
    }

    #[test]
    fn json_fast_scan_agrees_with_the_table() {
        for b in 0..=255u8 {
            let scanned = b < 0x20 || JSON_SPECIAL.contains(&b);
            assert_eq!(JSON_ESCAPE[b as usize] != 0, scanned, "byte {b:#x}");
        }
        for s in one_special_each() {
            let mut out = Vec::new();
            json_string_into(&mut out, &s);
            assert_eq!(out, json_reference(&s), "{s:?}");
        }
        // Several escapes in one string, and a long clean run after them.
        let s = format!("\"<\u{1f}>&\u{7f}\\{}", "x".repeat(100));
        let mut out = Vec::new();
        json_string_into(&mut out, &s);
        assert_eq!(out, json_reference(&s));
    }

    #[test]
    fn timestamps_match_humantime() {
        for us in [
            0u64,
            1_795_602_063_021_880,
            951_782_400_000_001,
            4_102_444_799_999_999,
        ] {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
            let mut out = Vec::new();
            rfc3339_into(&mut out, us, true);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(t).to_string()
            );
            let mut out = Vec::new();
            rfc3339_into(&mut out, us, false);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_seconds(t).to_string()
            );
        }
        let mut out = Vec::new();
        hex8_into(&mut out, 0x03b3_423c);
        assert_eq!(out, b"03b3423c");
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode(b"a+b%20c%2B").unwrap(), "a b c+");
        assert_eq!(form_decode(b"100%").unwrap(), "100%");
        assert_eq!(form_decode(b"%zz%4").unwrap(), "%zz%4");
        assert_eq!(form_decode(b"%C3%A9").unwrap(), "é");
        assert_eq!(form_decode(b"%FF"), Err(DecodeError::NotUtf8));
        assert_eq!(
            form_field(b"x=1&text=hello+world", "text")
                .unwrap()
                .unwrap(),
            "hello world"
        );
        assert!(form_field(b"x=1", "text").is_none());
        assert_eq!(form_field(b"text", "text").unwrap().unwrap(), "");
    }
}
