//! uring-floor: what an io_uring HTTP/1.1 server costs per request on this
//! machine when it does nothing but the I/O. One thread, one ring; accepts,
//! receives and sends are all submitted through the ring and go to the
//! kernel together, one `io_uring_enter` per loop pass for every connection.
//! Each request head (up to its blank line) is answered with the same bytes:
//! the file given on the command line, as `application/json`.
//!
//! It is a measuring stick for issue 8, not a server: no routing, no limits
//! beyond a fixed receive buffer, no timeouts. perf/floor runs it beside
//! may-static and uringnotes.
//!
//! Usage: uring-floor ADDR FILE
//!   URING_FLOOR_RECV=multi (default)  one multishot receive per connection,
//!                                     into a ring of provided buffers
//!   URING_FLOOR_RECV=single           a one-shot receive per request
//!                                     (the kernel arms a poll for each)
//!   URING_FLOOR_FLAGS=coop|defer|none ring setup: COOP_TASKRUN (default),
//!                                     COOP_TASKRUN + SINGLE_ISSUER +
//!                                     DEFER_TASKRUN, or none

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const RING_ENTRIES: u32 = 4096;
/// Provided receive buffers (a power of two) and their size.
const BUFFERS: u16 = 4096;
const BUFFER_BYTES: usize = 4096;
const BUFFER_GROUP: u16 = 7;
/// A connection's unparsed bytes may not grow past this (then it is closed).
const PENDING_BYTES_MAX: usize = 64 * 1024;

const ACCEPT: u64 = u64::MAX;
// user_data = slot << 2 | kind
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;

struct Conn {
    fd: RawFd,
    /// Received bytes not yet answered (a request head split across reads).
    pending: Vec<u8>,
    /// Single-shot mode: the buffer the outstanding receive writes into.
    recv_buf: Box<[u8]>,
    /// The responses being sent (the kernel may read them until the send
    /// completes, so they never grow meanwhile) and how much went out.
    out: Vec<u8>,
    out_sent: usize,
    /// Responses made while a send is in flight.
    queued: Vec<u8>,
    sending: bool,
    receiving: bool,
    closed_by_peer: bool,
}

struct Server {
    ring: IoUring,
    multishot: bool,
    response: Vec<u8>,
    conns: Vec<Option<Conn>>,
    free_slots: Vec<usize>,
    /// The provided-buffer ring (multishot mode): entries, then the buffers.
    buf_ring: *mut types::BufRingEntry,
    buffers: Vec<u8>,
    buf_tail: u16,
    backlog: Vec<squeue::Entry>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: uring-floor ADDR FILE");
        std::process::exit(2);
    };
    if let Err(e) = run(&addr, &file) {
        eprintln!("uring-floor: {e}");
        std::process::exit(1);
    }
}

fn run(addr: &str, file: &str) -> io::Result<()> {
    let body = std::fs::read(file)?;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nServer: uring-floor\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);

    let flags = std::env::var("URING_FLOOR_FLAGS").unwrap_or_else(|_| "coop".into());
    let mut builder = IoUring::builder();
    match flags.as_str() {
        "coop" => {
            builder.setup_coop_taskrun();
        }
        "defer" => {
            builder
                .setup_coop_taskrun()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }
        "none" => {}
        other => return Err(io::Error::other(format!("URING_FLOOR_FLAGS={other}?"))),
    }
    let ring = builder.setup_cqsize(RING_ENTRIES * 4).build(RING_ENTRIES)?;
    let multishot = std::env::var("URING_FLOOR_RECV").map_or(true, |v| v != "single");

    let listener = TcpListener::bind(addr)?;
    let mut server = Server {
        ring,
        multishot,
        response,
        conns: Vec::new(),
        free_slots: Vec::new(),
        buf_ring: std::ptr::null_mut(),
        buffers: Vec::new(),
        buf_tail: 0,
        backlog: Vec::new(),
    };
    if multishot {
        server.register_buffers()?;
    }
    server.push(
        opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT),
    );
    println!(
        "uring-floor listening on http://{addr} (receive: {}, ring: {flags})",
        if multishot { "multishot" } else { "single" }
    );
    io::stdout().flush()?;
    server.run()
}

