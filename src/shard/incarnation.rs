//! One incarnation of a shard: one executor serving one core, from its
//! start until it stops, crashes or is replaced, and everything it shares
//! with the watchdog that started it (`watchdog.rs`).
//!
//! A core is served by a sequence of incarnations (generation 0 at start-up,
//! then one more per restart). An incarnation shares with its supervisor:
//! - a heartbeat, bumped by its sweeper; a heartbeat that stops moving
//!   means the executor thread is stuck;
//! - the lease on the core's note stream ([`StreamLease`]), which the
//!   watchdog fences before starting a successor;
//! - a registry of its sockets ([`SocketRegistry`]): the HTTP listener,
//!   the connections, and on core 0 of a cluster node the cluster's sockets
//!   (peer listener, membership socket, peer connections), so that the
//!   watchdog can shut them down when the thread cannot (it is stuck), and
//!   close them when nobody else ever will (the thread unwound and glommio
//!   leaked its tasks);
//! - the channel on which it reports that it is ready or that it crashed.
//!
//! Everything here is written by at most one thread at a time and read
//! with atomics; the only request-path cost is registering a connection's
//! descriptor (one store) and releasing it (one uncontended compare-exchange).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

use crate::store::lease::StreamLease;

/// A shard's supervision history, for `/_status`.
#[derive(Debug, Default, Clone)]
pub struct Supervision {
    pub restarts: u64,
    pub last_failure: Option<Failure>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    pub at: SystemTime,
}

/// What the watchdog hears (its one input channel): incarnations report
/// on it, and the main thread asks it to stop.
pub enum Event {
    /// From a shard or its join thread.
    Shard {
        incarnation: Arc<Incarnation>,
        report: Report,
    },
    /// From the main thread: stop restarting, shut every shard down.
    Stop,
}

/// How a shard's executor ended, as its main future reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Asked to shut down (SIGTERM/SIGINT); in-flight requests were finished.
    Stopped,
    /// Shard machinery panicked; the panic was caught and the shard shut
    /// itself down in order.
    Crashed(String),
    /// The watchdog replaced this incarnation (it had stalled) and it
    /// noticed when it woke up.
    Superseded,
}

/// What an incarnation tells its supervisor.
#[derive(Debug)]
pub enum Report {
    /// Serving: its listener is accepting.
    Ready,
    /// A panic was caught in shard machinery; the shard is shutting down.
    /// Sent as soon as the panic is caught, so the successor can start
    /// while the old executor is still tearing down.
    Crashed(String),
    /// The executor thread has ended: `Ok` with how its main future ended,
    /// or `Err` when the thread unwound (a panic escaped to the executor)
    /// or the executor could not start.
    Exited(Result<ExitReason, String>),
}

pub struct Incarnation {
    pub core: usize,
    /// The CPU this executor is pinned to.
    pub cpu: usize,
    /// 0 for the executor started with the process, then +1 per restart.
    pub generation: u64,
    /// Bumped by the shard's sweeper every `SWEEP_INTERVAL_MS`.
    heartbeat: AtomicU64,
    /// The right to number and append this core's notes.
    pub lease: Arc<StreamLease>,
    pub sockets: SocketRegistry,
    reports: mpsc::Sender<Event>,
}

impl Incarnation {
    pub fn new(
        core: usize,
        cpu: usize,
        generation: u64,
        lease: Arc<StreamLease>,
        sockets_max: usize,
        reports: mpsc::Sender<Event>,
    ) -> Incarnation {
        Incarnation {
            core,
            cpu,
            generation,
            heartbeat: AtomicU64::new(0),
            lease,
            sockets: SocketRegistry::new(sockets_max),
            reports,
        }
    }

