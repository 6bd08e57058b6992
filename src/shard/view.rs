//! The shard as its request handlers see it: the implementation of
//! [`CoreView`] (`api/view.rs`). Each method is a thin call into the
//! shard's state; handlers are generic over the view, so these inline.

use std::cell::Ref;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use super::state::Shard;
use crate::api::{ApiState, CoreView, ShardStatus};
use crate::cluster::ClusterShared;
use crate::config::Config;
use crate::fault::FaultKind;
use crate::metrics::{self, Gauges};
use crate::store::feed::Feed;
use crate::store::index::{Digest, Index, NoteRef};
use crate::store::writer::WriteError;
use crate::store::NodeInfo;

impl CoreView for Shard {
    #[inline]
    fn core(&self) -> usize {
        self.id()
    }

    fn cores(&self) -> usize {
        self.shared().cores.len()
    }

    #[inline]
    fn config(&self) -> &Config {
        Shard::config(self)
    }

    #[inline]
    fn node(&self) -> &NodeInfo {
        Shard::node(self)
    }

    #[inline]
    fn api_state(&self) -> &ApiState {
        Shard::api_state(self)
    }

    #[inline]
    fn index(&self) -> Ref<'_, Index> {
        Shard::index(self)
    }

    #[inline]
    fn index_digest(&self) -> Digest {
        self.index_digest()
    }

    #[inline]
    fn cluster(&self) -> &ClusterShared {
        &self.shared().cluster
    }

    #[inline]
    fn feed(&self) -> &Rc<Feed> {
        Shard::feed(self)
    }

    #[inline]
    fn shutting_down(&self) -> bool {
        Shard::shutting_down(self)
    }

    fn create_note(&self, text: String) -> impl Future<Output = Result<NoteRef, WriteError>> {
        Shard::create_note(self, text)
    }

    #[inline]
    fn park_write_buffer(&self, out: &mut Vec<u8>) {
        Shard::park_write_buffer(self, out)
    }

    #[inline]
    fn unpark_write_buffer(&self, out: &mut Vec<u8>) {
        Shard::unpark_write_buffer(self, out)
    }

    fn render_metrics(&self, out: &mut Vec<u8>) {
        let index = self.index();
        let gauges = Gauges {
            notes: index.len() as u64,
            note_text_bytes: index.text_bytes(),
            recovered_log_bytes: self.shared().recovered_log_bytes,
        };
        metrics::render_prometheus(&self.shared().metrics, &gauges, out);
    }

    fn uptime(&self) -> Duration {
        self.shared().started.elapsed()
    }

    fn shards(&self) -> Vec<ShardStatus> {
        let shared = self.shared();
        shared
            .metrics
            .iter()
            .enumerate()
            .map(|(core, m)| ShardStatus {
                cpu: shared
                    .pinned
                    .then(|| shared.cpus.get(core).copied())
                    .flatten(),
                connections: m.connections_open(),
                sse_subscribers: m.sse_subscribers(),
                inbox_depth: m.inbox_depth(),
                requests: m.requests_total(),
                restarts: m.shard_restarts(),
                // Written by the watchdog only; this rare read is the only
                // other user of the lock (never the request path of notes
                // or pages).
                last_failure: shared.cores[core]
                    .supervision
                    .lock()
                    .ok()
                    .and_then(|s| s.last_failure.clone())
                    .map(|f| (f.reason, f.at)),
            })
            .collect()
    }

    fn post_fault(&self, target: usize, kind: FaultKind, amount: u64) {
        if let Some(slot) = self.shared().cores.get(target) {
            slot.fault.post(kind, amount);
        }
    }
}
