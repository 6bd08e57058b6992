//! Build script: one hash of the sources (`src/` and `Cargo.lock`), as the
//! environment variable `URINGNOTES_SOURCE_HASH` (16 hex digits).
//!
//! The server's entity tags start from it (`api/representation.rs`): a
//! build that renders anything differently has other sources, hence other
//! tags, so a client never gets a 304 for bytes an older build made. Two
//! builds of the same sources agree, so the nodes of a cluster running one
//! release give the same notes the same tags.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut files = Vec::new();
    collect(Path::new("src"), &mut files);
    files.push(PathBuf::from("Cargo.lock"));
    files.sort();
    // FNV-1a over each file's path and contents.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for file in &files {
        add(file.to_string_lossy().as_bytes());
        add(&[0]);
        // A file that cannot be read (a race with an editor) still changes
        // the hash through its path; the next build reads it.
        add(&std::fs::read(file).unwrap_or_default());
    }
    println!("cargo:rustc-env=URINGNOTES_SOURCE_HASH={hash:016x}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