impl Server {
    fn register_buffers(&mut self) -> io::Result<()> {
        let ring_bytes = usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping, page aligned as the kernel
        // requires; it lives as long as the process.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.buf_ring = ring.cast();
        self.buffers = vec![0; usize::from(BUFFERS) * BUFFER_BYTES];
        for bid in 0..BUFFERS {
            self.give_back(bid);
        }
        self.publish_tail();
        // SAFETY: the ring memory stays mapped for the life of the process.
        unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                ring as u64,
                BUFFERS,
                BUFFER_GROUP,
                0,
            )?;
        }
        Ok(())
    }

    /// Puts buffer `bid` back at the ring's tail (visible after `publish_tail`).
    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.buf_tail & (BUFFERS - 1));
        // SAFETY: index < BUFFERS, inside the mapping.
        let entry = unsafe { &mut *self.buf_ring.add(index) };
        entry.set_addr(self.buffers[usize::from(bid) * BUFFER_BYTES..].as_ptr() as u64);
        entry.set_len(BUFFER_BYTES as u32);
        entry.set_bid(bid);
        self.buf_tail = self.buf_tail.wrapping_add(1);
    }

    fn publish_tail(&self) {
        // SAFETY: the tail field of the first entry, written with release
        // order so the kernel sees the entries before the new tail.
        unsafe {
            let tail =
                types::BufRingEntry::tail(self.buf_ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.buf_tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        self.backlog.push(entry);
    }

    fn run(&mut self) -> io::Result<()> {
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            {
                let mut sq = self.ring.submission();
                let mut pushed = 0;
                for entry in &self.backlog {
                    // SAFETY: every buffer an entry points to lives in a
                    // connection (or the buffer ring) until its completion.
                    if unsafe { sq.push(entry) }.is_err() {
                        break;
                    }
                    pushed += 1;
                }
                drop(sq);
                self.backlog.drain(..pushed);
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let mut returned_buffers = false;
            for &(user_data, result, flags) in &completions {
                if user_data == ACCEPT {
                    self.on_accept(result, flags);
                    continue;
                }
                let slot = (user_data >> 2) as usize;
                match user_data & 3 {
                    KIND_RECV => returned_buffers |= self.on_recv(slot, result, flags),
                    KIND_SEND => self.on_send(slot, result),
                    _ => unreachable!("user_data kinds are ours"),
                }
            }
            if returned_buffers {
                self.publish_tail();
            }
        }
    }

    fn on_accept(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            eprintln!("uring-floor: multishot accept ended ({result}); stopping");
            std::process::exit(1);
        }
        if result < 0 {
            return;
        }
        let fd = result;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a c_int option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        let conn = Conn {
            fd,
            pending: Vec::new(),
            recv_buf: if self.multishot {
                Box::new([])
            } else {
                vec![0; BUFFER_BYTES].into_boxed_slice()
            },
            out: Vec::new(),
            out_sent: 0,
            queued: Vec::new(),
            sending: false,
            receiving: false,
            closed_by_peer: false,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.conns[slot] = Some(conn);
                slot
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.arm_recv(slot);
    }

    fn arm_recv(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.receiving = true;
        let user_data = (slot as u64) << 2 | KIND_RECV;
        let entry = if self.multishot {
            opcode::RecvMulti::new(types::Fd(conn.fd), BUFFER_GROUP).build()
        } else {
            opcode::Recv::new(
                types::Fd(conn.fd),
                conn.recv_buf.as_mut_ptr(),
                conn.recv_buf.len() as u32,
            )
            .build()
        };
        self.push(entry.user_data(user_data));
    }

    /// Returns whether a provided buffer went back to the ring.
    fn on_recv(&mut self, slot: usize, result: i32, flags: u32) -> bool {
        let bid = cqueue::buffer_select(flags);
        let still_armed = self.multishot && cqueue::more(flags);
        let Some(conn) = self.conns[slot].as_mut() else {
            if let Some(bid) = bid {
                self.give_back(bid);
                return true;
            }
            return false;
        };
        conn.receiving = still_armed;
        if result <= 0 {
            if result == -libc::ENOBUFS {
                // Out of provided buffers: re-arm; answers going out free some.
                self.arm_recv(slot);
                return false;
            }
            conn.closed_by_peer = true;
            self.close_if_idle(slot);
            return false;
        }
        let n = result as usize;
        match bid {
            Some(bid) => {
                let start = usize::from(bid) * BUFFER_BYTES;
                conn.pending
                    .extend_from_slice(&self.buffers[start..start + n]);
            }
            None => conn.pending.extend_from_slice(&conn.recv_buf[..n]),
        }
        // Answer every complete request head.
        let mut answered = 0;
        let mut consumed = 0;
        while let Some(end) = find_head_end(&conn.pending[consumed..]) {
            consumed += end;
            answered += 1;
        }
        conn.pending.drain(..consumed);
        if conn.pending.len() > PENDING_BYTES_MAX {
            conn.closed_by_peer = true;
        }
        let target = if conn.sending {
            &mut conn.queued
        } else {
            &mut conn.out
        };
        for _ in 0..answered {
            target.extend_from_slice(&self.response);
        }
        let start_send = answered > 0 && !conn.sending;
        let rearm = !still_armed && !conn.closed_by_peer;
        if let Some(bid) = bid {
            self.give_back(bid);
        }
        if start_send {
            self.send_more(slot);
        }
        if rearm {
            self.arm_recv(slot);
        }
        bid.is_some()
    }

    fn send_more(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let rest = &conn.out[conn.out_sent..];
        conn.sending = true;
        let entry = opcode::Send::new(types::Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data((slot as u64) << 2 | KIND_SEND);
        self.push(entry);
    }

    fn on_send(&mut self, slot: usize, result: i32) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.sending = false;
        if result < 0 {
            conn.closed_by_peer = true;
            self.close_if_idle(slot);
            return;
        }
        conn.out_sent += result as usize;
        if conn.out_sent == conn.out.len() {
            conn.out.clear();
            conn.out_sent = 0;
            if conn.queued.is_empty() {
                self.close_if_idle(slot);
            } else {
                std::mem::swap(&mut conn.out, &mut conn.queued);
                self.send_more(slot);
            }
        } else {
            self.send_more(slot);
        }
    }

    fn close_if_idle(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_ref() else {
            return;
        };
        if conn.closed_by_peer && !conn.sending && !conn.receiving {
            // SAFETY: closing the connection's own descriptor once.
            unsafe { libc::close(conn.fd) };
            self.conns[slot] = None;
            self.free_slots.push(slot);
        } else if conn.closed_by_peer && conn.receiving && self.multishot {
            // A multishot receive still armed on a connection we give up on:
            // shutting the socket down ends it with a final completion.
            // SAFETY: shutdown on our own descriptor.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
        }
    }
}

/// The length up to and including the first blank line (`\r\n\r\n`).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}
