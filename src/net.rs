//! Socket set-up: the HTTP listening sockets (one per core, all bound to the
//! same address with SO_REUSEPORT so the kernel spreads new connections
//! across cores), the peer listener and the membership socket.
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

/// Fails if another process already listens on `addr`.
///
/// SO_REUSEPORT lets any process of the same user bind a port that is in
/// use and silently take a share of its connections: a second server
/// started by mistake would split traffic with the first. A plain bind
/// (SO_REUSEADDR only, so TIME_WAIT leftovers don't matter) fails if
/// anything listens there, which is the check we want.
pub fn ensure_not_in_use(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let probe = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "address already in use (is another server running?)",
            )
        } else {
            e
        }
    })
}

/// Binds `count` sockets to `addr`; returns them and the bound address
/// (with the real port if `addr` asked for an ephemeral one).
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> io::Result<(Vec<Socket>, SocketAddr)> {
    ensure_not_in_use(addr)?;
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

/// A UDP socket for membership, on the peer port. It has SO_REUSEPORT so
/// that a restarted shard 0 can bind while its failed predecessor's socket
/// is still open. No other process can share it: `Cluster::start` first
/// checks that the TCP port of the same number is free
/// (`ensure_not_in_use`), and this node's own listener holds that port
/// from then on.
pub fn bind_udp(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    // A restarted shard 0 binds the port while its failed predecessor's
    // socket may still be open (see `Cluster::start`).
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}
