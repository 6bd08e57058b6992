//! Membership and failure detection: SWIM (the `foca` crate) over UDP.
//!
//! foca is sans-IO: it is fed datagrams and timer events and hands back
//! datagrams to send, timers to arm and notifications. This module is its
//! runtime on core 0: one UDP socket on the peer address, glommio timers,
//! and every datagram sealed (`datagram.rs`: encrypted, authenticated with
//! a key from the cookie, refused when replayed or stale), so only holders
//! of the cookie take part in membership, member names and addresses are
//! not readable on the network, and a captured datagram sent again cannot
//! change any member's state. Refused datagrams are counted and logged at
//! most once per [`DROP_LOG_INTERVAL_MS`] per reason, naming the sender.
//!
//! Timings are set for a LAN: a member that stops answering is suspected
//! after one probe period plus round trip, and declared down after the
//! suspicion timeout, well within 3 s. Members declared down are
//! re-announced to often, so a healed partition rejoins within seconds.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, State, Timer,
};
use glommio::net::UdpSocket;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

use super::auth::Cookies;
use super::datagram::{
    self, DatagramError, DatagramOpener, DatagramSealer, DATAGRAM_OVERHEAD_BYTES,
};
use super::view::MemberState;
use super::SocketRegistration;

/// Largest membership datagram (foca packs updates up to this size).
pub const DATAGRAM_BYTES_MAX: usize = 1400;
/// SWIM probe period.
pub const PROBE_PERIOD_MS: u64 = 500;
/// Time a probe waits for a direct answer before asking others.
pub const PROBE_RTT_MS: u64 = 200;
/// Time a suspect has to refute suspicion before it is declared down.
pub const SUSPECT_TO_DOWN_MS: u64 = 1_200;
/// Refused datagrams are logged at most this often per reason (a flood of
/// them must not flood the log); each line says how many were refused.
pub const DROP_LOG_INTERVAL_MS: u64 = 10_000;

/// A member's identity in SWIM. `node` is the stable address; a restarted
/// node comes back with a higher `incarnation` and wins over its old self.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub node: u32,
    pub name: String,
    pub peer_addr: SocketAddr,
    pub cores: u16,
    pub incarnation: u64,
}

