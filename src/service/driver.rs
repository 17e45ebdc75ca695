//! The driver: everything a session owns that is a descriptor, and the
//! performing of the session's actions.
//!
//! A [`crate::proto::session::Session`] decides; this module reads the client
//! socket and the capture pipes into the loop's one buffer and hands the
//! bytes over, writes through the connection's queue, holds the target
//! namespaces until their programs have entered them, spawns, signals,
//! runs the proxied exchange's byte pump, and asks the shared discovery
//! work. Every read is bounded per turn ([`READS_PER_TURN`]); what is left
//! is handled again before the loop sleeps.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::{Instant, SystemTime};

use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::proto::session::{
    Action, Broken, Env, ExitStatus, Located, Out, ProxyFailure, ProxyStep, Session, Sig, Source,
};
use crate::service::conn::Conn;
use crate::service::lookup::{Delivery, Discovery};
use crate::service::netns::Netns;
use crate::service::nscache::{Found, Namespaces};
use crate::service::upstream::{Proxy, Step};

/// Reads of one descriptor per event before other connections get their
/// turn; with 64 KiB reads this is at most 1 MiB per turn.
pub const READS_PER_TURN: usize = 16;

/// Bits of a token that name the descriptor within its session.
const ROLE_BITS: usize = 8;

/// A session's descriptor as a `mio` token: the slab key and the
/// [`Source`] in one word (client 0, upstream 1, then target `i`'s stdout
/// `2 + 2i` and stderr `3 + 2i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tok {
    pub key: usize,
    pub src: Source,
}

impl Tok {
    pub fn new(key: usize, src: Source) -> Tok {
        Tok { key, src }
    }

    pub fn token(self) -> Token {
        let role = match self.src {
            Source::Client => 0,
            Source::Upstream => 1,
            Source::Stdout(i) => 2 + 2 * i,
            Source::Stderr(i) => 3 + 2 * i,
        };
        debug_assert!(role < 1 << ROLE_BITS);
        Token((self.key << ROLE_BITS) | role)
    }

    pub fn of(token: Token) -> Tok {
        let role = token.0 & ((1 << ROLE_BITS) - 1);
        let src = match role {
            0 => Source::Client,
            1 => Source::Upstream,
            r if r % 2 == 0 => Source::Stdout((r - 2) / 2),
            r => Source::Stderr((r - 3) / 2),
        };
        Tok {
            key: token.0 >> ROLE_BITS,
            src,
        }
    }
}

impl Out for Conn {
    fn pending(&self) -> usize {
        Conn::pending(self)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        Conn::send(self, bytes).map_err(broken)
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        Conn::send_slices(self, parts).map_err(broken)
    }

    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> Result<(), Broken> {
        Conn::send_parts(self, head, body).map_err(broken)
    }
}

fn broken(e: io::Error) -> Broken {
    Broken(e.to_string())
}

/// One target's descriptors: its namespace until its program has entered
/// it, then the program's pipes.
#[derive(Default)]
struct Target {
    netns: Option<Netns>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
}

/// A session's descriptors and the loop's bookkeeping for it.
pub struct Io {
    pub conn: Conn,
    targets: Vec<Target>,
    proxy: Option<Box<Proxy>>,
    /// Captures the loop counts for this session.
    pub counted: usize,
    /// The deadline last put in the loop's heap for this session.
    pub armed: Option<Instant>,
}

impl Io {
    /// Target `i`'s descriptors (made room for on first use).
    fn target(&mut self, i: usize) -> &mut Target {
        if self.targets.len() <= i {
            self.targets.resize_with(i + 1, Target::default);
        }
        &mut self.targets[i]
    }

    /// The descriptor slot of a capture pipe.
    fn pipe(&mut self, src: Source) -> Option<&mut Option<Receiver>> {
        match src {
            Source::Stdout(i) => self.targets.get_mut(i).map(|p| &mut p.stdout),
            Source::Stderr(i) => self.targets.get_mut(i).map(|p| &mut p.stderr),
            Source::Client | Source::Upstream => None,
        }
    }

    pub fn new(conn: Conn) -> Io {
        Io {
            conn,
            targets: Vec::new(),
            proxy: None,
            counted: 0,
            armed: None,
        }
    }
}

/// A slot of the loop's slab.
pub struct Entry {
    pub session: Session,
    pub io: Io,
}

