//! The load generator's event loop: one per load thread, on epoll.
//!
//! Why not glommio, like the server: measured on this project's VMs
//! (perf/RESULTS.md), a stock glommio (io_uring, no `COOP_TASKRUN`) client
//! makes every response cost the *server* an extra inter-processor
//! interrupt: io_uring kicks the waiting thread to run its completion work,
//! and the kick is paid by whoever sent the bytes. nginx needed 11.7 µs of
//! CPU per request under a glommio client and 6.1 µs under wrk, and the
//! client itself needed twice wrk's CPU. A load generator must not make the
//! server look slower, so this one waits like wrk does: edge-triggered
//! epoll, where data arriving for a busy thread costs the sender nothing.
//!
//! What it provides, all single-threaded (`Rc`, `RefCell`):
//! - [`run`]: runs a set of tasks (futures) to completion; when none is
//!   runnable it blocks in `epoll_pwait2` until a socket is ready or the
//!   next timer is due (nanosecond timeout, so constant-rate pacing is not
//!   rounded to milliseconds);
//! - [`Socket`]: a non-blocking TCP connection registered once (edge
//!   triggered) with async `connect`, `write_all` and `read` with a deadline;
//! - [`sleep_until`]: a timer.
//!
//! Invariants: a task waits on a socket only after the syscall returned
//! `EAGAIN`, so with edge triggering no readiness is ever missed; every
//! waker stored in a slot or the timer table belongs to a task that is
//! blocked on it, and is dropped when the socket or timer is.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use socket2::{Domain, Protocol, SockAddr, Socket as RawSocket, Type};

/// Most events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 1024;
/// Cancelled timer entries tolerated in the heap beyond twice the live ones.
const TIMER_HEAP_SLACK: usize = 4096;

/// A task: a future owned by the loop.
pub type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Wakers waiting on one registered socket.
#[derive(Default)]
struct Slot {
    read: Option<Waker>,
    write: Option<Waker>,
}

#[derive(Default)]
struct Timers {
    /// Due time and id, earliest first. Entries of cancelled timers stay
    /// until they come up and are skipped (their id is no longer in `wakers`).
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: FxHashMap<u64, Waker>,
    next_id: u64,
}

/// One thread's epoll instance, registered sockets and timers.
pub struct Reactor {
    epoll: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free_slots: RefCell<Vec<usize>>,
    timers: RefCell<Timers>,
    /// `epoll_pwait2` is missing (kernel before 5.11): fall back to
    /// millisecond timeouts, rounded up.
    no_pwait2: Cell<bool>,
}

