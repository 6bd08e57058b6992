//! Sealed membership datagrams: encrypted, authenticated, and refused when
//! replayed.
//!
//! ```text
//! | magic "UM" | version u8 | sender node u32 | sender epoch u64 | salt [u8; 8] | counter u64 |
//! | receiver node u32 | receiver epoch u64 | ciphertext of foca's bytes | tag: 16 |
//! ```
//!
//! Everything before the ciphertext is authenticated (associated data) and
//! the whole datagram is sealed with XChaCha20-Poly1305 under the cookie's
//! datagram key (`auth.rs`). The 24-byte nonce is `salt || epoch ||
//! counter`: the salt is random per sender instance and the counter never
//! repeats within it, so no two datagrams sealed under one key share a
//! nonce, even across restarts, without any coordination between nodes
//! (why XChaCha and not ChaCha20's 12-byte nonce: room for the random salt).
//!
//! An *epoch* is a membership instance's SWIM incarnation at its start (ms
//! since 1970, so it grows with every start of a node or of its shard 0;
//! foca relies on the same). Replay protection, checked only after the tag
//! verified (so nothing unauthenticated changes any state here):
//! - **receiver binding**: a datagram names the member it is for, as the
//!   sender knows it; one for another node, or for an earlier run of this
//!   one (an epoch below ours), is refused. So nothing captured before a
//!   node (re)started is accepted by it.
//! - **counter window**: per sender node, the last
//!   [`REPLAY_WINDOW_DATAGRAMS`] counters of its newest epoch
//!   ([`ReplayWindow`]): a counter seen before, older than the window, or
//!   from an earlier epoch of the sender is refused. So nothing is accepted
//!   twice by the run that received it.
//!
//! Together: a datagram captured and sent again later is refused by every
//! receiver, without any clock (no time bound, so no clock agreement to set
//! up). A datagram held back by an attacker and delivered late, once, is
//! accepted like a datagram delayed by the network (SWIM's incarnation
//! numbers make stale news harmless).

use std::collections::HashMap;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::auth::Cookies;

/// First bytes of every sealed membership datagram.
pub const DATAGRAM_MAGIC: [u8; 2] = *b"UM";
/// Version byte of the datagram format (the peer protocol's version).
pub const DATAGRAM_VERSION: u8 = super::frame::PROTOCOL_VERSION;
/// Bytes before the ciphertext.
pub const DATAGRAM_HEADER_BYTES: usize = 2 + 1 + 4 + 8 + 8 + 8 + 4 + 8;
/// Bytes of the authentication tag.
pub const DATAGRAM_TAG_BYTES: usize = 16;
/// Bytes a sealed datagram adds to foca's.
pub const DATAGRAM_OVERHEAD_BYTES: usize = DATAGRAM_HEADER_BYTES + DATAGRAM_TAG_BYTES;
/// Counters remembered per sender below its newest: a datagram delayed
/// behind this many later ones from the same sender is refused (SWIM
/// tolerates the loss).
pub const REPLAY_WINDOW_DATAGRAMS: u64 = 128;
/// Senders whose windows are kept; beyond, the one heard from least
/// recently is forgotten (only authenticated senders ever get a window).
pub const SENDERS_TRACKED_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("not a sealed membership datagram ({0} bytes, no magic)")]
    NotSealed(usize),
    #[error("membership datagram of format version {0}, this node speaks {DATAGRAM_VERSION}")]
    Version(u8),
    #[error("membership datagram fails authentication (altered, or sealed with another cookie)")]
    Forged,
    #[error("membership datagram from node {node:08x} for another member ({to_node:08x}, epoch {to_epoch}): replayed from an earlier run of this node, or misdirected")]
    NotForUs {
        node: u32,
        to_node: u32,
        to_epoch: u64,
    },
    #[error("membership datagram from node {node:08x} replayed (counter {counter} seen before)")]
    Replayed { node: u32, counter: u64 },
    #[error("membership datagram from node {node:08x} is older than its replay window (counter {counter})")]
    TooOld { node: u32, counter: u64 },
    #[error("membership datagram from an earlier run of node {node:08x} (epoch {epoch})")]
    EarlierRun { node: u32, epoch: u64 },
}

/// The authenticated header of an opened datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub node: u32,
    pub epoch: u64,
    pub counter: u64,
}

/// A member's node and epoch: who sends, or who a datagram is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub node: u32,
    pub epoch: u64,
}

/// Seals this node's datagrams.
pub struct DatagramSealer {
    cipher: XChaCha20Poly1305,
    me: Member,
    salt: [u8; 8],
    /// Counter of the next datagram.
    counter: u64,
}

