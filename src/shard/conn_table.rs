//! One core's table of open connections and their deadlines.
//!
//! Timeouts are enforced by a sweeper (see `tasks.rs`), not by a timer per
//! read: each connection only writes its current deadline into its slot
//! (two stores, no syscall, no timer-wheel insertion), and the sweeper walks
//! the table a few times per second. A connection past its deadline is
//! marked and its socket is shut down, which wakes the connection's pending
//! read or write with EOF or EPIPE; the connection task then sees the mark
//! and answers 408 (when a request was half-received) or just closes.
//!
//! The table also gives the per-core connection count that the connection
//! limit is checked against.

use std::cell::RefCell;
use std::os::fd::RawFd;

/// Which limit a connection is currently under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A TLS handshake in progress (`tls_handshake_timeout_ms` from the accept).
    Handshake,
    /// Waiting for the first byte of the next request (keep-alive idle).
    Idle,
    /// Receiving a request head.
    Head,
    /// Receiving a request body.
    Body,
    /// Handing a response to a client that does not take it.
    Send,
    /// The server is working on the request: no client deadline.
    Busy,
    /// Streaming events (`GET /events`) and waiting for the next one: no
    /// idle deadline (the stream's heartbeat finds dead clients, and each
    /// write is under the send deadline); not closed as idle on shutdown
    /// (the stream ends itself).
    Stream,
}

#[derive(Debug)]
struct Slot {
    fd: RawFd,
    phase: Phase,
    deadline_ms: u64,
    timed_out: bool,
}

#[derive(Default)]
pub struct ConnTable {
    slots: RefCell<Vec<Option<Slot>>>,
    free: RefCell<Vec<usize>>,
    open: std::cell::Cell<usize>,
}

/// A monotonic millisecond clock, coarse (a vDSO read of the last tick).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl ConnTable {
    pub fn open_count(&self) -> usize {
        self.open.get()
    }

    /// Registers a connection; returns its slot id.
    pub fn insert(&self, fd: RawFd, phase: Phase, deadline_ms: u64) -> usize {
        let slot = Slot {
            fd,
            phase,
            deadline_ms,
            timed_out: false,
        };
        self.open.set(self.open.get() + 1);
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(id) => {
                slots[id] = Some(slot);
                id
            }
            None => {
                slots.push(Some(slot));
                slots.len() - 1
            }
        }
    }

    pub fn remove(&self, id: usize) {
        let mut slots = self.slots.borrow_mut();
        if let Some(s) = slots.get_mut(id) {
            if s.take().is_some() {
                self.open.set(self.open.get() - 1);
                self.free.borrow_mut().push(id);
            }
        }
    }

    /// Moves a connection to a new phase with a new deadline.
    #[inline]
    pub fn set(&self, id: usize, phase: Phase, deadline_ms: u64) {
        if let Some(Some(s)) = self.slots.borrow_mut().get_mut(id) {
            s.phase = phase;
            s.deadline_ms = deadline_ms;
        }
    }

    pub fn timed_out(&self, id: usize) -> bool {
        matches!(self.slots.borrow().get(id), Some(Some(s)) if s.timed_out)
    }

    /// Shuts down every connection's socket both ways, whatever its phase
    /// (a shard stopping after a failure). Returns how many.
    pub fn shut_all(&self) -> u64 {
        let mut shut = 0;
        for slot in self.slots.borrow_mut().iter_mut().flatten() {
            slot.timed_out = true;
            // SAFETY: as in `sweep`: a live connection's fd; no memory touched.
            unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
            shut += 1;
        }
        shut
    }

    /// Shuts down every connection past its deadline (and, when
    /// `close_idle` is set, every idle one). Returns how many were cut.
    pub fn sweep(&self, now_ms: u64, close_idle: bool) -> u64 {
        let mut cut = 0;
        for slot in self.slots.borrow_mut().iter_mut().flatten() {
            if slot.timed_out || matches!(slot.phase, Phase::Busy | Phase::Stream) {
                continue;
            }
            let expired = slot.deadline_ms <= now_ms;
            let idle_close = close_idle && slot.phase == Phase::Idle;
            if !(expired || idle_close) {
                continue;
            }
            slot.timed_out = true;
            // A reader is woken with EOF and can still answer 408; a stuck
            // writer needs the send side shut too, to fail with EPIPE.
            let how = if slot.phase == Phase::Send {
                libc::SHUT_RDWR
            } else {
                libc::SHUT_RD
            };
            // SAFETY: the fd belongs to a live connection registered in this
            // table (removed before its socket is closed); shutdown(2) does
            // not touch memory.
            unsafe { libc::shutdown(slot.fd, how) };
            if expired {
                cut += 1;
            }
        }
        cut
    }
}
