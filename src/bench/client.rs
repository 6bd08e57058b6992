//! One benchmark connection: the loop that sends requests and reads answers.
//!
//! Each connection is a task on its load thread's event loop
//! (`reactor.rs`, [`Conn::run`]). It keeps its
//! socket open (keep-alive) and reconnects only when the server closed it or
//! a request failed. Per request it costs one `send` (a whole pipelined batch
//! is one `send` too), usually one `recv`, two clock reads and one histogram
//! increment: the load generator shares the machine with the server, and
//! every microsecond it spends is one the server does not get.
//!
//! Timing (see `schedule.rs`): in closed-loop mode the next request (or
//! batch) goes out as soon as the last answer is in; in constant-rate mode
//! each request waits for its due time, and is charged from that time.
//!
//! Failure handling: an error fails every request in flight on the
//! connection (they can no longer be answered), drops the socket, and the
//! next request opens a new one. A refused connect waits
//! [`CONNECT_RETRY_MS`] before the next attempt so a dead server is not
//! hammered. When the run ends, requests still in flight are abandoned
//! (counted as such, not as errors).
//!
//! With `--connection-per-request` each request carries `Connection:
//! close` and the connection is dropped once it is answered, so the next
//! one connects (and, for `https`, handshakes) again; the request's latency
//! includes the connect. Every handshake inside the measurement is counted
//! (full or resumed) with its duration (`stats.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mix::Rng;
use super::reactor::{sleep_until, Reactor};
use super::schedule::{Mode, RateSchedule, Window};
use super::stats::{ErrorKind, Stats};
use super::wire::{ConnectError, Wire};
use super::Plan;
use crate::http::client::{Next, ResponseReader};

/// Pause after a failed connect before the next attempt.
pub const CONNECT_RETRY_MS: u64 = 10;

/// What all connections of one load thread share: the plan, the event
/// loop, the run's window and the thread's statistics (single-threaded: a
/// `RefCell`, never held across an await).
pub struct ThreadCtx {
    pub plan: Arc<Plan>,
    pub reactor: Rc<Reactor>,
    pub window: Window,
    pub stats: RefCell<Stats>,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    entry: usize,
    is_head: bool,
    /// When it was due (rate mode) or sent (closed loop).
    due: Instant,
    sent: Instant,
}

/// How reading the answers to the requests in flight ended.
enum ReadOutcome {
    /// Every request in flight was answered; the connection stays open.
    Done,
    /// The connection is gone (closed by the server or failed).
    Dropped,
    /// The run ended with requests in flight.
    RunOver,
}

/// One connection's state.
pub struct Conn {
    ctx: Rc<ThreadCtx>,
    /// This connection's index among all connections of the run.
    index: u32,
    stream: Option<Wire>,
    reader: ResponseReader,
    /// Requests about to be sent (reused, so no allocation per request).
    wbuf: Vec<u8>,
    inflight: VecDeque<InFlight>,
    rng: Rng,
    /// Requests this connection has generated (makes POST bodies unique).
    seq: u64,
}

impl Conn {
    pub fn new(ctx: Rc<ThreadCtx>, index: u32, stream: Option<Wire>, seed: u64) -> Conn {
        let pipeline = ctx.plan.pipeline;
        Conn {
            ctx,
            index,
            stream,
            reader: ResponseReader::new(),
            wbuf: Vec::with_capacity(512 * pipeline),
            inflight: VecDeque::with_capacity(pipeline),
            rng: Rng::new(seed ^ u64::from(index)),
            seq: 0,
        }
    }

    /// Runs until the window ends.
    pub async fn run(mut self) {
        match self.ctx.plan.mode {
            Mode::Closed => self.run_closed().await,
            Mode::Rate { requests_per_s } => self.run_rate(requests_per_s).await,
        }
        let left = self.inflight.len() as u64;
        self.ctx.stats.borrow_mut().abandoned += left;
        if let Some(stream) = self.stream.take() {
            stream.shutdown();
        }
    }

    async fn run_closed(&mut self) {
        let window = self.ctx.window;
        let pipeline = self.ctx.plan.pipeline;
        loop {
            let now = Instant::now();
            if now >= window.end {
                return;
            }
            self.wbuf.clear();
            for _ in 0..pipeline {
                self.queue_request(now, now);
            }
            if !self.exchange().await {
                return;
            }
        }
    }

    async fn run_rate(&mut self, requests_per_s: u64) {
        let window = self.ctx.window;
        let plan = Arc::clone(&self.ctx.plan);
        let mut schedule = RateSchedule::new(
            window.start,
            requests_per_s,
            plan.connections,
            self.index as usize,
        );
        loop {
            let due = schedule.due();
            if due >= window.end {
                return;
            }
            let now = Instant::now();
            if due > now {
                sleep_until(&self.ctx.reactor, due).await;
            }
            schedule.advance();
            self.wbuf.clear();
            let sent = Instant::now();
            self.queue_request(due, sent);
            if !self.exchange().await {
                return;
            }
        }
    }

    /// Sends what the write buffer holds (connecting first if needed) and
    /// reads the answers. `false` once the run is over; a failed connect or
    /// send has been counted and the caller just goes on with its loop.
    async fn exchange(&mut self) -> bool {
        if self.stream.is_none() && !self.connect().await {
            return true;
        }
        if !self.send().await {
            return true;
        }
        match self.read_answers().await {
            ReadOutcome::RunOver => false,
            ReadOutcome::Done if self.ctx.plan.connection_per_request => {
                // Answered: this connection is done (the server closes it
                // too, having read `Connection: close`).
                if let Some(stream) = self.stream.take() {
                    stream.shutdown();
                }
                self.reader.reset();
                true
            }
            ReadOutcome::Done | ReadOutcome::Dropped => true,
        }
    }