impl Reactor {
    pub fn new() -> io::Result<Rc<Reactor>> {
        // SAFETY: epoll_create1 returns a new descriptor we then own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rc::new(Reactor {
            // SAFETY: `fd` is a valid descriptor owned by nobody else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::default(),
            free_slots: RefCell::default(),
            timers: RefCell::default(),
            no_pwait2: Cell::new(false),
        }))
    }

    fn register(&self, fd: RawFd) -> io::Result<usize> {
        let slot = match self.free_slots.borrow_mut().pop() {
            Some(s) => s,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::default());
                slots.len() - 1
            }
        };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: slot as u64,
        };
        // SAFETY: epoll_ctl reads the event we pass; both fds are open.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc != 0 {
            self.free_slots.borrow_mut().push(slot);
            return Err(io::Error::last_os_error());
        }
        Ok(slot)
    }

    fn deregister(&self, fd: RawFd, slot: usize) {
        // SAFETY: as in `register`; a failure only means the fd is gone.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
        self.slots.borrow_mut()[slot] = Slot::default();
        self.free_slots.borrow_mut().push(slot);
    }

    fn wait_readable(&self, slot: usize, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        let w = &mut slots[slot].read;
        if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
            *w = Some(waker.clone());
        }
    }

    fn wait_writable(&self, slot: usize, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        let w = &mut slots[slot].write;
        if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
            *w = Some(waker.clone());
        }
    }

    fn add_timer(&self, due: Instant, waker: Waker) -> u64 {
        let mut t = self.timers.borrow_mut();
        t.next_id += 1;
        let id = t.next_id;
        t.heap.push(Reverse((due, id)));
        t.wakers.insert(id, waker);
        id
    }

    fn update_timer(&self, id: u64, waker: &Waker) {
        if let Some(w) = self.timers.borrow_mut().wakers.get_mut(&id) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
    }

    fn cancel_timer(&self, id: u64) {
        let mut t = self.timers.borrow_mut();
        t.wakers.remove(&id);
        // Most read deadlines are cancelled long before they are due: drop
        // their heap entries in bulk once they outnumber the live ones, so
        // the heap stays proportional to the timers actually pending.
        if t.heap.len() > TIMER_HEAP_SLACK + 2 * t.wakers.len() {
            let Timers { heap, wakers, .. } = &mut *t;
            heap.retain(|Reverse((_, id))| wakers.contains_key(id));
        }
    }

    /// Wakes the tasks of due timers; returns the next due time.
    fn fire_timers(&self, now: Instant) -> Option<Instant> {
        let mut t = self.timers.borrow_mut();
        while let Some(&Reverse((due, id))) = t.heap.peek() {
            if !t.wakers.contains_key(&id) {
                t.heap.pop();
                continue;
            }
            if due > now {
                return Some(due);
            }
            t.heap.pop();
            if let Some(w) = t.wakers.remove(&id) {
                w.wake();
            }
        }
        None
    }

    /// Waits for socket events for at most `timeout` (`None`: no limit) and
    /// wakes the tasks waiting on them.
    fn poll(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        let n = loop {
            let n = self.epoll_wait(&mut events, timeout);
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOSYS) if !self.no_pwait2.get() => self.no_pwait2.set(true),
                _ => return Err(err),
            }
        };
        let mut slots = self.slots.borrow_mut();
        for e in &events[..n] {
            let Some(slot) = slots.get_mut(e.u64 as usize) else {
                continue;
            };
            let bits = e.events as i32;
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                if let Some(w) = slot.read.take() {
                    w.wake();
                }
            }
            if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                if let Some(w) = slot.write.take() {
                    w.wake();
                }
            }
        }
        Ok(())
    }

    fn epoll_wait(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> i64 {
        let fd = self.epoll.as_raw_fd();
        let max = events.len() as i32;
        if !self.no_pwait2.get() {
            let ts = timeout.map(|d| libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: epoll_pwait2(epfd, events, maxevents, timeout, sigmask,
            // sigsetsize): the buffers outlive the call; no signal mask.
            return unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    fd,
                    events.as_mut_ptr(),
                    max,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
        }
        let ms = timeout.map_or(-1, |d| {
            d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        // SAFETY: the events buffer outlives the call.
        unsafe { libc::epoll_wait(fd, events.as_mut_ptr(), max, ms) as i64 }
    }
}

/// The queue of task ids that were woken. Wakers must be `Send + Sync`, so
/// this is a mutex, but it is only ever used from its own thread
/// (uncontended: a few nanoseconds).
#[derive(Default)]
struct ReadyQueue {
    ids: Mutex<Vec<usize>>,
}

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            if let Ok(mut ids) = self.queue.ids.lock() {
                ids.push(self.id);
            }
        }
    }
}

/// Runs `tasks` on this thread until every one has completed.
pub fn run(reactor: &Reactor, tasks: Vec<Task>) -> io::Result<()> {
    let queue = Arc::new(ReadyQueue::default());
    let mut live = tasks.len();
    let mut slots: Vec<Option<(Task, Arc<TaskWaker>)>> = tasks
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            let w = Arc::new(TaskWaker {
                id,
                queued: AtomicBool::new(false),
                queue: Arc::clone(&queue),
            });
            w.wake_by_ref();
            Some((t, w))
        })
        .collect();
    let mut ready: Vec<usize> = Vec::with_capacity(slots.len());
    while live > 0 {
        if let Ok(mut ids) = queue.ids.lock() {
            std::mem::swap(&mut *ids, &mut ready);
        }
        for id in ready.drain(..) {
            let Some((task, waker_arc)) = slots[id].as_mut() else {
                continue;
            };
            waker_arc.queued.store(false, Ordering::Release);
            let waker = Waker::from(Arc::clone(waker_arc));
            let mut cx = Context::from_waker(&waker);
            if task.as_mut().poll(&mut cx).is_ready() {
                slots[id] = None;
                live -= 1;
            }
        }
        if live == 0 {
            break;
        }
        let now = Instant::now();
        let next_timer = reactor.fire_timers(now);
        let runnable = queue.ids.lock().map(|ids| !ids.is_empty()).unwrap_or(false);
        let timeout = if runnable {
            Some(Duration::ZERO)
        } else {
            next_timer.map(|due| due.saturating_duration_since(now))
        };
        reactor.poll(timeout)?;
        reactor.fire_timers(Instant::now());
    }
    Ok(())
}

/// Waits until `due`.
pub async fn sleep_until(reactor: &Reactor, due: Instant) {
    let mut timer: Option<u64> = None;
    poll_fn(|cx| {
        if Instant::now() >= due {
            return Poll::Ready(());
        }
        match timer {
            Some(id) => reactor.update_timer(id, cx.waker()),
            None => timer = Some(reactor.add_timer(due, cx.waker().clone())),
        }
        Poll::Pending
    })
    .await;
    if let Some(id) = timer {
        reactor.cancel_timer(id);
    }
}

