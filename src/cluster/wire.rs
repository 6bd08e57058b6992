//! Payload encoding of peer protocol messages.
//!
//! Little-endian fixed-width integers, byte strings prefixed with a u32
//! length, socket addresses as (family, address, port). Every read is
//! bounds-checked and every length is limited, so a hostile payload yields
//! a [`WireError`] (and the connection is dropped), never a panic or an
//! unbounded allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::store::note::Origin;

/// Longest string field (node names, refusal reasons).
pub const STRING_BYTES_MAX: usize = 1024;
/// Most entries in a version vector (origins = nodes × cores).
pub const VECTOR_ENTRIES_MAX: usize = 65_536;
/// Most notes in one `Notes` frame.
pub const NOTES_PER_FRAME_MAX: usize = 65_536;
/// Most sequence ranges in one `Holes` frame (22 bytes each on the wire).
pub const HOLE_RANGES_PER_FRAME_MAX: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
    #[error("{0} exceeds its limit")]
    TooLong(&'static str),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("bad address family {0}")]
    BadAddress(u8),
    #[error("bad sequence range {0}..={1}")]
    BadRange(u64, u64),
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn fixed(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    pub fn addr(&mut self, a: SocketAddr) -> &mut Self {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4).fixed(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6).fixed(&ip.octets());
            }
        }
        self.u16(a.port())
    }
    pub fn origin(&mut self, o: Origin) -> &mut Self {
        self.u32(o.node).u16(o.core)
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError::TooLong(what));
        }
        self.take(n)
    }
    pub fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let b = self.bytes(STRING_BYTES_MAX, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::NotUtf8)
    }
    pub fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.fixed::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.fixed::<16>()?)),
            f => return Err(WireError::BadAddress(f)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    pub fn origin(&mut self) -> Result<Origin, WireError> {
        Ok(Origin {
            node: self.u32()?,
            core: self.u16()?,
        })
    }
    pub fn count(&mut self, max: usize, what: &'static str) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError::TooLong(what));
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.buf.len()))
        }
    }
}

/// Who a node is, as told in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: u32,
    pub name: String,
    /// Where this node's peer protocol can be reached (TCP and UDP).
    pub peer_addr: SocketAddr,
    /// Shards (cores) the node runs; dispatch picks among them.
    pub cores: u16,
}

impl NodeIdentity {
    fn write(&self, w: &mut Writer) {
        w.u32(self.node)
            .str(&self.name)
            .addr(self.peer_addr)
            .u16(self.cores);
    }
    fn read(r: &mut Reader<'_>) -> Result<NodeIdentity, WireError> {
        Ok(NodeIdentity {
            node: r.u32()?,
            name: r.string("node name")?,
            peer_addr: r.addr()?,
            cores: r.u16()?,
        })
    }
}

/// The initiator's opening: sent as the encrypted payload of Noise
/// message 1, so nobody without the cookie learns who is connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version_min: u8,
    pub version_max: u8,
    pub from: NodeIdentity,
    /// The sender's SWIM incarnation (membership datagrams are addressed
    /// to a member's incarnation; `datagram.rs`).
    pub incarnation: u64,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.version_min).u8(self.version_max);
        self.from.write(&mut w);
        w.u64(self.incarnation);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Hello, WireError> {
        let mut r = Reader::new(b);
        let h = Hello {
            version_min: r.u8()?,
            version_max: r.u8()?,
            from: NodeIdentity::read(&mut r)?,
            incarnation: r.u64()?,
        };
        r.finish()?;
        Ok(h)
    }
    /// The sender of a protocol-1 Hello (sent in the clear, with a nonce
    /// after the identity), to name an old node in the log.
    pub fn decode_legacy(b: &[u8]) -> Result<Hello, WireError> {
        let mut r = Reader::new(b);
        Ok(Hello {
            version_min: r.u8()?,
            version_max: r.u8()?,
            from: NodeIdentity::read(&mut r)?,
            incarnation: 0,
        })
    }
}

