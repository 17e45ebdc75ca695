//! Who gets a connection slot: the listener, accepting until it would
//! block, the connection limit (`--max-connections`) with displacement of
//! the oldest idle connection, the 503 for everyone else, the pause after
//! running out of descriptors, and each new socket's tuning and transport
//! (plain or TLS).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{self, sockopt};

use super::Reactor;
use crate::metrics;
use crate::proto::session::{Session, Source};
use crate::service::conn::Conn;
use crate::service::driver::{Entry, Io, Tok};

/// Pause before accepting again after running out of descriptors, so a full
/// descriptor table does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// TCP keepalive: a peer silent this long is probed, every interval, this
/// many times, before its connection (and capture) is declared dead.
const KEEPALIVE_IDLE: u32 = 60;
const KEEPALIVE_INTERVAL: u32 = 10;
const KEEPALIVE_PROBES: u32 = 6;

/// Binds `addr:port` when an address is given (`--listen`), else
/// `[::]:port` dual-stack as [`bind`] does.
pub fn bind_on(addr: Option<std::net::IpAddr>, port: u16) -> io::Result<std::net::TcpListener> {
    let Some(ip) = addr else {
        return bind(port);
    };
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, port))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Binds `[::]:port` dual-stack (IPv4 clients as mapped addresses), falling
/// back to `0.0.0.0:port` on hosts without IPv6.
pub fn bind(port: u16) -> io::Result<std::net::TcpListener> {
    use socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6};
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd: OwnedFd = match socket::socket(AddressFamily::Inet6, SockType::Stream, flags, None) {
        Ok(fd) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            let any = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(any))?;
            fd
        }
        Err(_) => {
            let fd = socket::socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port);
            socket::bind(fd.as_raw_fd(), &SockaddrIn::from(any))?;
            fd
        }
    };
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

/// The listener and what accepting remembers between events.
pub(super) struct Front {
    listener: Option<TcpListener>,
    paused_until: Option<Instant>,
    next_id: u64,
    /// Sessions ended this batch to make room for new connections; still
    /// in the slab until the batch ends.
    displaced: usize,
}

impl Front {
    pub fn new(
        listener: std::net::TcpListener,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Front> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Front {
            listener: Some(listener),
            paused_until: None,
            next_id: 1,
            displaced: 0,
        })
    }

    /// When accepting resumes after running out of descriptors.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    pub fn resume(&mut self) {
        self.paused_until = None;
    }

    /// The batch is over: displaced sessions have left the slab.
    pub fn batch_done(&mut self) {
        self.displaced = 0;
    }

    /// Stops accepting for good (shutdown).
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
        self.paused_until = None;
    }
}

impl Reactor {
    /// Accepts every waiting connection the limits allow.
    pub(super) fn accept(&mut self, now: Instant) {
        if self.front.paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.front.listener.as_ref() else {
                return;
            };
            let (mut sock, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => match e.raw_os_error() {
                    Some(
                        nix::libc::EMFILE
                        | nix::libc::ENFILE
                        | nix::libc::ENOBUFS
                        | nix::libc::ENOMEM,
                    ) => {
                        warn!("cannot accept connections: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                        self.front.paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                    // The connection died in the backlog: next one.
                    _ => continue,
                },
            };
            let max = self.settings.cfg.max_connections;
            if self.sessions.len() - self.front.displaced >= max && !self.displace_oldest_idle(now)
            {
                // A TLS client could not read a plaintext 503: it gets the
                // close alone.
                if self.settings.security.tls.is_none() {
                    refuse_connection(sock, peer, max);
                } else {
                    warn!(
                        "refusing TLS connection from {peer}: {max} connections are open, the limit"
                    );
                }
                continue;
            }
            let tls = self.settings.security.tls.is_some();
            if tls && !self.shared.handshakes.admit(peer.ip()) {
                // Closed before any handshake work (see `handshake`).
                debug!(
                    "refusing TLS connection from {peer}: {} connections are in their handshake",
                    self.shared.handshakes.in_handshake()
                );
                continue;
            }
            tune_client_socket(&sock);
            let entry = self.sessions.vacant_entry();
            let key = entry.key();
            let id = self.front.next_id;
            self.front.next_id += 1;
            let registered = self.poll.registry().register(
                &mut sock,
                Tok::new(key, Source::Client).token(),
                Interest::READABLE | Interest::WRITABLE,
            );
            let transport = registered
                .map_err(|e| format!("cannot watch connection from {peer}: {e}"))
                .and_then(|()| match &self.settings.security.tls {
                    None => Ok(crate::service::tls::Transport::Plain(sock)),
                    Some(config) => crate::service::tls::Transport::tls(sock, config.clone())
                        .map_err(|e| format!("cannot start TLS with {peer}: {e}")),
                });
            let transport = match transport {
                Ok(t) => t,
                Err(why) => {
                    warn!("[c{id}] {why}");
                    if tls {
                        self.shared.handshakes.done(peer.ip());
                    }
                    continue;
                }
            };
            debug!("[c{id}] connection from {peer}");
            let local = transport.local_addr().unwrap_or(peer);
            let mut transport = transport;
            transport.set_counted(tls.then_some(peer.ip()));
            entry.insert(Entry {
                session: Session::new(id, peer, local, now),
                io: Io::new(Conn::over(transport)),
            });
            self.settle(key, false);
            metrics::CONNECTIONS_OPEN.inc();
        }
    }

    /// The table is full: ends the oldest connection still waiting for a
    /// request head, so idle connections cannot lock every client out (as
    /// nginx and HAProxy do). False if every connection is doing work. The
    /// scan is linear in the table, which is bounded by
    /// `--max-connections`, and happens only when the table is full.
    fn displace_oldest_idle(&mut self, now: Instant) -> bool {
        let oldest = self
            .sessions
            .iter()
            .filter(|(_, e)| !e.session.finished() && e.displaceable())
            .min_by_key(|(_, e)| e.session.id)
            .map(|(k, _)| k);
        let Some(key) = oldest else {
            return false;
        };
        let (mut cx, sessions) = self.ctx(now);
        if let Some(e) = sessions.get_mut(key) {
            e.displace(&mut cx, key);
        }
        // Removed at the end of the batch, like every finished session; it
        // no longer counts against the limit meanwhile.
        self.touched.push(key);
        self.front.displaced += 1;
        true
    }
}

/// Over the connection limit: a best-effort 503 and close, without a
/// session (the socket buffer takes these few bytes; if not, the close says
/// enough).
fn refuse_connection(mut sock: mio::net::TcpStream, peer: SocketAddr, max: usize) {
    use std::io::Write;
    warn!("refusing connection from {peer}: {max} connections are open, the limit");
    let text = format!("this service has its maximum of {max} connections open; try again later");
    let resp = crate::proto::http::response(
        503,
        &[("Retry-After", "5")],
        "text/plain; charset=utf-8",
        format!("{text}\n").as_bytes(),
        true,
    );
    let _ = sock.write(&resp);
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

fn tune_client_socket(sock: &mio::net::TcpStream) {
    // Captures are latency work: never hold a small frame back.
    let _ = sock.set_nodelay(true);
    // Dead peers (cable pulled, host gone) end their captures eventually.
    let _ = socket::setsockopt(sock, sockopt::KeepAlive, &true);
    let _ = socket::setsockopt(sock, sockopt::TcpKeepIdle, &KEEPALIVE_IDLE);
    let _ = socket::setsockopt(sock, sockopt::TcpKeepInterval, &KEEPALIVE_INTERVAL);
    let _ = socket::setsockopt(sock, sockopt::TcpKeepCount, &KEEPALIVE_PROBES);
}
