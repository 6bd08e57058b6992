//! The cluster: peers, membership, replication and cross-node dispatch,
//! run by core 0.
//!
//! - [`frame`]: the handshake's clear framing (length, type, version, CRC).
//! - [`seal`]: the sealed transport every frame after the handshake
//!   travels in (records encrypted and authenticated, nonces in order).
//! - [`wire`]: message payloads.
//! - [`auth`]: the cookie(s) and the keys derived from them.
//! - [`handshake`]: Noise NNpsk0 keyed by the cookie: identities, keys.
//! - [`membership`]: SWIM failure detection (foca) over UDP, with
//!   [`datagram`]: sealed datagrams and their replay protection.
//! - [`peer`]: one encrypted TCP connection (read buffer, frame loop).
//! - [`replication`]: the pump, applying notes, vectors and watermarks.
//! - [`repair`]: asking for and serving notes missing below the marks.
//! - [`view`]: what every core reads of the cluster ([`ClusterShared`]).
//! - this file: the cluster's life (start, accept, dial, attach, detach),
//!   membership events, the published view, and forwarding requests.
//!
//! Ownership: everything here lives on core 0, which owns the peer listener,
//! the membership socket and every peer connection ([`Cluster`]). The
//! cluster reaches the shard it runs on only through [`ClusterHost`] (the
//! shard implements it), and other cores reach the cluster only through
//! their inboxes (notes they write, requests to forward) and read
//! [`ClusterShared`] (atomics and a lock-free snapshot). Nothing here knows
//! about shards, routes or HTTP beyond the bytes of a forwarded request.

pub mod auth;
pub mod datagram;
pub mod frame;
pub mod handshake;
pub mod membership;
pub mod peer;
pub mod repair;
pub mod replication;
pub mod seal;
pub mod view;
pub mod wire;

