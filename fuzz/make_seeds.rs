//! Writes seed corpora for the fuzz targets into `fuzz/seeds/<target>/`,
//! using the crate's own encoders, and the request shapes the integration
//! tests exercise (`tests/http_api.rs`, `tests/http_hostile.rs`).

use std::path::Path;

use uringnotes::cluster::{frame, wire};
use uringnotes::store::note::{self, Note, NoteId, Origin};
use uringnotes::store::{record, segment};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn sample_note(seq: u64, text: &str) -> Vec<u8> {
    note::archive(&Note {
        id: NoteId { origin: Origin { node: 0x1234_5678, core: 1 }, seq },
        created_at_us: 1_795_602_063_021_880 + seq,
        text: text.into(),
    })
}

/// A client's first flight (its hello) as the fuzz target reads it: a
/// read-size byte, then the bytes.
fn client_hello(versions: &[&'static rustls::SupportedProtocolVersion]) -> Vec<u8> {
    use uringnotes::tls::client::{config_for, Trust};
    let config = config_for(&Trust::Anyone, true, versions).unwrap();
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut bytes = vec![63];
    conn.write_tls(&mut bytes).unwrap();
    bytes
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");

    let tls = root.join("tls_records");
    write(&tls, "hello13", &client_hello(&[&rustls::version::TLS13]));
    write(&tls, "hello12", &client_hello(&[&rustls::version::TLS12]));
    write(&tls, "hello-both", &client_hello(rustls::ALL_VERSIONS));
    write(&tls, "plaintext", b"\x10GET / HTTP/1.1\r\nHost: t\r\n\r\n");

    let http = root.join("http_request");
    let requests: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /notes?limit=2&before=12345678-1-2 HTTP/1.1\r\nHost: t\r\nAccept: text/html\r\n\r\n",
        b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\ntext=hello",
        b"POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
        b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET http://example.com/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for (i, r) in requests.iter().enumerate() {
        write(&http, &format!("req{i}"), r);
    }

    let peer = root.join("peer_frame");
    let ident = wire::NodeIdentity {
        node: 7,
        name: "a".into(),
        peer_addr: "127.0.0.1:9081".parse().unwrap(),
        cores: 2,
    };
    // Handshake payloads as they are inside the Noise messages.
    let hello = wire::Hello { version_min: 2, version_max: 2, from: ident.clone(), incarnation: 1 };
    write(&peer, "hello", &frame::encode(frame::FrameKind::Hello, &hello.encode()));
    let answer = wire::Answer { version: 2, from: ident, incarnation: 2 };
    write(&peer, "answer", &frame::encode(frame::FrameKind::Answer, &answer.encode()));
    let vector = wire::Vector { entries: vec![(Origin { node: 7, core: 0 }, 42)], loads: vec![1, 2] };
    write(&peer, "vector", &frame::encode(frame::FrameKind::Vector, &vector.encode()));
    let notes = [sample_note(1, "one"), sample_note(2, "two <b>")];
    let payloads: Vec<&[u8]> = notes.iter().map(|n| n.as_slice()).collect();
    write(&peer, "notes", &frame::encode(frame::FrameKind::Notes, &wire::encode_notes(payloads.into_iter())));
    let dispatch = wire::DispatchRequest {
        id: 1,
        core: 0,
        keep_alive: true,
        http10: false,
        raw_head: requests[0].to_vec(),
        body: Vec::new(),
    };
    write(&peer, "dispatch", &frame::encode(frame::FrameKind::DispatchRequest, &dispatch.encode()));

    let holes = wire::Holes {
        ranges: vec![
            wire::SeqRange { origin: Origin { node: 7, core: 0 }, first: 3, last: 5 },
            wire::SeqRange { origin: Origin { node: 9, core: 1 }, first: 43, last: u64::MAX },
        ],
    };
    write(&peer, "holes", &frame::encode(frame::FrameKind::Holes, &holes.encode()));

    // The sealed-frame target builds valid sealed streams from its input
    // and damages them as the input says: seeds are plans, not streams.
    let sealed = root.join("sealed_frame");
    write(&sealed, "clean", &[0, 3, 10, 200, 0, 0, 0, 0]);
    write(&sealed, "flip", &[1, 2, 40, 1, 7, 0x80, 0, 0, 0]);
    write(&sealed, "replay", &[2, 4, 255, 3, 0, 9, 1, 2]);
    write(&sealed, "raw", b"\x03\x10\x00garbage that is not a record at all");

    let chunked = root.join("chunked_body");
    for (name, bytes) in [
        ("simple", &b"\x035\r\nhello\r\n0\r\n\r\n"[..]),
        ("ext_trailer", b"\xc05;a=b\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nGET"),
        ("bad_size", b"\x01g\r\nx\r\n0\r\n\r\n"),
        ("lf_only", b"\x015\nhello\n0\n\n"),
        ("huge", b"\x07FFFFFFFFFFFFFFFFF\r\n"),
    ] {
        write(&chunked, name, bytes);
    }

    let log = root.join("log_recovery");
    let mut records = Vec::new();
    for (i, text) in ["first", "second note", "third: <script>"].iter().enumerate() {
        record::encode_into(&mut records, &sample_note(i as u64 + 1, text));
    }
    write(&log, "three_records", &records);
    write(&log, "torn", &records[..records.len() - 3]);
    let mut flipped = records.clone();
    flipped[20] ^= 0x40;
    write(&log, "flipped", &flipped);
    let _ = segment::SEGMENT_HEADER_BYTES;

    let input = root.join("note_input");
    for (name, bytes) in [
        ("form", &b"text=hello+world%21&x=1"[..]),
        ("json", br#"{"text":"hi \"there\" \u00e9"}"#),
        ("plain", "plain text é <script>".as_bytes()),
        ("id", b"3fa2c1d0-1-42"),
        ("bad_utf8", b"text=%FF%FE"),
    ] {
        write(&input, name, bytes);
    }
    println!("seeds written to {}", root.display());
}
