//! A world for the session machine without an operating system, for the
//! unit tests beside the machine and the `session` fuzz target: a client
//! whose bytes and reads the caller controls, capture programs that are
//! pids and bytes, namespaces that are a table, a discovery service that
//! answers what the caller set, and an upstream whose bytes the caller
//! writes. [`World`] implements the same [`Host`] the service's driver
//! does, and the machine is driven through the same pump
//! ([`Session::pump`]), with the same per-turn budget and the same
//! "read again before sleeping" list, so what a test or the fuzzer sees is
//! what the service does, minus the kernel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant, SystemTime};

use core::net::SocketAddr;

use super::host::ProxyFailure;
use super::{
    Broken, Count, Env, Event, ExitStatus, Host, Listing, Locate, LocateError, Located, Out, Read,
    Session, Sig, Source, SourceEnd, Spec, StartError, Started,
};
use crate::config::Config;
use crate::proto::auth::Policy;

/// The loop's read buffer: the most one read takes.
const READ_BUF: usize = 64 * 1024;

/// The client's end of the connection.
#[derive(Default)]
pub struct Client {
    /// Everything the service sent, in order.
    pub received: Vec<u8>,
    /// How much of it the client has read.
    pub taken: usize,
    /// Unread bytes the kernel's buffers hold before the service's own
    /// queue grows.
    pub window: usize,
    /// The connection is broken: every send fails.
    pub broken: bool,
    /// The service shut its write side.
    pub shut: bool,
}

impl Out for Client {
    fn pending(&self) -> usize {
        (self.received.len() - self.taken).saturating_sub(self.window)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.send_slices(&[bytes])
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        if self.broken {
            return Err(Broken(io::ErrorKind::ConnectionReset.into()));
        }
        for p in parts {
            self.received.extend_from_slice(p);
        }
        Ok(())
    }
}

/// A capture program the session started.
#[derive(Debug)]
pub struct Program {
    pub pid: u32,
    pub target: usize,
    pub args: Vec<String>,
    /// Signals it got, in order.
    pub signals: Vec<Sig>,
    pub reaped: bool,
    pub stdout_open: bool,
    pub stderr_open: bool,
    /// Output written but not yet read by the service (it paused); an
    /// empty entry is the end of the output.
    pub unread: VecDeque<Vec<u8>>,
    /// Stderr written but not yet read; `None` is its end.
    pub unread_err: VecDeque<Option<Vec<u8>>>,
    /// A source of the native engine (no process: stopping ends its
    /// output with [`Read::Ended`]).
    pub native: bool,
    /// How a native source ends once its unread output is taken.
    pub end: Option<SourceEnd>,
}

/// The discovery service's end of a proxied exchange.
#[derive(Default, Debug)]
pub struct Upstream {
    /// Everything the service sent it.
    pub received: Vec<u8>,
    /// The connection is established (before, everything sent waits).
    pub connected: bool,
    /// What it sends, not yet read by the service; an empty entry is its
    /// end.
    pub unread: VecDeque<Vec<u8>>,
}

impl Out for Upstream {
    fn pending(&self) -> usize {
        if self.connected {
            0
        } else {
            self.received.len()
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.received.extend_from_slice(bytes);
        Ok(())
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        for p in parts {
            self.received.extend_from_slice(p);
        }
        Ok(())
    }
}

/// What the session asked of its host, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Locate(usize, Locate),
    Start(usize, Vec<String>),
    Signal(usize, Sig),
    Resume(Source),
    Forget(Source),
    ReleaseNamespaces,
    WantListing,
    WantAddress,
    Connect(SocketAddr),
    EndUpstream,
    ShutdownWrite,
    Count(Count),
}

