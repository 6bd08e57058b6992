//! Log recovery from arbitrary bytes: a segment with a valid header
//! followed by fuzzer bytes. Recovery must not panic, must serve only
//! records that validate, and must leave a file that recovers the same
//! notes again (the repair is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use uringnotes::store::{recovery, segment};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let log = segment::log_dir(dir.path());
    std::fs::create_dir_all(&log).unwrap();
    let mut bytes = segment::header().to_vec();
    bytes.extend_from_slice(data);
    std::fs::write(log.join(segment::file_name(0, 1)), &bytes).unwrap();
    let first = recovery::recover(dir.path(), true).unwrap();
    let ids: Vec<_> = first
        .index
        .newest(None)
        .unwrap()
        .map(|r| {
            // Everything indexed re-validates.
            uringnotes::store::note::access(r.payload()).unwrap();
            r.note().id()
        })
        .collect();
    let second = recovery::recover(dir.path(), true).unwrap();
    let again: Vec<_> = second.index.newest(None).unwrap().map(|r| r.note().id()).collect();
    assert_eq!(ids, again);
    assert!(second.report.truncated.is_empty(), "repair must leave a clean tail");
});