/// What the driver uses of the loop while it handles one session.
pub struct World<'a> {
    pub registry: &'a Registry,
    pub cfg: &'a Config,
    pub policy: &'a crate::proto::auth::Policy,
    /// Capture program pid -> slab key, for SIGCHLD.
    pub children: &'a mut HashMap<i32, usize>,
    /// Descriptors with work left after their turn.
    pub again: &'a mut Vec<(Token, u64)>,
    /// The loop's one read buffer; nothing read stays in it across events.
    pub buf: &'a mut Vec<u8>,
    pub discovery: &'a mut Discovery,
    pub namespaces: &'a mut Namespaces,
    pub captures: usize,
    pub no_capture: Option<&'a str>,
    pub ambient: bool,
    pub own_netns: Option<u64>,
    pub now: Instant,
}

impl World<'_> {
    fn env(&self) -> Env<'_> {
        Env {
            now: self.now,
            wall: SystemTime::now,
            cfg: self.cfg,
            policy: self.policy,
            captures: self.captures,
            no_capture: self.no_capture,
            own_netns: self.own_netns,
            starttime: &crate::service::netns::process_starttime,
        }
    }
}

impl Entry {
    /// A readiness event for one of this session's descriptors.
    pub fn on_event(
        &mut self,
        w: &mut World,
        key: usize,
        src: Source,
        readable: bool,
        writable: bool,
    ) {
        match src {
            Source::Client => {
                if writable {
                    self.on_writable(w, key);
                }
                if readable && !self.session.finished() {
                    self.read_client(w, key);
                }
            }
            Source::Upstream => {
                let Some(p) = self.io.proxy.as_mut() else {
                    return;
                };
                let mut step = p.on_upstream(&mut self.io.conn, w.buf, readable, writable);
                if step == Step::Continue && p.client_paused && p.up_queue_low() {
                    step = p.on_client(&mut self.io.conn, w.buf);
                }
                self.proxy_step(w, key, step);
            }
            Source::Stdout(_) | Source::Stderr(_) => self.read_pipe(w, key, src),
        }
        self.perform(w, key);
    }

    pub fn on_timeout(&mut self, w: &mut World, key: usize) {
        let env = w.env();
        self.session.on_timeout(&env, &mut self.io.conn);
        self.perform(w, key);
    }

    pub fn on_delivery(&mut self, w: &mut World, key: usize, d: Delivery) {
        let env = w.env();
        match d {
            Delivery::Listing(l) => self.session.on_listing(&env, &mut self.io.conn, l),
            Delivery::Rescanned => self.session.on_rescanned(&env, &mut self.io.conn),
            Delivery::Address(a) => self.session.on_address(&env, &mut self.io.conn, a),
        }
        self.perform(w, key);
    }

    pub fn on_exit(&mut self, w: &mut World, key: usize, pid: u32, status: ExitStatus) {
        let env = w.env();
        self.session.on_exit(&env, &mut self.io.conn, pid, status);
        self.perform(w, key);
    }

    pub fn shutdown(&mut self, w: &mut World, key: usize) {
        let env = w.env();
        self.session.shutdown(&env, &mut self.io.conn);
        self.perform(w, key);
    }

    /// Whether the connection table may give this slot to a new connection.
    pub fn displaceable(&self) -> bool {
        self.session.displaceable(&self.io.conn)
    }

    pub fn displace(&mut self) {
        let _ = self.io.conn.sock.tcp().shutdown(std::net::Shutdown::Both);
        self.session.displace();
    }

    fn on_writable(&mut self, w: &mut World, key: usize) {
        if let Err(e) = self.io.conn.flush() {
            let env = w.env();
            return self
                .session
                .on_client_broke(&env, &mut self.io.conn, broken(e));
        }
        if let Some(p) = self.io.proxy.as_mut() {
            if p.up_paused && Conn::pending(&self.io.conn) <= crate::proto::session::LOW_WATER {
                let step = p.pump_upstream(&mut self.io.conn, w.buf);
                self.proxy_step(w, key, step);
            }
        }
        let env = w.env();
        self.session.on_writable(&env, &mut self.io.conn);
    }