/// Everything but the session and its configuration: the [`Host`].
#[derive(Default)]
pub struct World {
    pub client: Client,
    /// Client bytes not yet read by the service (it paused reading).
    pub inbox: VecDeque<Vec<u8>>,
    pub client_eof: bool,
    /// What `/proc` says: pid -> start time.
    pub starttimes: HashMap<u32, u64>,
    /// Namespaces that exist: inode -> interface names.
    pub namespaces: HashMap<u64, Vec<String>>,
    /// Namespaces found only after the next scan (`Located::Wait` first).
    pub moved: HashSet<u64>,
    /// The discovery service's listing: answered at once when set.
    pub listing: Option<Listing>,
    /// The discovery service's address, for proxied requests.
    pub address: Option<Result<SocketAddr, String>>,
    /// Listings and addresses asked for and not answered yet.
    pub waiting_listing: bool,
    pub waiting_address: bool,
    /// The start of this target's source fails.
    pub spawn_fails: Option<usize>,
    /// Whether a proxied exchange can connect (`Some`), or fails as
    /// unreachable (`None`).
    pub upstream_reachable: Option<()>,
    /// The proxied exchange's upstream, while there is one.
    pub upstream: Option<Upstream>,
    pub programs: Vec<Program>,
    /// Namespaces held for a starting capture (by target).
    pub held: HashSet<usize>,
    /// Every call the session made, in order.
    pub calls: Vec<Call>,
    /// Sources to read again before the world "sleeps".
    pub again: VecDeque<Source>,
    /// How long a wrong token's `401` is held back.
    pub token_delay: Duration,
    next_pid: u32,
}

impl World {
    /// The newest program of target `target` still to be reaped.
    pub fn program(&mut self, target: usize) -> Option<&mut Program> {
        self.programs
            .iter_mut()
            .rev()
            .find(|p| p.target == target && !p.reaped)
    }
}

impl Out for World {
    fn pending(&self) -> usize {
        self.client.pending()
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.client.send(bytes)
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        self.client.send_slices(parts)
    }
}

/// Takes one read's worth from the front of `queue`.
fn take(queue: &mut VecDeque<Vec<u8>>, buf: &mut [u8]) -> Option<usize> {
    let front = queue.front_mut()?;
    let n = front.len().min(buf.len());
    buf[..n].copy_from_slice(&front[..n]);
    if n == front.len() {
        queue.pop_front();
    } else {
        front.drain(..n);
    }
    Some(n)
}

impl Host for World {
    fn read(&mut self, src: Source, buf: &mut [u8]) -> Read {
        match src {
            Source::Client => match take(&mut self.inbox, buf) {
                Some(n) => Read::Data(n),
                None if std::mem::take(&mut self.client_eof) => Read::End,
                None => Read::WouldBlock,
            },
            Source::Output(i) => {
                let Some(p) = self.program(i).filter(|p| p.stdout_open || p.native) else {
                    return Read::WouldBlock;
                };
                match p.unread.front().filter(|_| p.stdout_open) {
                    None if p.native => match p.end.clone() {
                        Some(end) => {
                            p.stdout_open = false;
                            p.reaped = true;
                            Read::Ended(end)
                        }
                        None => Read::WouldBlock,
                    },
                    None => Read::WouldBlock,
                    Some(b) if b.is_empty() => {
                        p.unread.pop_front();
                        p.stdout_open = false;
                        Read::End
                    }
                    Some(_) => take(&mut p.unread, buf).map_or(Read::WouldBlock, Read::Data),
                }
            }
            Source::Diag(i) => {
                let Some(p) = self.program(i).filter(|p| p.stderr_open) else {
                    return Read::WouldBlock;
                };
                match p.unread_err.pop_front() {
                    None => Read::WouldBlock,
                    Some(None) => {
                        p.stderr_open = false;
                        Read::End
                    }
                    Some(Some(b)) => {
                        let n = b.len().min(buf.len());
                        buf[..n].copy_from_slice(&b[..n]);
                        Read::Data(n)
                    }
                }
            }
            Source::Upstream => {
                let Some(u) = self.upstream.as_mut().filter(|u| u.connected) else {
                    return Read::WouldBlock;
                };
                match u.unread.front() {
                    None => Read::WouldBlock,
                    Some(b) if b.is_empty() => {
                        u.unread.pop_front();
                        Read::End
                    }
                    Some(_) => take(&mut u.unread, buf).map_or(Read::WouldBlock, Read::Data),
                }
            }
        }
    }

    fn resume(&mut self, src: Source) {
        self.calls.push(Call::Resume(src));
        self.again.push_back(src);
    }

