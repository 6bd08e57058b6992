//! A FUSE file system that forgets what was not synced: the disk of the
//! power-cut harness.
//!
//! Every file and directory lives in this process's memory, twice: what
//! the running system sees (`current`) and what the disk holds
//! (`durable`). The model is the least POSIX promises, with no help from
//! a journal:
//! - `write` changes only `current`; `fsync`/`fdatasync` of *that file*
//!   copies its whole `current` (data and size) to `durable`;
//! - `create`, `mkdir`, `rename`, `unlink`, `rmdir` change only a
//!   directory's `current` entries; `fsync` of *that directory* (FUSE
//!   `FSYNCDIR`) copies them to `durable`. Syncing a file does not make its
//!   name durable, and syncing a directory does not sync the files in it;
//! - a **power cut** ([`Disk::cut`]) throws `current` away: every file
//!   gets back its durable bytes, every directory its durable entries, and
//!   what is reachable from the root by durable names is all that is left.
//!   [`CutMode`] picks how much of the unsynced writes a cut may keep
//!   (none; a torn prefix at 512-byte granularity; any subset of their
//!   sectors, in any order, possibly with the file size extended over
//!   zeros).
//!
//! [`Mounted`] mounts it (the `fuser` crate, with no writeback cache: every
//! `write(2)` reaches this process before it returns) and performs a cut
//! as one step with the caller's kill of the server: kill, unmount (the
//! kernel's caches go with the mount, as a reboot drops the page cache),
//! forget, mount again. While the server is dead nothing can sync, so the
//! durable image is exactly what every completed sync left.
//!
//! The fsync of a file that the kernel answers by itself (no `FSYNC` sent
//! when the daemon said `ENOSYS` once) would be a silent success: both
//! `fsync` and `fsyncdir` are implemented, and [`Counters`] shows they run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// The unit a disk writes atomically: a torn write keeps whole sectors.
pub const SECTOR_BYTES: u64 = 512;
/// Attributes and names are never cached by the kernel: the daemon's answer
/// is always the truth, also right after a cut.
const TTL: Duration = Duration::ZERO;
/// Block size reported to `stat`.
const BLOCK_BYTES: u32 = 4096;
/// Size reported by `statfs` (blocks of `BLOCK_BYTES`): 4 GiB, all free.
const STATFS_BLOCKS: u64 = 1 << 20;
/// Longest name a directory entry may have.
const NAME_BYTES_MAX: usize = 255;
/// How long an unmount may take to end the session (the killed server's
/// io_uring is torn down asynchronously and may hold the mount briefly).
const UNMOUNT_WAIT: Duration = Duration::from_secs(20);

/// How much of the unsynced writes a power cut keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// None: every file is exactly as it was last synced.
    Lose,
    /// A prefix, in write order, of each file's unsynced writes; the last
    /// one kept may be torn at a sector boundary (only its first sectors
    /// reached the disk).
    Torn,
    /// Any subset of the sectors of each file's unsynced writes (the disk
    /// wrote back its cache in any order), and half of the time the file's
    /// size as the writes left it, over zeros where their data was lost.
    Reorder,
}

impl CutMode {
    pub fn parse(s: &str) -> Option<CutMode> {
        match s {
            "lose" => Some(CutMode::Lose),
            "torn" => Some(CutMode::Torn),
            "reorder" => Some(CutMode::Reorder),
            _ => None,
        }
    }
}

/// What the file system was asked to do since it was created.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub writes: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub opens_direct: u64,
    pub cuts: u64,
}

/// What one power cut threw away.
#[derive(Debug, Default, Clone)]
pub struct CutReport {
    /// Files that had unsynced writes or size changes.
    pub files_with_unsynced_data: usize,
    /// Unsynced bytes written that did not survive.
    pub bytes_lost: u64,
    /// Unsynced writes that survived only in part.
    pub torn_writes: usize,
    /// Names that existed but were not durable (created or renamed to,
    /// and their directory not synced since), as paths from the root.
    pub names_lost: Vec<String>,
    /// Durable names that had been removed or renamed away and came back.
    pub names_back: Vec<String>,
}

impl CutReport {
    /// Whether the cut fell while a log segment was being created: its
    /// name was not durable yet.
    pub fn during_segment_roll(&self) -> bool {
        self.names_lost.iter().any(|n| n.ends_with(".log"))
    }
}

/// One unsynced change to a file, kept for the cut modes that let some of
/// them survive.
#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileNode {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Change>,
}

