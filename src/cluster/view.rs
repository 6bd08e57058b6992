//! The cluster as every core sees it: [`ClusterShared`], written by core 0
//! (which runs the cluster) and read by any core without a lock.
//!
//! - the members and their state, as one snapshot ([`ClusterView`]) that
//!   core 0 replaces as a whole every `VIEW_REFRESH_MS` (an `ArcSwap`: a
//!   reader loads a pointer, never a half-updated list); the page, `/_status`
//!   and dispatch read it;
//! - per local core, the replication watermark its writes wait for
//!   (`--ack all`);
//! - the partition test hook's blocked names.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use arc_swap::ArcSwap;

/// A member's state as SWIM sees it (or, before SWIM has heard of it,
/// whether a peer connection to it is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Up,
    /// Not answering; not yet declared down.
    Suspect,
    Down,
}

impl MemberState {
    /// As `/_status` and the page show it.
    pub fn label(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        }
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One member as every core sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub node: u32,
    pub name: String,
    pub peer_addr: SocketAddr,
    pub state: MemberState,
    pub connected: bool,
    pub cores: u16,
    /// Its cores' loads (requests in flight), from its last vector.
    pub loads: Vec<u32>,
    /// Notes this node holds that the member has not acknowledged.
    pub lag_notes: u64,
    pub outbox_bytes: u64,
}

impl MemberView {
    /// Whether requests may be dispatched to it.
    pub fn reachable(&self) -> bool {
        self.connected && self.state != MemberState::Down
    }
}

/// A consistent snapshot of the cluster, replaced as a whole.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub members: Vec<MemberView>,
}

/// Cluster state every core can read.
pub struct ClusterShared {
    pub enabled: bool,
    /// Per local core: the highest sequence of that core's stream that every
    /// connected peer has acknowledged (`u64::MAX` when no peer is connected).
    pub replicated: Box<[AtomicU64]>,
    pub view: ArcSwap<ClusterView>,
    /// Node names whose traffic is dropped (partition test hook).
    blocked: RwLock<Vec<String>>,
    blocked_any: AtomicBool,
    /// The peer address actually bound (resolves a `:0` port), set once by core 0.
    pub bound: OnceLock<SocketAddr>,
}

impl ClusterShared {
    pub fn new(enabled: bool, cores: usize) -> ClusterShared {
        ClusterShared {
            enabled,
            replicated: (0..cores).map(|_| AtomicU64::new(u64::MAX)).collect(),
            view: ArcSwap::from_pointee(ClusterView::default()),
            blocked: RwLock::new(Vec::new()),
            blocked_any: AtomicBool::new(false),
            bound: OnceLock::new(),
        }
    }

    pub fn set_blocked(&self, names: Vec<String>) {
        let any = !names.is_empty();
        if let Ok(mut b) = self.blocked.write() {
            *b = names;
        }
        self.blocked_any.store(any, Ordering::Release);
    }

    /// Whether any name is blocked (one load: the common answer is no).
    pub fn any_blocked(&self) -> bool {
        self.blocked_any.load(Ordering::Acquire)
    }

    pub fn is_blocked(&self, name: &str) -> bool {
        if !self.any_blocked() {
            return false;
        }
        self.blocked
            .read()
            .map(|b| b.iter().any(|n| n == name))
            .unwrap_or(false)
    }
}