    /// Called only by this incarnation's sweeper (the single writer).
    pub fn beat(&self) {
        let n = self.heartbeat.load(Ordering::Relaxed);
        self.heartbeat.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    pub fn heartbeat(&self) -> u64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    /// True once the watchdog has replaced this incarnation.
    #[inline]
    pub fn superseded(&self) -> bool {
        self.lease.is_fenced()
    }

    /// Tells the supervisor something. A supervisor that is gone (the
    /// process is exiting) has nobody to tell: ignored.
    pub fn report(self: &Arc<Self>, report: Report) {
        let _ = self.reports.send(Event::Shard {
            incarnation: Arc::clone(self),
            report,
        });
    }
}

/// A registry slot holding no descriptor.
const EMPTY: RawFd = -1;
/// A registry slot whose descriptor the watchdog is shutting down right now:
/// its owner must not close it until the slot holds the descriptor again.
const CLAIMED: RawFd = -2;
/// Registry slot of the listening socket; connections follow.
const LISTENER_SLOT: usize = 0;

/// The open sockets of one incarnation, by slot: the listener, then one
/// slot per connection (its `ConnTable` slot + 1).
///
/// The owner stores a descriptor when it opens it and takes it out *before*
/// closing it. The watchdog claims a slot (compare-exchange to `CLAIMED`)
/// before it touches the descriptor in it, so the descriptor cannot be
/// closed, and its number reused by some other socket, while the watchdog
/// calls `shutdown(2)` on it.
pub struct SocketRegistry {
    slots: Box<[AtomicI32]>,
    /// Where the slots of other sockets ([`SocketRegistry::register_other`])
    /// begin: after the listener's and the connections'.
    others_from: usize,
}

/// Slots for sockets other than the HTTP listener and connections: the
/// cluster's peer listener, membership socket and peer connections.
pub const OTHER_SOCKETS_MAX: usize = 256;

impl SocketRegistry {
    fn new(connections_max: usize) -> SocketRegistry {
        SocketRegistry {
            slots: (0..connections_max + 1 + OTHER_SOCKETS_MAX)
                .map(|_| AtomicI32::new(EMPTY))
                .collect(),
            others_from: connections_max + 1,
        }
    }

    pub fn register_listener(&self, fd: RawFd) {
        self.register(LISTENER_SLOT, fd);
    }

    /// Call before the listener is closed.
    pub fn release_listener(&self, fd: RawFd) {
        self.release(LISTENER_SLOT, fd);
    }

    /// Records connection `conn_slot`'s descriptor. A connection beyond the
    /// registry's size (the connection limit is checked against a count
    /// that lags accepts a little) is not recorded: it cannot be shut down
    /// from outside, and is closed by its shard as usual.
    #[inline]
    pub fn register_connection(&self, conn_slot: usize, fd: RawFd) {
        if conn_slot + 1 < self.others_from {
            self.register(conn_slot + 1, fd);
        }
    }

    /// Call before the connection's descriptor is closed.
    #[inline]
    pub fn release_connection(&self, conn_slot: usize, fd: RawFd) {
        if conn_slot + 1 < self.others_from {
            self.release(conn_slot + 1, fd);
        }
    }

    /// Records a socket that is neither the listener nor an HTTP connection
    /// in a free slot, and returns the slot (None when all
    /// [`OTHER_SOCKETS_MAX`] are taken: the socket is then closed by its
    /// owner as usual, but not by the watchdog after a failure). Only the
    /// incarnation's own thread registers, so a free slot stays free
    /// between the load and the store.
    pub fn register_other(&self, fd: RawFd) -> Option<usize> {
        debug_assert!(fd >= 0);
        let slot = (self.others_from..self.slots.len())
            .find(|&slot| self.slots[slot].load(Ordering::Acquire) == EMPTY)?;
        self.register(slot, fd);
        Some(slot)
    }

    /// Call before the socket's descriptor is closed.
    pub fn release_other(&self, slot: usize, fd: RawFd) {
        debug_assert!(slot >= self.others_from);
        self.release(slot, fd);
    }

