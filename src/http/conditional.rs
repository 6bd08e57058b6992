//! Validators and conditional requests (RFC 9110 §8.8.3, §13.1.2): the
//! entity tags this server makes and `If-None-Match`.
//!
//! An [`EntityTag`] is strong and opaque: 16 hex digits of a 64-bit value
//! that the handler derives from what the body is made of (the index's
//! digest, the page's parameters, a note's id; never a hash of the body),
//! followed by the content coding's suffix (`-gz`, `-br`): each coding of a
//! resource is a representation of its own, with its own bytes, so it gets
//! its own strong tag.
//!
//! `If-None-Match` is kept as spans into the request head while parsing
//! ([`IfNoneMatch`]) and read only by a handler about to send a 200, which
//! compares with the weak comparison (RFC 9110 §8.8.3.2: `W/"x"` matches
//! `"x"`), as the RFC requires for `GET` and `HEAD`. A malformed field, or
//! more field lines than [`IF_NONE_MATCH_LINES_MAX`], counts as no match:
//! the client gets the full 200, which is always a correct answer.

use super::coding::Coding;
use super::request::Span;
use super::trim_ows;

/// Most `If-None-Match` field lines one request may carry and still be
/// evaluated (a client sends one; more are combined as one list).
pub const IF_NONE_MATCH_LINES_MAX: usize = 4;

/// Quotes, 16 hex digits and the longest coding suffix (`-gz`, `-br`).
const ETAG_BYTES_MAX: usize = 2 + 16 + 3;

/// The two lowercase hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    table
};

/// A strong entity tag, as sent in `ETag` (quotes included).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EntityTag {
    bytes: [u8; ETAG_BYTES_MAX],
    len: u8,
}

impl EntityTag {
    /// The tag of `version` in `coding`.
    pub fn new(version: u64, coding: Coding) -> EntityTag {
        let mut bytes = [0u8; ETAG_BYTES_MAX];
        bytes[0] = b'"';
        // One table lookup per byte of the version, most significant first
        // (a tag is made for every response that has one: keep it cheap).
        for (pair, byte) in bytes[1..17].chunks_exact_mut(2).zip(version.to_be_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[byte as usize]);
        }
        let suffix = coding.etag_suffix().as_bytes();
        bytes[17..17 + suffix.len()].copy_from_slice(suffix);
        bytes[17 + suffix.len()] = b'"';
        EntityTag {
            bytes,
            len: (18 + suffix.len()) as u8,
        }
    }

    /// The field value: `"0123456789abcdef-gz"`.
    pub fn as_str(&self) -> &str {
        let bytes = &self.bytes[..self.len as usize];
        debug_assert!(bytes.is_ascii());
        // SAFETY: `new` writes only ASCII (quotes, hex digits, the ASCII
        // coding suffix) into `bytes[..len]`, and nothing else writes them.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The opaque tag without its quotes.
    fn opaque(&self) -> &[u8] {
        &self.bytes[1..self.len as usize - 1]
    }
}

impl std::fmt::Debug for EntityTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `If-None-Match` field lines of a request, as spans into its head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfNoneMatch {
    lines: [Span; IF_NONE_MATCH_LINES_MAX],
    count: u8,
    /// More lines than we keep: the condition is not evaluated.
    overflow: bool,
}

impl IfNoneMatch {
    /// Adds one field line's value.
    pub fn push(&mut self, value: Span) {
        match self.lines.get_mut(self.count as usize) {
            Some(slot) => {
                *slot = value;
                self.count += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Whether the request carried the field at all.
    pub fn is_present(&self) -> bool {
        self.count > 0
    }

    /// True if the field lists `tag` (weak comparison) or is `*` (the
    /// resource exists: this is only asked on the way to a 200). `head` is
    /// the request head the spans point into.
    pub fn matches(&self, head: &[u8], tag: &EntityTag) -> bool {
        if self.overflow {
            return false;
        }
        self.lines[..self.count as usize]
            .iter()
            .any(|line| list_matches(trim_ows(line.get(head)), tag.opaque()))
    }
}

/// `If-None-Match = "*" / #entity-tag`; stops (no match) at the first
/// malformed member.
fn list_matches(mut v: &[u8], opaque: &[u8]) -> bool {
    loop {
        while let [b' ' | b'\t' | b',', rest @ ..] = v {
            v = rest;
        }
        match v {
            [] => return false,
            [b'*', ..] => return true,
            [b'W', b'/', rest @ ..] => v = rest,
            _ => {}
        }
        let [b'"', rest @ ..] = v else {
            return false;
        };
        let Some(end) = rest.iter().position(|&b| b == b'"') else {
            return false;
        };
        if &rest[..end] == opaque {
            return true;
        }
        v = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(lines: &[&str], tag: &EntityTag) -> bool {
        let mut head = Vec::new();
        let mut inm = IfNoneMatch::default();
        for l in lines {
            let start = head.len() as u32;
            head.extend_from_slice(l.as_bytes());
            inm.push(Span {
                start,
                len: l.len() as u32,
            });
        }
        inm.matches(&head, tag)
    }

    #[test]
    fn tags_carry_the_version_and_the_coding() {
        let t = EntityTag::new(0x0123_4567_89ab_cdef, Coding::Identity);
        assert_eq!(t.as_str(), "\"0123456789abcdef\"");
        assert_eq!(
            EntityTag::new(1, Coding::Gzip).as_str(),
            "\"0000000000000001-gz\""
        );
        assert_eq!(
            EntityTag::new(u64::MAX, Coding::Br).as_str(),
            "\"ffffffffffffffff-br\""
        );
    }

    #[test]
    fn if_none_match_uses_the_weak_comparison() {
        let t = EntityTag::new(0xabc, Coding::Gzip);
        let s = t.as_str();
        assert!(matches(&[s], &t));
        assert!(matches(&[&format!("W/{s}")], &t), "weak matches strong");
        assert!(matches(&[&format!("\"x\", {s}")], &t), "in a list");
        assert!(matches(&[&format!("\"x\",W/\"y\" ,  {s} ")], &t));
        assert!(matches(&["\"x\"", s], &t), "across field lines");
        assert!(matches(&["*"], &t));
        assert!(!matches(&["\"x\""], &t));
        assert!(!matches(&["\"000000000000000abc\""], &t), "other coding");
        assert!(
            !matches(&[EntityTag::new(0xabc, Coding::Identity).as_str()], &t),
            "the identity tag is another representation's"
        );
        assert!(!matches(&[""], &t));
        assert!(!matches(&[&s[1..]], &t), "unquoted: malformed");
        assert!(!matches(&[&format!("\"x {s}")], &t), "unterminated");
    }

    #[test]
    fn too_many_lines_are_not_evaluated() {
        let t = EntityTag::new(7, Coding::Identity);
        let s = t.as_str();
        assert!(matches(&["\"a\"", "\"b\"", "\"c\"", s], &t));
        assert!(!matches(&["\"a\"", "\"b\"", "\"c\"", "\"d\"", s], &t));
    }
}
