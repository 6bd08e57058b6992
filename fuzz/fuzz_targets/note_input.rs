//! Note input decoding: form, JSON and plain bodies, query strings and note
//! ids. Must never panic; accepted text is valid, non-blank and within the
//! limit; ids round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uringnotes::encoding;
use uringnotes::http::request::ContentType;
use uringnotes::api::notes::text_from_body;
use uringnotes::store::note::NoteId;

fuzz_target!(|data: &[u8]| {
    for ct in [ContentType::Form, ContentType::Json, ContentType::Text, ContentType::Absent, ContentType::Other] {
        if let Ok(text) = text_from_body(ct, data, 4096) {
            assert!(!text.trim().is_empty());
            assert!(text.len() <= 4096);
        }
    }
    let _ = encoding::form_field(data, "text");
    // Ids in URL paths are parsed from bytes: whatever parses is ASCII.
    if let Ok(id) = NoteId::parse_bytes(data) {
        assert!(data.is_ascii());
        assert_eq!(NoteId::parse_bytes(id.to_string().as_bytes()), Ok(id));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(s.parse::<NoteId>().ok(), NoteId::parse_bytes(data).ok());
        let mut out = Vec::new();
        encoding::json_string_into(&mut out, s);
        let back: String = serde_json_free_decode(&out);
        assert_eq!(back, s);
        let mut html = Vec::new();
        encoding::html_escape_into(&mut html, s);
        assert!(!html.iter().any(|b| b"<>\"'".contains(b)));
        assert_eq!(html_decode(&html), s);
    }
});

/// Decodes the JSON string we produced (quotes, \uXXXX, \n ...), without
/// pulling serde_json into the target's dependencies.
fn serde_json_free_decode(json: &[u8]) -> String {
    let s = std::str::from_utf8(json).unwrap();
    let inner = &s[1..s.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("unexpected escape {other}"),
        }
    }
    out
}

/// Undoes `html_escape_into`'s five entities.
fn html_decode(html: &[u8]) -> String {
    std::str::from_utf8(html)
        .unwrap()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
