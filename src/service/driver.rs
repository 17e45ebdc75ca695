//! The driver: everything a session owns that is a descriptor, and the
//! [`Host`] its machine is given over the operating system.
//!
//! A [`crate::proto::session::Session`] decides; [`OsHost`] answers what it
//! asks on the spot (a namespace found and held with its interfaces, a
//! capture program started in it, a process's start time, the next read of
//! a socket or pipe) and does what it says (signal, resume, forget, shut
//! down, count). The loop hands this module readiness and later events
//! (timeouts, discovery deliveries, exits, shutdown); it turns readiness
//! into the machine's read pump ([`Session::pump`]) and the rest into
//! [`Event`]s. The machine's decisions never live here.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::time::{Instant, SystemTime};

use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::metrics;
use crate::proto::session::{
    host::ProxyFailure, Broken, Count, Env, Event, ExitStatus, Host, Listing, Locate, Located, Out,
    Read, Session, Sig, Source, Spec, StartError, Started,
};
use crate::service::conn::Conn;
use crate::service::engine::{Engine, OpenError, OpenRequest};
use crate::service::lookup::Discovery;
use crate::service::native::{Mode, Native, Switch};
use crate::service::netns::Netns;
use crate::service::nscache::{Found, Namespaces};
use crate::service::upstream::Upstream;

/// Bits of a token that name the descriptor within its session.
const ROLE_BITS: usize = 8;

/// A session's descriptor as a `mio` token: the slab key and the
/// [`Source`] in one word (client 0, upstream 1, then target `i`'s output
/// `2 + 2i` and diagnostics `3 + 2i`).
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
            Source::Output(i) => 2 + 2 * i,
            Source::Diag(i) => 3 + 2 * i,
        };
        debug_assert!(role < 1 << ROLE_BITS);
        Token((self.key << ROLE_BITS) | role)
    }

    pub fn of(token: Token) -> Tok {
        let role = token.0 & ((1 << ROLE_BITS) - 1);
        let src = match role {
            0 => Source::Client,
            1 => Source::Upstream,
            r if r % 2 == 0 => Source::Output((r - 2) / 2),
            r => Source::Diag((r - 3) / 2),
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
        Conn::send(self, bytes).map_err(Broken)
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        Conn::send_slices(self, parts).map_err(Broken)
    }

    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> Result<(), Broken> {
        Conn::send_parts(self, head, body).map_err(Broken)
    }
}

/// One target's descriptors: its namespace until its source has started
/// in it, then the program's pid and pipes.
#[derive(Default)]
struct Target {
    netns: Option<Netns>,
    source: Src,
}

/// A target's source as the driver holds it.
#[derive(Default)]
enum Src {
    #[default]
    None,
    /// A capture program: its pid and pipes (a pipe is `None` once it ended
    /// or was let go).
    Program {
        pid: u32,
        stdout: Option<Receiver>,
        stderr: Option<Receiver>,
    },
    /// A source of the native engine.
    Native(Box<Native>),
}

impl Target {
    fn native(&mut self) -> Option<&mut Native> {
        match &mut self.source {
            Src::Native(n) => Some(n),
            _ => None,
        }
    }

    fn is_native(&self) -> bool {
        matches!(self.source, Src::Native(_))
    }