/// The acceptor's answer: the encrypted payload of Noise message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The version both sides speak from now on.
    pub version: u8,
    pub from: NodeIdentity,
    /// The sender's SWIM incarnation.
    pub incarnation: u64,
}

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.version);
        self.from.write(&mut w);
        w.u64(self.incarnation);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Answer, WireError> {
        let mut r = Reader::new(b);
        let a = Answer {
            version: r.u8()?,
            from: NodeIdentity::read(&mut r)?,
            incarnation: r.u64()?,
        };
        r.finish()?;
        Ok(a)
    }
}

/// Version vector plus the sender's per-core load (for dispatch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vector {
    pub entries: Vec<(Origin, u64)>,
    /// In-flight requests per core of the sender.
    pub loads: Vec<u32>,
}

impl Vector {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.entries.len() as u32);
        for (o, s) in &self.entries {
            w.origin(*o).u64(*s);
        }
        w.u32(self.loads.len() as u32);
        for l in &self.loads {
            w.u32(*l);
        }
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Vector, WireError> {
        let mut r = Reader::new(b);
        let n = r.count(VECTOR_ENTRIES_MAX, "vector")?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push((r.origin()?, r.u64()?));
        }
        let n = r.count(1024, "load list")?;
        let mut loads = Vec::with_capacity(n);
        for _ in 0..n {
            loads.push(r.u32()?);
        }
        r.finish()?;
        Ok(Vector { entries, loads })
    }
}

/// Encodes a `Notes` payload from archived note payloads.
pub fn encode_notes<'a>(payloads: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(payloads.len() as u32);
    for p in payloads {
        w.bytes(p);
    }
    w.buf
}

/// Splits a `Notes` payload into the archived note payloads (not yet validated).
pub fn decode_notes(b: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut r = Reader::new(b);
    let n = r.count(NOTES_PER_FRAME_MAX, "notes batch")?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(r.bytes(crate::store::record::RECORD_PAYLOAD_BYTES_MAX, "note")?);
    }
    r.finish()?;
    Ok(out)
}

/// Sequence numbers `first..=last` of one origin stream (`first >= 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub origin: Origin,
    pub first: u64,
    pub last: u64,
}

/// What the sender lacks: ranges of sequence numbers below its high-water
/// marks. The receiver answers with the notes it has in them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holes {
    pub ranges: Vec<SeqRange>,
}

impl Holes {
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.ranges.len() <= HOLE_RANGES_PER_FRAME_MAX);
        let mut w = Writer::default();
        w.u32(self.ranges.len() as u32);
        for r in &self.ranges {
            w.origin(r.origin).u64(r.first).u64(r.last);
        }
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Holes, WireError> {
        let mut r = Reader::new(b);
        let n = r.count(HOLE_RANGES_PER_FRAME_MAX, "hole ranges")?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            let (origin, first, last) = (r.origin()?, r.u64()?, r.u64()?);
            if first == 0 || first > last {
                return Err(WireError::BadRange(first, last));
            }
            ranges.push(SeqRange {
                origin,
                first,
                last,
            });
        }
        r.finish()?;
        Ok(Holes { ranges })
    }
}

/// An HTTP request forwarded to another node: its raw head and body, and
/// how the response must be framed for the original client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRequest {
    pub id: u64,
    pub core: u16,
    pub keep_alive: bool,
    pub http10: bool,
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
}

impl DispatchRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.id)
            .u16(self.core)
            .u8(self.keep_alive as u8 | (self.http10 as u8) << 1)
            .bytes(&self.raw_head)
            .bytes(&self.body);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<DispatchRequest, WireError> {
        let mut r = Reader::new(b);
        let id = r.u64()?;
        let core = r.u16()?;
        let flags = r.u8()?;
        let raw_head = r.bytes(1 << 20, "request head")?.to_vec();
        let body = r
            .bytes(super::frame::FRAME_PAYLOAD_BYTES_MAX, "request body")?
            .to_vec();
        r.finish()?;
        Ok(DispatchRequest {
            id,
            core,
            keep_alive: flags & 1 != 0,
            http10: flags & 2 != 0,
            raw_head,
            body,
        })
    }
}

/// The complete response bytes for a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchResponse {
    pub id: u64,
    pub status: u16,
    pub close: bool,
    pub response: Vec<u8>,
}