    fn read_client(&mut self, w: &mut World, key: usize) {
        if self.session.proxying() {
            if let Some(p) = self.io.proxy.as_mut() {
                let step = p.on_client(&mut self.io.conn, w.buf);
                self.proxy_step(w, key, step);
            }
            return;
        }
        let mut buf = std::mem::take(w.buf);
        for reads in 0.. {
            if !self.session.may_read(Source::Client, &self.io.conn, w.now) {
                break;
            }
            if reads == READS_PER_TURN {
                w.again
                    .push((Tok::new(key, Source::Client).token(), self.session.id));
                break;
            }
            let r = match self.io.conn.sock.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r,
            };
            let env = w.env();
            match r {
                Ok(0) => {
                    self.session.on_client_eof(&env, &mut self.io.conn);
                    break;
                }
                Ok(n) => self
                    .session
                    .on_client_data(&env, &mut self.io.conn, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.session
                        .on_client_broke(&env, &mut self.io.conn, broken(e));
                    break;
                }
            }
            self.perform(w, key);
            if self.session.proxying() {
                break;
            }
        }
        *w.buf = buf;
    }

    /// Reads a capture program's stdout or stderr while the session wants
    /// it, at most [`READS_PER_TURN`] times.
    fn read_pipe(&mut self, w: &mut World, key: usize, src: Source) {
        let mut buf = std::mem::take(w.buf);
        for reads in 0.. {
            if !self.session.may_read(src, &self.io.conn, w.now) {
                break;
            }
            let Some(slot) = self.io.pipe(src) else {
                break;
            };
            let Some(pipe) = slot.as_mut() else {
                break;
            };
            if reads == READS_PER_TURN {
                w.again.push((Tok::new(key, src).token(), self.session.id));
                break;
            }
            let (n, end) = match pipe.read(&mut buf) {
                Ok(0) => (0, Some(None)),
                Ok(n) => (n, None),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => (0, Some(Some(e.to_string()))),
            };
            let ended = end.is_some();
            if ended {
                *slot = None;
            }
            let (env, conn) = (w.env(), &mut self.io.conn);
            match (src, end) {
                (Source::Stdout(i), None) => self.session.on_output(&env, conn, i, &mut buf[..n]),
                (Source::Stdout(i), Some(error)) => {
                    self.session.on_output_end(&env, conn, i, error)
                }
                (Source::Stderr(i), None) => self.session.on_stderr(&env, conn, i, Some(&buf[..n])),
                (Source::Stderr(i), Some(_)) => self.session.on_stderr(&env, conn, i, None),
                _ => {}
            }
            self.perform(w, key);
            if ended {
                break;
            }
        }
        *w.buf = buf;
    }

    /// Tells the session how the proxied exchange stands after a step.
    fn proxy_step(&mut self, w: &mut World, _key: usize, step: Step) {
        let Some(p) = self.io.proxy.as_mut() else {
            return;
        };
        let step = match step {
            Step::Continue => ProxyStep::Continue,
            Step::Done => ProxyStep::Done(std::mem::take(&mut p.pending)),
            Step::Close => ProxyStep::Close,
            Step::Fail(status, why) => ProxyStep::Fail(status, why),
            Step::MoreUpstream => ProxyStep::MoreUpstream,
            Step::MoreClient => ProxyStep::MoreClient,
        };
        let (answered, sent) = (p.answered(), p.request_sent());
        let env = w.env();
        self.session
            .on_proxy_step(&env, &mut self.io.conn, step, answered, sent);
    }

    /// Performs what the session asked for, answering at once where the
    /// answer is at hand, until it asks for nothing more.
    pub fn perform(&mut self, w: &mut World, key: usize) {
        let id = self.session.id;
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::WantListing => {
                    if let Some(l) = w.discovery.want_listing(w.registry, w.now, (key, id)) {
                        let env = w.env();
                        self.session.on_listing(&env, &mut self.io.conn, l);
                    }
                }
                Action::WantAddress => {
                    if let Some(a) = w.discovery.want_address(w.now, (key, id)) {
                        let env = w.env();
                        self.session.on_address(&env, &mut self.io.conn, a);
                    }
                }
                Action::Locate {
                    target,
                    netns,
                    pid,
                    asked_at,
                    links,
                } => {
                    let found = match w.namespaces.find(netns, pid, asked_at, w.now, (key, id)) {
                        Found::Held(ns) => {
                            let names = if links {
                                crate::service::netns::names_in(&ns.file).map_err(|e| e.to_string())
                            } else {
                                Ok(Default::default())
                            };
                            self.io.target(target).netns = Some(ns);
                            Located::Held { links: names }
                        }
                        Found::Missing(why) => Located::Missing(why),
                        Found::Wait => Located::Wait,
                    };
                    let env = w.env();
                    self.session
                        .on_located(&env, &mut self.io.conn, target, found);
                }
                Action::Spawn { target, args } => {
                    let spawned = self.spawn(w, key, target, &args);
                    let env = w.env();
                    self.session
                        .on_spawned(&env, &mut self.io.conn, target, spawned);
                }
                Action::Signal { pid, signal } => {
                    // Only a child not yet reaped is ours to signal.
                    if w.children.get(&(pid as i32)) == Some(&key) {
                        let sig = match signal {
                            Sig::Term => Signal::SIGTERM,
                            Sig::Kill => Signal::SIGKILL,
                        };
                        let _ = kill(Pid::from_raw(pid as i32), sig);
                    }
                }
                Action::Forget(src) => {
                    if let Some(slot) = self.io.pipe(src) {
                        *slot = None;
                    }
                }
                Action::Proxy {
                    addr,
                    head,
                    req,
                    leftover,
                } => self.start_proxy(w, key, addr, head, &req, leftover),
                Action::EndProxy => {
                    if let Some(mut p) = self.io.proxy.take() {
                        let _ = w.registry.deregister(&mut p.up);
                    }
                }
                Action::Resume(src) => w.again.push((Tok::new(key, src).token(), id)),
                Action::ShutdownWrite => self.io.conn.sock.shutdown_write(),
                Action::ReleaseNamespaces => {
                    for t in &mut self.io.targets {
                        t.netns = None;
                    }
                }
            }
        }
    }

    /// Starts target `target`'s program in its held namespace and watches
    /// its pipes: its pid and whether they are watched, or why it did not
    /// start.
    fn spawn(
        &mut self,
        w: &mut World,
        key: usize,
        target: usize,
        args: &[String],
    ) -> Result<(u32, Result<(), String>), String> {
        let Some(ns) = self.io.targets.get_mut(target).and_then(|t| t.netns.take()) else {
            return Err("its network namespace is not held".into());
        };
        let program = &w.cfg.capture_program;
        let mut spawned = crate::service::spawn::spawn(program, args, &ns.file, w.ambient)
            .map_err(|e| e.to_string())?;
        // The child has entered the namespace (spawn returns after exec).
        drop(ns);
        let pid = spawned.pid.as_raw();
        w.children.insert(pid, key);
        let watched = w
            .registry
            .register(
                &mut spawned.stdout,
                Tok::new(key, Source::Stdout(target)).token(),
                Interest::READABLE,
            )
            .and_then(|()| {
                w.registry.register(
                    &mut spawned.stderr,
                    Tok::new(key, Source::Stderr(target)).token(),
                    Interest::READABLE,
                )
            })
            .map_err(|e| e.to_string());
        let t = self.io.target(target);
        t.stdout = Some(spawned.stdout);
        t.stderr = Some(spawned.stderr);
        Ok((pid as u32, watched))
    }

    fn start_proxy(
        &mut self,
        w: &mut World,
        key: usize,
        addr: core::net::SocketAddr,
        head: Vec<u8>,
        req: &crate::proto::http::Request,
        leftover: Vec<u8>,
    ) {
        let failure = match Proxy::start(addr, head, req, leftover) {
            Ok(mut p) => match w.registry.register(
                &mut p.up,
                Tok::new(key, Source::Upstream).token(),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(()) => {
                    self.io.proxy = Some(Box::new(p));
                    let env = w.env();
                    return self.session.on_proxy_started(&env, req);
                }
                Err(e) => ProxyFailure::CannotWatch(e.to_string()),
            },
            Err(e) => match e.kind() {
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
                    ProxyFailure::Malformed(e.to_string())
                }
                _ => ProxyFailure::Unreachable(e.to_string()),
            },
        };
        let env = w.env();
        self.session
            .on_proxy_failed(&env, &mut self.io.conn, req, failure);
    }
}