    fn pid(&self) -> Option<u32> {
        match self.source {
            Src::Program { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

/// A session's descriptors and the loop's bookkeeping for it.
pub struct Io {
    pub conn: Conn,
    targets: Vec<Target>,
    upstream: Option<Box<Upstream>>,
    /// Captures the loop counts for this session.
    pub counted: usize,
    /// The deadline last put in the loop's heap for this session.
    pub armed: Option<Instant>,
}

impl Io {
    pub fn new(conn: Conn) -> Io {
        Io {
            conn,
            targets: Vec::new(),
            upstream: None,
            counted: 0,
            armed: None,
        }
    }

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
            Source::Output(i) => match &mut self.targets.get_mut(i)?.source {
                Src::Program { stdout, .. } => Some(stdout),
                _ => None,
            },
            Source::Diag(i) => match &mut self.targets.get_mut(i)?.source {
                Src::Program { stderr, .. } => Some(stderr),
                _ => None,
            },
            Source::Client | Source::Upstream => None,
        }
    }
}

/// What every session sees and none changes during an event: the
/// configuration and the settings the loop keeps for them.
pub struct Settings {
    pub cfg: Config,
    /// Tokens, origins and TLS for new connections; SIGHUP reloads.
    pub security: crate::service::security::Security,
    /// Capture programs get CAP_NET_ADMIN and CAP_NET_RAW as ambient
    /// capabilities (a non-root service).
    pub ambient: bool,
    /// Why no capture can run (privileges), if so.
    pub no_capture: Option<String>,
    /// The service's own network namespace, for self-exclusion.
    pub own_netns: Option<u64>,
}

impl Settings {
    /// One event's environment for the machine.
    pub fn env(&self, now: Instant, captures: usize) -> Env<'_> {
        Env {
            now,
            wall: SystemTime::now,
            cfg: &self.cfg,
            policy: &self.security.policy,
            captures,
            no_capture: self.no_capture.as_deref(),
            own_netns: self.own_netns,
        }
    }
}

/// What sessions share and change: the loop's pid map, its "read again"
/// list, the discovery work and the namespace lookups.
pub struct Shared {
    /// Capture program pid -> slab key, for SIGCHLD.
    pub children: HashMap<i32, usize>,
    /// Descriptors with work left after their turn (token, session id).
    pub again: Vec<(Token, u64)>,
    pub discovery: Discovery,
    pub namespaces: Namespaces,
    /// TLS handshakes in progress and this turn's handshake work.
    pub handshakes: crate::service::handshake::Gate,
    /// Recent wrong tokens, per address.
    pub throttle: crate::proto::throttle::Throttle,
    /// The native capture engine (`--capture-engine native`).
    pub engine: Option<Engine>,
    /// Opens handed to the engine: ticket -> (slab key, session id, target).
    pub opening: HashMap<u64, (usize, u64, usize)>,
    /// Captures opened whose rings are being set up: ticket -> (slab key,
    /// session id, target). One per capture at most, removed when its
    /// rings come (they come for every capture opened).
    pub ringing: HashMap<u64, (usize, u64, usize)>,
    pub next_ticket: u64,
    /// Native sources read on the sweep timer: (slab key, session id,
    /// target).
    pub swept: Vec<(usize, u64, usize)>,
    /// Native sources with an interface down, read again every
    /// `native::RECHECK` until it is up or gone: (slab key, session id,
    /// target).
    pub rechecks: Vec<(usize, u64, usize)>,
}

impl Shared {
    /// Follows a native source's change of mode on the sweep list.
    fn switched(&mut self, switch: Switch, who: (usize, u64, usize)) {
        match switch {
            Switch::Stay => {}
            Switch::ToSwept => {
                if !self.swept.contains(&who) {
                    self.swept.push(who);
                }
            }
            Switch::ToImmediate | Switch::Gone => self.swept.retain(|w| *w != who),
        }
    }

    /// Follows whether a native source must be read again on the slow
    /// recheck timer.
    fn recheck(&mut self, needed: bool, who: (usize, u64, usize)) {
        let listed = self.rechecks.contains(&who);
        if needed && !listed {
            self.rechecks.push(who);
        } else if !needed && listed {
            self.rechecks.retain(|w| *w != who);
        }
    }
}

/// What the driver uses of the loop while it handles one session's event.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub settings: &'a Settings,
    pub shared: &'a mut Shared,
    /// The loop's one read buffer; nothing read stays in it across events.
    pub buf: &'a mut [u8],
    /// Captures running now (one per target).
    pub captures: usize,
    pub now: Instant,
}

/// A slot of the loop's slab.
pub struct Entry {
    pub session: Session,
    pub io: Io,
}