#[derive(Debug, Default)]
struct DirNode {
    current: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Body {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
}

/// splitmix64: the cut modes' choices, reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// The whole disk: every inode, both views.
#[derive(Debug)]
pub struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    counters: Counters,
    rng: Rng,
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    let end = offset + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[offset..end].copy_from_slice(data);
}

impl Disk {
    /// An empty disk: a root directory, durable.
    pub fn new(seed: u64) -> Disk {
        let mut nodes = HashMap::new();
        nodes.insert(
            u64::from(INodeNo::ROOT),
            Node {
                body: Body::Dir(DirNode::default()),
                perm: 0o755,
                mtime: now(),
            },
        );
        Disk {
            nodes,
            next_ino: u64::from(INodeNo::ROOT) + 1,
            counters: Counters::default(),
            rng: Rng::new(seed),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Everything gone, as a new disk (the counters are kept).
    pub fn format(&mut self) {
        let counters = self.counters;
        let rng = self.rng.clone();
        *self = Disk::new(0);
        self.counters = counters;
        self.rng = rng;
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File(f) => (FileType::RegularFile, f.current.len() as u64, 1),
            Body::Dir(d) => (FileType::Directory, d.current.len() as u64, 2),
        };
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(SECTOR_BYTES),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize: BLOCK_BYTES,
            flags: 0,
        })
    }

    fn dir(&self, ino: u64) -> Result<&DirNode, Errno> {
        match self.nodes.get(&ino).map(|n| &n.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(Body::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.mtime = now();
                match &mut node.body {
                    Body::Dir(d) => Ok(d),
                    Body::File(_) => Err(Errno::ENOTDIR),
                }
            }
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(node) => match &mut node.body {
                Body::File(f) => Ok(f),
                Body::Dir(_) => Err(Errno::EISDIR),
            },
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .current
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Makes a new node named `name` in `parent` (not durable until the
    /// parent is synced).
    fn make(&mut self, parent: u64, name: &OsStr, body: Body, perm: u16) -> Result<u64, Errno> {
        if name.len() > NAME_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.dir(parent)?.current.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                body,
                perm,
                mtime: now(),
            },
        );
        self.dir_mut(parent)?.current.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let file = self.file_mut(ino)?;
        write_into(&mut file.current, offset, data);
        file.unsynced.push(Change::Write {
            offset,
            data: data.to_vec(),
        });
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.mtime = now();
        }
        self.counters.writes += 1;
        self.counters.bytes_written += data.len() as u64;
        Ok(())
    }

    fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        let file = self.file_mut(ino)?;
        file.current.resize(len as usize, 0);
        file.unsynced.push(Change::SetLen(len));
        Ok(())
    }

    /// fsync/fdatasync of a file, or fsync of a directory.
    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File(f)) => {
                f.durable.clone_from(&f.current);
                f.unsynced.clear();
                self.counters.fsyncs += 1;
                Ok(())
            }
            Some(Body::Dir(d)) => {
                d.durable.clone_from(&d.current);
                self.counters.fsyncdirs += 1;
                Ok(())
            }
            None => Err(Errno::ENOENT),
        }
    }

    fn unlink(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (&self.nodes[&ino].body, want_dir) {
            (Body::Dir(_), false) => return Err(Errno::EISDIR),
            (Body::File(_), true) => return Err(Errno::ENOTDIR),
            (Body::Dir(d), true) if !d.current.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        // The node itself stays: a durable name may still lead to it.
        self.dir_mut(parent)?.current.remove(name);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        if new_name.len() > NAME_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let ino = self.lookup(parent, name)?;
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&self.nodes[&ino].body, &self.nodes[&target].body) {
                (Body::File(_), Body::Dir(_)) => return Err(Errno::EISDIR),
                (Body::Dir(_), Body::File(_)) => return Err(Errno::ENOTDIR),
                (Body::Dir(_), Body::Dir(d)) if !d.current.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        self.dir_mut(new_parent)?; // checks it is a directory
        self.dir_mut(parent)?.current.remove(name);
        self.dir_mut(new_parent)?
            .current
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// Paths of every name reachable from the root through `durable` or
    /// `current` entries, with the inode each leads to.
    fn names(&self, durable: bool) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        let mut stack = vec![(String::new(), u64::from(INodeNo::ROOT))];
        let mut seen = HashSet::new();
        while let Some((path, ino)) = stack.pop() {
            if !seen.insert(ino) {
                continue;
            }
            if let Some(Body::Dir(d)) = self.nodes.get(&ino).map(|n| &n.body) {
                let entries = if durable { &d.durable } else { &d.current };
                for (name, &child) in entries {
                    let child_path = format!("{path}/{}", name.to_string_lossy());
                    out.insert(child_path.clone(), child);
                    stack.push((child_path, child));
                }
            }
        }
        out
    }

    /// A power cut: what is not durable is lost, except what `mode` lets
    /// survive of the unsynced writes.
    pub fn cut(&mut self, mode: CutMode) -> CutReport {
        let mut report = CutReport::default();
        let durable_names = self.names(true);
        let current_names = self.names(false);
        for (path, ino) in &current_names {
            if durable_names.get(path) != Some(ino) {
                report.names_lost.push(path.clone());
            }
        }
        for (path, ino) in &durable_names {
            if current_names.get(path) != Some(ino) {
                report.names_back.push(path.clone());
            }
        }
        report.names_lost.sort();
        report.names_back.sort();
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(node) = self.nodes.get_mut(&ino) else {
                continue;
            };
            match &mut node.body {
                Body::File(f) => {
                    if !f.unsynced.is_empty() {
                        report.files_with_unsynced_data += 1;
                    }
                    let kept = survivors(f, mode, &mut self.rng, &mut report);
                    f.current.clone_from(&kept);
                    f.durable = kept;
                    f.unsynced.clear();
                }
                Body::Dir(d) => d.current.clone_from(&d.durable),
            }
        }
        // Only what durable names reach is left on the disk.
        let reachable: HashSet<u64> = self
            .names(true)
            .into_values()
            .chain([u64::from(INodeNo::ROOT)])
            .collect();
        self.nodes.retain(|ino, _| reachable.contains(ino));
        self.counters.cuts += 1;
        report
    }

    /// The durable bytes of the file at `path` (relative to the root).
    pub fn durable_file(&self, path: &Path) -> Option<Vec<u8>> {
        let ino = self.resolve_durable(path)?;
        match &self.nodes.get(&ino)?.body {
            Body::File(f) => Some(f.durable.clone()),
            Body::Dir(_) => None,
        }
    }

    /// `mkdir` as a FUSE request would do it (the model's own tests).
    pub fn model_mkdir(&mut self, parent: u64, name: &str) -> u64 {
        let body = Body::Dir(DirNode::default());
        self.make(parent, OsStr::new(name), body, 0o755)
            .expect("mkdir in the model")
    }

    /// `create` as a FUSE request would do it (the model's own tests).
    pub fn model_create(&mut self, parent: u64, name: &str) -> u64 {
        let body = Body::File(FileNode::default());
        self.make(parent, OsStr::new(name), body, 0o644)
            .expect("create in the model")
    }

    /// `write` as a FUSE request would do it (the model's own tests).
    pub fn model_write(&mut self, ino: u64, offset: u64, data: &[u8]) {
        self.write(ino, offset, data).expect("write in the model")
    }

    /// `fsync`/`fsyncdir` as a FUSE request would do it (the model's own tests).
    pub fn model_sync(&mut self, ino: u64) {
        self.sync(ino).expect("sync in the model")
    }

    fn resolve_durable(&self, path: &Path) -> Option<u64> {
        let mut ino = u64::from(INodeNo::ROOT);
        for part in path.iter() {
            match &self.nodes.get(&ino)?.body {
                Body::Dir(d) => ino = *d.durable.get(part)?,
                Body::File(_) => return None,
            }
        }
        Some(ino)
    }
}

