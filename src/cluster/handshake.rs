//! The peer handshake: Noise `NNpsk0` keyed by the cookie, which yields the
//! connection's keys (`seal.rs`) and each side's identity, hidden from
//! anyone without the cookie.
//!
//! ```text
//! initiator                                          acceptor
//!   Hello   (clear frame: Noise -> psk, e; encrypted Hello{versions, identity})  ->
//!        <-  Answer (clear frame: Noise <- e, ee; encrypted Answer{version, identity})
//!   Confirm (first sealed record)                                                ->
//! ```
//!
//! - Message 1 is encrypted under a key derived from the cookie only: a
//!   node without the cookie cannot read who is connecting, and the
//!   acceptor refuses a Hello that does not open with any cookie it holds
//!   (the same check authenticates the initiator). The acceptor tries each
//!   of its cookies in turn (a rotation; `auth.rs`).
//! - Message 2 mixes both sides' fresh ephemeral X25519 keys with the
//!   cookie: the transport keys are new for every connection (and forward
//!   secret), and the acceptor proves it holds the cookie *and* answers
//!   this initiator's fresh key, so an old Answer cannot be replayed.
//! - A recorded Hello can be replayed to an acceptor, but whoever replays
//!   it cannot compute the keys. The acceptor therefore attaches a
//!   connection only once the initiator's `Confirm`, sealed under the new
//!   keys, has opened.
//!
//! The whole handshake has [`HANDSHAKE_TIMEOUT_MS`]; its clear frames are
//! at most `frame::HANDSHAKE_PAYLOAD_BYTES_MAX`, and `Confirm` must be
//! empty. Anything unexpected ends it with a log line on the side that saw
//! it (and a clear `Refuse` frame with the reason where that helps the
//! other side: versions, a wrong cookie). A node of the previous,
//! unencrypted protocol is recognised and refused with a reason in its own
//! framing, and logged as such on both sides.
//!
//! [`Initiator`] and [`Acceptor`] are the steps without I/O (tests drive a
//! handshake with them over a plain socket); [`initiate`] and [`accept`]
//! run them over a connection.

use std::time::Duration;

use futures_lite::FutureExt as _;
use snow::HandshakeState;

use super::auth::{Cookie, Cookies};
use super::frame::{FrameError, FrameKind, LEGACY_PROTOCOL_VERSION, PROTOCOL_VERSION};
use super::peer::{FramedStream, PeerError};
use super::seal::{self, Sealer, Session, NOISE_MESSAGE_BYTES_MAX};
use super::wire::{Answer, Hello, NodeIdentity};

/// Time allowed for the whole handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// What our side of a handshake knows.
pub struct LocalSide<'a> {
    pub me: &'a NodeIdentity,
    /// Our SWIM incarnation, told to the peer.
    pub incarnation: u64,
    pub cookies: &'a Cookies,
    /// Refuses peers blocked by the partition hook (by name).
    pub is_blocked: &'a dyn Fn(&str) -> bool,
}

fn noise(cookie: &Cookie) -> Result<snow::Builder<'_>, PeerError> {
    let params: snow::params::NoiseParams = seal::NOISE_PARAMS.parse()?;
    Ok(snow::Builder::new(params)
        .prologue(seal::NOISE_PROLOGUE)?
        .psk(0, cookie.peer_psk())?)
}

/// The dialing side, between its Hello and the acceptor's Answer.
pub struct Initiator {
    state: HandshakeState,
}

impl Initiator {
    /// Noise message 1 carrying `hello`, sealed with `cookie`.
    pub fn start(cookie: &Cookie, hello: &Hello) -> Result<(Initiator, Vec<u8>), PeerError> {
        let mut state = noise(cookie)?.build_initiator()?;
        let mut msg = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
        let n = state.write_message(&hello.encode(), &mut msg)?;
        msg.truncate(n);
        Ok((Initiator { state }, msg))
    }

    /// Opens the acceptor's Noise message 2: its answer, and our session.
    pub fn finish(mut self, msg: &[u8]) -> Result<(Answer, Session), PeerError> {
        let mut payload = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
        let n = self
            .state
            .read_message(msg, &mut payload)
            .map_err(|_| PeerError::PeerFailedAuth)?;
        let answer = Answer::decode(&payload[..n])?;
        let session = Session::new(self.state.into_stateless_transport_mode()?);
        Ok((answer, session))
    }
}