use std::cell::{Cell, Ref, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use glommio::net::{TcpListener, TcpStream};
use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::http::request::OwnedRequest;
use crate::http::response::CompleteResponse;
use crate::store::feed::Feed;
use crate::store::index::{Index, NoteRef};
use crate::store::writer::WriteError;
use crate::store::NodeInfo;
use auth::Cookies;
use frame::FrameKind;
use handshake::Established;
use handshake::LocalSide;
use membership::{MemberEvent, MemberId, Membership};
use peer::{FramedStream, PeerConn, PeerError, PeerHandler};
pub use view::{ClusterShared, ClusterView, MemberState, MemberView};
use wire::{DispatchRequest, DispatchResponse, NodeIdentity};

/// Reconnect backoff bounds.
pub const DIAL_BACKOFF_MIN_MS: u64 = 100;
pub const DIAL_BACKOFF_MAX_MS: u64 = 3_000;
/// How often the cluster view shown by `/_status` and used by dispatch is refreshed.
pub const VIEW_REFRESH_MS: u64 = 200;
/// Forwarded requests waiting for a remote answer, at most (per node).
pub const REMOTE_PENDING_MAX: usize = 4096;
/// `listen(2)` backlog of the peer listener: a few connections per peer at
/// most (each pair of nodes keeps one), so the kernel's default is plenty.
pub const PEER_LISTEN_BACKLOG: u32 = 1024;
/// Back-off after a failed peer accept (out of descriptors or memory),
/// instead of spinning; the open connections keep being served meanwhile.
pub const ACCEPT_RETRY_MS: u64 = 50;

/// A socket's entry in shard 0's socket registry (see
/// [`ClusterHost::register_socket`]): dropping it takes the socket out of
/// the registry, which must happen before the socket is closed.
pub type SocketRegistration = Box<dyn std::any::Any>;

/// The peer listener and its registration with shard 0's incarnation
/// (released first: fields drop in declaration order).
struct PeerListener {
    _registration: Option<SocketRegistration>,
    listener: TcpListener,
}

struct Member {
    ident: NodeIdentity,
    /// The newest SWIM incarnation seen up: a node that restarted (or whose
    /// shard 0 did) comes back with a newer one, and the old one's
    /// later "down" is not about the node any more.
    incarnation: u64,
    next_dial: Instant,
    backoff_ms: u64,
    dialing: bool,
}

/// What the cluster needs of the shard it runs on (core 0). The shard
/// implements it (`shard/cluster_host.rs`); the cluster holds it as a trait
/// object, so it never names the shard.
pub trait ClusterHost {
    /// Core 0's index: every note on this node. Not held across an await.
    fn index(&self) -> Ref<'_, Index>;
    /// Core 0's feed, which the cluster follows to learn that the index grew.
    fn feed(&self) -> Rc<Feed>;
    /// Makes notes received from a peer durable in core 0's log (one group
    /// commit), then indexes them on every core of this node.
    fn store_replicated(
        &self,
        notes: Vec<NoteRef>,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + '_>>;
    /// Records a cluster socket in the shard's socket registry (see
    /// [`SocketRegistration`]); `None` when the registry is full.
    fn register_socket(&self, fd: RawFd) -> Option<SocketRegistration>;
    /// True once the watchdog replaced this shard (it had stalled and has
    /// just woken up): its successor runs a new cluster.
    fn retired(&self) -> bool;
    /// Each local core's load (requests wanting its CPU), for peers' dispatch.
    fn loads(&self) -> Vec<u32>;
    /// A remote note became durable here this long after its creation.
    fn record_replication_delay(&self, delay_us: u64);
    /// The replication watermark of `core`'s stream moved: writes there
    /// waiting for peers (`--ack all`) look again.
    fn watermark_moved(&self, core: usize);
    /// Runs on local `core` a request that peer `node` forwarded under `id`;
    /// the answer comes back through [`Cluster::reply_to_peer`].
    fn run_for_peer(&self, core: usize, node: u32, id: u64, request: OwnedRequest);
    /// Hands the answer of a request that local `core` forwarded (under its
    /// `token`) back to that core.
    fn deliver(&self, core: usize, token: u64, reply: CompleteResponse);
}

/// A local request waiting for another node's answer: the core that holds
/// its connection, and that core's token for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    pub core: usize,
    pub token: u64,
}

/// The cluster as run by core 0.
pub struct Cluster {
    host: Rc<dyn ClusterHost>,
    /// What every core reads (also written here: view, watermarks).
    shared: Arc<ClusterShared>,
    me: NodeIdentity,
    incarnation: u64,
    /// The cookie(s): the first dials, any is accepted (a rotation).
    cookies: Cookies,
    members: RefCell<BTreeMap<u32, Member>>,
    conns: RefCell<BTreeMap<u32, Rc<PeerConn>>>,
    membership: RefCell<Option<Rc<Membership>>>,
    /// Forwarded requests awaiting a peer's answer: id -> (node, requester).
    remote_pending: RefCell<FxHashMap<u64, (u32, Requester)>>,
    next_remote_id: Cell<u64>,
    /// Join addresses not yet reached.
    joins: RefCell<Vec<(SocketAddr, Instant, u64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster is not configured: {0}")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Cookie(#[from] auth::CookieError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Cluster {
    /// Starts the cluster on core 0: listener, membership, dialer.
    /// `restarted`: this is a successor of a failed shard 0 (see below).
    pub fn start(
        host: Rc<dyn ClusterHost>,
        shared: Arc<ClusterShared>,
        config: &Config,
        node: &NodeInfo,
        cores: u16,
        restarted: bool,
    ) -> Result<Rc<Cluster>, ClusterError> {
        let Some(peer_listen) = config.peer_listen else {
            return Err(ClusterError::NotConfigured("no peer_listen address"));
        };
        if config.cookie_file.is_empty() {
            return Err(ClusterError::NotConfigured("no cookie file"));
        }
        let cookies = Cookies::load(&config.cookie_file)?;
        // A restarted shard 0 binds the port its first incarnation bound
        // (that resolved a `:0`). The check that nobody else listens there
        // is for the first start only: the failed predecessor's sockets may
        // still be open (a stalled thread, or one still unwinding) until
        // the watchdog has shut them down, and SO_REUSEPORT lets both exist
        // meanwhile.
        let peer_listen = match shared.bound.get() {
            Some(bound) if restarted => *bound,
            _ => peer_listen,
        };
        let in_use_check = if restarted {
            Ok(())
        } else {
            crate::net::ensure_not_in_use(peer_listen)
        };
        let listener = in_use_check
            .and_then(|()| crate::net::bind_one(peer_listen, PEER_LISTEN_BACKLOG))
            .map_err(|source| ClusterError::Listen {
                addr: peer_listen,
                source,
            })?;
        // A `:0` port is resolved here; UDP membership uses the same port.
        let peer_listen = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(peer_listen);
        let _ = shared.bound.set(peer_listen);
        let listener_fd = listener.into_raw_fd();
        // SAFETY: a listening socket we just created and hand over.
        let listener = PeerListener {
            _registration: host.register_socket(listener_fd),
            listener: unsafe { TcpListener::from_raw_fd(listener_fd) },
        };
        let advertise = match config.peer_advertise {
            Some(a) => a,
            None => peer_listen,
        };
        let me = NodeIdentity {
            node: node.id,
            name: node.name.clone(),
            peer_addr: advertise,
            cores,
        };
        let incarnation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let now = Instant::now();
        let cluster = Rc::new(Cluster {
            me,
            incarnation,
            cookies: cookies.clone(),
            members: RefCell::default(),
            conns: RefCell::default(),
            membership: RefCell::new(None),
            remote_pending: RefCell::default(),
            next_remote_id: Cell::new(1),
            joins: RefCell::new(
                config
                    .join
                    .iter()
                    .map(|a| (*a, now, DIAL_BACKOFF_MIN_MS))
                    .collect(),
            ),
            host,
            shared,
        });
        let blocked_addrs = Rc::clone(&cluster);
        let registering = Rc::clone(&cluster);
        let membership = Membership::start(
            cluster.member_id(),
            peer_listen,
            &cookies,
            move |fd| registering.register_socket(fd),
            // A replaced (stalled) incarnation's membership falls silent:
            // its successor speaks for the node, under a newer incarnation.
            Box::new(move |addr| {
                let shared = &blocked_addrs.shared;
                blocked_addrs.retired()
                    || shared.any_blocked()
                        && blocked_addrs
                            .members
                            .try_borrow()
                            .map(|m| {
                                m.values().any(|m| {
                                    m.ident.peer_addr == addr && shared.is_blocked(&m.ident.name)
                                })
                            })
                            .unwrap_or(false)
            }),
        )
        .map_err(|source| ClusterError::Listen {
            addr: peer_listen,
            source,
        })?;
        cluster.membership.replace(Some(membership));
        if restarted {
            // No peer is connected to this incarnation yet: writes on the
            // other cores wait for nobody until peers reconnect (the
            // predecessor's watermarks would make them wait for peers
            // that are no longer connected to anything).
            cluster.update_watermarks();
        }
        glommio::spawn_local(Rc::clone(&cluster).accept_loop(listener)).detach();
        glommio::spawn_local(Rc::clone(&cluster).maintain()).detach();
        glommio::spawn_local(Rc::clone(&cluster).follow_index()).detach();
        tracing::info!(peer_listen = %peer_listen, advertise = %advertise, joins = ?config.join, "cluster started");
        Ok(cluster)
    }

    fn member_id(&self) -> MemberId {
        MemberId {
            node: self.me.node,
            name: self.me.name.clone(),
            peer_addr: self.me.peer_addr,
            cores: self.me.cores,
            incarnation: self.incarnation,
        }
    }

    /// Records a cluster socket in shard 0's socket registry.
    fn register_socket(&self, fd: RawFd) -> Option<SocketRegistration> {
        self.host.register_socket(fd)
    }

    fn is_blocked(&self, name: &str) -> bool {
        self.shared.is_blocked(name)
    }

    /// True once this cluster's shard was replaced by the watchdog (it had
    /// stalled and has just woken up): its successor runs a new cluster,
    /// so this one must not dial, answer, or publish anything any more.
    fn retired(&self) -> bool {
        self.host.retired()
    }

    async fn accept_loop(self: Rc<Self>, listener: PeerListener) {
        loop {
            let accepted = listener.listener.accept().await;
            if self.retired() {
                return;
            }
            match accepted {
                Ok(stream) => {
                    glommio::spawn_local(Rc::clone(&self).handle_inbound(stream)).detach();
                }
                Err(e) => {
                    let io: std::io::Error = e.into();
                    tracing::warn!(error = %io, "peer accept failed");
                    glommio::timer::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                }
            }
        }
    }

    async fn handle_inbound(self: Rc<Self>, stream: TcpStream) {
        let from = stream.peer_addr().ok();
        let registration = self.register_socket(stream.as_raw_fd());
        let mut io = FramedStream::new(stream).registered(registration);
        let is_blocked = |name: &str| self.is_blocked(name);
        let local = LocalSide {
            me: &self.me,
            incarnation: self.incarnation,
            cookies: &self.cookies,
            is_blocked: &is_blocked,
        };
        match handshake::accept(&mut io, &local).await {
            Ok(established) => self.attach(established, false, io),
            Err(PeerError::Blocked(_)) | Err(PeerError::SelfConnection) => {}
            Err(e) => tracing::warn!(from = ?from, error = %e, "refused a peer connection"),
        }
    }

    async fn dial(self: Rc<Self>, addr: SocketAddr, expect: Option<u32>) -> bool {
        let stream = match TcpStream::connect_timeout(
            addr,
            Duration::from_millis(handshake::HANDSHAKE_TIMEOUT_MS),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot connect to peer");
                return false;
            }
        };
        let registration = self.register_socket(stream.as_raw_fd());
        let mut io = FramedStream::new(stream).registered(registration);
        let is_blocked = |name: &str| self.is_blocked(name);
        let local = LocalSide {
            me: &self.me,
            incarnation: self.incarnation,
            cookies: &self.cookies,
            is_blocked: &is_blocked,
        };
        match handshake::initiate(&mut io, &local).await {
            Ok(established) => {
                let node = established.peer.node;
                if expect.is_some_and(|n| n != node) {
                    tracing::info!(%addr, node = %format_args!("{:08x}", node), "a different node now answers at this address");
                }
                self.attach(established, true, io);
                true
            }
            Err(PeerError::SelfConnection) => true,
            Err(PeerError::Blocked(_)) => false,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "peer handshake failed");
                false
            }
        }
    }

    /// Registers an authenticated connection and starts its task.
    fn attach(self: &Rc<Self>, established: Established, initiated_by_me: bool, io: FramedStream) {
        let Established {
            peer,
            incarnation: told,
            sealer,
        } = established;
        let initiator = if initiated_by_me {
            self.me.node
        } else {
            peer.node
        };
        {
            let conns = self.conns.borrow();
            if let Some(existing) = conns.get(&peer.node) {
                // Two connections to the same node (both dialed at once):
                // both sides keep the one dialed by the lower node id.
                if !existing.is_closed() && existing.initiator <= initiator {
                    tracing::debug!(peer = %peer.name, "dropping a duplicate peer connection");
                    return;
                }
            }
        }
        let conn = PeerConn::new(peer.clone(), initiator, sealer);
        if let Some(old) = self.conns.borrow_mut().insert(peer.node, Rc::clone(&conn)) {
            old.close();
        }
        let mut members = self.members.borrow_mut();
        // The newest SWIM incarnation: the one the peer told in the
        // handshake, or a newer one membership reported (foca renews it).
        let incarnation = members
            .get(&peer.node)
            .map_or(told, |m| m.incarnation.max(told));
        members.insert(
            peer.node,
            Member {
                ident: peer.clone(),
                incarnation,
                next_dial: Instant::now(),
                backoff_ms: DIAL_BACKOFF_MIN_MS,
                dialing: false,
            },
        );
        drop(members);
        tracing::info!(peer = %peer.name, node = %format_args!("{:08x}", peer.node), addr = %peer.peer_addr, "peer connected");
        if let Some(m) = self.membership.borrow().as_ref() {
            m.announce(MemberId {
                node: peer.node,
                name: peer.name.clone(),
                peer_addr: peer.peer_addr,
                cores: peer.cores,
                incarnation,
            });
        }
        self.update_watermarks();
        let me = Rc::clone(self);
        glommio::spawn_local(async move {
            let reason = peer::run(Rc::clone(&me), Rc::clone(&conn), io).await;
            me.detach(&conn, reason);
        })
        .detach();
    }

    fn detach(self: &Rc<Self>, conn: &Rc<PeerConn>, reason: PeerError) {
        conn.close();
        let removed = {
            let mut conns = self.conns.borrow_mut();
            match conns.get(&conn.peer.node) {
                Some(c) if Rc::ptr_eq(c, conn) => conns.remove(&conn.peer.node).is_some(),
                _ => false,
            }
        };
        if removed {
            match reason {
                PeerError::Local(_) => {
                    tracing::info!(peer = %conn.peer.name, "peer connection closed")
                }
                other => {
                    tracing::warn!(peer = %conn.peer.name, reason = %other, "peer connection lost")
                }
            }
            // Requests forwarded over this connection will get no answer.
            let failed: Vec<(u64, Requester)> = self
                .remote_pending
                .borrow()
                .iter()
                .filter(|(_, (node, _))| *node == conn.peer.node)
                .map(|(id, (_, r))| (*id, *r))
                .collect();
            for (id, reply_to) in failed {
                self.remote_pending.borrow_mut().remove(&id);
                self.deliver_reply(
                    reply_to,
                    CompleteResponse::unavailable("the node serving this request went away"),
                );
            }
            self.update_watermarks();
        }
    }

    /// Sends a request to run on `core` of another node; the answer comes
    /// back to `requester` (a 503 at once if it cannot be sent).
    pub fn forward(&self, node: u32, core: u16, request: OwnedRequest, requester: Requester) {
        let conn = self.conns.borrow().get(&node).cloned();
        let Some(conn) = conn.filter(|c| !c.is_closed()) else {
            self.deliver_reply(
                requester,
                CompleteResponse::unavailable("the chosen node is not connected"),
            );
            return;
        };
        if self.remote_pending.borrow().len() >= REMOTE_PENDING_MAX {
            self.deliver_reply(
                requester,
                CompleteResponse::unavailable("too many forwarded requests"),
            );
            return;
        }
        let id = self.next_remote_id.get();
        self.next_remote_id.set(id + 1);
        self.remote_pending
            .borrow_mut()
            .insert(id, (node, requester));
        let req = DispatchRequest {
            id,
            core,
            keep_alive: request.keep_alive,
            http10: request.http10,
            raw_head: request.head,
            body: request.body,
        };
        conn.send(FrameKind::DispatchRequest, &req.encode());
    }

    /// Sends the reply of a request a peer forwarded to us.
    pub fn reply_to_peer(&self, node: u32, id: u64, reply: CompleteResponse) {
        if let Some(conn) = self.conns.borrow().get(&node) {
            let resp = DispatchResponse {
                id,
                status: reply.status,
                close: reply.close,
                response: reply.bytes,
            };
            conn.send(FrameKind::DispatchResponse, &resp.encode());
        }
    }

    fn deliver_reply(&self, to: Requester, reply: CompleteResponse) {
        self.host.deliver(to.core, to.token, reply);
    }

    /// Periodic work: membership events, dialing, the shared view.
    async fn maintain(self: Rc<Self>) {
        while !self.retired() {
            self.process_membership_events();
            self.dial_due();
            self.publish_view();
            glommio::timer::sleep(Duration::from_millis(VIEW_REFRESH_MS)).await;
        }
    }

    fn process_membership_events(self: &Rc<Self>) {
        let Some(m) = self.membership.borrow().clone() else {
            return;
        };
        for event in m.take_events() {
            match event {
                MemberEvent::Up(id) => {
                    let mut members = self.members.borrow_mut();
                    let entry = members.entry(id.node).or_insert_with(|| Member {
                        ident: NodeIdentity {
                            node: id.node,
                            name: id.name.clone(),
                            peer_addr: id.peer_addr,
                            cores: id.cores,
                        },
                        incarnation: id.incarnation,
                        next_dial: Instant::now(),
                        backoff_ms: DIAL_BACKOFF_MIN_MS,
                        dialing: false,
                    });
                    entry.ident.peer_addr = id.peer_addr;
                    entry.ident.name = id.name.clone();
                    entry.incarnation = entry.incarnation.max(id.incarnation);
                    tracing::info!(member = %id.name, "member up");
                }
                MemberEvent::Down(id) => {
                    let newer_is_up = self
                        .members
                        .borrow()
                        .get(&id.node)
                        .is_some_and(|m| m.incarnation > id.incarnation);
                    if newer_is_up {
                        tracing::debug!(member = %id.name, "an earlier incarnation of the member is down");
                        continue;
                    }
                    tracing::warn!(member = %id.name, "member down");
                    if let Some(c) = self.conns.borrow().get(&id.node) {
                        c.close();
                    }
                }
            }
        }
        // Partition hook: cut connections to blocked members.
        for c in self.conns.borrow().values() {
            if self.is_blocked(&c.peer.name) {
                c.close();
            }
        }
    }

    /// Dials join addresses and known members that are not connected.
    fn dial_due(self: &Rc<Self>) {
        let now = Instant::now();
        // Join addresses: until each has been reached once.
        let joins: Vec<SocketAddr> = {
            let mut joins = self.joins.borrow_mut();
            let due: Vec<SocketAddr> = joins
                .iter()
                .filter(|(_, at, _)| *at <= now)
                .map(|(a, _, _)| *a)
                .collect();
            for j in joins.iter_mut().filter(|(_, at, _)| *at <= now) {
                j.2 = (j.2 * 2).min(DIAL_BACKOFF_MAX_MS);
                j.1 = now + Duration::from_millis(j.2);
            }
            due
        };
        for addr in joins {
            let me = Rc::clone(self);
            glommio::spawn_local(async move {
                if Rc::clone(&me).dial(addr, None).await {
                    me.joins.borrow_mut().retain(|(a, _, _)| *a != addr);
                }
            })
            .detach();
        }
        let connected: Vec<u32> = self.conns.borrow().keys().copied().collect();
        let mut to_dial = Vec::new();
        for (node, m) in self.members.borrow_mut().iter_mut() {
            if connected.contains(node)
                || m.dialing
                || m.next_dial > now
                || self.is_blocked(&m.ident.name)
            {
                continue;
            }
            m.dialing = true;
            to_dial.push((*node, m.ident.peer_addr));
        }
        for (node, addr) in to_dial {
            let me = Rc::clone(self);
            glommio::spawn_local(async move {
                let ok = Rc::clone(&me).dial(addr, Some(node)).await;
                if let Some(m) = me.members.borrow_mut().get_mut(&node) {
                    m.dialing = false;
                    if ok {
                        m.backoff_ms = DIAL_BACKOFF_MIN_MS;
                    } else {
                        m.backoff_ms = (m.backoff_ms * 2).min(DIAL_BACKOFF_MAX_MS);
                    }
                    m.next_dial = Instant::now() + Duration::from_millis(m.backoff_ms);
                }
            })
            .detach();
        }
    }

    fn publish_view(&self) {
        let index = self.host.index();
        let ours = index.vector();
        let membership = self.membership.borrow().clone();
        let conns = self.conns.borrow();
        let members = self
            .members
            .borrow()
            .values()
            .map(|m| {
                let conn = conns.get(&m.ident.node).filter(|c| !c.is_closed());
                let lag_notes = conn.map_or(0, |c| {
                    let v = c.vector.borrow();
                    ours.iter()
                        .map(|(o, s)| s.saturating_sub(v.get(o).copied().unwrap_or(0)))
                        .sum()
                });
                let swim = membership.as_ref().and_then(|ms| ms.state_of(m.ident.node));
                MemberView {
                    node: m.ident.node,
                    name: m.ident.name.clone(),
                    peer_addr: m.ident.peer_addr,
                    state: match (swim, conn.is_some()) {
                        (Some(s), _) => s,
                        (None, true) => MemberState::Up,
                        (None, false) => MemberState::Down,
                    },
                    connected: conn.is_some(),
                    cores: m.ident.cores,
                    loads: conn.map(|c| c.loads.borrow().clone()).unwrap_or_default(),
                    lag_notes,
                    outbox_bytes: conn.map_or(0, |c| c.outbox_bytes() as u64),
                }
            })
            .collect();
        self.shared.view.store(Arc::new(ClusterView { members }));
    }

    fn on_dispatch_request(
        self: &Rc<Self>,
        conn: &Rc<PeerConn>,
        payload: &[u8],
    ) -> Result<(), PeerError> {
        let req = DispatchRequest::decode(payload)?;
        let core = (req.core as usize).min(usize::from(self.me.cores.saturating_sub(1)));
        let request = OwnedRequest {
            keep_alive: req.keep_alive,
            http10: req.http10,
            head: req.raw_head,
            body: req.body,
        };
        // The requesting node times out on its own (`DISPATCH_TIMEOUT_MS`).
        self.host
            .run_for_peer(core, conn.peer.node, req.id, request);
        Ok(())
    }

    fn on_dispatch_response(&self, payload: &[u8]) -> Result<(), PeerError> {
        let resp = DispatchResponse::decode(payload)?;
        let pending = self.remote_pending.borrow_mut().remove(&resp.id);
        if let Some((_, requester)) = pending {
            self.deliver_reply(
                requester,
                CompleteResponse {
                    status: resp.status,
                    close: resp.close,
                    bytes: resp.response,
                },
            );
        }
        Ok(())
    }

    /// What `/_status` shows about this node's own peer endpoint.
    pub fn me(&self) -> &NodeIdentity {
        &self.me
    }
}

impl PeerHandler for Cluster {
    fn on_frame(
        self: Rc<Self>,
        conn: &Rc<PeerConn>,
        kind: FrameKind,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), PeerError>> + '_>> {
        let conn = Rc::clone(conn);
        Box::pin(async move {
            if self.is_blocked(&conn.peer.name) {
                return Err(PeerError::Blocked(conn.peer.name.clone()));
            }
            match kind {
                FrameKind::Vector => self.on_vector(&conn, &payload),
                FrameKind::Notes => self.apply_notes(&conn, &payload).await,
                FrameKind::DispatchRequest => self.on_dispatch_request(&conn, &payload),
                FrameKind::DispatchResponse => self.on_dispatch_response(&payload),
                FrameKind::Holes => self.on_holes(&conn, &payload),
                other => Err(PeerError::Unexpected(other)),
            }
        })
    }

    fn pump(&self, conn: &Rc<PeerConn>) {
        self.pump_notes(conn);
    }

    fn heartbeat(&self, conn: &Rc<PeerConn>) {
        conn.send(FrameKind::Vector, &self.our_vector().encode());
    }

    fn established(&self, conn: &Rc<PeerConn>) {
        self.send_holes(conn);
    }
}