/// The bytes a file holds after a cut in `mode`.
fn survivors(f: &FileNode, mode: CutMode, rng: &mut Rng, report: &mut CutReport) -> Vec<u8> {
    let unsynced_bytes: u64 = f
        .unsynced
        .iter()
        .map(|c| match c {
            Change::Write { data, .. } => data.len() as u64,
            Change::SetLen(_) => 0,
        })
        .sum();
    let mut kept = f.durable.clone();
    let mut kept_bytes = 0u64;
    match mode {
        CutMode::Lose => {}
        CutMode::Torn => {
            // Changes 0..whole survive whole; change `whole` (if a write)
            // survives as a sector-aligned prefix.
            let whole = rng.below(f.unsynced.len() as u64 + 1) as usize;
            for change in &f.unsynced[..whole] {
                kept_bytes += apply(&mut kept, change);
            }
            if let Some(Change::Write { offset, data }) = f.unsynced.get(whole) {
                let end = offset + data.len() as u64;
                // Cut points: the write's start and every sector boundary inside it.
                let first_boundary = offset.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
                let boundaries: Vec<u64> = std::iter::once(*offset)
                    .chain((first_boundary..end).step_by(SECTOR_BYTES as usize))
                    .filter(|b| *b < end)
                    .collect();
                let cut = boundaries[rng.below(boundaries.len() as u64) as usize];
                let prefix = (cut - offset) as usize;
                if prefix > 0 {
                    write_into(&mut kept, *offset, &data[..prefix]);
                    kept_bytes += prefix as u64;
                    report.torn_writes += 1;
                }
            }
        }
        CutMode::Reorder => {
            let mut size_end = kept.len() as u64;
            for change in &f.unsynced {
                match change {
                    Change::SetLen(len) => {
                        size_end = *len;
                        if rng.coin() {
                            kept.resize(*len as usize, 0);
                        }
                    }
                    Change::Write { offset, data } => {
                        let end = offset + data.len() as u64;
                        size_end = size_end.max(end);
                        let (mut some_kept, mut some_lost) = (false, false);
                        let mut at = *offset;
                        while at < end {
                            let piece_end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
                            if rng.coin() {
                                let from = (at - offset) as usize;
                                let to = (piece_end - offset) as usize;
                                write_into(&mut kept, at, &data[from..to]);
                                kept_bytes += (to - from) as u64;
                                some_kept = true;
                            } else {
                                some_lost = true;
                            }
                            at = piece_end;
                        }
                        if some_kept && some_lost {
                            report.torn_writes += 1;
                        }
                    }
                }
            }
            // The size may have reached the disk without the data.
            if !f.unsynced.is_empty() && rng.coin() && (kept.len() as u64) < size_end {
                kept.resize(size_end as usize, 0);
            }
        }
    }
    report.bytes_lost += unsynced_bytes.saturating_sub(kept_bytes);
    kept
}