/// The accepting side, between the initiator's Hello and our Answer.
pub struct Acceptor {
    state: HandshakeState,
}

impl Acceptor {
    /// Opens Noise message 1 with each cookie we accept, in turn.
    pub fn open_hello(cookies: &Cookies, msg: &[u8]) -> Result<(Acceptor, Hello), PeerError> {
        let mut payload = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
        for cookie in cookies.accepted() {
            let mut state = noise(cookie)?.build_responder()?;
            if let Ok(n) = state.read_message(msg, &mut payload) {
                let hello = Hello::decode(&payload[..n])?;
                return Ok((Acceptor { state }, hello));
            }
        }
        Err(PeerError::PeerFailedAuth)
    }

    /// Noise message 2 carrying `answer`, and our session.
    pub fn answer(mut self, answer: &Answer) -> Result<(Vec<u8>, Session), PeerError> {
        let mut msg = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
        let n = self.state.write_message(&answer.encode(), &mut msg)?;
        msg.truncate(n);
        let session = Session::new(self.state.into_stateless_transport_mode()?);
        Ok((msg, session))
    }
}

async fn with_timeout<T>(
    fut: impl std::future::Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    fut.or(async {
        glommio::timer::sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)).await;
        Err(PeerError::Timeout)
    })
    .await
}

/// What a node of another version is told (in its own framing).
fn version_refusal(theirs: &str) -> String {
    format!(
        "incompatible protocol version: you speak {theirs}, this node speaks {PROTOCOL_VERSION} (encrypted and authenticated peer traffic): upgrade the node that speaks the older version"
    )
}

/// A handshake's outcome.
pub struct Established {
    pub peer: NodeIdentity,
    /// The peer's SWIM incarnation.
    pub incarnation: u64,
    /// The sending half of the connection (the stream has the other).
    pub sealer: Sealer,
}

/// Tells a peer whose handshake did not open with our cookie why it is
/// refused (a clear frame; best effort, the connection ends anyway).
async fn refuse_if_auth_failed(io: &mut FramedStream, error: &PeerError, why: &[u8]) {
    if matches!(error, PeerError::PeerFailedAuth) {
        let _ = io
            .write_clear(PROTOCOL_VERSION, FrameKind::Refuse, why)
            .await;
    }
}

/// Runs the dialing side of the handshake; `io` reads sealed frames from
/// now on.
pub async fn initiate(
    io: &mut FramedStream,
    local: &LocalSide<'_>,
) -> Result<Established, PeerError> {
    with_timeout(async {
        let hello = Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            from: local.me.clone(),
            incarnation: local.incarnation,
        };
        let (initiator, msg) = Initiator::start(local.cookies.dialing(), &hello)?;
        io.write_clear(PROTOCOL_VERSION, FrameKind::Hello, &msg)
            .await?;
        let reply = io.read_clear_frame().await?;
        let text = || String::from_utf8_lossy(&reply.payload).into_owned();
        if reply.version == LEGACY_PROTOCOL_VERSION {
            return Err(PeerError::LegacyPeer(format!(
                "the peer (it answered {:?})",
                text()
            )));
        }
        match reply.kind {
            FrameKind::Answer => {}
            FrameKind::Refuse => return Err(PeerError::RefusedByPeer(text())),
            other => return Err(PeerError::Unexpected(other)),
        }
        let (answer, mut session) = match initiator.finish(&reply.payload) {
            Ok(x) => x,
            Err(e) => {
                refuse_if_auth_failed(
                    io,
                    &e,
                    b"authentication failed: your answer does not open with our cookie",
                )
                .await;
                return Err(e);
            }
        };
        let peer = answer.from;
        if peer.node == local.me.node {
            return Err(PeerError::SelfConnection);
        }
        if (local.is_blocked)(&peer.name) {
            return Err(PeerError::Blocked(peer.name));
        }
        if answer.version != PROTOCOL_VERSION {
            return Err(PeerError::Version {
                min: answer.version,
                max: answer.version,
            });
        }
        let mut confirm = Vec::new();
        session.sealer.seal(FrameKind::Confirm, &[], &mut confirm)?;
        io.write_all(&confirm).await?;
        io.start_sealed(session.opener);
        Ok(Established {
            peer,
            incarnation: answer.incarnation,
            sealer: session.sealer,
        })
    })
    .await
}