impl DatagramSealer {
    /// `me`: this node, and this instance's SWIM incarnation at start.
    pub fn new(cookies: &Cookies, me: Member) -> DatagramSealer {
        let mut salt = [0u8; 8];
        if getrandom::fill(&mut salt).is_err() {
            // No entropy source at all: the clock's nanoseconds still make
            // a repeat of (salt, epoch) across instances improbable.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            salt = t.to_le_bytes();
        }
        DatagramSealer {
            cipher: XChaCha20Poly1305::new(cookies.dialing().datagram_key().into()),
            me,
            salt,
            counter: 0,
        }
    }

    /// Seals foca's `data` for member `to` (as foca knows it).
    pub fn seal(&mut self, to: Member, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(DATAGRAM_OVERHEAD_BYTES + data.len());
        out.extend_from_slice(&DATAGRAM_MAGIC);
        out.push(DATAGRAM_VERSION);
        out.extend_from_slice(&self.me.node.to_le_bytes());
        out.extend_from_slice(&self.me.epoch.to_le_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&to.node.to_le_bytes());
        out.extend_from_slice(&to.epoch.to_le_bytes());
        debug_assert_eq!(out.len(), DATAGRAM_HEADER_BYTES);
        let nonce = nonce(&self.salt, self.me.epoch, self.counter);
        self.counter += 1;
        out.extend_from_slice(data);
        let (header, body) = out.split_at_mut(DATAGRAM_HEADER_BYTES);
        // Encryption fails only for inputs beyond 2^38 bytes.
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce, header, body)
            .unwrap_or_else(|_| unreachable!("a datagram is far below the AEAD's size limit"));
        out.extend_from_slice(&tag);
        out
    }
}

