//! Writes a data directory holding N synthetic notes (for memory and
//! recovery measurements): `cargo run --release --example gen_log DIR N TEXT_BYTES`.

use std::io::Write;

use uringnotes::store::note::{self, Note, NoteId, Origin};
use uringnotes::store::{record, segment};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("DIR"));
    let n: u64 = args.get(2).map_or(1_000_000, |s| s.parse().expect("N"));
    let text_bytes: usize = args.get(3).map_or(100, |s| s.parse().expect("TEXT_BYTES"));
    let log = segment::log_dir(&dir);
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(dir.join("node.id"), "0badc0de\n").unwrap();
    let mut file_no = 1;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(log.join(segment::file_name(0, file_no))).unwrap(),
    );
    out.write_all(&segment::header()).unwrap();
    let mut written = 16u64;
    let mut buf = Vec::new();
    let filler =
        "lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(text_bytes / 50 + 2);
    for seq in 1..=n {
        let mut text = format!("note {seq}: ");
        text.push_str(&filler[..text_bytes.saturating_sub(text.len()).min(filler.len())]);
        let payload = note::archive(&Note {
            id: NoteId {
                origin: Origin {
                    node: 0x0bad_c0de,
                    core: 0,
                },
                seq,
            },
            created_at_us: 1_700_000_000_000_000 + seq * 1000,
            text,
        });
        buf.clear();
        record::encode_into(&mut buf, &payload);
        if written + buf.len() as u64 > 64 << 20 {
            out.flush().unwrap();
            file_no += 1;
            out = std::io::BufWriter::new(
                std::fs::File::create(log.join(segment::file_name(0, file_no))).unwrap(),
            );
            out.write_all(&segment::header()).unwrap();
            written = 16;
        }
        out.write_all(&buf).unwrap();
        written += buf.len() as u64;
    }
    out.flush().unwrap();
    println!(
        "wrote {n} notes of {text_bytes} text bytes into {}",
        dir.display()
    );
}