impl Entry {
    /// A readiness event for one of this session's descriptors.
    pub fn on_ready(
        &mut self,
        cx: &mut Ctx,
        key: usize,
        src: Source,
        readable: bool,
        writable: bool,
    ) {
        let env = cx.settings.env(cx.now, cx.captures);
        let Ctx {
            registry,
            settings,
            shared,
            buf,
            now,
            ..
        } = cx;
        let (session, mut host) = self.host(shared, settings, registry, key, *now);
        match src {
            Source::Client => {
                if writable {
                    let ev = match host.io.conn.flush() {
                        Ok(_) => Event::Writable,
                        Err(e) => Event::ClientBroke(Broken(e)),
                    };
                    session.on(&env, &mut host, ev);
                }
                if readable {
                    session.pump(&env, &mut host, src, buf);
                }
            }
            Source::Upstream => {
                let Some(up) = host.io.upstream.as_mut() else {
                    return;
                };
                match up.on_ready() {
                    Ok(false) => {}
                    Ok(true) => {
                        session.on(&env, &mut host, Event::UpstreamReady);
                        session.pump(&env, &mut host, src, buf);
                    }
                    Err(e) => session.on(&env, &mut host, Event::UpstreamFailed(e)),
                }
            }
            Source::Output(i) => {
                // A watched native source whose client is not keeping up
                // waits on the sweep instead of waking the loop per packet.
                let waits = host.io.targets.get(i).is_some_and(
                    |t| matches!(&t.source, Src::Native(n) if n.mode() == Mode::Immediate),
                ) && !session.may_read(src, &host, *now);
                if waits {
                    host.native_paused(i);
                } else {
                    session.pump(&env, &mut host, src, buf);
                }
            }
            Source::Diag(_) => session.pump(&env, &mut host, src, cx.buf),
        }
    }

    /// The engine opened target `target`'s rings (or could not).
    pub fn opened(
        &mut self,
        cx: &mut Ctx,
        key: usize,
        target: usize,
        result: Result<crate::service::engine::Capture, OpenError>,
    ) {
        let Some(n) = self.io.targets.get_mut(target).and_then(Target::native) else {
            if let (Ok(c), Some(engine)) = (result, cx.shared.engine.as_ref()) {
                engine.close(c);
            }
            return;
        };
        let watched = n.opened(result, cx.registry);
        // The stream's head (or the end) is read now.
        self.native_changed(cx, key, target, watched);
    }

    /// The engine set up target `target`'s rings: the capture takes them
    /// over (or, if it is over, they go to the closers).
    pub fn rings(
        &mut self,
        cx: &mut Ctx,
        key: usize,
        target: usize,
        rings: crate::service::engine::Rings,
    ) {
        let Some(n) = self.io.targets.get_mut(target).and_then(Target::native) else {
            if let Some(engine) = cx.shared.engine.as_ref() {
                engine.close(rings);
            }
            return;
        };
        let watched = n.rings(rings, cx.registry);
        // What the live sockets still hold, then the rings, is read now.
        self.native_changed(cx, key, target, watched);
    }

    /// After the engine's answer for target `target`: a capture whose
    /// sockets cannot be watched is read on the sweep; either way it is
    /// read now.
    fn native_changed(&mut self, cx: &mut Ctx, key: usize, target: usize, watched: io::Result<()>) {
        let id = self.session.id;
        if let Err(e) = watched {
            log::warn!("[c{id}] cannot watch the capture's rings ({e}); reading them on the sweep");
            if let Some(n) = self.io.targets.get_mut(target).and_then(Target::native) {
                let switch = n.pause(cx.registry);
                cx.shared.switched(switch, (key, id, target));
            }
        }
        cx.shared
            .again
            .push((Tok::new(key, Source::Output(target)).token(), id));
    }

    /// An event that is not readiness (a deadline, a delivery, an exit,
    /// shutdown, displacement).
    pub fn on_event(&mut self, cx: &mut Ctx, key: usize, ev: Event) {
        let env = cx.settings.env(cx.now, cx.captures);
        let (session, mut host) = self.host(cx.shared, cx.settings, cx.registry, key, cx.now);
        session.on(&env, &mut host, ev);
    }

