//! The poll loop: one thread, one `mio::Poll`, everything non-blocking.
//!
//! It owns the listener, a signalfd (SIGCHLD for reaping, SIGTERM/SIGINT for
//! shutdown, SIGHUP for reloading tokens and certificate), the slab of
//! sessions, the deadline heap, the pid map and the security settings for new
//! connections, and nothing else: it routes each event to the session its
//! token names and sleeps in `poll` until the next event or the nearest
//! deadline. What to do with bytes is the sessions' business. No file is
//! read in the loop: a SIGHUP reload runs on a helper thread (`reload`).
//!
//! Slab keys are reused, so sessions are removed only at the end of an event
//! batch: an event still queued for a finished session never reaches a new
//! one that takes its key within the same batch.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self, sockopt};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slab::Slab;

use crate::config::Config;
use crate::metrics;
use crate::proto::session::{Session, Source};
use crate::service::conn::Conn;
use crate::service::driver::{Entry, Io, Tok, World};
use crate::service::lookup::{Delivery, Discovery, Waiter};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Size of the loop's one read buffer: a full default pipe (64 KiB) per read.
const READ_BUF: usize = 64 * 1024;
/// Pause before accepting again after running out of descriptors, so a full
/// descriptor table does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// TCP keepalive: a peer silent this long is probed, every interval, this
/// many times, before its connection (and capture) is declared dead.
const KEEPALIVE_IDLE: u32 = 60;
const KEEPALIVE_INTERVAL: u32 = 10;
const KEEPALIVE_PROBES: u32 = 6;
/// Extra time, beyond the SIGTERM->SIGKILL deadline, that shutdown gives
/// clients to take their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// Deadlines: a binary heap of (when, key, session id), checked lazily
/// against the session's current deadline.
#[derive(Default)]
pub struct Timers {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    pub fn arm(&mut self, when: Instant, key: usize, id: u64) {
        self.heap.push(std::cmp::Reverse((when, key, id)));
    }

    /// The earliest deadline that `live` still holds (given when, key and
    /// session id); stale entries on top are dropped on the way, so the
    /// loop never wakes for a deadline a session has already cleared (an
    /// idle capture's spent head deadline, say).
    pub fn next_live(&mut self, live: impl Fn(Instant, usize, u64) -> bool) -> Option<Instant> {
        while let Some(&std::cmp::Reverse((when, key, id))) = self.heap.peek() {
            if live(when, key, id) {
                return Some(when);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns a deadline due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        match self.heap.peek() {
            Some(r) if r.0 .0 <= now => self.heap.pop().map(|r| (r.0 .1, r.0 .2)),
            _ => None,
        }
    }
}

pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: SignalFd,
    sessions: Slab<Entry>,
    timers: Timers,
    children: HashMap<i32, usize>,
    again: Vec<(Token, u64)>,
    buf: Vec<u8>,
    cfg: Config,
    discovery: Discovery,
    namespaces: crate::service::nscache::Namespaces,
    next_id: u64,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Keys that saw an event this batch; checked for removal at its end.
    touched: Vec<usize>,
    /// Captures running, one per target (each session's share in
    /// `Io::counted`).
    captures: usize,
    /// Sessions ended this batch to make room for new connections; still
    /// in the slab until the batch ends.
    displaced: usize,
    privileges: crate::service::privileges::Privileges,
    /// Why no capture can run, if so (from `privileges`).
    no_capture: Option<String>,
    /// The service's own network namespace, for self-exclusion.
    own_netns: Option<u64>,
    /// Tokens, origins and TLS config for new connections; SIGHUP reloads.
    security: crate::service::security::Security,
    /// SIGHUP's reload, read on a helper thread (see `reload`).
    reloader: crate::service::reload::Reloader,
}

/// Builds the driver's [`World`] from the reactor's fields, leaving
/// `sessions` free to be borrowed beside it.
macro_rules! world {
    ($r:expr, $now:expr) => {
        World {
            registry: $r.poll.registry(),
            cfg: &$r.cfg,
            policy: &$r.security.policy,
            children: &mut $r.children,
            again: &mut $r.again,
            buf: &mut $r.buf,
            discovery: &mut $r.discovery,
            namespaces: &mut $r.namespaces,
            captures: $r.captures,
            no_capture: $r.no_capture.as_deref(),
            ambient: $r.privileges.ambient,
            own_netns: $r.own_netns,
            now: $now,
        }
    };
}

impl Reactor {
    /// Sets up the loop around a bound listener. Blocks SIGCHLD, SIGTERM,
    /// SIGINT and SIGHUP for this thread so they arrive through the signalfd
    /// only. Loads tokens and certificate; failing that, it fails.
    pub fn new(cfg: Config, listener: std::net::TcpListener) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(mio::Waker::new(
            poll.registry(),
            crate::service::lookup::WAKE,
        )?);
        let reloader = crate::service::reload::Reloader::new(cfg.clone(), waker.clone());
        let discovery = Discovery::new(
            &cfg.discovery_service,
            cfg.gw_port,
            cfg.discovery_timeout,
            waker,
        );
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        let security = crate::service::security::Security::load(&cfg).map_err(io::Error::other)?;
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_fd().as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let privileges = crate::service::privileges::init();
        if let Some(why) = privileges.refusal() {
            warn!("{why}: every capture will be refused");
        } else if privileges.ambient {
            info!("not root: capture programs get CAP_NET_ADMIN and CAP_NET_RAW as ambient capabilities");
        }
        Ok(Reactor {
            poll,
            listener: Some(listener),
            signals,
            sessions: Slab::new(),
            timers: Timers::default(),
            children: HashMap::new(),
            again: Vec::new(),
            buf: vec![0; READ_BUF],
            cfg,
            discovery,
            namespaces: Default::default(),
            next_id: 1,
            accept_paused_until: None,
            shutdown_deadline: None,
            touched: Vec::new(),
            captures: 0,
            displaced: 0,
            no_capture: privileges.refusal(),
            privileges,
            own_netns: crate::service::netns::inode_of(std::path::Path::new("/proc/self/ns/net")),
            security,
            reloader,
        })
    }

