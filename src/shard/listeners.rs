//! A core's listening sockets: the public listener (`--listen`, HTTP or
//! HTTPS), and when configured the admin listener (`--admin-listen`) and
//! the redirect listener (`--redirect-http`). Every core binds each address
//! with `SO_REUSEPORT`, as for the public listener, so the kernel spreads
//! their connections too and no one core's failure takes one away.
//!
//! Who binds them: the main thread for the first incarnation of every core
//! ([`CoreSockets::bind_all`], which resolves ephemeral ports once), the
//! watchdog for a restarted shard ([`CoreSockets::bind`], at the addresses
//! resolved then). Ownership passes to the incarnation as descriptors
//! ([`CoreSockets::hand_over`]), each recorded in its socket registry
//! before the executor starts (the public one in the listener slot, the
//! others in "other" slots), so the watchdog can shut them down with the
//! rest of a stuck shard's sockets and close them if it never adopted them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use socket2::Socket;

use super::conn::Listener;
use super::incarnation::SocketRegistry;
use crate::config::Config;
use crate::net;

/// One core's listening sockets, bound and not yet handed to a shard.
pub struct CoreSockets {
    pub public: Socket,
    pub admin: Option<Socket>,
    pub redirect: Option<Socket>,
}

/// Where the listeners are bound (ports resolved).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub public: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub redirect: Option<SocketAddr>,
}

/// A listening socket handed to an incarnation.
#[derive(Debug, Clone, Copy)]
pub struct ListenerFd {
    pub kind: Listener,
    pub fd: RawFd,
    /// Its "other" slot in the registry (`None`: the listener slot).
    pub registry_slot: Option<usize>,
}

/// Why a core's sockets could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl CoreSockets {
    /// Binds `cores` sockets for each configured listener; returns them per
    /// core and where they are bound.
    pub fn bind_all(config: &Config, cores: usize) -> Result<(Vec<CoreSockets>, Bound), BindError> {
        let backlog = config.listen_backlog;
        let all = |what, addr| {
            net::bind_all(addr, cores, backlog).map_err(|source| BindError { what, addr, source })
        };
        let (public, public_at) = all("listen", config.listen)?;
        let mut admin = match config.admin_listen {
            Some(addr) => Some(all("admin_listen", addr)?),
            None => None,
        };
        let mut redirect = match config.redirect_http {
            Some(addr) => Some(all("redirect_http", addr)?),
            None => None,
        };
        let bound = Bound {
            public: public_at,
            admin: admin.as_ref().map(|(_, at)| *at),
            redirect: redirect.as_ref().map(|(_, at)| *at),
        };
        let per_core = public
            .into_iter()
            .map(|public| CoreSockets {
                public,
                admin: admin.as_mut().and_then(|(sockets, _)| sockets.pop()),
                redirect: redirect.as_mut().and_then(|(sockets, _)| sockets.pop()),
            })
            .collect();
        Ok((per_core, bound))
    }

    /// Binds one core's sockets again (a restarted shard), at `bound`.
    pub fn bind(bound: &Bound, backlog: u32) -> Result<CoreSockets, BindError> {
        let one = |what, addr| {
            net::bind_one(addr, backlog).map_err(|source| BindError { what, addr, source })
        };
        Ok(CoreSockets {
            public: one("listen", bound.public)?,
            admin: bound.admin.map(|a| one("admin_listen", a)).transpose()?,
            redirect: bound
                .redirect
                .map(|a| one("redirect_http", a))
                .transpose()?,
        })
    }

    /// Gives up the sockets as descriptors recorded in `registry`, the
    /// public one first. A socket the registry has no slot for is closed
    /// (its listener then runs on the other cores only) and reported.
    pub fn hand_over(self, registry: &SocketRegistry) -> (Vec<ListenerFd>, Vec<String>) {
        let mut fds = Vec::with_capacity(3);
        let mut problems = Vec::new();
        let public = self.public.into_raw_fd();
        registry.register_listener(public);
        fds.push(ListenerFd {
            kind: Listener::Public,
            fd: public,
            registry_slot: None,
        });
        for (kind, socket) in [
            (Listener::Admin, self.admin),
            (Listener::Redirect, self.redirect),
        ] {
            let Some(socket) = socket else { continue };
            let fd = socket.into_raw_fd();
            match registry.register_other(fd) {
                Some(slot) => fds.push(ListenerFd {
                    kind,
                    fd,
                    registry_slot: Some(slot),
                }),
                None => {
                    // SAFETY: we own `fd` (just taken from its socket) and
                    // nobody else has seen it.
                    unsafe { libc::close(fd) };
                    problems.push(format!("no registry slot for the {kind:?} listener"));
                }
            }
        }
        (fds, problems)
    }
}