impl foca::Identity for MemberId {
    type Addr = u32;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            incarnation: self.incarnation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> u32 {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// What membership reports to the cluster.
#[derive(Debug, Clone)]
pub enum MemberEvent {
    Up(MemberId),
    Down(MemberId),
}

type Swim = Foca<MemberId, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// Reasons a datagram is refused, each logged on its own schedule.
const DROP_FOREIGN: usize = 0;
const DROP_FORGED: usize = 1;
const DROP_REPLAYED: usize = 2;
/// For an earlier run of this node: replayed, or (the usual case, for a
/// moment after a restart) sent before the sender learned of this run.
const DROP_NOT_FOR_US: usize = 3;
const DROP_REASONS: usize = 4;

pub struct Membership {
    swim: RefCell<Swim>,
    /// The socket's record in shard 0's registry, released before the
    /// socket closes (declared first, dropped first).
    _registration: Option<SocketRegistration>,
    socket: Rc<UdpSocket>,
    /// Seals what foca sends (the first cookie, this instance's epoch).
    sealer: RefCell<DatagramSealer>,
    /// Opens what arrives, with the replay windows.
    opener: RefCell<DatagramOpener>,
    /// Cookies, to recognise a protocol-1 node's datagrams in the log.
    cookies: Cookies,
    /// Per reason: when it was last logged, and refusals since.
    drops: RefCell<[(Option<Instant>, u64); DROP_REASONS]>,
    events: RefCell<Vec<MemberEvent>>,
    /// Called (by the owner) to learn that `events` has news.
    wake: Cell<Option<std::task::Waker>>,
    /// Returns true if traffic to or from this address must be dropped
    /// (the partition test hook).
    blocked: Box<dyn Fn(SocketAddr) -> bool>,
}

fn config() -> foca::Config {
    let mut c =
        foca::Config::new_lan(std::num::NonZeroU32::new(8).unwrap_or(std::num::NonZeroU32::MIN));
    c.probe_period = Duration::from_millis(PROBE_PERIOD_MS);
    c.probe_rtt = Duration::from_millis(PROBE_RTT_MS);
    c.suspect_to_down_after = Duration::from_millis(SUSPECT_TO_DOWN_MS);
    c.max_packet_size = NonZeroUsize::new(DATAGRAM_BYTES_MAX - DATAGRAM_OVERHEAD_BYTES)
        .unwrap_or(NonZeroUsize::MIN);
    c.max_transmissions = NonZeroU8::new(6).unwrap_or(NonZeroU8::MIN);
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::MIN,
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    c.remove_down_after = Some(Duration::from_secs(24 * 3600));
    c
}

impl Membership {
    /// `register` records the new socket with shard 0's incarnation (see
    /// `ClusterHost::register_socket`).
    pub fn start(
        me: MemberId,
        bind: SocketAddr,
        cookies: &Cookies,
        register: impl FnOnce(RawFd) -> Option<SocketRegistration>,
        blocked: Box<dyn Fn(SocketAddr) -> bool>,
    ) -> std::io::Result<Rc<Membership>> {
        let socket = crate::net::bind_udp(bind)?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
        let registration = register(fd);
        // SAFETY: a bound UDP socket we just created and hand over.
        let socket = unsafe { UdpSocket::from_raw_fd(fd) };
        let mut seed = [0u8; 32];
        let _ = getrandom::fill(&mut seed);
        // The epoch of our datagrams is this instance's incarnation: it
        // grows with every start, so receivers refuse an earlier run's, and
        // we refuse what was sent to ours.
        let epoch = datagram::Member {
            node: me.node,
            epoch: me.incarnation,
        };
        let sealer = DatagramSealer::new(cookies, epoch);
        let swim = Foca::new(me, config(), SmallRng::from_seed(seed), PostcardCodec);
        let m = Rc::new(Membership {
            swim: RefCell::new(swim),
            _registration: registration,
            socket: Rc::new(socket),
            sealer: RefCell::new(sealer),
            opener: RefCell::new(DatagramOpener::new(cookies, epoch)),
            cookies: cookies.clone(),
            drops: RefCell::new([(None, 0); DROP_REASONS]),
            events: RefCell::default(),
            wake: Cell::new(None),
            blocked,
        });
        glommio::spawn_local(Rc::clone(&m).receive_loop()).detach();
        // Start the probe cycle: foca arms its own timers from here on.
        let mut rt = AccumulatingRuntime::default();
        if let Err(e) = m.swim.borrow_mut().gossip(&mut rt) {
            tracing::debug!(error = %e, "initial gossip");
        }
        m.drive(rt);
        Ok(m)
    }

    /// Introduces a member we learned about (from a handshake).
    pub fn announce(self: &Rc<Self>, to: MemberId) {
        let mut rt = AccumulatingRuntime::default();
        let result = self.swim.borrow_mut().announce(to, &mut rt);
        if let Err(e) = result {
            tracing::debug!(error = %e, "announce failed");
        }
        self.drive(rt);
    }

    /// Takes the events reported since the last call.
    pub fn take_events(&self) -> Vec<MemberEvent> {
        std::mem::take(&mut *self.events.borrow_mut())
    }

    pub fn set_waker(&self, w: std::task::Waker) {
        self.wake.set(Some(w));
    }

    /// The SWIM state of a member ("up", "suspect" or "down"), if known.
    pub fn state_of(&self, node: u32) -> Option<MemberState> {
        let swim = self.swim.borrow();
        let m = swim.iter_membership_state().find(|m| m.id().node == node)?;
        Some(match m.state() {
            State::Alive => MemberState::Up,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        })
    }

    async fn receive_loop(self: Rc<Self>) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX + 64];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "membership socket receive failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if (self.blocked)(from) {
                continue;
            }
            let opened = self.opener.borrow_mut().open(&buf[..n]);
            let data = match opened {
                Ok((_, data)) => data,
                Err(e) => {
                    self.refused(from, &buf[..n], e);
                    continue;
                }
            };
            let mut rt = AccumulatingRuntime::default();
            let result = self.swim.borrow_mut().handle_data(&data, &mut rt);
            if let Err(e) = result {
                tracing::debug!(%from, error = %e, "membership datagram refused");
            }
            self.drive(rt);
        }
    }

    /// Carries out what foca asked for.
    fn drive(self: &Rc<Self>, mut rt: AccumulatingRuntime<MemberId>) {
        while let Some((to, data)) = rt.to_send() {
            if (self.blocked)(to.peer_addr) {
                continue;
            }
            let for_member = datagram::Member {
                node: to.node,
                epoch: to.incarnation,
            };
            let sealed = self.sealer.borrow_mut().seal(for_member, &data);
            let socket = Rc::clone(&self.socket);
            glommio::spawn_local(async move {
                if let Err(e) = socket.send_to(&sealed, to.peer_addr).await {
                    tracing::debug!(to = %to.peer_addr, error = %e, "membership send failed");
                }
            })
            .detach();
        }
        while let Some((after, timer)) = rt.to_schedule() {
            let me = Rc::clone(self);
            glommio::spawn_local(async move {
                glommio::timer::sleep(after).await;
                me.fire(timer);
            })
            .detach();
        }
        let mut news = false;
        while let Some(n) = rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    self.events.borrow_mut().push(MemberEvent::Up(id));
                    news = true;
                }
                OwnedNotification::MemberDown(id) => {
                    self.events.borrow_mut().push(MemberEvent::Down(id));
                    news = true;
                }
                OwnedNotification::Rename(_, id) => {
                    self.events.borrow_mut().push(MemberEvent::Up(id));
                    news = true;
                }
                OwnedNotification::Defunct => {
                    tracing::warn!("this node was declared down by the cluster")
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(
                        incarnation = id.incarnation,
                        "rejoined the cluster after being declared down"
                    )
                }
                _ => {}
            }
        }
        if news {
            if let Some(w) = self.wake.take() {
                w.wake();
            }
        }
    }

    /// Logs a refused datagram (rate-limited per reason), naming the
    /// sender where the datagram authenticated it.
    fn refused(&self, from: SocketAddr, datagram: &[u8], e: DatagramError) {
        let reason = match e {
            DatagramError::NotSealed(_) | DatagramError::Version(_) => DROP_FOREIGN,
            DatagramError::Forged => DROP_FORGED,
            DatagramError::NotForUs { .. } => DROP_NOT_FOR_US,
            DatagramError::Replayed { .. }
            | DatagramError::TooOld { .. }
            | DatagramError::EarlierRun { .. } => DROP_REPLAYED,
        };
        let refused = {
            let mut drops = self.drops.borrow_mut();
            let (last, count) = &mut drops[reason];
            *count += 1;
            if last.is_some_and(|t| t.elapsed() < Duration::from_millis(DROP_LOG_INTERVAL_MS)) {
                return;
            }
            *last = Some(Instant::now());
            std::mem::take(count)
        };
        let sender = match e {
            DatagramError::NotForUs { node, .. }
            | DatagramError::Replayed { node, .. }
            | DatagramError::TooOld { node, .. }
            | DatagramError::EarlierRun { node, .. } => Some(self.name_of(node)),
            _ => None,
        };
        match reason {
            DROP_REPLAYED => tracing::warn!(
                %from, member = sender.as_deref().unwrap_or("?"), error = %e, refused,
                "dropped a replayed membership datagram; no member's state changed"
            ),
            DROP_NOT_FOR_US => tracing::info!(
                %from, member = sender.as_deref().unwrap_or("?"), error = %e, refused,
                "dropped a membership datagram for an earlier run of this node (sent before the member learned of this run, or replayed); no member's state changed"
            ),
            DROP_FOREIGN
                if self
                    .cookies
                    .accepted()
                    .iter()
                    .any(|c| c.is_legacy_datagram(datagram)) =>
            {
                tracing::warn!(
                    %from, refused,
                    "dropped a membership datagram of a node of the old peer protocol version 1 (unencrypted): upgrade it to this version"
                )
            }
            DROP_FOREIGN => {
                tracing::debug!(%from, error = %e, refused, "dropped a datagram that is not a uringnotes membership datagram")
            }
            _ => tracing::warn!(
                %from, error = %e, refused,
                "dropped a membership datagram that does not open with our cookie (wrong cookie, or altered)"
            ),
        }
    }

    /// A member's name, for the log.
    fn name_of(&self, node: u32) -> String {
        self.swim
            .borrow()
            .iter_membership_state()
            .find(|m| m.id().node == node)
            .map_or_else(|| format!("node {node:08x}"), |m| m.id().name.clone())
    }

    fn fire(self: &Rc<Self>, timer: Timer<MemberId>) {
        let mut rt = AccumulatingRuntime::default();
        let result = self.swim.borrow_mut().handle_timer(timer, &mut rt);
        if let Err(e) = result {
            tracing::debug!(error = %e, "membership timer");
        }
        self.drive(rt);
    }
}
