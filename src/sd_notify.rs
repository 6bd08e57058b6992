//! Readiness notification for systemd (`Type=notify`, see sd_notify(3)):
//! one datagram to the socket named by `$NOTIFY_SOCKET`, if there is one.
//!
//! `READY=1` is sent once every core is serving, so `systemctl start`
//! returns when the server really answers, and a unit ordered after it
//! starts only then; `STOPPING=1` when a graceful shutdown begins.
//! Without `$NOTIFY_SOCKET` (not started by systemd) this does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to systemd; failures are logged only:
/// a server that cannot notify still serves.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket name (Linux).
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}