/// Applies one change to `bytes`; returns the data bytes it wrote.
fn apply(bytes: &mut Vec<u8>, change: &Change) -> u64 {
    match change {
        Change::Write { offset, data } => {
            write_into(bytes, *offset, data);
            data.len() as u64
        }
        Change::SetLen(len) => {
            bytes.resize(*len as usize, 0);
            0
        }
    }
}

/// The FUSE face of a [`Disk`]. Every request locks the disk once.
struct LazyFs {
    disk: Arc<Mutex<Disk>>,
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    // A panic in one request must not take the file system down with it.
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LazyFs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }
}

fn perm_of(mode: u32, umask: u32) -> u16 {
    ((mode & !umask) & 0o7777) as u16
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let disk = self.disk();
        match disk.lookup(parent.into(), name) {
            Ok(ino) => match disk.attr(ino) {
                Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.into()) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        let ino = u64::from(ino);
        if let Some(len) = size {
            if let Err(e) = disk.set_len(ino, len) {
                return reply.error(e);
            }
        }
        if let Some(node) = disk.nodes.get_mut(&ino) {
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(t)) => node.mtime = t,
                Some(TimeOrNow::Now) => node.mtime = now(),
                None => {}
            }
        }
        match disk.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut disk = self.disk();
        let body = Body::Dir(DirNode::default());
        match disk.make(parent.into(), name, body, perm_of(mode, umask)) {
            Ok(ino) => match disk.attr(ino) {
                Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().unlink(parent.into(), name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().unlink(parent.into(), name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .disk()
            .rename(parent.into(), name, newparent.into(), newname, flags)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = self.disk();
        if !disk.nodes.contains_key(&u64::from(ino)) {
            return reply.error(Errno::ENOENT);
        }
        if flags.0 & libc::O_DIRECT != 0 {
            // The kernel serves O_DIRECT itself (fuse_direct_IO): each
            // write still arrives here as a WRITE, just not through the
            // page cache. Counted so a test can tell which path ran.
            disk.counters.opens_direct += 1;
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        let parent = u64::from(parent);
        let ino = match disk.lookup(parent, name) {
            Ok(_) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Ok(ino) => {
                if flags & libc::O_TRUNC != 0 {
                    if let Err(e) = disk.set_len(ino, 0) {
                        return reply.error(e);
                    }
                }
                ino
            }
            Err(_) => {
                let body = Body::File(FileNode::default());
                match disk.make(parent, name, body, perm_of(mode, umask)) {
                    Ok(ino) => ino,
                    Err(e) => return reply.error(e),
                }
            }
        };
        if flags & libc::O_DIRECT != 0 {
            disk.counters.opens_direct += 1;
        }
        match disk.attr(ino) {
            Some(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            None => reply.error(Errno::EIO),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut disk = self.disk();
        match disk.file_mut(ino.into()) {
            Ok(f) => {
                let start = (offset as usize).min(f.current.len());
                let end = (start + size as usize).min(f.current.len());
                reply.data(&f.current[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.disk().write(ino.into(), offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync makes the size durable too (it is needed to read the
        // data back), so both are the same here.
        match self.disk().sync(ino.into()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk().dir(ino.into()) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let disk = self.disk();
        let dir = match disk.dir(ino.into()) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let mut entries: Vec<(u64, FileType, OsString)> = vec![
            (ino.into(), FileType::Directory, ".".into()),
            (ino.into(), FileType::Directory, "..".into()),
        ];
        for (name, &child) in &dir.current {
            let kind = match disk.nodes.get(&child).map(|n| &n.body) {
                Some(Body::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.disk().sync(ino.into()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            BLOCK_BYTES,
            NAME_BYTES_MAX as u32,
            BLOCK_BYTES,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// Why the disk could not be mounted or unmounted.
#[derive(Debug)]
pub struct MountError(pub String);

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A [`Disk`] mounted at a directory. Unmounted on drop.
pub struct Mounted {
    disk: Arc<Mutex<Disk>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    /// The mount's device number: its minor is the FUSE connection, which
    /// `/sys/fs/fuse/connections/N/abort` ends if an unmount hangs.
    dev: u64,
}

impl Mounted {
    /// Mounts an empty disk at `mountpoint` (an existing directory).
    pub fn mount(mountpoint: &Path, seed: u64) -> Result<Mounted, MountError> {
        let mut m = Mounted {
            disk: Arc::new(Mutex::new(Disk::new(seed))),
            mountpoint: mountpoint.to_owned(),
            session: None,
            dev: 0,
        };
        m.attach()?;
        Ok(m)
    }

    fn attach(&mut self) -> Result<(), MountError> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powerloss".into()),
            MountOption::Subtype("lazyfs".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        let fs = LazyFs {
            disk: Arc::clone(&self.disk),
        };
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config).map_err(|e| {
            MountError(format!(
                "cannot mount the FUSE file system at {} ({e}): FUSE needs /dev/fuse and \
                 either root (CAP_SYS_ADMIN) or fusermount3 (Debian package fuse3)",
                self.mountpoint.display()
            ))
        })?;
        self.session = Some(session);
        self.dev = std::fs::metadata(&self.mountpoint)
            .map_err(|e| MountError(format!("stat {}: {e}", self.mountpoint.display())))?
            .dev();
        Ok(())
    }

    /// Unmounts (lazily: the killed server's io_uring may hold the mount a
    /// moment longer) and waits until the kernel ended the session.
    fn detach(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())
            .map_err(|e| MountError(e.to_string()))?;
        // SAFETY: a valid C string; umount2 has no other preconditions.
        let rc = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(MountError(format!(
                "unmounting {}: {e}",
                self.mountpoint.display()
            )));
        }
        let deadline = Instant::now() + UNMOUNT_WAIT;
        let mut aborted = false;
        while !session.guard.is_finished() {
            if Instant::now() > deadline {
                if aborted {
                    return Err(MountError(format!(
                        "the FUSE session of {} did not end within {UNMOUNT_WAIT:?} of unmounting",
                        self.mountpoint.display()
                    )));
                }
                // Something still holds the detached mount: end the
                // connection (every request on it fails with ENOTCONN).
                let minor = libc::minor(self.dev);
                let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
                aborted = true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = session.join();
        Ok(())
    }

    /// Cuts the power: `kill` must stop every process using the mount and
    /// wait for it (the server's kill -9). Then the mount goes (with the
    /// kernel's caches), the unsynced state is forgotten, and the disk is
    /// mounted again with what was durable.
    pub fn power_cut(
        &mut self,
        mode: CutMode,
        kill: impl FnOnce(),
    ) -> Result<CutReport, MountError> {
        kill();
        self.detach()?;
        let report = lock(&self.disk).cut(mode);
        self.attach()?;
        Ok(report)
    }

    /// Replaces the disk with an empty one (a new data directory).
    pub fn format(&mut self) -> Result<(), MountError> {
        self.detach()?;
        lock(&self.disk).format();
        self.attach()
    }

    pub fn counters(&self) -> Counters {
        lock(&self.disk).counters()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("powerloss: {e}");
        }
    }
}