/// A non-blocking TCP connection registered with a [`Reactor`].
pub struct Socket {
    stream: TcpStream,
    slot: usize,
    reactor: Rc<Reactor>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.reactor.deregister(self.stream.as_raw_fd(), self.slot);
    }
}

impl Socket {
    /// Connects to `addr` (TCP_NODELAY), failing with `TimedOut` at `deadline`.
    pub async fn connect(
        reactor: &Rc<Reactor>,
        addr: SocketAddr,
        deadline: Instant,
    ) -> io::Result<Socket> {
        let raw = RawSocket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        raw.set_nonblocking(true)?;
        raw.set_nodelay(true)?;
        let pending = match raw.connect(&SockAddr::from(addr)) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
            Err(e) => return Err(e),
        };
        let stream: TcpStream = raw.into();
        let slot = reactor.register(stream.as_raw_fd())?;
        let socket = Socket {
            stream,
            slot,
            reactor: Rc::clone(reactor),
        };
        if pending {
            socket.wait(deadline, true).await?;
            if let Some(e) = socket.stream.take_error()? {
                return Err(e);
            }
        }
        Ok(socket)
    }

    /// Waits until the socket is writable (`write`) or readable, or `deadline`.
    async fn wait(&self, deadline: Instant, write: bool) -> io::Result<()> {
        let mut woken = false;
        let mut timer: Option<u64> = None;
        let result = poll_fn(|cx| {
            if woken {
                // Woken by the socket or the timer: the caller retries its
                // syscall, which tells which.
                return Poll::Ready(Ok(()));
            }
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)));
            }
            woken = true;
            if write {
                self.reactor.wait_writable(self.slot, cx.waker());
            } else {
                self.reactor.wait_readable(self.slot, cx.waker());
            }
            timer = Some(self.reactor.add_timer(deadline, cx.waker().clone()));
            Poll::Pending
        })
        .await;
        if let Some(id) = timer {
            self.reactor.cancel_timer(id);
        }
        result
    }

    /// Sends all of `buf`, waiting for room in the socket buffer as needed.
    pub async fn write_all(&self, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
        while !buf.is_empty() {
            match (&self.stream).write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(deadline, true).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there (at least one byte; 0 at end of stream), waiting
    /// if nothing is; `TimedOut` if nothing came by `deadline`.
    pub async fn read(&self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            match (&self.stream).read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(deadline, false).await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes both directions (the descriptor is closed on drop).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn timers_fire_in_order_and_on_time() {
        let reactor = Reactor::new().unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        let tasks: Vec<Task> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let (reactor, order) = (Rc::clone(&reactor), Rc::clone(&order));
                Box::pin(async move {
                    sleep_until(&reactor, start + Duration::from_millis(ms)).await;
                    order.borrow_mut().push((ms, start.elapsed()));
                }) as Task
            })
            .collect();
        run(&reactor, tasks).unwrap();
        let order = order.borrow();
        assert_eq!(
            order.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        for (ms, at) in order.iter() {
            assert!(
                *at >= Duration::from_millis(*ms),
                "{ms} ms timer fired at {at:?}"
            );
        }
    }

    #[test]
    fn a_socket_connects_writes_reads_and_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            c.write_all(b"world").unwrap();
            // Then silence until the client gives up.
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
        });
        let reactor = Reactor::new().unwrap();
        let result = Rc::new(RefCell::new(None));
        let task: Task = {
            let (reactor, result) = (Rc::clone(&reactor), Rc::clone(&result));
            Box::pin(async move {
                let far = Instant::now() + Duration::from_secs(10);
                let s = Socket::connect(&reactor, addr, far).await.unwrap();
                s.write_all(b"hello", far).await.unwrap();
                let mut buf = [0u8; 16];
                let n = s.read(&mut buf, far).await.unwrap();
                let soon = Instant::now() + Duration::from_millis(50);
                let timed_out = s.read(&mut buf, soon).await;
                *result.borrow_mut() = Some((buf[..n].to_vec(), timed_out.map_err(|e| e.kind())));
            })
        };
        run(&reactor, vec![task]).unwrap();
        let (got, timed_out) = result.borrow_mut().take().unwrap();
        assert_eq!(got, b"world");
        assert_eq!(timed_out, Err(io::ErrorKind::TimedOut));
        server.join().unwrap();
    }

    #[test]
    fn connecting_to_a_closed_port_fails() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let reactor = Reactor::new().unwrap();
        let failed = Rc::new(Cell::new(false));
        let task: Task = {
            let (reactor, failed) = (Rc::clone(&reactor), Rc::clone(&failed));
            Box::pin(async move {
                let far = Instant::now() + Duration::from_secs(5);
                failed.set(Socket::connect(&reactor, port, far).await.is_err());
            })
        };
        run(&reactor, vec![task]).unwrap();
        assert!(failed.get());
    }
}