fn nonce(salt: &[u8; 8], epoch: u64, counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(salt);
    n[8..16].copy_from_slice(&epoch.to_le_bytes());
    n[16..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// The counters accepted recently from one sender.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    epoch: u64,
    /// Highest counter accepted in `epoch`.
    top: u64,
    /// Bit `i`: counter `top - i` was accepted.
    seen: u128,
    /// `DatagramOpener::accepted` when a datagram was last accepted (for eviction).
    last_use: u64,
}

const _: () = assert!(REPLAY_WINDOW_DATAGRAMS == u128::BITS as u64);

impl ReplayWindow {
    fn new(epoch: u64, counter: u64, now: u64) -> ReplayWindow {
        ReplayWindow {
            epoch,
            top: counter,
            seen: 1,
            last_use: now,
        }
    }

    /// Accepts (and remembers) `counter` of `epoch` once; refuses a repeat,
    /// a counter below the window, or an earlier epoch.
    pub fn accept(&mut self, s: &Sender, now: u64) -> Result<(), DatagramError> {
        if s.epoch < self.epoch {
            return Err(DatagramError::EarlierRun {
                node: s.node,
                epoch: s.epoch,
            });
        }
        if s.epoch > self.epoch {
            *self = ReplayWindow::new(s.epoch, s.counter, now);
            return Ok(());
        }
        if s.counter > self.top {
            let shift = s.counter - self.top;
            self.seen = if shift >= REPLAY_WINDOW_DATAGRAMS {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = s.counter;
        } else {
            let back = self.top - s.counter;
            if back >= REPLAY_WINDOW_DATAGRAMS {
                return Err(DatagramError::TooOld {
                    node: s.node,
                    counter: s.counter,
                });
            }
            let bit = 1u128 << back;
            if self.seen & bit != 0 {
                return Err(DatagramError::Replayed {
                    node: s.node,
                    counter: s.counter,
                });
            }
            self.seen |= bit;
        }
        self.last_use = now;
        Ok(())
    }
}

/// Opens datagrams sealed under any of this node's cookies and keeps the
/// replay windows.
pub struct DatagramOpener {
    ciphers: Vec<XChaCha20Poly1305>,
    /// This node, and this instance's epoch: what datagrams must be for.
    me: Member,
    windows: HashMap<u32, ReplayWindow>,
    /// Datagrams accepted so far (the windows' clock for eviction).
    accepted: u64,
}

impl DatagramOpener {
    pub fn new(cookies: &Cookies, me: Member) -> DatagramOpener {
        DatagramOpener {
            ciphers: cookies
                .accepted()
                .iter()
                .map(|c| XChaCha20Poly1305::new(c.datagram_key().into()))
                .collect(),
            me,
            windows: HashMap::new(),
            accepted: 0,
        }
    }

    /// The authenticated sender and foca's bytes, if `datagram` is sealed
    /// with one of our cookies, for this run of this node, and not seen
    /// before.
    pub fn open(&mut self, datagram: &[u8]) -> Result<(Sender, Vec<u8>), DatagramError> {
        if datagram.len() < DATAGRAM_OVERHEAD_BYTES || datagram[..2] != DATAGRAM_MAGIC {
            return Err(DatagramError::NotSealed(datagram.len()));
        }
        if datagram[2] != DATAGRAM_VERSION {
            return Err(DatagramError::Version(datagram[2]));
        }
        let (header, rest) = datagram.split_at(DATAGRAM_HEADER_BYTES);
        let (body, tag) = rest.split_at(rest.len() - DATAGRAM_TAG_BYTES);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let sender = Sender {
            node: u32::from_le_bytes([header[3], header[4], header[5], header[6]]),
            epoch: u64_at(7),
            counter: u64_at(23),
        };
        let to = Member {
            node: u32::from_le_bytes([header[31], header[32], header[33], header[34]]),
            epoch: u64_at(35),
        };
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&header[15..23]);
        let nonce = nonce(&salt, sender.epoch, sender.counter);
        let tag = Tag::from_slice(tag);
        let mut plain = body.to_vec();
        let opened = self.ciphers.iter().any(|cipher| {
            plain.copy_from_slice(body);
            cipher
                .decrypt_in_place_detached(&nonce, header, &mut plain, tag)
                .is_ok()
        });
        if !opened {
            return Err(DatagramError::Forged);
        }
        if to.node != self.me.node || to.epoch < self.me.epoch {
            return Err(DatagramError::NotForUs {
                node: sender.node,
                to_node: to.node,
                to_epoch: to.epoch,
            });
        }
        let now = self.accepted + 1;
        match self.windows.get_mut(&sender.node) {
            Some(w) => w.accept(&sender, now)?,
            None => {
                if self.windows.len() >= SENDERS_TRACKED_MAX {
                    self.forget_least_recent();
                }
                self.windows.insert(
                    sender.node,
                    ReplayWindow::new(sender.epoch, sender.counter, now),
                );
            }
        }
        self.accepted = now;
        Ok((sender, plain))
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.last_use)
            .map(|(node, _)| *node);
        if let Some(node) = oldest {
            self.windows.remove(&node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::auth::Cookie;

    const A: Member = Member {
        node: 0xa,
        epoch: 100,
    };
    const B: Member = Member {
        node: 0xb,
        epoch: 500,
    };

    fn cookies(secret: &[u8]) -> Cookies {
        Cookies::new(vec![Cookie::from_bytes(secret)]).unwrap()
    }

    const SECRET: &[u8] = b"datagram-test-cookie-0123456789";

    #[test]
    fn a_datagram_opens_once_and_hides_its_content() {
        let c = cookies(SECRET);
        let mut tx = DatagramSealer::new(&c, A);
        let mut rx = DatagramOpener::new(&c, B);
        let d = tx.seal(B, b"member name: nodealpha");
        assert!(!d.windows(9).any(|w| w == b"nodealpha"));
        let (s, plain) = rx.open(&d).unwrap();
        assert_eq!(plain, b"member name: nodealpha");
        assert_eq!((s.node, s.epoch, s.counter), (A.node, A.epoch, 0));
        assert_eq!(
            rx.open(&d),
            Err(DatagramError::Replayed {
                node: A.node,
                counter: 0
            })
        );
    }

    #[test]
    fn altered_or_foreign_datagrams_are_forged() {
        let c = cookies(SECRET);
        let mut tx = DatagramSealer::new(&c, A);
        let d = tx.seal(B, b"ping");
        for i in 3..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                DatagramOpener::new(&c, B).open(&bad),
                Err(DatagramError::Forged),
                "byte {i}"
            );
        }
        let other = cookies(b"another-cookie-abcdefghijklmnop");
        assert_eq!(
            DatagramOpener::new(&other, B).open(&d),
            Err(DatagramError::Forged)
        );
        assert_eq!(
            DatagramOpener::new(&c, B).open(b"UM"),
            Err(DatagramError::NotSealed(2))
        );
        let mut v = d.clone();
        v[2] = 1;
        assert_eq!(
            DatagramOpener::new(&c, B).open(&v),
            Err(DatagramError::Version(1))
        );
    }

    #[test]
    fn during_a_rotation_either_cookie_opens() {
        let new = Cookie::from_bytes(b"the-new-cookie-0123456789");
        let old = Cookie::from_bytes(b"the-old-cookie-0123456789");
        let rotating = Cookies::new(vec![new.clone(), old.clone()]).unwrap();
        let mut rx = DatagramOpener::new(&rotating, B);
        let from_old = DatagramSealer::new(&Cookies::new(vec![old]).unwrap(), A).seal(B, b"a");
        let c = Member {
            node: 0xc,
            epoch: 1,
        };
        let from_new = DatagramSealer::new(&Cookies::new(vec![new]).unwrap(), c).seal(B, b"b");
        assert!(rx.open(&from_old).is_ok());
        assert!(rx.open(&from_new).is_ok());
    }

    #[test]
    fn a_restarted_receiver_refuses_what_was_sent_to_its_earlier_run() {
        let c = cookies(SECRET);
        let mut tx = DatagramSealer::new(&c, A);
        let to_first_run = tx.seal(B, b"announce");
        let b_restarted = Member {
            node: B.node,
            epoch: B.epoch + 60_000,
        };
        assert_eq!(
            DatagramOpener::new(&c, b_restarted).open(&to_first_run),
            Err(DatagramError::NotForUs {
                node: A.node,
                to_node: B.node,
                to_epoch: B.epoch
            })
        );
        // A later identity of the same run (foca renews by +1) is ours.
        let renewed = Member {
            node: B.node,
            epoch: B.epoch + 1,
        };
        assert!(DatagramOpener::new(&c, B)
            .open(&tx.seal(renewed, b"x"))
            .is_ok());
        // Another node's datagram is not ours either.
        let c_node = Member {
            node: 0xc,
            epoch: 1,
        };
        assert!(matches!(
            DatagramOpener::new(&c, B).open(&tx.seal(c_node, b"x")),
            Err(DatagramError::NotForUs { .. })
        ));
    }

    #[test]
    fn an_earlier_run_of_a_sender_is_refused_after_a_later_one_spoke() {
        let c = cookies(SECRET);
        let mut first_run = DatagramSealer::new(&c, A);
        let mut second_run = DatagramSealer::new(
            &c,
            Member {
                node: A.node,
                epoch: A.epoch + 100,
            },
        );
        let mut rx = DatagramOpener::new(&c, B);
        let old = first_run.seal(B, b"from run 1");
        assert!(rx.open(&second_run.seal(B, b"from run 2")).is_ok());
        assert_eq!(
            rx.open(&old),
            Err(DatagramError::EarlierRun {
                node: A.node,
                epoch: A.epoch
            })
        );
    }

    #[test]
    fn the_window_takes_late_datagrams_once_and_refuses_the_rest() {
        let s = |counter| Sender {
            node: 1,
            epoch: 5,
            counter,
        };
        let mut w = ReplayWindow::new(5, 10, 0);
        assert!(w.accept(&s(12), 0).is_ok());
        assert!(w.accept(&s(11), 0).is_ok(), "late but new");
        assert!(w.accept(&s(11), 0).is_err(), "twice");
        assert!(w.accept(&s(10), 0).is_err(), "the first one");
        assert!(w.accept(&s(12 + 127), 0).is_ok());
        assert!(w.accept(&s(12), 0).is_err(), "still in the window");
        assert!(matches!(
            w.accept(&s(11), 0),
            Err(DatagramError::TooOld { .. })
        ));
        assert!(w.accept(&s(1000), 0).is_ok(), "a jump clears the window");
        assert!(w.accept(&s(1000 - 127), 0).is_ok());
        assert!(w.accept(&s(1000 - 128), 0).is_err());
    }

    #[test]
    fn the_window_matches_a_model_on_random_orders() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let mut w = ReplayWindow::new(1, 0, 0);
            let mut accepted = std::collections::BTreeSet::from([0u64]);
            let mut top = 0u64;
            for _ in 0..300 {
                // Mostly forward, sometimes back, sometimes a repeat.
                let c = match next() % 4 {
                    0 => top.saturating_sub(next() % 160),
                    _ => top + next() % 5,
                };
                let s = Sender {
                    node: 1,
                    epoch: 1,
                    counter: c,
                };
                let expect_ok = !accepted.contains(&c) && c + REPLAY_WINDOW_DATAGRAMS > top;
                assert_eq!(w.accept(&s, 0).is_ok(), expect_ok, "counter {c}, top {top}");
                if expect_ok {
                    accepted.insert(c);
                    top = top.max(c);
                }
            }
        }
    }

    #[test]
    fn senders_beyond_the_limit_evict_the_least_recent() {
        let c = cookies(SECRET);
        let mut rx = DatagramOpener::new(&c, B);
        for node in 0..SENDERS_TRACKED_MAX as u32 + 10 {
            let mut tx = DatagramSealer::new(&c, Member { node, epoch: 1 });
            assert!(rx.open(&tx.seal(B, b"x")).is_ok());
        }
        assert_eq!(rx.windows.len(), SENDERS_TRACKED_MAX);
        assert!(!rx.windows.contains_key(&0), "the oldest is forgotten");
    }

    #[test]
    fn random_bytes_never_panic_the_opener() {
        let c = cookies(SECRET);
        let mut rx = DatagramOpener::new(&c, B);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400usize {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len >= 3 {
                bytes[..3].copy_from_slice(b"UM\x02");
            }
            assert!(rx.open(&bytes).is_err());
        }
    }
}
