//! A world for the session machine without an operating system, for the
//! unit tests beside the machine and the `session` fuzz target: a client
//! whose bytes and reads the caller controls, capture programs that are
//! pids and bytes, namespaces that are a table, and a discovery service
//! that answers what the caller set. It performs the session's actions as
//! `crate::service::driver` does (reading a source only while the session wants it,
//! answering `Locate` and `Spawn` at once), so what a test or the fuzzer
//! sees is what the service does, minus the kernel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use core::net::SocketAddr;

use super::{
    Action, Broken, Env, ExitStatus, Located, Out, ProxyFailure, ProxyStep, Session, Sig, Source,
};
use crate::config::Config;
use crate::proto::auth::Policy;
use crate::proto::discovery::{DiscoveryError, ParsedListing};

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
            return Err(Broken("connection reset by peer".into()));
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
    /// Output written but not yet read by the service (it paused).
    pub unread: VecDeque<Vec<u8>>,
}

/// The session and its world.
pub struct Sim {
    pub session: Session,
    pub client: Client,
    /// Client bytes not yet read by the service (it paused reading).
    pub inbox: VecDeque<Vec<u8>>,
    pub client_eof: bool,
    pub cfg: Config,
    pub policy: Policy,
    pub now: Instant,
    pub captures: usize,
    pub no_capture: Option<String>,
    pub own_netns: Option<u64>,
    /// What `/proc` says: pid -> start time.
    pub starttimes: HashMap<u32, u64>,
    /// Namespaces that exist: inode -> interface names.
    pub namespaces: HashMap<u64, Vec<String>>,
    /// Namespaces found only after the next scan (`Located::Wait` first).
    pub moved: HashSet<u64>,
    /// The discovery service's listing: answered at once when set.
    pub listing: Option<Result<Arc<ParsedListing>, DiscoveryError>>,
    /// The discovery service's address, for proxied requests.
    pub address: Option<Result<SocketAddr, String>>,
    /// Listings and addresses asked for and not answered yet.
    pub waiting_listing: bool,
    pub waiting_address: bool,
    /// The spawn of this target fails.
    pub spawn_fails: Option<usize>,
    /// How a proxied exchange starts: `Some` connects (the exchange then
    /// moves by [`Sim::proxy_step`]), `None` fails as unreachable.
    pub upstream: Option<()>,
    /// A proxied exchange is under way.
    pub proxying: bool,
    pub programs: Vec<Program>,
    /// Namespaces held for a starting capture (by target).
    pub held: HashSet<usize>,
    /// Every action the session asked for, in order.
    pub actions: Vec<Action>,
    next_pid: u32,
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
            client: Client::default(),
            inbox: VecDeque::new(),
            client_eof: false,
            cfg,
            policy,
            now,
            captures: 0,
            no_capture: None,
            own_netns: None,
            starttimes: HashMap::new(),
            namespaces: HashMap::new(),
            moved: HashSet::new(),
            listing: None,
            address: None,
            waiting_listing: false,
            waiting_address: false,
            spawn_fails: None,
            upstream: None,
            proxying: false,
            programs: Vec::new(),
            held: HashSet::new(),
            actions: Vec::new(),
            next_pid: 1000,
        }
    }

    /// Runs `f` on the session with the world's environment and client.
    fn with(&mut self, f: impl FnOnce(&mut Session, &Env, &mut Client)) {
        let starttimes = &self.starttimes;
        let starttime = |pid: u32| starttimes.get(&pid).copied();
        let env = Env {
            now: self.now,
            wall: || SystemTime::UNIX_EPOCH + WALL,
            cfg: &self.cfg,
            policy: &self.policy,
            captures: self.captures,
            no_capture: self.no_capture.as_deref(),
            own_netns: self.own_netns,
            starttime: &starttime,
        };
        f(&mut self.session, &env, &mut self.client);
        self.perform();
    }

    // ---- the client ------------------------------------------------------

    /// The client sends `bytes` (one read for the service, if it reads).
    pub fn send(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.inbox.push_back(bytes.to_vec());
        }
        self.pump_client();
    }

    /// The client closes its side (after what it sent is read).
    pub fn close(&mut self) {
        self.client_eof = true;
        self.pump_client();
    }

    /// The client reads everything it was sent.
    pub fn take(&mut self) {
        self.client.taken = self.client.received.len();
        self.writable();
    }

    /// The connection breaks.
    pub fn break_connection(&mut self) {
        self.client.broken = true;
        self.with(|s, env, c| s.on_client_broke(env, c, Broken("reset".into())));
    }

    pub fn writable(&mut self) {
        self.with(|s, env, c| s.on_writable(env, c));
    }

    fn pump_client(&mut self) {
        loop {
            if self.session.finished() || self.session.proxying() {
                return;
            }
            let now = self.now;
            if !self.session.may_read(Source::Client, &self.client, now) {
                return;
            }
            match self.inbox.pop_front() {
                Some(bytes) => self.with(|s, env, c| s.on_client_data(env, c, &bytes)),
                None if self.client_eof => {
                    self.client_eof = false;
                    return self.with(|s, env, c| s.on_client_eof(env, c));
                }
                None => return,
            }
        }
    }

    // ---- capture programs ------------------------------------------------

    /// Target `target`'s program writes `bytes` on stdout.
    pub fn output(&mut self, target: usize, bytes: &[u8]) {
        let Some(p) = self.program(target) else {
            return;
        };
        if p.stdout_open && !bytes.is_empty() {
            p.unread.push_back(bytes.to_vec());
        }
        self.pump_output(target);
    }

    /// Target `target`'s program closes its stdout.
    pub fn output_end(&mut self, target: usize) {
        let Some(p) = self.program(target) else {
            return;
        };
        if !p.stdout_open {
            return;
        }
        p.unread.push_back(Vec::new());
        self.pump_output(target);
    }

    fn pump_output(&mut self, target: usize) {
        loop {
            let now = self.now;
            if !self
                .session
                .may_read(Source::Stdout(target), &self.client, now)
            {
                return;
            }
            let Some(p) = self.program(target) else {
                return;
            };
            let Some(mut bytes) = p.unread.pop_front() else {
                return;
            };
            if bytes.is_empty() {
                p.stdout_open = false;
                return self.with(|s, env, c| s.on_output_end(env, c, target, None));
            }
            self.with(|s, env, c| s.on_output(env, c, target, &mut bytes));
        }
    }

    /// Target `target`'s program writes on stderr (`None`: closes it).
    pub fn stderr(&mut self, target: usize, bytes: Option<&[u8]>) {
        let Some(p) = self.program(target) else {
            return;
        };
        if !p.stderr_open {
            return;
        }
        if bytes.is_none() {
            p.stderr_open = false;
        }
        let bytes = bytes.map(<[u8]>::to_vec);
        self.with(|s, env, c| s.on_stderr(env, c, target, bytes.as_deref()));
    }

    /// Target `target`'s program exits (its pipes close first, as they do
    /// when a process ends) and is reaped.
    pub fn exit(&mut self, target: usize, status: ExitStatus) {
        self.output_end(target);
        self.stderr(target, None);
        let Some(p) = self.program(target) else {
            return;
        };
        p.reaped = true;
        let pid = p.pid;
        self.with(|s, env, c| s.on_exit(env, c, pid, status));
    }

    /// The newest program of target `target` still to be reaped.
    pub fn program(&mut self, target: usize) -> Option<&mut Program> {
        self.programs
            .iter_mut()
            .rev()
            .find(|p| p.target == target && !p.reaped)
    }

    // ---- time and the rest of the world ----------------------------------

    /// Time passes; a deadline that came is handled.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.session.poll_timeout().is_some_and(|d| d <= self.now) {
            self.with(|s, env, c| s.on_timeout(env, c));
        }
    }

    /// Time passes up to the session's next deadline, which is handled.
    pub fn until_deadline(&mut self) -> bool {
        let Some(d) = self.session.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(d);
        self.with(|s, env, c| s.on_timeout(env, c));
        true
    }

    /// The discovery service answers the listing asked for.
    pub fn answer_listing(&mut self, listing: Result<Arc<ParsedListing>, DiscoveryError>) {
        if std::mem::take(&mut self.waiting_listing) {
            self.with(|s, env, c| s.on_listing(env, c, listing));
        }
    }

    /// The discovery service's address is known (or why not).
    pub fn answer_address(&mut self, addr: Result<SocketAddr, String>) {
        if std::mem::take(&mut self.waiting_address) {
            self.with(|s, env, c| s.on_address(env, c, addr));
        }
    }

    /// The proxied exchange's byte pump took a step; `answer` is what it
    /// sent the client meanwhile.
    pub fn proxy_step(&mut self, step: ProxyStep, answer: &[u8], answered: bool, sent: bool) {
        if !self.proxying {
            return;
        }
        let _ = self.client.send(answer);
        self.with(|s, env, c| s.on_proxy_step(env, c, step, answered, sent));
    }

    /// The namespace scan ran: moved namespaces are where they are now.
    pub fn rescan(&mut self) {
        self.moved.clear();
        self.with(|s, env, c| s.on_rescanned(env, c));
    }

    pub fn shutdown(&mut self) {
        self.with(|s, env, c| s.shutdown(env, c));
    }

    /// Performs what the session asked for, as the driver does.
    fn perform(&mut self) {
        while let Some(action) = self.session.poll_action() {
            self.actions.push(action.clone());
            match action {
                Action::WantListing => match self.listing.clone() {
                    Some(l) => self.with(|s, env, c| s.on_listing(env, c, l)),
                    None => self.waiting_listing = true,
                },
                Action::WantAddress => match self.address.clone() {
                    Some(a) => self.with(|s, env, c| s.on_address(env, c, a)),
                    None => self.waiting_address = true,
                },
                Action::Locate {
                    target,
                    netns,
                    links,
                    ..
                } => {
                    let found = if self.moved.contains(&netns) {
                        Located::Wait
                    } else {
                        match self.namespaces.get(&netns) {
                            Some(names) => {
                                self.held.insert(target);
                                Located::Held {
                                    links: Ok(if links {
                                        names.iter().cloned().collect()
                                    } else {
                                        HashSet::new()
                                    }),
                                }
                            }
                            None => Located::Missing(format!("no network namespace {netns}")),
                        }
                    };
                    self.with(|s, env, c| s.on_located(env, c, target, found));
                }
                Action::Spawn { target, args } => {
                    let spawned = if self.spawn_fails == Some(target) || !self.held.remove(&target)
                    {
                        Err("No such file or directory (os error 2)".to_string())
                    } else {
                        let pid = self.next_pid;
                        self.next_pid += 1;
                        self.programs.push(Program {
                            pid,
                            target,
                            args,
                            signals: Vec::new(),
                            reaped: false,
                            stdout_open: true,
                            stderr_open: true,
                            unread: VecDeque::new(),
                        });
                        Ok((pid, Ok(())))
                    };
                    self.with(|s, env, c| s.on_spawned(env, c, target, spawned));
                }
                Action::Signal { pid, signal } => {
                    let p = self.programs.iter_mut().find(|p| p.pid == pid);
                    let p = p.expect("the session signals only programs it started");
                    assert!(!p.reaped, "pid {pid} signalled after it was reaped");
                    p.signals.push(signal);
                }
                Action::Forget(Source::Stdout(i)) => {
                    if let Some(p) = self.program(i) {
                        p.stdout_open = false;
                        p.unread.clear();
                    }
                }
                Action::Forget(Source::Stderr(i)) => {
                    if let Some(p) = self.program(i) {
                        p.stderr_open = false;
                    }
                }
                Action::Forget(_) => {}
                Action::Proxy { req, .. } => match self.upstream {
                    Some(()) => {
                        self.proxying = true;
                        self.with(|s, env, _| s.on_proxy_started(env, &req));
                    }
                    None => {
                        let why = ProxyFailure::Unreachable("connection refused".into());
                        self.with(|s, env, c| s.on_proxy_failed(env, c, &req, why));
                    }
                },
                Action::EndProxy => self.proxying = false,
                Action::Resume(Source::Client) => self.pump_client(),
                Action::Resume(Source::Stdout(i)) => self.pump_output(i),
                Action::Resume(_) => {}
                Action::ShutdownWrite => self.client.shut = true,
                Action::ReleaseNamespaces => self.held.clear(),
            }
        }
    }
}