    /// The discovery service as start-up reports it.
    pub fn discovery_service(&self) -> String {
        self.discovery.describe()
    }

    /// Runs until shutdown has ended every session and reaped every child.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<(Token, bool, bool)> = Vec::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            ready.clear();
            ready.extend(events.iter().map(|e| {
                let readable = e.is_readable() || e.is_read_closed() || e.is_error();
                (e.token(), readable, e.is_writable() || e.is_write_closed())
            }));
            for &(tok, readable, writable) in &ready {
                match tok {
                    LISTENER => self.accept(now),
                    SIGNALS => self.on_signals(now),
                    crate::service::lookup::WAKE => {
                        let d = self.discovery.on_wake(self.poll.registry(), now);
                        self.deliver(d, now);
                        if let Some(outcome) = self.reloader.take() {
                            self.reloaded(outcome);
                        }
                    }
                    crate::service::lookup::CALL => self.on_discovery_call(now),
                    _ => self.dispatch(tok, None, readable, writable, now),
                }
            }
            for (tok, id) in std::mem::take(&mut self.again) {
                if tok == crate::service::lookup::CALL {
                    self.on_discovery_call(now);
                } else {
                    self.dispatch(tok, Some(id), true, false, now);
                }
            }
            self.fire_timers(now);
            self.remove_finished();
            if self.shutdown_deadline.is_some() {
                if self.sessions.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.shutdown_deadline.is_some_and(|d| d <= now) {
                    self.kill_all();
                    return Ok(());
                }
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let sessions = &self.sessions;
        let timer = self.timers.next_live(|when, key, id| {
            sessions
                .get(key)
                .is_some_and(|e| e.session.id == id && e.session.poll_timeout() == Some(when))
        });
        [
            timer,
            self.accept_paused_until,
            self.shutdown_deadline,
            self.discovery.deadline(),
            self.namespaces.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn dispatch(
        &mut self,
        tok: Token,
        id: Option<u64>,
        readable: bool,
        writable: bool,
        now: Instant,
    ) {
        let Tok { key, src } = Tok::of(tok);
        let Some(entry) = self.sessions.get_mut(key) else {
            return;
        };
        if id.is_some_and(|id| id != entry.session.id) || entry.session.finished() {
            return;
        }
        let mut w = world!(self, now);
        entry.on_event(&mut w, key, src, readable, writable);
        self.settle(key, false);
    }

    fn fire_timers(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept(now);
        }
        if self.discovery.deadline().is_some_and(|t| t <= now) {
            let d = self.discovery.on_timer(self.poll.registry(), now);
            self.deliver(d, now);
        }
        if self.namespaces.deadline().is_some_and(|t| t <= now) {
            let waiters = self.namespaces.on_timer(now);
            self.deliver(
                waiters
                    .into_iter()
                    .map(|w| (w, Delivery::Rescanned))
                    .collect(),
                now,
            );
        }
        while let Some((key, id)) = self.timers.pop_due(now) {
            let Some(entry) = self.sessions.get_mut(key) else {
                continue;
            };
            // Stale heap entries (deadline moved or session replaced) are
            // skipped here rather than searched for when re-armed.
            if entry.session.id != id || entry.session.poll_timeout().is_none_or(|d| d > now) {
                continue;
            }
            let mut w = world!(self, now);
            entry.on_timeout(&mut w, key);
            self.settle(key, true);
        }
    }

    /// The shared discovery exchange's socket is ready (or has data left
    /// from its last turn).
    fn on_discovery_call(&mut self, now: Instant) {
        let d = self.discovery.on_call_ready(self.poll.registry(), now);
        if self.discovery.call_has_more() {
            self.again.push((crate::service::lookup::CALL, 0));
        }
        self.deliver(d, now);
    }

    /// Hands the shared discovery work's results to the sessions waiting for
    /// them; a session that ended or moved on meanwhile ignores its own.
    fn deliver(&mut self, deliveries: Vec<(Waiter, Delivery)>, now: Instant) {
        for ((key, id), delivery) in deliveries {
            let Some(entry) = self.sessions.get_mut(key) else {
                continue;
            };
            if entry.session.id != id {
                continue;
            }
            let mut w = world!(self, now);
            entry.on_delivery(&mut w, key, delivery);
            self.settle(key, false);
        }
    }

    /// After a session handled an event: its key is checked for removal at
    /// the batch's end, the count of running captures follows its phase
    /// (one per target), and its deadline is in the heap. `fired`: its
    /// deadline just left the heap.
    fn settle(&mut self, key: usize, fired: bool) {
        self.touched.push(key);
        let Some(e) = self.sessions.get_mut(key) else {
            return;
        };
        let weight = e.session.capture_weight();
        if weight != e.io.counted {
            self.captures = self.captures + weight - e.io.counted;
            e.io.counted = weight;
            metrics::CAPTURES_RUNNING.set(self.captures as i64);
        }
        if fired {
            e.io.armed = None;
        }
        let due = e.session.poll_timeout();
        if due != e.io.armed {
            if let Some(when) = due {
                self.timers.arm(when, key, e.session.id);
            }
            e.io.armed = due;
        }
    }

    fn remove_finished(&mut self) {
        self.displaced = 0;
        for key in std::mem::take(&mut self.touched) {
            if self.sessions.get(key).is_some_and(|e| e.session.finished()) {
                let mut e = self.sessions.remove(key);
                metrics::CONNECTIONS_OPEN.dec();
                self.captures -= e.io.counted;
                metrics::CAPTURES_RUNNING.set(self.captures as i64);
                let _ = self.poll.registry().deregister(e.io.conn.sock.tcp());
                debug!("[c{}] connection closed", e.session.id);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut sock, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    match e.raw_os_error() {
                        Some(
                            nix::libc::EMFILE
                            | nix::libc::ENFILE
                            | nix::libc::ENOBUFS
                            | nix::libc::ENOMEM,
                        ) => {
                            warn!("cannot accept connections: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                            self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                            return;
                        }
                        // The connection died in the backlog: next one.
                        _ => continue,
                    }
                }
            };
            if self.sessions.len() - self.displaced >= self.cfg.max_connections
                && !self.displace_oldest_idle()
            {
                // A TLS client could not read a plaintext 503: it gets the
                // close alone.
                if self.security.tls.is_none() {
                    refuse_connection(sock, peer, self.cfg.max_connections);
                } else {
                    warn!(
                        "refusing TLS connection from {peer}: {} connections are open, the limit",
                        self.cfg.max_connections
                    );
                }
                continue;
            }
            tune_client_socket(&sock);
            let entry = self.sessions.vacant_entry();
            let key = entry.key();
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Tok::new(key, Source::Client).token(),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("[c{id}] cannot watch connection from {peer}: {e}");
                continue;
            }
            let transport = match &self.security.tls {
                None => crate::service::tls::Transport::Plain(sock),
                Some(config) => match crate::service::tls::Transport::tls(sock, config.clone()) {
                    Ok(t) => t,
                    Err(e) => {
                        warn!("[c{id}] cannot start TLS with {peer}: {e}");
                        continue;
                    }
                },
            };
            debug!("[c{id}] connection from {peer}");
            let local = transport.local_addr().unwrap_or(peer);
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
    fn displace_oldest_idle(&mut self) -> bool {
        let oldest = self
            .sessions
            .iter()
            .filter(|(_, e)| !e.session.finished() && e.displaceable())
            .min_by_key(|(_, e)| e.session.id)
            .map(|(k, _)| k);
        let Some(key) = oldest else {
            return false;
        };
        if let Some(e) = self.sessions.get_mut(key) {
            e.displace();
        }
        // Removed at the end of the batch, like every finished session; it
        // no longer counts against the limit meanwhile.
        self.touched.push(key);
        self.displaced += 1;
        true
    }

    fn on_signals(&mut self, now: Instant) {
        let mut reap = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => reap = true,
                    Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => self.begin_shutdown(sig, now),
                    Ok(Signal::SIGHUP) => self.reload(),
                    _ => {}
                },
                Ok(None) => break,
                Err(e) => {
                    warn!("reading the signalfd failed: {e}");
                    break;
                }
            }
        }
        // SIGCHLDs coalesce: one may stand for several exits, so reap all.
        if reap {
            self.reap(now);
        }
    }

    /// SIGHUP: new tokens and certificate for new connections, read on the
    /// reload thread (the loop serves on meanwhile); running sessions keep
    /// what they started with.
    fn reload(&mut self) {
        if let Err(e) = self.reloader.request() {
            warn!("SIGHUP: reload failed, keeping the previous tokens and certificate: {e}");
        }
    }

    /// The reload thread is done. A failed load changes nothing.
    fn reloaded(&mut self, outcome: crate::service::reload::Outcome) {
        match outcome {
            Ok(s) => {
                info!("SIGHUP: reloaded: {}", s.describe());
                self.security = s;
            }
            Err(e) => {
                warn!("SIGHUP: reload failed, keeping the previous tokens and certificate: {e}")
            }
        }
    }

    fn reap(&mut self, now: Instant) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else {
                continue;
            };
            let Some(key) = self.children.remove(&pid.as_raw()) else {
                debug!("reaped unknown child {pid}: {status:?}");
                continue;
            };
            metrics::exited(metrics::Exit::of(&status));
            if let Some(entry) = self.sessions.get_mut(key) {
                let mut w = world!(self, now);
                let status = crate::service::driver::exit_status(&status);
                entry.on_exit(&mut w, key, pid.as_raw() as u32, status);
                self.settle(key, false);
            }
        }
    }

    fn begin_shutdown(&mut self, sig: Signal, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "{sig} received: shutting down ({} connections, {} capture programs)",
            self.sessions.len(),
            self.children.len()
        );
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_paused_until = None;
        self.shutdown_deadline = Some(now + self.cfg.term_timeout + SHUTDOWN_GRACE);
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(entry) = self.sessions.get_mut(key) {
                let mut w = world!(self, now);
                entry.shutdown(&mut w, key);
                self.settle(key, false);
            }
        }
    }

    /// Last resort at the shutdown deadline: SIGKILL and reap every child.
    fn kill_all(&mut self) {
        warn!(
            "shutdown deadline passed: killing {} capture programs",
            self.children.len()
        );
        for &pid in self.children.keys() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for (pid, _) in self.children.drain() {
            // SIGKILL cannot be ignored; the loop is over, so waiting is fine.
            let _ = waitpid(Pid::from_raw(pid), None);
        }
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
