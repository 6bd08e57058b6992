//! Replication: how a note gets from core 0's index to every peer, and how
//! a peer's acknowledgement releases the writes waiting for it.
//!
//! Pull-based and per origin stream: each connection keeps, per origin, the
//! highest sequence the peer holds (its last vector) and the highest
//! already queued; whenever core 0's index grows (the cluster follows core
//! 0's feed, `follow_index`), every connection's pump queues the missing
//! notes in order, bounded by the outbox high-water mark. A peer
//! acknowledges by sending its vector after making received notes durable,
//! so the same mechanism is anti-entropy on (re)connect, live replication
//! and acknowledgement. Notes of a third origin are relayed only when the
//! peer has not reported them after [`RELAY_DELAY_MS`] (in a healthy full
//! mesh each origin delivers its own notes first).
//!
//! The watermarks: per local stream, the lowest sequence every connected
//! peer acknowledged (`ClusterShared::replicated`); a write with `--ack all`
//! is answered once its sequence is at or below it.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::frame::FrameKind;
use super::peer::{self, PeerConn, PeerError};
use super::wire::{self, Vector};
use super::Cluster;
use crate::store::index::NoteRef;
use crate::store::note::Origin;

/// A foreign origin's notes are relayed to a peer only if the peer has not
/// reported them this long after their creation.
pub const RELAY_DELAY_MS: u64 = 1_000;
/// Bytes of notes per `Notes` frame.
pub const NOTES_FRAME_BYTES_TARGET: usize = 256 * 1024;

impl Cluster {
    /// Wakes every connection's pump whenever core 0's index grows: the
    /// cluster follows core 0's feed as its one follower (the way a live
    /// subscriber follows it), instead of the shard calling the cluster.
    pub(super) async fn follow_index(self: Rc<Self>) {
        let feed = self.host.feed();
        let mut seen = feed.seq_next();
        while !self.retired() {
            poll_fn(|cx| feed.poll_grew(seen, cx.waker())).await;
            seen = feed.seq_next();
            for c in self.conns.borrow().values() {
                c.wake();
            }
        }
    }

    /// Applies a batch of notes from a peer: durable here, then indexed on
    /// every core. Returns an error only for malformed input.
    pub(super) async fn apply_notes(
        &self,
        conn: &Rc<PeerConn>,
        payload: &[u8],
    ) -> Result<(), PeerError> {
        let payloads = wire::decode_notes(payload)?;
        let mut fresh: Vec<NoteRef> = Vec::new();
        {
            let index = self.host.index();
            for p in payloads {
                let note_ref = NoteRef::from_payload(p.to_vec())
                    .map_err(|e| PeerError::Local(format!("peer sent an invalid note: {e}")))?;
                let id = note_ref.note().id();
                if !index.contains(&id) && !fresh.iter().any(|f| f.note().id() == id) {
                    fresh.push(note_ref);
                }
            }
        }
        if !fresh.is_empty() {
            let created: Vec<u64> = fresh.iter().map(|r| r.note().created_at_us()).collect();
            if let Err(e) = self.host.store_replicated(fresh).await {
                // Not acknowledged: the peer resends after reconnecting.
                return Err(PeerError::Local(format!(
                    "cannot store replicated notes: {e}"
                )));
            }
            let now_us = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            for created in created {
                self.host
                    .record_replication_delay(now_us.saturating_sub(created));
            }
        }
        // The acknowledgement: what we now hold, durably.
        conn.send(FrameKind::Vector, &self.our_vector().encode());
        Ok(())
    }

    pub(super) fn on_vector(&self, conn: &Rc<PeerConn>, payload: &[u8]) -> Result<(), PeerError> {
        let v = Vector::decode(payload)?;
        {
            let mut vector = conn.vector.borrow_mut();
            for (origin, seq) in v.entries {
                let e = vector.entry(origin).or_insert(0);
                *e = (*e).max(seq);
            }
        }
        *conn.loads.borrow_mut() = v.loads;
        conn.synced.set(true);
        self.update_watermarks();
        Ok(())
    }

    /// The replication watermark of each local stream: the minimum over
    /// connected peers of what they acknowledged.
    pub fn update_watermarks(&self) {
        if self.retired() {
            // The successor's cluster owns the watermarks now.
            return;
        }
        let conns = self.conns.borrow();
        for (core, slot) in self.shared.replicated.iter().enumerate() {
            let origin = Origin {
                node: self.me.node,
                core: core as u16,
            };
            let wm = conns
                .values()
                .filter(|c| !c.is_closed())
                .map(|c| c.vector.borrow().get(&origin).copied().unwrap_or(0))
                .min()
                .unwrap_or(u64::MAX);
            let old = slot.swap(wm, Ordering::AcqRel);
            if wm > old || (old == u64::MAX) != (wm == u64::MAX) {
                self.host.watermark_moved(core);
            }
        }
    }

    pub(super) fn our_vector(&self) -> Vector {
        Vector {
            entries: self.host.index().vector(),
            loads: self.host.loads(),
        }
    }

    /// Fills a connection's outbox: first what the peer asked for below its
    /// marks (`repair.rs`), then, once the peer told us what it has, every
    /// origin stream's notes it lacks, in sequence order, until the outbox
    /// reaches its high-water mark.
    pub(super) fn pump_notes(&self, conn: &Rc<PeerConn>) {
        if conn.is_closed() {
            return;
        }
        let index = self.host.index();
        // What the peer told us it lacks below its marks, first.
        if !conn.repairs.borrow().is_empty() {
            self.serve_repairs(conn, &index);
        }
        // Nothing else is sent before the peer told us what it has.
        if !conn.synced.get() {
            return;
        }
        let now_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let relay_cutoff_us = now_us.saturating_sub(RELAY_DELAY_MS * 1000);
        let connected: Vec<u32> = self.conns.borrow().keys().copied().collect();
        for (origin, ours) in index.vector() {
            if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                return;
            }
            let peer_has = conn.vector.borrow().get(&origin).copied().unwrap_or(0);
            let sent = conn.sent.borrow().get(&origin).copied().unwrap_or(0);
            let from = peer_has.max(sent);
            if ours <= from || origin.node == conn.peer.node {
                continue;
            }
            // Another node's notes: its own connection delivers them first.
            let delay_relay = origin.node != self.me.node && connected.contains(&origin.node);
            let mut batch: Vec<&[u8]> = Vec::new();
            let mut batch_bytes = 0usize;
            let mut last = from;
            for note_ref in index.stream_after(origin, from) {
                let note = note_ref.note();
                if delay_relay && note.created_at_us() > relay_cutoff_us {
                    break;
                }
                batch.push(note_ref.payload());
                batch_bytes += note_ref.payload().len() + 4;
                last = note.id().seq;
                if batch_bytes >= NOTES_FRAME_BYTES_TARGET
                    || batch.len() >= wire::NOTES_PER_FRAME_MAX
                {
                    conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
                    batch.clear();
                    batch_bytes = 0;
                    if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
            }
            if last > sent {
                conn.sent.borrow_mut().insert(origin, last);
            }
        }
    }
}
