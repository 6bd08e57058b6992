//! Listening sockets: one per core, all bound to the same address with
//! SO_REUSEPORT so the kernel spreads new connections across cores.
//!
//! Sockets are created here (not by glommio) so the backlog is ours to set,
//! and so an ephemeral port (`:0`) is resolved once: the first socket picks
//! the port and every other core binds that same port.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Creates and binds one listening socket.
pub fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket)
}

/// Binds `count` sockets to `addr`; returns them and the bound address
/// (with the real port if `addr` asked for an ephemeral one).
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let first = bind_one(addr, backlog)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_one(bound, backlog)?);
    }
    Ok((sockets, bound))
}