    fn forget(&mut self, src: Source) {
        self.calls.push(Call::Forget(src));
        match src {
            Source::Output(i) => {
                if let Some(p) = self.program(i) {
                    p.stdout_open = false;
                    p.unread.clear();
                    if p.native {
                        // Its rings go; its end is still told.
                        p.end.get_or_insert(SourceEnd::Stopped);
                    }
                }
            }
            Source::Diag(i) => {
                if let Some(p) = self.program(i) {
                    p.stderr_open = false;
                    p.unread_err.clear();
                }
            }
            Source::Client | Source::Upstream => {}
        }
    }

    fn shutdown_write(&mut self) {
        self.calls.push(Call::ShutdownWrite);
        self.client.shut = true;
    }

    fn starttime(&mut self, pid: u32) -> Option<u64> {
        self.starttimes.get(&pid).copied()
    }

    fn locate(&mut self, target: usize, q: &Locate) -> Located {
        self.calls.push(Call::Locate(target, q.clone()));
        if self.moved.contains(&q.netns) {
            return Located::Wait;
        }
        match self.namespaces.get(&q.netns) {
            Some(names) => {
                self.held.insert(target);
                Located::Held {
                    links: Ok(if q.links {
                        names.iter().cloned().collect()
                    } else {
                        HashSet::new()
                    }),
                }
            }
            None => Located::Missing(LocateError::NotFound { netns: q.netns }),
        }
    }

    fn release_namespaces(&mut self) {
        self.calls.push(Call::ReleaseNamespaces);
        self.held.clear();
    }

    fn start(&mut self, target: usize, spec: Spec) -> Result<Started, StartError> {
        let (args, native) = match spec {
            Spec::Process { args } => (args.to_vec(), false),
            Spec::Native {
                interfaces,
                filter,
                chaste,
            } => {
                let mut a = vec![format!("native:{}", interfaces.join("/"))];
                a.extend(filter.map(|f| format!("filter:{f}")));
                a.extend(chaste.then(|| "chaste".to_string()));
                (a, true)
            }
        };
        self.calls.push(Call::Start(target, args.clone()));
        if !self.held.remove(&target) {
            return Err(StartError::NotHeld);
        }
        if self.spawn_fails == Some(target) {
            return Err(StartError::Failed(io::ErrorKind::NotFound.into()));
        }
        self.next_pid = self.next_pid.max(1000) + 1;
        let pid = self.next_pid;
        self.programs.push(Program {
            pid,
            target,
            args,
            signals: Vec::new(),
            reaped: false,
            stdout_open: true,
            stderr_open: !native,
            unread: VecDeque::new(),
            unread_err: VecDeque::new(),
            native,
            end: None,
        });
        Ok(if native {
            Started::Native
        } else {
            Started::Process {
                pid,
                watched: Ok(()),
            }
        })
    }

    fn signal(&mut self, target: usize, sig: Sig) {
        self.calls.push(Call::Signal(target, sig));
        let p = self
            .programs
            .iter_mut()
            .rev()
            .find(|p| p.target == target)
            .expect("the session signals only sources it started");
        assert!(
            !p.reaped,
            "target {target}'s program signalled after it was reaped"
        );
        p.signals.push(sig);
        if p.native {
            // The service's engine stops at once: the rest of the output,
            // then the end.
            p.end.get_or_insert(SourceEnd::Stopped);
            self.again.push_back(Source::Output(target));
        }
    }

    fn want_listing(&mut self) -> Option<Listing> {
        self.calls.push(Call::WantListing);
        match self.listing.clone() {
            Some(l) => Some(l),
            None => {
                self.waiting_listing = true;
                None
            }
        }
    }

    fn want_address(&mut self) -> Option<Result<SocketAddr, String>> {
        self.calls.push(Call::WantAddress);
        match self.address.clone() {
            Some(a) => Some(a),
            None => {
                self.waiting_address = true;
                None
            }
        }
    }

    fn token_refused(&mut self, _peer: core::net::IpAddr) -> Duration {
        self.token_delay
    }

    fn metrics_text(&mut self) -> String {
        "# HELP packetflix_sim a simulated world\n".into()
    }

    fn count(&mut self, c: Count) {
        self.calls.push(Call::Count(c));
    }

    fn connect_upstream(&mut self, addr: SocketAddr) -> Result<(), ProxyFailure> {
        self.calls.push(Call::Connect(addr));
        match self.upstream_reachable {
            Some(()) => {
                self.upstream = Some(Upstream::default());
                Ok(())
            }
            None => Err(ProxyFailure::Unreachable(
                io::ErrorKind::ConnectionRefused.into(),
            )),
        }
    }

