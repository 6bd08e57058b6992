//! What a handler may see and do: the per-core view.
//!
//! Handlers never hold the shard. They get a [`CoreView`] of the core that
//! runs them (the shard implements it, `shard/view.rs`), which offers what
//! answering a request needs: read the index (the core's view of it),
//! create a note, follow the core's feed, see the cluster members, and the
//! operator and admin actions. Everything the handlers keep per core
//! themselves (the render buffer, the compression buffer, the cached page,
//! the rendered notes) is in [`ApiState`], which the view lends them.
//!
//! The trait is used through generics (`impl CoreView`), so a handler
//! compiles to direct calls into the shard: the view costs nothing on the
//! request path.

use std::cell::{Ref, RefCell, RefMut};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use crate::cluster::ClusterShared;
use crate::config::Config;
use crate::fault::FaultKind;
use crate::store::feed::Feed;
use crate::store::index::{Digest, Index, NoteRef};
use crate::store::writer::WriteError;
use crate::store::NodeInfo;

use super::note_cache::NoteJsonCache;
use super::page::PageCache;

/// Capacity the render buffer starts with: a full page of notes (100 notes
/// of a typical length render to about 22 KB) fits without growing it.
pub const SCRATCH_BYTES_INITIAL: usize = 64 * 1024;

/// The handlers' own per-core state.
pub struct ApiState {
    /// Reused buffer for rendering response bodies. Never held across an
    /// await: handlers take it only while they render.
    scratch: RefCell<Vec<u8>>,
    /// Reused buffer for bodies compressed per request
    /// (`representation::respond`). Never held across an await.
    compressed: RefCell<Vec<u8>>,
    /// The newest notes page as last rendered (`page.rs`).
    pub(super) page: RefCell<PageCache>,
    /// Notes as rendered JSON, for `GET /notes/{id}` (`note_cache.rs`).
    pub(super) note_json: RefCell<NoteJsonCache>,
}

impl Default for ApiState {
    fn default() -> Self {
        ApiState {
            scratch: RefCell::new(Vec::with_capacity(SCRATCH_BYTES_INITIAL)),
            compressed: RefCell::default(),
            page: RefCell::default(),
            note_json: RefCell::default(),
        }
    }
}

impl ApiState {
    /// The render buffer, emptied.
    pub fn scratch(&self) -> RefMut<'_, Vec<u8>> {
        let mut scratch = self.scratch.borrow_mut();
        scratch.clear();
        scratch
    }

    /// The buffer for per-request compression (cleared by its user).
    pub fn compressed(&self) -> RefMut<'_, Vec<u8>> {
        self.compressed.borrow_mut()
    }
}

/// One shard as `/_status` shows it.
#[derive(Debug, Clone)]
pub struct ShardStatus {
    /// The CPU it is pinned to; `None` when executors are unpinned.
    pub cpu: Option<usize>,
    pub connections: u64,
    pub sse_subscribers: u64,
    pub inbox_depth: u64,
    pub requests: u64,
    pub restarts: u64,
    /// Why it last failed, and when.
    pub last_failure: Option<(String, SystemTime)>,
}

/// The core a handler runs on, as the handler may use it.
pub trait CoreView {
    /// This core's number.
    fn core(&self) -> usize;
    /// Cores (shards) of this node.
    fn cores(&self) -> usize;
    fn config(&self) -> &Config;
    fn node(&self) -> &NodeInfo;
    /// The handlers' own per-core state.
    fn api_state(&self) -> &ApiState;
    /// This core's view of the index of every note (shared by all cores).
    /// Not to be held across an await.
    fn index(&self) -> Ref<'_, Index>;
    /// Which notes the index holds, with this core's view brought up to
    /// it (`Index::refresh_digest`): take it before `index()` for a
    /// response whose entity tag comes from it.
    fn index_digest(&self) -> Digest;
    /// The cluster as every core sees it (members, partition hook).
    fn cluster(&self) -> &ClusterShared;
    /// This core's feed of newly indexed notes (live updates).
    fn feed(&self) -> &Rc<Feed>;
    /// True once this core has begun shutting down.
    fn shutting_down(&self) -> bool;
    /// Creates a note in this core's stream: durable, indexed on every core
    /// and (with `--ack all`) held by every connected peer when it returns.
    fn create_note(&self, text: String) -> impl Future<Output = Result<NoteRef, WriteError>>;
    /// Before a handler waits: gives an empty write buffer back to the
    /// core's pool, so that hundreds of waiting writes hold no buffer.
    fn park_write_buffer(&self, out: &mut Vec<u8>);
    /// After the wait: a write buffer again, if `park_write_buffer` took it.
    fn unpark_write_buffer(&self, out: &mut Vec<u8>);
    /// Appends the Prometheus text of the whole node's metrics.
    fn render_metrics(&self, out: &mut Vec<u8>);
    /// Time since the server started.
    fn uptime(&self) -> Duration;
    /// Every shard of this node, for `/_status`.
    fn shards(&self) -> Vec<ShardStatus>;
    /// Posts a fault for shard `target` (`--fault-injection`; `fault.rs`).
    fn post_fault(&self, target: usize, kind: FaultKind, amount: u64);
}
