//! The per-core log writer, with group commit.
//!
//! One [`LogWriter`] per core appends that core's records to that core's
//! segments. Appends join the *open batch*; a single flusher task writes the
//! whole batch with one write and one `fdatasync`, then reports the outcome
//! to every append in it. Appends that arrive while a flush runs form the
//! next batch, so one fsync covers every write that arrived during the
//! previous one (group commit) and the fsync rate adapts to load.
//!
//! Invariants:
//! - an append returns `Ok` only after its bytes were written and (with
//!   `FsyncPolicy::Always`) fdatasync'd; any error reaches every append of
//!   the batch, never swallowed;
//! - the file never holds a partial batch after a failed write: the writer
//!   truncates back to the last good length, and after an fsync failure
//!   (when the kernel may have dropped dirty pages) it moves to a new segment;
//! - nothing is written once the core's [`StreamLease`] is fenced (the
//!   watchdog replaced this shard): a batch found fenced fails as a whole,
//!   and segment numbers come from the core's shared [`SegmentNumbers`], so
//!   a replaced writer that wakes up can never touch its successor's file;
//! - every append gets an outcome, even when the writer stops or its
//!   flusher task dies: [`LogWriter::abandon`] and the flusher's batch guard
//!   fail what can no longer be written.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Poll, Waker};

use glommio::io::{BufferedFile, Directory, OpenOptions};

use super::durability::{self, SyncStep};
use super::lease::{SegmentNumbers, StreamLease};
use super::record;
use super::segment;
use super::FsyncPolicy;

/// Upper bound on bytes in one batch; appends beyond it wait for the next one.
/// Bounds the memory of a batch and the latency added to its first writer.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A batch write (a copy into the page cache) taking this long is logged.
const SLOW_WRITE_WARN_MS: u128 = 50;

/// Largest batch buffer kept for reuse after its batch was written.
const SPARE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Largest list of appends' wakers kept for reuse.
const SPARE_WAITERS_MAX: usize = 4096;

/// Segment names tried (each a fresh number) before a roll gives up when
/// names are taken already.
const SEGMENT_CREATE_ATTEMPTS_MAX: u32 = 16;

/// What one core's writer has done, for `/metrics`. Written only by that
/// core's writer (single-writer stores, no locked instruction), read by
/// any core rendering the metrics.
#[derive(Debug, Default)]
pub struct LogCounters {
    /// fdatasync calls (one per group-commit batch).
    pub fsyncs: AtomicU64,
    /// Records made durable.
    pub records_durable: AtomicU64,
    /// Bytes written to the log since start-up.
    pub log_bytes: AtomicU64,
    /// pwrite(2) calls: one per batch, so records per write is the batch size.
    pub log_writes: AtomicU64,
    /// Batches that failed (their appends were answered with an error).
    pub write_errors: AtomicU64,
}