    fn register(&self, slot: usize, fd: RawFd) {
        debug_assert!(fd >= 0);
        self.slots[slot].store(fd, Ordering::Release);
    }

    fn release(&self, slot: usize, fd: RawFd) {
        loop {
            match self.slots[slot].compare_exchange(fd, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                // The watchdog is inside shutdown(2) on it: a syscall, so
                // this wait is short and happens only around a restart.
                Err(CLAIMED) => std::thread::yield_now(),
                Err(_) => return,
            }
        }
    }

    /// Shuts down every registered socket (the listener for reading: it
    /// leaves the SO_REUSEPORT group and its pending accepts fail;
    /// connections both ways: their clients see the connection end), for an
    /// incarnation whose thread is alive but must stop serving. Returns how
    /// many connections were shut down.
    pub fn shut_down_all(&self) -> usize {
        let others_from = self.others_from;
        self.for_each_claimed(|slot, fd| {
            let how = if slot == LISTENER_SLOT {
                libc::SHUT_RD
            } else {
                libc::SHUT_RDWR
            };
            if slot >= others_from {
                retire_datagram_socket(fd);
            }
            // SAFETY: the slot is claimed, so its owner cannot close `fd`
            // until we put it back; shutdown(2) touches no memory.
            unsafe { libc::shutdown(fd, how) };
            fd
        })
    }

    /// Shuts down and closes every socket still registered, for an
    /// incarnation whose thread has ended: glommio does not drop every task
    /// of an executor that unwound (nor tasks still pending when one
    /// returns), so these sockets would otherwise stay open, unserved,
    /// forever. Returns how many connections were closed.
    ///
    /// Only call after the thread was joined. Every owner releases its slot
    /// before it closes its descriptor, in its `Drop` (`conn::Registered`,
    /// `shard::RegisteredListener`), so a descriptor still registered then
    /// belongs to an object that was never dropped and never will be: this
    /// is its only close.
    pub fn close_leaked(&self) -> usize {
        self.for_each_claimed(|_, fd| {
            // SAFETY: the thread that owned `fd` has ended and the object
            // owning it will never be dropped (see above), so this is the
            // only close of `fd`.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
                libc::close(fd);
            }
            EMPTY
        })
    }

    /// Claims each registered slot, runs `f` on its descriptor and stores
    /// what `f` returns. Returns how many connection slots were visited.
    fn for_each_claimed(&self, mut f: impl FnMut(usize, RawFd) -> RawFd) -> usize {
        let mut connections = 0;
        for (slot, cell) in self.slots.iter().enumerate() {
            let fd = cell.load(Ordering::Acquire);
            if fd < 0 {
                continue;
            }
            if cell
                .compare_exchange(fd, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Released meanwhile: its owner closes it.
                continue;
            }
            let back = f(slot, fd);
            cell.store(back, Ordering::Release);
            if slot != LISTENER_SLOT && slot < self.others_from {
                connections += 1;
            }
        }
        connections
    }
}

/// If `fd` is a UDP socket (the cluster's membership socket), connects it
/// to its own address. A UDP socket in a SO_REUSEPORT group keeps receiving
/// its share of the group's datagrams after `shutdown(2)`, so a stalled
/// incarnation's socket would swallow part of the membership traffic meant
/// for its successor; once a member of the group is connected, the kernel
/// delivers each datagram to the socket whose address matches best, and a
/// socket connected to itself matches nothing from anyone else.
fn retire_datagram_socket(fd: RawFd) {
    // SAFETY: the caller holds the registry slot, so `fd` stays open (and
    // stays this socket) for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    if socket.r#type().ok() != Some(socket2::Type::DGRAM) {
        return;
    }
    if let Ok(own) = socket.local_addr() {
        if let Err(e) = socket.connect(&own) {
            tracing::warn!(error = %e, "cannot retire a replaced shard's datagram socket");
        }
    }
}

