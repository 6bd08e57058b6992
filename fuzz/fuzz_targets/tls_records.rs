//! The TLS record-layer glue of the server (`tls/session.rs`): arbitrary
//! bytes from a client, cut into reads of arbitrary sizes (the first byte
//! picks the size), through `receive`, `read_plaintext`, `take_ciphertext`
//! and, once a handshake completed, `seal`. Must never panic, loop or grow
//! without bound; an error only ends the connection (after an alert).
//!
//! Random bytes rarely make a whole handshake (the server's keys are fresh
//! per connection), so this mostly exercises record framing and handshake
//! message parsing; `tls/session.rs`'s unit tests and `tests/tls.rs` cover
//! the application-data path. Seeds: real client hellos (fuzz/make_seeds.rs).
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use uringnotes::tls::server::ServerTls;
use uringnotes::tls::session::{Plain, ServerSession};

/// A throw-away self-signed certificate (fuzz/tls/), valid for a century.
fn server_tls() -> &'static ServerTls {
    static TLS: OnceLock<ServerTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls");
        ServerTls::new(&dir.join("cert.pem"), &dir.join("key.pem"))
            .expect("the fuzz certificate (fuzz/tls/) loads")
            .0
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, data)) = data.split_first() else {
        return;
    };
    let read_bytes = usize::from(size % 64) + 1;
    let Ok(mut session) = ServerSession::new(Arc::clone(&server_tls().config())) else {
        return;
    };
    let mut out = Vec::new();
    let mut plain = [0u8; 256];
    for piece in data.chunks(read_bytes) {
        let mut source = piece;
        while !source.is_empty() {
            match session.receive(&mut source) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    session.take_ciphertext(&mut out);
                    return;
                }
            }
        }
        while let Ok(Plain::Data(n)) = session.read_plaintext(&mut plain) {
            assert!(n <= plain.len());
        }
        out.clear();
        session.take_ciphertext(&mut out);
        if !session.is_handshaking() {
            let _ = session.seal(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &mut out);
        }
        assert!(out.len() < 1 << 20, "ciphertext grows without bound");
    }
    // The end of the stream.
    let _ = session.receive(&mut &[][..]);
});
