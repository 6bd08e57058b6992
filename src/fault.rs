//! Fault injection, for tests and demos of the watchdog: the kinds of fault
//! and the cell a fault is posted through. Off unless the server runs with
//! `--fault-injection`; then `POST /_admin/fault?shard=N&kind=K`
//! (`api/admin.rs`) posts a fault into core N's [`FaultCell`], and the
//! sweeper of whichever executor currently serves core N takes it at its
//! next tick (within `SWEEP_INTERVAL_MS`) and makes it happen *there*, on
//! that core's own thread, whatever core received the request
//! (`shard/tasks.rs`, `apply_shard_fault`).
//!
//! Each kind exercises one failure path (see `watchdog.rs`):
//! - `panic`: a panic in shard machinery (the sweeper task). Caught at the
//!   task boundary; the shard shuts down in order and is restarted.
//! - `unwind`: a panic in a task nobody catches. It escapes into glommio's
//!   run loop and unwinds the executor thread; the watchdog sees the thread
//!   end, closes the sockets glommio leaked, and restarts the shard.
//! - `stall`: the shard's thread blocks (a `sleep` on the executor thread)
//!   for `ms` milliseconds, so its heartbeat stops; the watchdog replaces it
//!   after `--stall-timeout`, and requests other cores had dispatched to
//!   it are answered 502 then. When the old thread wakes up it finds itself
//!   replaced and stops.
//! - `slow`: every response of that shard is delayed by
//!   [`SLOW_RESPONSE_DELAY_MS`] for `ms` milliseconds. Slow is not failed:
//!   the heartbeat keeps going and nothing is restarted.
//! - `handler-panic`: the next request that shard handles panics inside
//!   its handler; only that connection is closed. That includes a request
//!   dispatched to the shard from another core (`--dispatch`): the
//!   connection that sent it is closed, on whichever core it lives.
//! - `fsync-error`: the shard's log writer (`store/writer.rs`) fails its
//!   next `count` `fdatasync` calls as if the kernel had returned `EIO`,
//!   after the data was written: the writes of those batches must be
//!   answered 503 and never acknowledged, and the writer must move to a new
//!   segment (the disk may have dropped the dirty pages: "fsyncgate").

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// How long a `stall` or `slow` fault lasts when the request gives no `ms`:
/// long enough for the watchdog to act on a stall with the default
/// `--stall-timeout` (1 s), short enough that the stalled thread wakes up
/// and exits while a test still runs.
pub const FAULT_DURATION_MS_DEFAULT: u64 = 5_000;
/// Upper bound on `ms`: a fault must end by itself.
pub const FAULT_DURATION_MS_MAX: u64 = 60_000;
/// Delay added to each response while a `slow` fault lasts.
pub const SLOW_RESPONSE_DELAY_MS: u64 = 250;
/// fdatasync calls an `fsync-error` fault fails when the request gives no `count`.
pub const FSYNC_FAILURES_DEFAULT: u64 = 1;
/// Upper bound on `count`: a fault must end by itself.
pub const FSYNC_FAILURES_MAX: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultKind {
    Panic = 1,
    Unwind = 2,
    Stall = 3,
    Slow = 4,
    HandlerPanic = 5,
    FsyncError = 6,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Panic,
        FaultKind::Unwind,
        FaultKind::Stall,
        FaultKind::Slow,
        FaultKind::HandlerPanic,
        FaultKind::FsyncError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::Unwind => "unwind",
            FaultKind::Stall => "stall",
            FaultKind::Slow => "slow",
            FaultKind::HandlerPanic => "handler-panic",
            FaultKind::FsyncError => "fsync-error",
        }
    }

    /// True for the kinds whose amount is a count (`count=`), not a
    /// duration (`ms=`).
    pub fn is_counted(self) -> bool {
        self == FaultKind::FsyncError
    }

    pub fn parse(s: &[u8]) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.label().as_bytes() == s)
    }

    fn from_u8(v: u8) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// One core's pending fault: posted by any core, taken by the core's own
/// sweeper. A newer post replaces one not yet taken.
#[derive(Default)]
pub struct FaultCell {
    /// 0 when nothing is pending, else a `FaultKind`.
    kind: AtomicU8,
    /// A duration in ms, or a count for counted kinds (`FaultKind::is_counted`).
    amount: AtomicU64,
}

impl FaultCell {
    /// Posts a fault; `amount` is its duration in ms, or its count for a
    /// counted kind, clamped to the kind's maximum.
    pub fn post(&self, kind: FaultKind, amount: u64) {
        let max = if kind.is_counted() {
            FSYNC_FAILURES_MAX
        } else {
            FAULT_DURATION_MS_MAX
        };
        self.amount.store(amount.min(max), Ordering::Relaxed);
        // Release: the amount is visible to whoever takes the kind.
        self.kind.store(kind as u8, Ordering::Release);
    }

    /// Takes the pending fault, if any: (kind, duration in ms or count).
    #[inline]
    pub fn take(&self) -> Option<(FaultKind, u64)> {
        if self.kind.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let kind = FaultKind::from_u8(self.kind.swap(0, Ordering::Acquire))?;
        Some((kind, self.amount.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_labels() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::parse(kind.label().as_bytes()), Some(kind));
        }
        assert_eq!(FaultKind::parse(b"explode"), None);
    }

    #[test]
    fn a_posted_fault_is_taken_once() {
        let cell = FaultCell::default();
        assert_eq!(cell.take(), None);
        cell.post(FaultKind::Stall, 1234);
        assert_eq!(cell.take(), Some((FaultKind::Stall, 1234)));
        assert_eq!(cell.take(), None);
        cell.post(FaultKind::Slow, 10 * FAULT_DURATION_MS_MAX);
        assert_eq!(cell.take(), Some((FaultKind::Slow, FAULT_DURATION_MS_MAX)));
        cell.post(FaultKind::FsyncError, 3);
        assert_eq!(cell.take(), Some((FaultKind::FsyncError, 3)));
        cell.post(FaultKind::FsyncError, u64::MAX);
        assert_eq!(
            cell.take(),
            Some((FaultKind::FsyncError, FSYNC_FAILURES_MAX))
        );
    }
}