impl DispatchResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.id)
            .u16(self.status)
            .u8(self.close as u8)
            .bytes(&self.response);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<DispatchResponse, WireError> {
        let mut r = Reader::new(b);
        let d = DispatchResponse {
            id: r.u64()?,
            status: r.u16()?,
            close: r.u8()? != 0,
            response: r
                .bytes(super::frame::FRAME_PAYLOAD_BYTES_MAX, "response")?
                .to_vec(),
        };
        r.finish()?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> NodeIdentity {
        NodeIdentity {
            node: 0xdeadbeef,
            name: "a".into(),
            peer_addr: "127.0.0.1:9081".parse().unwrap(),
            cores: 2,
        }
    }

    #[test]
    fn messages_round_trip() {
        let h = Hello {
            version_min: 2,
            version_max: 2,
            from: ident(),
            incarnation: 1_800_000_000_000,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        // Protocol 1: versions, identity, a 32-byte nonce.
        let mut w = Writer::default();
        w.u8(1).u8(1);
        ident().write(&mut w);
        w.fixed(&[7; 32]);
        assert_eq!(Hello::decode_legacy(&w.buf).unwrap().from, ident());
        let a = Answer {
            version: 2,
            from: ident(),
            incarnation: 5,
        };
        assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
        let v = Vector {
            entries: vec![(Origin { node: 1, core: 0 }, 42)],
            loads: vec![3, 4],
        };
        assert_eq!(Vector::decode(&v.encode()).unwrap(), v);
        let n = encode_notes([&b"one"[..], b"two"].into_iter());
        assert_eq!(decode_notes(&n).unwrap(), vec![&b"one"[..], b"two"]);
        let d = DispatchRequest {
            id: 9,
            core: 1,
            keep_alive: true,
            http10: false,
            raw_head: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            body: vec![],
        };
        assert_eq!(DispatchRequest::decode(&d.encode()).unwrap(), d);
        let d = DispatchResponse {
            id: 9,
            status: 200,
            close: false,
            response: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        };
        assert_eq!(DispatchResponse::decode(&d.encode()).unwrap(), d);
        let h = Holes {
            ranges: vec![
                SeqRange {
                    origin: Origin { node: 1, core: 0 },
                    first: 3,
                    last: 3,
                },
                SeqRange {
                    origin: Origin { node: 2, core: 1 },
                    first: 10,
                    last: u64::MAX,
                },
            ],
        };
        assert_eq!(Holes::decode(&h.encode()).unwrap(), h);
        assert_eq!(
            Holes::decode(&Holes::default().encode()).unwrap(),
            Holes::default()
        );
    }

    #[test]
    fn hostile_holes_are_errors() {
        let range = |first: u64, last: u64| {
            Holes {
                ranges: vec![SeqRange {
                    origin: Origin { node: 1, core: 0 },
                    first,
                    last,
                }],
            }
            .encode()
        };
        assert_eq!(Holes::decode(&range(5, 4)), Err(WireError::BadRange(5, 4)));
        assert_eq!(Holes::decode(&range(0, 4)), Err(WireError::BadRange(0, 4)));
        let good = range(1, 4);
        for cut in 0..good.len() {
            assert!(Holes::decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut w = Writer::default();
        w.u32(HOLE_RANGES_PER_FRAME_MAX as u32 + 1);
        assert_eq!(
            Holes::decode(&w.buf),
            Err(WireError::TooLong("hole ranges"))
        );
    }

    #[test]
    fn hostile_payloads_are_errors() {
        let h = Hello {
            version_min: 1,
            version_max: 1,
            from: ident(),
            incarnation: 1,
        }
        .encode();
        for cut in 0..h.len() {
            assert!(Hello::decode(&h[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = h.clone();
        long.push(0);
        assert_eq!(Hello::decode(&long), Err(WireError::Trailing(1)));
        // A huge claimed count must not allocate or loop.
        let mut w = Writer::default();
        w.u32(u32::MAX);
        assert_eq!(decode_notes(&w.buf), Err(WireError::TooLong("notes batch")));
        assert_eq!(Vector::decode(&w.buf), Err(WireError::TooLong("vector")));
    }
}