/// Runs the accepting side of the handshake; `io` reads sealed frames
/// from now on.
pub async fn accept(
    io: &mut FramedStream,
    local: &LocalSide<'_>,
) -> Result<Established, PeerError> {
    with_timeout(async {
        let hello_frame = match io.read_clear_frame().await {
            Ok(f) => f,
            Err(PeerError::Frame(FrameError::BadVersion(v))) => {
                // The Refuse frame's layout is frozen across versions, so a
                // newer node can read why it was turned away.
                let reason = version_refusal(&v.to_string());
                let _ = io
                    .write_clear(PROTOCOL_VERSION, FrameKind::Refuse, reason.as_bytes())
                    .await;
                return Err(PeerError::Version { min: v, max: v });
            }
            Err(e) => return Err(e),
        };
        if hello_frame.version == LEGACY_PROTOCOL_VERSION {
            // A node of the unencrypted protocol: told in its own framing
            // (it logs "refused by peer: ..."), named in our log.
            let name = match hello_frame.kind {
                FrameKind::Hello => Hello::decode_legacy(&hello_frame.payload)
                    .ok()
                    .map(|h| h.from.name),
                _ => None,
            };
            let reason = version_refusal("1 (unencrypted peer traffic)");
            let _ = io
                .write_clear(LEGACY_PROTOCOL_VERSION, FrameKind::Refuse, reason.as_bytes())
                .await;
            return Err(PeerError::LegacyPeer(match name {
                Some(n) => format!("node {n:?}"),
                None => "a node".into(),
            }));
        }
        if hello_frame.kind != FrameKind::Hello {
            return Err(PeerError::Unexpected(hello_frame.kind));
        }
        let (acceptor, hello) = match Acceptor::open_hello(local.cookies, &hello_frame.payload) {
            Ok(x) => x,
            Err(e) => {
                refuse_if_auth_failed(io, &e, b"authentication failed: your handshake does not open with this node's cookie (wrong cookie?)").await;
                return Err(e);
            }
        };
        if !(hello.version_min..=hello.version_max).contains(&PROTOCOL_VERSION) {
            let reason =
                version_refusal(&format!("{}..={}", hello.version_min, hello.version_max));
            let _ = io
                .write_clear(PROTOCOL_VERSION, FrameKind::Refuse, reason.as_bytes())
                .await;
            return Err(PeerError::Version {
                min: hello.version_min,
                max: hello.version_max,
            });
        }
        let peer = hello.from;
        if peer.node == local.me.node {
            return Err(PeerError::SelfConnection);
        }
        if (local.is_blocked)(&peer.name) {
            return Err(PeerError::Blocked(peer.name));
        }
        let answer = Answer {
            version: PROTOCOL_VERSION,
            from: local.me.clone(),
            incarnation: local.incarnation,
        };
        let (msg, mut session) = acceptor.answer(&answer)?;
        io.write_clear(PROTOCOL_VERSION, FrameKind::Answer, &msg)
            .await?;
        // Nothing but an empty Confirm is taken before the initiator has
        // proved it holds the keys.
        session.opener.limit_payload(0);
        io.start_sealed(session.opener);
        let (kind, _) = io.read_sealed_frame().await?;
        if kind != FrameKind::Confirm {
            return Err(PeerError::Unexpected(kind));
        }
        io.limit_sealed_payload(super::frame::FRAME_PAYLOAD_BYTES_MAX);
        Ok(Established {
            peer,
            incarnation: hello.incarnation,
            sealer: session.sealer,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(node: u32, name: &str) -> NodeIdentity {
        NodeIdentity {
            node,
            name: name.into(),
            peer_addr: "127.0.0.1:9000".parse().unwrap(),
            cores: 1,
        }
    }

    fn cookies(secrets: &[&[u8]]) -> Cookies {
        Cookies::new(secrets.iter().map(|s| Cookie::from_bytes(s)).collect()).unwrap()
    }

    fn hello(name: &str) -> Hello {
        Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            from: ident(1, name),
            incarnation: 7,
        }
    }

    #[test]
    fn both_sides_learn_each_other_and_share_keys() {
        let c = cookies(&[b"handshake-test-cookie-0123"]);
        let (init, msg1) = Initiator::start(c.dialing(), &hello("nodealpha")).unwrap();
        assert!(
            !msg1.windows(9).any(|w| w == b"nodealpha"),
            "the identity is encrypted"
        );
        let (acc, got) = Acceptor::open_hello(&c, &msg1).unwrap();
        assert_eq!(got.from.name, "nodealpha");
        let (msg2, mut acc_session) = acc
            .answer(&Answer {
                version: PROTOCOL_VERSION,
                from: ident(2, "nodebeta"),
                incarnation: 9,
            })
            .unwrap();
        assert!(!msg2.windows(8).any(|w| w == b"nodebeta"));
        let (answer, mut init_session) = init.finish(&msg2).unwrap();
        assert_eq!(answer.from.name, "nodebeta");
        let mut wire = Vec::new();
        init_session
            .sealer
            .seal(FrameKind::Confirm, &[], &mut wire)
            .unwrap();
        let opened = acc_session.opener.open(&wire).unwrap();
        assert_eq!(opened.frame, Some((FrameKind::Confirm, vec![])));
    }

    #[test]
    fn a_wrong_cookie_fails_on_the_acceptor_and_either_rotation_cookie_works() {
        let new: &[u8] = b"the-new-cookie-0123456789";
        let old: &[u8] = b"the-old-cookie-0123456789";
        let (_, msg1) = Initiator::start(cookies(&[old]).dialing(), &hello("x")).unwrap();
        assert!(matches!(
            Acceptor::open_hello(&cookies(&[new]), &msg1),
            Err(PeerError::PeerFailedAuth)
        ));
        assert!(Acceptor::open_hello(&cookies(&[new, old]), &msg1).is_ok());
        assert!(Acceptor::open_hello(&cookies(&[old, new]), &msg1).is_ok());
    }

    #[test]
    fn keys_are_fresh_per_connection() {
        let c = cookies(&[b"handshake-test-cookie-0123"]);
        let run = || {
            let (init, msg1) = Initiator::start(c.dialing(), &hello("a")).unwrap();
            let (acc, _) = Acceptor::open_hello(&c, &msg1).unwrap();
            let (msg2, _) = acc
                .answer(&Answer {
                    version: PROTOCOL_VERSION,
                    from: ident(2, "b"),
                    incarnation: 9,
                })
                .unwrap();
            let (_, mut s) = init.finish(&msg2).unwrap();
            let mut wire = Vec::new();
            s.sealer
                .seal(FrameKind::Vector, b"same", &mut wire)
                .unwrap();
            (msg1, wire)
        };
        let (h1, w1) = run();
        let (h2, w2) = run();
        assert_ne!(h1, h2);
        assert_ne!(w1, w2, "same plaintext, same nonce, different keys");
    }

    #[test]
    fn a_replayed_answer_does_not_open_for_a_new_initiator() {
        let c = cookies(&[b"handshake-test-cookie-0123"]);
        let (_, msg1) = Initiator::start(c.dialing(), &hello("a")).unwrap();
        let (acc, _) = Acceptor::open_hello(&c, &msg1).unwrap();
        let (old_answer, _) = acc
            .answer(&Answer {
                version: PROTOCOL_VERSION,
                from: ident(2, "b"),
                incarnation: 9,
            })
            .unwrap();
        let (fresh, _) = Initiator::start(c.dialing(), &hello("a")).unwrap();
        assert!(matches!(
            fresh.finish(&old_answer),
            Err(PeerError::PeerFailedAuth)
        ));
    }

    #[test]
    fn garbage_hellos_fail_cleanly() {
        let c = cookies(&[b"handshake-test-cookie-0123"]);
        for len in [0usize, 1, 31, 32, 48, 49, 200, 4096] {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            assert!(Acceptor::open_hello(&c, &garbage).is_err(), "{len} bytes");
        }
    }
}