    /// The session and the host over this slot's descriptors for one event.
    fn host<'a>(
        &'a mut self,
        shared: &'a mut Shared,
        settings: &'a Settings,
        registry: &'a Registry,
        key: usize,
        now: Instant,
    ) -> (&'a mut Session, OsHost<'a>) {
        let host = OsHost {
            io: &mut self.io,
            shared,
            settings,
            registry,
            key,
            id: self.session.id,
            now,
        };
        (&mut self.session, host)
    }

    /// The target whose program has `pid`, if it is this session's.
    pub fn target_of(&self, pid: u32) -> Option<usize> {
        self.io.targets.iter().position(|t| t.pid() == Some(pid))
    }

    /// Whether the connection table may give this slot to a new connection.
    pub fn displaceable(&self) -> bool {
        self.session.displaceable(self.io.conn.pending())
    }

    /// Gives the slot up to a new connection.
    pub fn displace(&mut self, cx: &mut Ctx, key: usize) {
        let _ = self.io.conn.sock.tcp().shutdown(std::net::Shutdown::Both);
        self.on_event(cx, key, Event::Displaced);
    }
}

/// The [`Host`] over the operating system for one event of one session.
pub struct OsHost<'a> {
    io: &'a mut Io,
    shared: &'a mut Shared,
    settings: &'a Settings,
    registry: &'a Registry,
    key: usize,
    id: u64,
    now: Instant,
}

impl Out for OsHost<'_> {
    fn pending(&self) -> usize {
        self.io.conn.pending()
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        Out::send(&mut self.io.conn, bytes)
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        Out::send_slices(&mut self.io.conn, parts)
    }

    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> Result<(), Broken> {
        Out::send_parts(&mut self.io.conn, head, body)
    }
}

impl OsHost<'_> {
    /// One read of target `i`'s native source; its change of mode goes on
    /// the sweep list.
    fn read_native(&mut self, i: usize, buf: &mut [u8]) -> Read {
        let Some(n) = self.io.targets.get_mut(i).and_then(Target::native) else {
            return Read::WouldBlock;
        };
        let (read, switch) = n.read(buf, self.registry, self.now);
        if switch == Switch::Gone && n.dropped > 0 {
            metrics::kernel_dropped(metrics::Engine::Native, n.dropped);
        }
        let recheck = n.needs_recheck();
        self.shared.switched(switch, (self.key, self.id, i));
        self.shared.recheck(recheck, (self.key, self.id, i));
        read
    }

    /// Target `i`'s watched native source waits for its client: onto the
    /// sweep.
    fn native_paused(&mut self, i: usize) {
        if let Some(n) = self.io.targets.get_mut(i).and_then(Target::native) {
            let switch = n.pause(self.registry);
            self.shared.switched(switch, (self.key, self.id, i));
        }
    }

    /// One read of a client still in its TLS handshake, within the loop's
    /// handshake budget for this turn (else it waits for the next turn).
    fn read_handshaking(&mut self, buf: &mut [u8]) -> Read {
        let Some(peer) = self.io.conn.sock.counted() else {
            return Read::WouldBlock;
        };
        if !self.shared.handshakes.may_work() {
            self.resume(Source::Client);
            return Read::WouldBlock;
        }
        let started = Instant::now();
        let read = loop {
            match self.io.conn.sock.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.shared.handshakes.worked(started);
        if !self.io.conn.sock.handshaking() {
            self.shared.handshakes.done(peer);
            self.io.conn.sock.set_counted(None);
        }
        match read {
            Ok(0) => Read::End,
            Ok(n) => Read::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::WouldBlock,
            Err(e) => Read::Failed(e),
        }
    }
}

