//! The shard as the cluster sees it: the implementation of
//! [`ClusterHost`] (`cluster/mod.rs`) by shard 0 of a cluster node.

use std::cell::Ref;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;

use super::inbox::{CoreMsg, DispatchJob, ReplyTo};
use super::incarnation::RegisteredSocket;
use super::state::Shard;
use crate::cluster::{ClusterHost, SocketRegistration};
use crate::http::request::OwnedRequest;
use crate::http::response::CompleteResponse;
use crate::store::feed::Feed;
use crate::store::index::{Index, NoteRef};
use crate::store::writer::WriteError;

impl ClusterHost for Shard {
    fn index(&self) -> Ref<'_, Index> {
        Shard::index(self)
    }

    fn feed(&self) -> Rc<Feed> {
        Rc::clone(Shard::feed(self))
    }

    fn store_replicated(
        &self,
        notes: Vec<NoteRef>,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + '_>> {
        Box::pin(Shard::store_replicated(self, notes))
    }

    fn register_socket(&self, fd: RawFd) -> Option<SocketRegistration> {
        RegisteredSocket::new(&self.incarnation, fd).map(|r| Box::new(r) as SocketRegistration)
    }

    fn retired(&self) -> bool {
        self.superseded()
    }

    fn loads(&self) -> Vec<u32> {
        self.shared()
            .metrics
            .iter()
            .map(|m| m.dispatch_load().min(u64::from(u32::MAX)) as u32)
            .collect()
    }

    fn record_replication_delay(&self, delay_us: u64) {
        self.metrics().record_replication_delay(delay_us);
    }

    fn watermark_moved(&self, core: usize) {
        self.notify_core(core, CoreMsg::Replicated);
    }

    fn run_for_peer(&self, core: usize, node: u32, id: u64, request: OwnedRequest) {
        let job = DispatchJob {
            reply_to: ReplyTo::Peer { node, id },
            // The requesting node times out on its own (`DISPATCH_TIMEOUT_MS`).
            taken_by: None,
            request,
        };
        self.notify_core(core, CoreMsg::Dispatch(Box::new(job)));
    }

    fn deliver(&self, core: usize, token: u64, reply: CompleteResponse) {
        self.notify_core(core, CoreMsg::DispatchReply { token, reply });
    }
}
