//! Durable note storage: an append-only, checksummed log of rkyv records.
//!
//! - [`note`]: the `Note` type, its id, and archive access.
//! - [`record`]: framing of one record (length, CRC32C, payload).
//! - [`segment`]: segment files and the data directory layout.
//! - [`recovery`]: rebuilding the index from the segments at start-up.
//! - [`writer`]: one core's appender with group commit.
//! - [`index`]: one core's in-memory view of all notes.
//! - [`feed`]: one core's feed of newly indexed notes (live updates, and
//!   replication's wake-up on core 0).
//! - [`lease`]: who may number and append a core's stream (fencing a
//!   replaced writer), and the core's segment numbers.
//! - [`durability`]: every sync the store performs, by name (and the
//!   harness's switch that leaves one out).
//!
//! This module also owns the data directory itself ([`DataDir`]): its lock,
//! so two servers never write the same log, and the node id
//! ([`NodeInfo`]); and the durability setting of writes ([`FsyncPolicy`]).
//!
//! Nothing here knows about HTTP, shards or the cluster: the store is
//! driven by the shard above it and reports through its own counters
//! ([`writer::LogCounters`]).

pub mod durability;
pub mod feed;
pub mod index;
pub mod lease;
pub mod note;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod writer;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use durability::SyncStep;

/// Whether a write waits for its record to reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fdatasync before acknowledging (group commit). The default.
    Always,
    /// UNSAFE, for benchmarking only: acknowledge after the write(2); an
    /// acknowledged note can be lost on power failure.
    Never,
}

/// This node's identity: the id stored in its data directory (the `node`
/// of every note id it creates) and the name it is shown by.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: u32,
    pub name: String,
}

/// Errors of the storage layer outside the write path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("data directory {0} is in use by another uringnotes process")]
    Locked(PathBuf),
    #[error("{0} is damaged: expected 8 hex digits naming this node")]
    BadNodeId(PathBuf),
}

impl StoreError {
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// An opened, locked data directory.
pub struct DataDir {
    pub path: PathBuf,
    pub node_id: u32,
    /// Holds the flock(2) for as long as the server runs.
    _lock: File,
}

impl DataDir {
    /// Creates the directory layout if needed, takes the lock, and reads (or
    /// on first start creates) the node id.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        create_dirs_durably(&segment::log_dir(path))?;
        // Always work with an absolute path: glommio opens directories
        // relative to no directory fd (a relative path fails with EBADF),
        // and log lines should name files unambiguously.
        let path = &fs::canonicalize(path).map_err(|e| StoreError::io("resolving", path, e))?;
        let lock_path = path.join("LOCK");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io("opening", &lock_path, e))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Locked(path.to_owned()));
            }
            return Err(StoreError::io("locking", &lock_path, err));
        }
        let node_id = read_or_create_node_id(path)?;
        Ok(DataDir {
            path: path.to_owned(),
            node_id,
            _lock: lock,
        })
    }
}

fn read_or_create_node_id(dir: &Path) -> Result<u32, StoreError> {
    let path = dir.join("node.id");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            if text.len() != 8 {
                return Err(StoreError::BadNodeId(path));
            }
            match u32::from_str_radix(text, 16) {
                Ok(id) if id != 0 => Ok(id),
                _ => Err(StoreError::BadNodeId(path)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = random_node_id()
                .map_err(|e| StoreError::io("reading", Path::new("/dev/urandom"), e))?;
            // Write, sync, rename, sync the directory: the id is either
            // there completely or not at all.
            let tmp = dir.join("node.id.tmp");
            let mut f = File::create(&tmp).map_err(|e| StoreError::io("creating", &tmp, e))?;
            writeln!(f, "{id:08x}").map_err(|e| StoreError::io("writing", &tmp, e))?;
            if !durability::skipped(SyncStep::NodeIdFile) {
                f.sync_all()
                    .map_err(|e| StoreError::io("syncing", &tmp, e))?;
            }
            fs::rename(&tmp, &path).map_err(|e| StoreError::io("renaming", &tmp, e))?;
            if !durability::skipped(SyncStep::NodeIdDir) {
                sync_dir(dir)?;
            }
            Ok(id)
        }
        Err(e) => Err(StoreError::io("reading", &path, e)),
    }
}

/// `fsync` of a directory: makes the names in it durable (creating,
/// renaming or removing a file changes only its directory).
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing", dir, e))
}

/// Creates `path` and every missing directory above it, syncing the parent
/// of each one created: a new directory's name is in its parent, and a
/// power cut forgets it unless the parent is synced. Before this, nothing
/// synced the name of a data directory the server created (the `fsync` of
/// the data directory for `node.id` happened to cover `log/`): the
/// power-cut harness (`tests/powerloss`, and `tools/powerloss --skip-sync
/// new-directory`, which restores that behaviour) loses every note
/// acknowledged after a first start when the power goes.
fn create_dirs_durably(path: &Path) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut at = path;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    fs::create_dir_all(path).map_err(|e| StoreError::io("creating", path, e))?;
    if durability::skipped(SyncStep::NewDirectory) {
        return Ok(());
    }
    // Top down: each parent is synced after the directory in it exists.
    for dir in missing.iter().rev() {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

fn random_node_id() -> io::Result<u32> {
    let mut f = File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        let id = u32::from_le_bytes(b);
        if id != 0 {
            return Ok(id);
        }
    }
}