    fn upstream(&mut self) -> Option<&mut dyn Out> {
        self.upstream.as_mut().map(|u| u as &mut dyn Out)
    }

    fn upstream_pending(&self) -> usize {
        self.upstream.as_ref().map_or(0, Out::pending)
    }

    fn end_upstream(&mut self) {
        self.calls.push(Call::EndUpstream);
        self.upstream = None;
    }
}

/// The session and its world.
pub struct Sim {
    pub session: Session,
    pub world: World,
    pub cfg: Config,
    pub policy: Policy,
    pub now: Instant,
    pub captures: usize,
    pub no_capture: Option<String>,
    pub own_netns: Option<u64>,
    buf: Vec<u8>,
}

impl Deref for Sim {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

/// Where a [`Sim`] starts its clock's wall time (any fixed instant).
const WALL: Duration = Duration::from_secs(1_700_000_000);

impl Sim {
    pub fn new(cfg: Config, policy: Policy) -> Sim {
        let now = Instant::now();
        let peer: SocketAddr = "192.0.2.7:40000".parse().expect("address");
        let local: SocketAddr = "192.0.2.1:5001".parse().expect("address");
        Sim {
            session: Session::new(1, peer, local, now),
            world: World::default(),
            cfg,
            policy,
            now,
            captures: 0,
            no_capture: None,
            own_netns: None,
            buf: vec![0; READ_BUF],
        }
    }

    /// Hands `ev` to the session, or, with `src`, pumps that source; then
    /// reads again what the session asked to, as the loop does before it
    /// sleeps.
    fn run(&mut self, what: What) {
        let env = Env {
            now: self.now,
            wall: || SystemTime::UNIX_EPOCH + WALL,
            cfg: &self.cfg,
            policy: &self.policy,
            captures: self.captures,
            no_capture: self.no_capture.as_deref(),
            own_netns: self.own_netns,
        };
        match what {
            What::Event(ev) => self.session.on(&env, &mut self.world, ev),
            What::Pump(src) => self.session.pump(&env, &mut self.world, src, &mut self.buf),
        }
        while let Some(src) = self.world.again.pop_front() {
            if self.session.finished() {
                self.world.again.clear();
                break;
            }
            self.session.pump(&env, &mut self.world, src, &mut self.buf);
        }
    }

    fn event(&mut self, ev: Event) {
        self.run(What::Event(ev));
    }

    fn pump(&mut self, src: Source) {
        self.run(What::Pump(src));
    }

    // ---- the client ------------------------------------------------------

    /// The client sends `bytes` (read by the service as far as it reads).
    pub fn send(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.world.inbox.push_back(bytes.to_vec());
        }
        self.pump(Source::Client);
    }

    /// The client closes its side (after what it sent is read).
    pub fn close(&mut self) {
        self.world.client_eof = true;
        self.pump(Source::Client);
    }

    /// The client reads everything it was sent.
    pub fn take(&mut self) {
        self.world.client.taken = self.world.client.received.len();
        self.writable();
    }

    /// The connection breaks.
    pub fn break_connection(&mut self) {
        self.world.client.broken = true;
        self.event(Event::ClientBroke(Broken(
            io::ErrorKind::ConnectionReset.into(),
        )));
    }

    pub fn writable(&mut self) {
        self.event(Event::Writable);
    }

    // ---- capture programs ------------------------------------------------

    /// Target `target`'s program writes `bytes` on stdout.
    pub fn output(&mut self, target: usize, bytes: &[u8]) {
        let Some(p) = self.world.program(target) else {
            return;
        };
        if p.stdout_open && !bytes.is_empty() {
            p.unread.push_back(bytes.to_vec());
        }
        self.pump(Source::Output(target));
    }

    /// Target `target`'s program closes its stdout.
    pub fn output_end(&mut self, target: usize) {
        let Some(p) = self.world.program(target) else {
            return;
        };
        if !p.stdout_open || p.unread.back().is_some_and(Vec::is_empty) {
            return;
        }
        p.unread.push_back(Vec::new());
        self.pump(Source::Output(target));
    }