    /// Picks the next request, renders it into the write buffer and
    /// remembers it as in flight.
    fn queue_request(&mut self, due: Instant, sent: Instant) {
        let mix = &self.ctx.plan.mix;
        let entry = mix.pick(&mut self.rng);
        self.seq += 1;
        mix.write_request(&mut self.wbuf, entry, self.index, self.seq);
        self.inflight.push_back(InFlight {
            entry,
            is_head: mix.entries[entry].is_head,
            due,
            sent,
        });
    }

    /// Opens the connection; on failure fails the queued requests and waits
    /// a little before the caller tries again.
    async fn connect(&mut self) -> bool {
        let started = Instant::now();
        match connect(&self.ctx.reactor, &self.ctx.plan).await {
            Ok((stream, handshake)) => {
                if let Some(h) = handshake {
                    self.ctx.stats.borrow_mut().handshake(
                        &self.ctx.window,
                        started,
                        h.took,
                        h.resumed,
                    );
                }
                self.stream = Some(stream);
                self.reader.reset();
                true
            }
            Err(e) => {
                let kind = match &e {
                    ConnectError::Handshake(why) => {
                        self.ctx.stats.borrow_mut().handshake_failed(
                            &self.ctx.window,
                            started,
                            why,
                        );
                        ErrorKind::Tls
                    }
                    ConnectError::Tcp(_) => ErrorKind::Connect,
                };
                self.fail_inflight(kind, Instant::now());
                let retry = Instant::now() + Duration::from_millis(CONNECT_RETRY_MS);
                sleep_until(&self.ctx.reactor, retry).await;
                false
            }
        }
    }

    /// Sends the write buffer; on failure the connection is dropped.
    async fn send(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let at = self.inflight.back().map_or_else(Instant::now, |r| r.sent);
        let deadline = (at + self.ctx.plan.timeout).min(self.ctx.window.end);
        match stream.write_all(&self.wbuf, deadline).await {
            Ok(()) => {
                self.ctx
                    .stats
                    .borrow_mut()
                    .bytes(&self.ctx.window, at, 0, self.wbuf.len());
                true
            }
            Err(_) => {
                self.drop_connection(ErrorKind::Reset, Instant::now());
                false
            }
        }
    }

    /// Reads until every request in flight is answered, the connection
    /// fails, a request times out, or the run ends.
    async fn read_answers(&mut self) -> ReadOutcome {
        let window = self.ctx.window;
        let timeout = self.ctx.plan.timeout;
        // The time of the last event: when the newest bytes arrived.
        let mut now = self.inflight.back().map_or_else(Instant::now, |r| r.sent);
        while let Some(&front) = self.inflight.front() {
            match self.reader.next(front.is_head) {
                Ok(Next::Response { status, close }) => {
                    self.inflight.pop_front();
                    self.ctx.stats.borrow_mut().response(
                        &window,
                        front.entry,
                        status,
                        front.due,
                        front.sent,
                        now,
                    );
                    if close {
                        self.drop_connection(ErrorKind::Reset, now);
                        return ReadOutcome::Dropped;
                    }
                    continue;
                }
                Ok(Next::NeedMore) => {}
                Err(_) => {
                    self.drop_connection(ErrorKind::Protocol, now);
                    return ReadOutcome::Dropped;
                }
            }
            let deadline = (front.sent + timeout).min(window.end);
            if now >= deadline {
                if deadline == window.end {
                    return ReadOutcome::RunOver;
                }
                self.drop_connection(ErrorKind::Timeout, now);
                return ReadOutcome::Dropped;
            }
            let Some(stream) = self.stream.as_mut() else {
                return ReadOutcome::Dropped;
            };
            let result = stream.read(self.reader.space(), deadline).await;
            now = Instant::now();
            match result {
                Ok(0) => {
                    if self.reader.ends_at_close() {
                        if let Some(Next::Response { status, .. }) = self.reader.finish_at_close() {
                            self.inflight.pop_front();
                            self.ctx.stats.borrow_mut().response(
                                &window,
                                front.entry,
                                status,
                                front.due,
                                front.sent,
                                now,
                            );
                        }
                    }
                    self.drop_connection(ErrorKind::Reset, now);
                    return ReadOutcome::Dropped;
                }
                Ok(n) => {
                    self.reader.filled(n);
                    self.ctx.stats.borrow_mut().bytes(&window, now, n, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => {
                    self.drop_connection(ErrorKind::Reset, now);
                    return ReadOutcome::Dropped;
                }
            }
        }
        ReadOutcome::Done
    }

    /// Closes the socket; every request still in flight fails with `kind`.
    fn drop_connection(&mut self, kind: ErrorKind, at: Instant) {
        self.stream = None;
        self.reader.reset();
        self.fail_inflight(kind, at);
    }

    fn fail_inflight(&mut self, kind: ErrorKind, at: Instant) {
        let mut stats = self.ctx.stats.borrow_mut();
        for r in self.inflight.drain(..) {
            stats.error(&self.ctx.window, r.entry, kind, r.due, at);
        }
    }
}

/// Opens one connection to the plan's target, with its TLS handshake for
/// `https` (bounded by `--timeout`).
pub async fn connect(
    reactor: &Rc<Reactor>,
    plan: &Plan,
) -> Result<(Wire, Option<super::wire::Handshake>), ConnectError> {
    let tls = plan.tls.as_ref().map(|t| (&t.config, &t.server_name));
    Wire::connect(
        reactor,
        plan.target.addr,
        tls,
        Instant::now() + plan.timeout,
    )
    .await
}
