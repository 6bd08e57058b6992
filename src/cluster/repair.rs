//! Repair of notes below the high-water marks.
//!
//! A vector is a high-water mark per stream, so it cannot say that a note
//! *below* it is missing (a damaged record skipped by recovery, a write
//! whose fsync failed: its number was used, nothing was stored). Right
//! after its first vector on each connection a node sends `Holes`: per
//! origin the ranges below its mark that its index lacks (`Index::holes`,
//! the lowest [`HOLE_RANGES_PER_ORIGIN_MAX`] per origin), and for its own
//! streams everything above its mark (the pump never sends a node its own
//! notes back, so a lost tail of its own stream can only come back this
//! way). The peer queues the ranges on the connection (bounded) and its
//! pump answers them first, as ordinary `Notes` frames under the same
//! outbox bound; the receiver applies them like any others. Ranges nobody
//! has cost one empty lookup per connect.

use std::rc::Rc;

use super::frame::FrameKind;
use super::peer::{self, PeerConn, PeerError};
use super::replication::NOTES_FRAME_BYTES_TARGET;
use super::wire::{self, Holes, SeqRange};
use super::Cluster;
use crate::store::index::Index;
use crate::store::note::Origin;

/// Most hole ranges asked for per origin stream on one connect (the lowest
/// first; the rest are asked for on a later connect once these are filled).
pub const HOLE_RANGES_PER_ORIGIN_MAX: usize = 1024;

impl Cluster {
    /// Tells a newly connected peer which notes below our high-water marks
    /// we lack, and asks for our own streams above them (see the module doc).
    pub(super) fn send_holes(&self, conn: &Rc<PeerConn>) {
        let index = self.host.index();
        let mut ranges: Vec<SeqRange> = Vec::new();
        for (origin, _) in index.vector() {
            let room = wire::HOLE_RANGES_PER_FRAME_MAX.saturating_sub(ranges.len());
            let holes = index.holes(origin, room.min(HOLE_RANGES_PER_ORIGIN_MAX));
            ranges.extend(holes.into_iter().map(|(first, last)| SeqRange {
                origin,
                first,
                last,
            }));
        }
        let below_marks = ranges.len();
        let missing_notes: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
        for core in 0..self.me.cores {
            if ranges.len() >= wire::HOLE_RANGES_PER_FRAME_MAX {
                break;
            }
            let origin = Origin {
                node: self.me.node,
                core,
            };
            ranges.push(SeqRange {
                origin,
                first: index.seq_max(origin) + 1,
                last: u64::MAX,
            });
        }
        if below_marks > 0 {
            tracing::info!(
                peer = %conn.peer.name,
                ranges = below_marks,
                missing_notes,
                "asking a peer for notes missing below the high-water marks"
            );
        }
        conn.send(FrameKind::Holes, &Holes { ranges }.encode());
    }

    /// A peer's `Holes`: queue the ranges; the pump answers them.
    pub(super) fn on_holes(&self, conn: &Rc<PeerConn>, payload: &[u8]) -> Result<(), PeerError> {
        let holes = Holes::decode(payload)?;
        let mut repairs = conn.repairs.borrow_mut();
        let room = peer::REPAIR_RANGES_QUEUED_MAX.saturating_sub(repairs.len());
        if holes.ranges.len() > room {
            tracing::warn!(peer = %conn.peer.name, asked = holes.ranges.len(), room, "too many hole ranges queued; dropping the rest");
        }
        repairs.extend(holes.ranges.into_iter().take(room));
        conn.wake();
        Ok(())
    }

    /// Answers queued `Holes` ranges with the notes we have in them, in
    /// `Notes` frames, until the outbox reaches its high-water mark.
    pub(super) fn serve_repairs(&self, conn: &Rc<PeerConn>, index: &Index) {
        let mut repairs = conn.repairs.borrow_mut();
        let mut batch: Vec<&[u8]> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut notes_sent = 0usize;
        while let Some(range) = repairs.front_mut() {
            if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                break;
            }
            let mut done = true;
            for note_ref in index.stream_after(range.origin, range.first - 1) {
                let seq = note_ref.note().id().seq;
                if seq > range.last {
                    break;
                }
                batch.push(note_ref.payload());
                batch_bytes += note_ref.payload().len() + 4;
                notes_sent += 1;
                if batch_bytes >= NOTES_FRAME_BYTES_TARGET
                    || batch.len() >= wire::NOTES_PER_FRAME_MAX
                {
                    conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
                    batch.clear();
                    batch_bytes = 0;
                    if seq >= range.last {
                        break;
                    }
                    range.first = seq + 1;
                    if conn.outbox_bytes() >= peer::OUTBOX_HIGH_WATER_BYTES {
                        done = false;
                        break;
                    }
                }
            }
            if !done {
                break;
            }
            repairs.pop_front();
        }
        if !batch.is_empty() {
            conn.send(FrameKind::Notes, &peer::notes_payload(&batch));
        }
        if notes_sent > 0 {
            tracing::info!(peer = %conn.peer.name, notes = notes_sent, "sent a peer notes it lacked below its high-water marks");
        }
    }
}