/// A reaped child's status as the session reads it.
pub fn exit_status(status: &nix::sys::wait::WaitStatus) -> ExitStatus {
    use nix::sys::wait::WaitStatus as W;
    match *status {
        W::Exited(_, code) => ExitStatus::Exited(code),
        W::Signaled(_, sig, _) => ExitStatus::Signaled(sig as i32, sig.as_str()),
        _ => ExitStatus::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's slot in the loop's slab (session and descriptors):
    /// kept small, since the slab holds one per connection and grows by
    /// doubling.
    #[test]
    fn a_connections_slot_stays_small() {
        assert!(std::mem::size_of::<Entry>() <= 272);
    }

    #[test]
    fn tokens_round_trip_for_every_role_of_the_most_targets() {
        for key in [0, 1, 4095, (usize::MAX >> ROLE_BITS) - 8] {
            let mut srcs = vec![Source::Client, Source::Upstream];
            for i in 0..crate::proto::multi::MAX_TARGETS_LIMIT {
                srcs.push(Source::Stdout(i));
                srcs.push(Source::Stderr(i));
            }
            for src in srcs {
                let t = Tok::new(key, src);
                assert_eq!(Tok::of(t.token()), t, "{t:?}");
            }
        }
        let top = Tok::new(
            0,
            Source::Stderr(crate::proto::multi::MAX_TARGETS_LIMIT - 1),
        );
        assert!(top.token().0 < 1 << ROLE_BITS);
    }
}