impl LogCounters {
    fn bump(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Why an append was not made durable. Cheap to clone: every append of a
/// failed batch gets a copy.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    #[error("the disk is full")]
    NoSpace,
    #[error("storage error: {0}")]
    Io(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// This core's shard was replaced after a failure (its lease is fenced).
    #[error("this core is restarting after a failure")]
    Restarting,
}

impl WriteError {
    fn from_glommio(action: &str, e: glommio::GlommioError<()>) -> WriteError {
        WriteError::from_io(action, e.into())
    }

    fn from_io(action: &str, io: std::io::Error) -> WriteError {
        if io.raw_os_error() == Some(libc::ENOSPC) || io.raw_os_error() == Some(libc::EDQUOT) {
            WriteError::NoSpace
        } else {
            WriteError::Io(format!("{action}: {io}"))
        }
    }
}

/// Where the appends of one batch learn its outcome: one allocation per
/// batch, shared (by reference count) by every append in it.
#[derive(Default)]
struct BatchOutcome {
    outcome: RefCell<Option<Result<(), WriteError>>>,
}

/// The appends of the batch being written: the shared outcome and the
/// wakers of the appends waiting for it. If the flusher's future is dropped
/// mid-write (its task panicked or was cancelled), they are failed instead
/// of waiting forever.
struct InFlight {
    outcome: Rc<BatchOutcome>,
    waiters: Vec<Waker>,
}

impl InFlight {
    /// Reports `outcome` to every append of the batch; returns the emptied
    /// waker list for reuse.
    fn complete(mut self, outcome: Result<(), WriteError>) -> Vec<Waker> {
        self.finish(outcome);
        std::mem::take(&mut self.waiters)
    }

    fn finish(&mut self, outcome: Result<(), WriteError>) {
        if self.outcome.outcome.borrow().is_some() {
            return;
        }
        self.outcome.outcome.replace(Some(outcome));
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish(Err(WriteError::Io("the log writer stopped".into())));
    }
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    outcome: Rc<BatchOutcome>,
    waiters: Vec<Waker>,
    records: u64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn in_flight(self) -> (Vec<u8>, InFlight) {
        let in_flight = InFlight {
            outcome: self.outcome,
            waiters: self.waiters,
        };
        (self.bytes, in_flight)
    }
}

struct OpenSegment {
    file: Rc<BufferedFile>,
    number: u32,
    /// Bytes known good in the file (header and whole records).
    len: u64,
}

pub struct LogWriter {
    data_dir: PathBuf,
    core: u16,
    /// Fenced when the watchdog replaces this shard: then nothing more is written.
    lease: Arc<StreamLease>,
    fsync: FsyncPolicy,
    segment_bytes_max: u64,
    /// This core's log counters (`/metrics`); this writer is their only writer.
    counters: Arc<LogCounters>,
    open: RefCell<Batch>,
    segment: RefCell<Option<OpenSegment>>,
    /// This core's segment numbers, shared with every incarnation of this writer.
    segment_numbers: Arc<SegmentNumbers>,
    flusher: Cell<Option<Waker>>,
    /// The buffers of the last batch written, emptied, for the next one.
    spare_bytes: RefCell<Vec<u8>>,
    spare_waiters: RefCell<Vec<Waker>>,
    /// Set while a batch is being written; `Batch::bytes` is then the next batch.
    flushing: Cell<bool>,
    stopped: Cell<bool>,
    /// Woken when the open batch gets room again after reaching BATCH_BYTES_MAX.
    room_waiters: RefCell<Vec<Waker>>,
    idle_waiters: RefCell<Vec<Waker>>,
    /// fdatasync calls still to fail with `EIO` (the `fsync-error` fault of
    /// `--fault-injection`, `fault.rs`); 0 in normal operation.
    fsync_failures_injected: Cell<u64>,
}

impl LogWriter {
    pub fn new(
        data_dir: PathBuf,
        core: u16,
        segment_numbers: Arc<SegmentNumbers>,
        lease: Arc<StreamLease>,
        fsync: FsyncPolicy,
        segment_bytes_max: u64,
        counters: Arc<LogCounters>,
    ) -> Rc<LogWriter> {
        Rc::new(LogWriter {
            data_dir,
            core,
            lease,
            fsync,
            segment_bytes_max,
            counters,
            open: RefCell::default(),
            segment: RefCell::new(None),
            segment_numbers,
            flusher: Cell::new(None),
            spare_bytes: RefCell::default(),
            spare_waiters: RefCell::default(),
            flushing: Cell::new(false),
            stopped: Cell::new(false),
            room_waiters: RefCell::default(),
            idle_waiters: RefCell::default(),
            fsync_failures_injected: Cell::new(0),
        })
    }

    /// Appends one record and waits until it is durable (or failed).
    pub async fn append(&self, payload: &[u8]) -> Result<(), WriteError> {
        self.append_all(std::slice::from_ref(&payload)).await
    }

    /// Appends several records to the same batch (one fsync covers them
    /// all) and waits until they are durable (or failed, all together).
    pub async fn append_all<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<(), WriteError> {
        if payloads.is_empty() {
            return Ok(());
        }
        self.append_with(payloads.len() as u64, |bytes| {
            for payload in payloads {
                record::encode_into(bytes, payload.as_ref());
            }
        })
        .await
    }

    /// Appends one record already framed by [`record::encode_into`] (the
    /// caller keeps the same bytes in memory: no second encoding).
    pub async fn append_framed(&self, framed: &[u8]) -> Result<(), WriteError> {
        debug_assert!(
            matches!(record::decode(framed), record::Decoded::Record { total_bytes } if total_bytes == framed.len())
        );
        self.append_with(1, |bytes| bytes.extend_from_slice(framed))
            .await
    }

    async fn append_with(
        &self,
        records: u64,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), WriteError> {
        poll_fn(|cx| {
            if self.stopped.get() {
                return Poll::Ready(Err(WriteError::ShuttingDown));
            }
            if self.open.borrow().bytes.len() < BATCH_BYTES_MAX {
                return Poll::Ready(Ok(()));
            }
            self.room_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        // Joins the open batch on the first poll, registering the waker
        // there: the batch wakes each of its appends once, when its outcome
        // is known (a task's waker stays the same while it waits).
        let mut write = Some(write);
        let mut joined: Option<Rc<BatchOutcome>> = None;
        poll_fn(|cx| {
            if let Some(outcome) = &joined {
                return match outcome.outcome.borrow().as_ref() {
                    Some(result) => Poll::Ready(result.clone()),
                    None => Poll::Pending,
                };
            }
            let mut batch = self.open.borrow_mut();
            if let Some(write) = write.take() {
                write(&mut batch.bytes);
            }
            batch.records += records;
            batch.waiters.push(cx.waker().clone());
            joined = Some(Rc::clone(&batch.outcome));
            drop(batch);
            if let Some(w) = self.flusher.take() {
                w.wake();
            }
            Poll::Pending
        })
        .await
    }

    /// Makes the next `count` fdatasync calls of this writer fail with
    /// `EIO` after their data was written (fault injection only).
    pub fn inject_fsync_failures(&self, count: u64) {
        self.fsync_failures_injected.set(count);
    }

    /// `fdatasync`, or an injected `EIO` in its place.
    async fn fdatasync(&self, file: &BufferedFile) -> Result<(), std::io::Error> {
        let injected = self.fsync_failures_injected.get();
        if injected > 0 {
            self.fsync_failures_injected.set(injected - 1);
            tracing::warn!(core = self.core, "injected fault: fdatasync fails with EIO");
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        file.fdatasync().await.map_err(Into::into)
    }

    /// Waits until nothing is pending or being written.
    pub async fn flushed(&self) {
        poll_fn(|cx| {
            if !self.flushing.get() && self.open.borrow().is_empty() {
                Poll::Ready(())
            } else {
                self.idle_waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Refuses further appends (those already queued are still written,
    /// then the flusher ends).
    pub fn stop(&self) {
        self.stopped.set(true);
        for w in self.room_waiters.borrow_mut().drain(..) {
            w.wake();
        }
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    /// Stops and fails every append not yet being written with `error`
    /// (a shard stopping after a failure does not wait for them).
    pub fn abandon(&self, error: WriteError) {
        self.stop();
        let batch = std::mem::take(&mut *self.open.borrow_mut());
        let (_, in_flight) = batch.in_flight();
        let _ = in_flight.complete(Err(error));
        self.wake_idle_waiters();
    }

    fn wake_idle_waiters(&self) {
        if !self.flushing.get() && self.open.borrow().is_empty() {
            for w in self.idle_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// The flusher: one batch at a time until the writer is stopped and
    /// nothing is left to write.
    pub async fn run_flusher(self: Rc<Self>) {
        loop {
            let proceed = poll_fn(|cx| {
                if !self.open.borrow().is_empty() {
                    Poll::Ready(true)
                } else if self.stopped.get() {
                    Poll::Ready(false)
                } else {
                    self.flusher.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            })
            .await;
            if !proceed {
                self.close_segment().await;
                self.wake_idle_waiters();
                return;
            }
            let (records, bytes, in_flight) = self.take_open_batch();
            self.flushing.set(true);
            let outcome = if self.lease.is_fenced() {
                // Replaced by the watchdog: the successor owns this core's
                // stream now. Not one more byte from us.
                Err(WriteError::Restarting)
            } else {
                self.write_batch(&bytes).await
            };
            self.flushing.set(false);
            self.finish_batch(records, bytes, in_flight, outcome);
            self.wake_idle_waiters();
        }
    }

    /// Moves the open batch out for writing; the next one starts with the
    /// spare buffers.
    fn take_open_batch(&self) -> (u64, Vec<u8>, InFlight) {
        let next = Batch {
            bytes: self.spare_bytes.take(),
            waiters: self.spare_waiters.take(),
            ..Batch::default()
        };
        let batch = std::mem::replace(&mut *self.open.borrow_mut(), next);
        for w in self.room_waiters.borrow_mut().drain(..) {
            w.wake();
        }
        let records = batch.records;
        let (bytes, in_flight) = batch.in_flight();
        (records, bytes, in_flight)
    }

    /// Reports a written (or failed) batch to its appends and keeps its
    /// buffers for the next batch but one (they grew to the load's batch
    /// size already), unless they are unusually large.
    fn finish_batch(
        &self,
        records: u64,
        mut bytes: Vec<u8>,
        in_flight: InFlight,
        outcome: Result<(), WriteError>,
    ) {
        if bytes.capacity() <= SPARE_BATCH_BYTES_MAX {
            bytes.clear();
            self.spare_bytes.replace(bytes);
        }
        match &outcome {
            Ok(()) => LogCounters::bump(&self.counters.records_durable, records),
            Err(WriteError::Restarting) => {}
            Err(e) => {
                tracing::error!(core = self.core, records, error = %e, "log write failed; the batch is not acknowledged");
                LogCounters::bump(&self.counters.write_errors, 1);
            }
        }
        let waiters = in_flight.complete(outcome);
        if waiters.capacity() <= SPARE_WAITERS_MAX {
            self.spare_waiters.replace(waiters);
        }
        self.wake_idle_waiters();
    }

    /// Closes the open segment, waiting for the close. Dropping a glommio
    /// file only queues its close on the executor's ring, which never
    /// happens if the executor is about to end (a restarted shard would
    /// leak the descriptor). Idempotent; a no-op while a write holds the file.
    pub async fn close_segment(&self) {
        let segment = self.segment.borrow_mut().take();
        if let Some(segment) = segment {
            match Rc::try_unwrap(segment.file) {
                Ok(file) => {
                    if let Err(e) = file.close().await {
                        tracing::warn!(core = self.core, segment = segment.number, error = %e, "closing a log segment failed");
                    }
                }
                Err(file) => {
                    // A write still uses it: put it back for that write.
                    self.segment.replace(Some(OpenSegment { file, ..segment }));
                }
            }
        }
    }

    async fn write_batch(&self, bytes: &[u8]) -> Result<(), WriteError> {
        let needs_roll = match &*self.segment.borrow() {
            None => true,
            Some(seg) => seg.len + bytes.len() as u64 > self.segment_bytes_max,
        };
        if needs_roll {
            self.roll().await?;
        }
        self.write_to_segment(bytes)?;
        if self.fsync == FsyncPolicy::Always && !durability::skipped(SyncStep::RecordData) {
            let (file, number) = match &*self.segment.borrow() {
                Some(seg) => (Rc::clone(&seg.file), seg.number),
                None => return Err(WriteError::Io("no open segment".into())),
            };
            if let Err(e) = self.fdatasync(&file).await {
                // After a failed fsync the page cache may no longer hold
                // what we wrote (fsyncgate): never append to this file again.
                tracing::error!(
                    core = self.core,
                    segment = number,
                    error = %e,
                    "fdatasync failed; moving to a new segment"
                );
                self.segment.borrow_mut().take();
                return Err(WriteError::from_io("fdatasync", e));
            }
            LogCounters::bump(&self.counters.fsyncs, 1);
        }
        Ok(())
    }

    /// Appends `bytes` to the open segment with `pwrite(2)`.
    ///
    /// Synchronous on purpose: a buffered write is a copy into the page
    /// cache, microseconds for a batch; through io_uring the kernel handed
    /// each one to a worker thread on the same core (ext4 cannot do buffered
    /// appends without blocking), which cost more CPU than the write
    /// (perf, 2026-11-25: POST 157k -> 203k notes/s on one core). On
    /// failure the file is cut back to its last good length.
    fn write_to_segment(&self, bytes: &[u8]) -> Result<(), WriteError> {
        let mut segment = self.segment.borrow_mut();
        let Some(seg) = segment.as_mut() else {
            return Err(WriteError::Io("no open segment".into()));
        };
        let fd = seg.file.as_raw_fd();
        let started = std::time::Instant::now();
        let written = pwrite_all(fd, bytes, seg.len);
        let took = started.elapsed();
        if took.as_millis() >= SLOW_WRITE_WARN_MS {
            // The page cache throttles writers when too much is dirty, and
            // this thread is the shard's: say so before the watchdog's stall
            // timeout has to.
            tracing::warn!(
                core = self.core,
                bytes = bytes.len(),
                elapsed_ms = took.as_millis() as u64,
                "a log write blocked the shard (the disk is not keeping up with the page cache)"
            );
        }
        let result = match written {
            Ok(n) if n == bytes.len() => Ok(()),
            // A short write to a regular file means the device is full.
            Ok(_) => Err(WriteError::NoSpace),
            Err(e) => Err(WriteError::from_io("write", e)),
        };
        match result {
            Ok(()) => {
                seg.len += bytes.len() as u64;
                LogCounters::bump(&self.counters.log_bytes, bytes.len() as u64);
                LogCounters::bump(&self.counters.log_writes, 1);
            }
            Err(_) => {
                // The batch fails as a whole: cut its bytes off again; if
                // even that fails, abandon the segment (recovery will cut
                // the tail on the next start).
                // SAFETY: ftruncate(2) on our own open descriptor.
                if unsafe { libc::ftruncate(fd, seg.len as libc::off_t) } != 0 {
                    let e = std::io::Error::last_os_error();
                    tracing::error!(core = self.core, error = %e, "cannot truncate a failed write; abandoning the segment");
                    segment.take();
                }
            }
        }
        result
    }

    /// Opens the next segment, writing and syncing its header and directory entry.
    async fn roll(&self) -> Result<(), WriteError> {
        let dir = segment::log_dir(&self.data_dir);
        // A number is used once, even if creating its file fails (numbers
        // come from the core's allocator, shared by all its writers). A name
        // that exists already is skipped.
        let mut attempts = 0;
        let (number, path, file) = loop {
            let number = self.segment_numbers.allocate();
            let path = dir.join(segment::file_name(self.core, number));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .buffered_open(&path)
                .await
            {
                Ok(file) => break (number, path, file),
                Err(e) => {
                    let io: std::io::Error = e.into();
                    attempts += 1;
                    if io.kind() != std::io::ErrorKind::AlreadyExists
                        || attempts >= SEGMENT_CREATE_ATTEMPTS_MAX
                    {
                        return Err(WriteError::Io(format!("creating segment: {io}")));
                    }
                }
            }
        };
        let result = self.finish_new_segment(file, &dir, number).await;
        if result.is_err() {
            // Don't leave a segment without a synced header behind.
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    async fn finish_new_segment(
        &self,
        file: BufferedFile,
        dir: &std::path::Path,
        number: u32,
    ) -> Result<(), WriteError> {
        let header = segment::header().to_vec();
        let header_len = header.len() as u64;
        let written = file
            .write_at(header, 0)
            .await
            .map_err(|e| WriteError::from_glommio("writing segment header", e))?;
        if written as u64 != header_len {
            return Err(WriteError::NoSpace);
        }
        if !durability::skipped(SyncStep::SegmentHeader) {
            self.fdatasync(&file)
                .await
                .map_err(|e| WriteError::from_io("syncing segment header", e))?;
        }
        // The new name is durable only once its directory is synced: a
        // record acknowledged in a segment whose name a power cut forgets
        // is lost with it.
        if !durability::skipped(SyncStep::SegmentDir) {
            let directory = Directory::open(dir)
                .await
                .map_err(|e| WriteError::from_glommio("opening log directory", e))?;
            directory
                .sync()
                .await
                .map_err(|e| WriteError::from_glommio("syncing log directory", e))?;
            let _ = directory.close().await;
        }
        // The previous segment (if any) is dropped here, which closes it;
        // everything in it is already synced.
        self.segment.replace(Some(OpenSegment {
            file: Rc::new(file),
            number,
            len: header_len,
        }));
        tracing::debug!(core = self.core, segment = number, "opened log segment");
        Ok(())
    }
}

/// `pwrite(2)` until all of `bytes` is written, the kernel writes nothing
/// more (returns how much it took), or fails.
fn pwrite_all(fd: RawFd, bytes: &[u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: `rest` is a valid slice for its length.
        let n = unsafe {
            libc::pwrite(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}