/// A socket recorded in its incarnation's registry with
/// [`SocketRegistry::register_other`]; dropping it releases the slot. Keep
/// it next to the socket it guards and drop it first (declare it before the
/// socket in a struct), so the descriptor is released before it is closed.
pub struct RegisteredSocket {
    incarnation: Arc<Incarnation>,
    slot: usize,
    fd: RawFd,
}

impl RegisteredSocket {
    /// Registers `fd` with `incarnation`'s registry; None when it is full.
    pub fn new(incarnation: &Arc<Incarnation>, fd: RawFd) -> Option<RegisteredSocket> {
        let slot = incarnation.sockets.register_other(fd)?;
        Some(RegisteredSocket {
            incarnation: Arc::clone(incarnation),
            slot,
            fd,
        })
    }
}

impl Drop for RegisteredSocket {
    fn drop(&mut self) {
        self.incarnation.sockets.release_other(self.slot, self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn shut_down_all_ends_registered_connections_and_keeps_them_owned() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let registry = SocketRegistry::new(4);
        registry.register_connection(0, server_side.as_raw_fd());
        assert_eq!(registry.shut_down_all(), 1);
        // The client sees the end of the stream.
        let mut buf = [0u8; 1];
        use std::io::Read;
        assert_eq!((&client).read(&mut buf).unwrap(), 0);
        // The owner still owns and releases it, then closes it itself.
        registry.release_connection(0, server_side.as_raw_fd());
        drop(server_side);
        assert_eq!(registry.shut_down_all(), 0);
    }

    #[test]
    fn close_leaked_closes_what_was_never_released() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let registry = SocketRegistry::new(4);
        // A leaked object: nobody will ever drop it.
        let fd = server_side.into_raw_fd();
        registry.register_connection(2, fd);
        assert_eq!(registry.close_leaked(), 1);
        let mut buf = [0u8; 1];
        use std::io::Read;
        assert_eq!((&client).read(&mut buf).unwrap(), 0);
        assert_eq!(
            registry.close_leaked(),
            0,
            "a closed descriptor is forgotten"
        );
    }

    #[test]
    fn connections_beyond_the_registry_are_not_recorded() {
        let registry = SocketRegistry::new(1);
        registry.register_connection(5, 1000);
        assert_eq!(registry.shut_down_all(), 0);
    }

    #[test]
    fn other_sockets_are_ended_with_the_incarnation_and_a_datagram_socket_stops_receiving() {
        let registry = SocketRegistry::new(2);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp_slot = registry.register_other(udp.as_raw_fd()).unwrap();
        let listener_slot = registry.register_other(listener.as_raw_fd()).unwrap();
        assert_ne!(udp_slot, listener_slot);
        // Shut down, not connections: the count is of HTTP connections.
        assert_eq!(registry.shut_down_all(), 0);
        // The datagram socket is now connected to itself: it takes nothing
        // from anyone else (in a SO_REUSEPORT group, its successor does).
        assert_eq!(udp.peer_addr().unwrap(), udp.local_addr().unwrap());
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"probe", udp.local_addr().unwrap()).unwrap();
        udp.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        // (Shut down, a receive ends at once with 0 bytes: never the probe.)
        assert!(!matches!(udp.recv(&mut [0u8; 8]), Ok(n) if n > 0));
        // A released slot is free again; the owner closes its socket.
        registry.release_other(listener_slot, listener.as_raw_fd());
        assert_eq!(
            registry.register_other(listener.as_raw_fd()),
            Some(listener_slot)
        );
        registry.release_other(listener_slot, listener.as_raw_fd());
        // After the thread ended, what is still registered is closed.
        let udp_fd = udp.into_raw_fd();
        registry.close_leaked();
        // SAFETY: fcntl on a descriptor number only reads the fd table.
        assert_eq!(unsafe { libc::fcntl(udp_fd, libc::F_GETFD) }, -1, "closed");
    }
}