impl Host for OsHost<'_> {
    fn read(&mut self, src: Source, buf: &mut [u8]) -> Read {
        match src {
            Source::Client if self.io.conn.sock.counted().is_some() => self.read_handshaking(buf),
            Source::Client => loop {
                return match self.io.conn.sock.read(buf) {
                    Ok(0) => Read::End,
                    Ok(n) => Read::Data(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::WouldBlock,
                    Err(e) => Read::Failed(e),
                };
            },
            Source::Upstream => match self.io.upstream.as_mut() {
                Some(up) => up.read(buf),
                None => Read::WouldBlock,
            },
            Source::Output(i) if self.io.targets.get(i).is_some_and(Target::is_native) => {
                self.read_native(i, buf)
            }
            Source::Output(_) | Source::Diag(_) => {
                let Some(slot) = self.io.pipe(src) else {
                    return Read::WouldBlock;
                };
                let Some(pipe) = slot.as_mut() else {
                    return Read::WouldBlock;
                };
                let read = loop {
                    match pipe.read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r,
                    }
                };
                match read {
                    Ok(n) if n > 0 => Read::Data(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::WouldBlock,
                    // The pipe is over: closing it also takes it off the poll.
                    Ok(_) => {
                        *slot = None;
                        Read::End
                    }
                    Err(e) => {
                        *slot = None;
                        Read::Failed(e)
                    }
                }
            }
        }
    }

    fn resume(&mut self, src: Source) {
        self.shared
            .again
            .push((Tok::new(self.key, src).token(), self.id));
    }

    fn forget(&mut self, src: Source) {
        if let Source::Output(i) = src {
            if let Some(n) = self.io.targets.get_mut(i).and_then(Target::native) {
                n.forget(self.registry);
                return;
            }
        }
        if let Some(slot) = self.io.pipe(src) {
            *slot = None;
        }
    }

    fn shutdown_write(&mut self) {
        self.io.conn.sock.shutdown_write();
    }

    fn starttime(&mut self, pid: u32) -> Option<u64> {
        crate::service::netns::process_starttime(pid)
    }

    fn locate(&mut self, target: usize, q: &Locate) -> Located {
        let waiter = (self.key, self.id);
        match self
            .shared
            .namespaces
            .find(q.netns, q.pid, q.asked_at, self.now, waiter)
        {
            Found::Held(ns) => {
                let links = if q.links {
                    crate::service::netns::names_in(&ns.file)
                } else {
                    Ok(Default::default())
                };
                self.io.target(target).netns = Some(ns);
                Located::Held { links }
            }
            Found::Missing(why) => Located::Missing(why),
            Found::Wait => Located::Wait,
        }
    }

    fn release_namespaces(&mut self) {
        for t in &mut self.io.targets {
            t.netns = None;
        }
    }

    fn start(&mut self, target: usize, spec: Spec) -> Result<Started, StartError> {
        let Some(ns) = self.io.targets.get_mut(target).and_then(|t| t.netns.take()) else {
            return Err(StartError::NotHeld);
        };
        let args = match spec {
            Spec::Process { args } => args,
            Spec::Native {
                interfaces,
                filter,
                chaste,
            } => {
                let Some(engine) = self.shared.engine.as_ref() else {
                    return Err(StartError::Failed(io::Error::other(
                        "the native capture engine is not running",
                    )));
                };
                let ticket = self.shared.next_ticket;
                self.shared.next_ticket += 1;
                let req = OpenRequest {
                    // The namespace goes with the request: the opener holds
                    // it until the rings are made inside it.
                    netns: ns.file,
                    interfaces: interfaces.to_vec(),
                    filter: filter.map(str::to_string),
                    chaste,
                };
                engine
                    .open(ticket, req)
                    .map_err(|e| StartError::Failed(io::Error::other(e)))?;
                let token = Tok::new(self.key, Source::Output(target)).token();
                let native = Native::opening(engine.closer(), token, self.now);
                self.shared
                    .opening
                    .insert(ticket, (self.key, self.id, target));
                self.io.target(target).source = Src::Native(Box::new(native));
                return Ok(Started::Native);
            }
        };
        let program = &self.settings.cfg.capture_program;
        let mut spawned =
            crate::service::spawn::spawn(program, args, &ns.file, self.settings.ambient)
                .map_err(StartError::Failed)?;
        // The child has entered the namespace (spawn returns after exec).
        drop(ns);
        let pid = spawned.pid.as_raw();
        self.shared.children.insert(pid, self.key);
        let watched = self
            .registry
            .register(
                &mut spawned.stdout,
                Tok::new(self.key, Source::Output(target)).token(),
                Interest::READABLE,
            )
            .and_then(|()| {
                self.registry.register(
                    &mut spawned.stderr,
                    Tok::new(self.key, Source::Diag(target)).token(),
                    Interest::READABLE,
                )
            });
        let t = self.io.target(target);
        t.source = Src::Program {
            pid: pid as u32,
            stdout: Some(spawned.stdout),
            stderr: Some(spawned.stderr),
        };
        Ok(Started::Process {
            pid: pid as u32,
            watched,
        })
    }

    fn signal(&mut self, target: usize, sig: Sig) {
        if let Some(n) = self.io.targets.get_mut(target).and_then(Target::native) {
            // The engine stops at once, whichever signal: the rest of the
            // output, the statistics, the end.
            n.stop();
            self.resume(Source::Output(target));
            return;
        }
        let Some(pid) = self.io.targets.get(target).and_then(Target::pid) else {
            return;
        };
        // Only a child not yet reaped is ours to signal.
        if self.shared.children.get(&(pid as i32)) == Some(&self.key) {
            let sig = match sig {
                Sig::Term => Signal::SIGTERM,
                Sig::Kill => Signal::SIGKILL,
            };
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    fn want_listing(&mut self) -> Option<Listing> {
        self.shared
            .discovery
            .want_listing(self.registry, self.now, (self.key, self.id))
    }

    fn want_address(&mut self) -> Option<Result<core::net::SocketAddr, String>> {
        self.shared
            .discovery
            .want_address(self.now, (self.key, self.id))
    }

    fn token_refused(&mut self, peer: core::net::IpAddr) -> std::time::Duration {
        self.shared.throttle.failed(peer, self.now)
    }

    fn metrics_text(&mut self) -> String {
        metrics::render()
    }

    fn count(&mut self, c: Count) {
        match c {
            Count::Refused(why) => metrics::refused(why),
            Count::Lookup(outcome, took) => metrics::lookup(outcome, took),
            Count::Started(n) => metrics::CAPTURES_STARTED.add(n as u64),
            Count::Ended(why) => metrics::ended(why),
            Count::Paused(d) => metrics::paused_for(d),
            Count::Relayed(n) => metrics::BYTES_RELAYED.add(n as u64),
        }
    }

    fn connect_upstream(&mut self, addr: core::net::SocketAddr) -> Result<(), ProxyFailure> {
        let mut up = Upstream::connect(addr).map_err(ProxyFailure::Unreachable)?;
        self.registry
            .register(
                &mut up.sock,
                Tok::new(self.key, Source::Upstream).token(),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(ProxyFailure::CannotWatch)?;
        self.io.upstream = Some(Box::new(up));
        Ok(())
    }

    fn upstream(&mut self) -> Option<&mut dyn Out> {
        self.io.upstream.as_deref_mut().map(|u| u as &mut dyn Out)
    }

    fn upstream_pending(&self) -> usize {
        self.io.upstream.as_deref().map_or(0, Out::pending)
    }

    fn end_upstream(&mut self) {
        if let Some(mut up) = self.io.upstream.take() {
            let _ = self.registry.deregister(&mut up.sock);
        }
    }
}

/// A reaped child's status as the machine reads it.
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
                srcs.push(Source::Output(i));
                srcs.push(Source::Diag(i));
            }
            for src in srcs {
                let t = Tok::new(key, src);
                assert_eq!(Tok::of(t.token()), t, "{t:?}");
            }
        }
        let top = Tok::new(0, Source::Diag(crate::proto::multi::MAX_TARGETS_LIMIT - 1));
        assert!(top.token().0 < 1 << ROLE_BITS);
    }
}
