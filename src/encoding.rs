//! Text encodings at the edges: escaping for HTML and JSON output, and
//! strict decoding of percent-encoded query strings and form bodies.
//!
//! Escaping is context-specific and written straight into the output
//! buffer: HTML text and attribute values escape `& < > " '`; JSON strings
//! escape quotes, backslashes and every control character, and also `<`,
//! `>` and `&` so JSON embedded in a page or an SSE stream can never close
//! a `<script>` element. Decoding refuses invalid UTF-8 instead of
//! replacing it, so a stored note is exactly what the client sent.

/// Appends `s` escaped for HTML text or a quoted attribute value.
pub fn html_escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&#39;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn json_string_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | b'<' | b'>' | b'&' | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
    out.push(b'"');
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
        .find(|(k, _)| form_decode(k).is_ok_and(|k| k == name))
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