    /// Target `target`'s program writes on stderr (`None`: closes it).
    pub fn stderr(&mut self, target: usize, bytes: Option<&[u8]>) {
        let Some(p) = self.world.program(target) else {
            return;
        };
        if !p.stderr_open || p.unread_err.back().is_some_and(Option::is_none) {
            return;
        }
        p.unread_err.push_back(bytes.map(<[u8]>::to_vec));
        self.pump(Source::Diag(target));
    }

    /// Target `target`'s native source ends by itself `how` (after the
    /// output it wrote).
    pub fn source_end(&mut self, target: usize, how: SourceEnd) {
        let Some(p) = self.world.program(target).filter(|p| p.native) else {
            return;
        };
        p.end.get_or_insert(how);
        self.pump(Source::Output(target));
    }

    /// Target `target`'s program exits (its pipes close first, as they do
    /// when a process ends) and is reaped.
    pub fn exit(&mut self, target: usize, status: ExitStatus) {
        if self.world.program(target).is_some_and(|p| p.native) {
            // A native source has no exit: it ends the way the status says.
            let how = match status {
                ExitStatus::Exited(0) => SourceEnd::Ended(
                    "The network adapter \"lo\" is no longer attached; the capture has stopped."
                        .into(),
                ),
                ExitStatus::Exited(_) | ExitStatus::Other => {
                    SourceEnd::Failed("cannot capture on interface 'lo'".into())
                }
                ExitStatus::Signaled(15, _) => SourceEnd::Stopped,
                ExitStatus::Signaled(..) => {
                    SourceEnd::Refused("Invalid capture filter \"((\" for interface 'lo'.".into())
                }
            };
            return self.source_end(target, how);
        }
        self.output_end(target);
        self.stderr(target, None);
        let Some(p) = self.world.program(target) else {
            return;
        };
        p.reaped = true;
        self.event(Event::Exited(target, status));
    }

    // ---- the discovery service's end of a proxied exchange ----------------

    /// The upstream connection is established.
    pub fn upstream_connect(&mut self) {
        let Some(u) = self.world.upstream.as_mut() else {
            return;
        };
        u.connected = true;
        self.event(Event::UpstreamReady);
        self.pump(Source::Upstream);
    }

    /// The discovery service sends `bytes` (empty: it closes).
    pub fn upstream_send(&mut self, bytes: &[u8]) {
        let Some(u) = self.world.upstream.as_mut() else {
            return;
        };
        if u.unread.back().is_some_and(Vec::is_empty) {
            return;
        }
        u.unread.push_back(bytes.to_vec());
        if u.connected {
            self.pump(Source::Upstream);
        }
    }

    /// The upstream connection fails.
    pub fn upstream_fail(&mut self) {
        if self.world.upstream.is_some() {
            self.event(Event::UpstreamFailed(io::ErrorKind::ConnectionReset.into()));
        }
    }

    // ---- time and the rest of the world ----------------------------------

    /// Time passes; a deadline that came is handled.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.session.poll_timeout().is_some_and(|d| d <= self.now) {
            self.event(Event::Timeout);
        }
    }

    /// Time passes up to the session's next deadline, which is handled.
    pub fn until_deadline(&mut self) -> bool {
        let Some(d) = self.session.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(d);
        self.event(Event::Timeout);
        true
    }

    /// The discovery service answers the listing asked for.
    pub fn answer_listing(&mut self, listing: Listing) {
        if std::mem::take(&mut self.world.waiting_listing) {
            self.event(Event::Listing(listing));
        }
    }

    /// The discovery service's address is known (or why not).
    pub fn answer_address(&mut self, addr: Result<SocketAddr, String>) {
        if std::mem::take(&mut self.world.waiting_address) {
            self.event(Event::Address(addr));
        }
    }

    /// The namespace scan ran: moved namespaces are where they are now.
    pub fn rescan(&mut self) {
        self.world.moved.clear();
        self.event(Event::Rescanned);
    }

    pub fn shutdown(&mut self) {
        self.event(Event::Shutdown);
    }

    /// A full connection table takes this connection's slot, if it may.
    pub fn displace(&mut self) -> bool {
        if !self.session.displaceable(self.world.client.pending()) {
            return false;
        }
        self.event(Event::Displaced);
        true
    }
}

enum What<'a> {
    Event(Event<'a>),
    Pump(Source),
}
