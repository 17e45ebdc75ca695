//! Shared discovery lookups: the discovery service's address, looked up when
//! it is needed, and one `GET /mobyshark` exchange whose parsed answer
//! serves every capture waiting for it.
//!
//! The reactor owns the one [`Discovery`]. A capture that needs the listing
//! asks [`Discovery::want_listing`]; the discovery proxy asks
//! [`Discovery::want_address`]. Either gets its answer at once (a literal
//! address, a cached one, a listing younger than [`FRESH_FOR`]) or is
//! queued as a waiter and handed a [`Delivery`] when the shared work is
//! done: one name lookup and one exchange, however many ask meanwhile.
//!
//! Nothing here blocks the loop. Name resolution (`getaddrinfo` can wait for
//! seconds on DNS) and parsing a listing (up to 8 MiB of JSON) run on two
//! helper threads, each fed by a channel holding one job (only one of each
//! is ever outstanding), handing results back through a mutex-guarded slot
//! and waking the loop through a `mio::Waker`. A thread rather than a
//! non-blocking resolver library: the system resolver honours
//! `/etc/nsswitch.conf` and `/etc/hosts` (compose service names, test
//! overrides) exactly as every other program on the host does, and one
//! lookup at a time is all the service needs. The exchange itself is a
//! non-blocking socket registered with the loop's poll, as before.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Interest, Registry, Token, Waker};

use crate::proto::discovery::{DiscoveryError, ParsedListing};
use crate::service::discovery_call::DiscoveryCall;

/// The loop's token for the helper threads' waker.
pub const WAKE: Token = Token(usize::MAX - 2);
/// The loop's token for the shared exchange's socket.
pub const CALL: Token = Token(usize::MAX - 3);

/// How long a parsed answer serves new lookups without asking again. Short
/// enough that a container started a moment ago is found by the next
/// capture after it; long enough that a burst of captures (a dashboard
/// opening many, a client naming several targets) costs one exchange.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a looked-up address is used before it is looked up again; it
/// is also forgotten at once when connecting to it fails, so a restarted
/// discovery service with a new address is found on the next capture.
pub const ADDRESS_TTL: Duration = Duration::from_secs(10);
/// Most captures and proxied requests waiting at once. Each waiter costs a
/// few bytes; the bound keeps connections that come and go during a slow
/// exchange from growing the list without limit.
pub const MAX_WAITERS: usize = 65_536;

/// A session waiting for a delivery: slab key and session id.
pub type Waiter = (usize, u64);

/// What a waiter is handed once the shared work is done.
#[derive(Clone, Debug)]
pub enum Delivery {
    Listing(Result<Arc<ParsedListing>, DiscoveryError>),
    Address(Result<SocketAddr, String>),
    /// The namespace scan a lookup waited for ran (see `nscache`): ask again.
    Rescanned,
}

/// Results the helper threads hand back.
#[derive(Default)]
struct Slots {
    address: Option<Result<SocketAddr, String>>,
    listing: Option<Result<ParsedListing, DiscoveryError>>,
}

/// Where the shared exchange stands.
enum Exchange {
    Idle,
    /// The address is being looked up; the exchange starts when it is known.
    WaitingAddress {
        deadline: Instant,
    },
    Calling {
        call: Box<DiscoveryCall>,
        deadline: Instant,
    },
    /// The answer is on the parse thread.
    Parsing {
        received: Instant,
    },
}

pub struct Discovery {
    /// The host as configured, brackets removed.
    host: String,
    port: u16,
    /// An IP literal needs no lookup.
    literal: Option<SocketAddr>,
    timeout: Duration,
    waker: Arc<Waker>,
    slots: Arc<Mutex<Slots>>,
    resolve_jobs: Option<SyncSender<String>>,
    parse_jobs: Option<SyncSender<Vec<u8>>>,
    cached: Option<(Instant, SocketAddr)>,
    resolving: bool,
    exchange: Exchange,
    fresh: Option<(Instant, Arc<ParsedListing>)>,
    address_waiters: Vec<Waiter>,
    listing_waiters: Vec<Waiter>,
}

impl Discovery {
    /// `host` as given by `--discovery-service` (a name, an IPv4 literal, or
    /// an IPv6 literal with or without brackets). `waker` is the loop's one
    /// waker (mio allows one per poll), shared with the other helpers.
    pub fn new(host: &str, port: u16, timeout: Duration, waker: Arc<Waker>) -> Discovery {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let literal = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Discovery {
            host,
            port,
            literal,
            timeout,
            waker,
            slots: Arc::default(),
            resolve_jobs: None,
            parse_jobs: None,
            cached: None,
            resolving: false,
            exchange: Exchange::Idle,
            fresh: None,
            address_waiters: Vec::new(),
            listing_waiters: Vec::new(),
        }
    }

    /// What start-up logs about the service.
    pub fn describe(&self) -> String {
        match self.literal {
            Some(a) => a.to_string(),
            None => format!("{}:{} (name looked up when needed)", self.host, self.port),
        }
    }

    /// The address to connect to. `None`: `waiter` gets a
    /// [`Delivery::Address`] once the lookup is done.
    pub fn want_address(
        &mut self,
        now: Instant,
        waiter: Waiter,
    ) -> Option<Result<SocketAddr, String>> {
        match self.address(now) {
            Poll::Ready(r) => Some(r.map_err(|why| self.unresolved(why).to_string())),
            Poll::Pending if self.address_waiters.len() >= MAX_WAITERS => {
                Some(Err(too_many().to_string()))
            }
            Poll::Pending => {
                self.address_waiters.push(waiter);
                None
            }
        }
    }

    /// A listing at most [`FRESH_FOR`] old. `None`: `waiter` gets a
    /// [`Delivery::Listing`] once the shared exchange is done.
    pub fn want_listing(
        &mut self,
        registry: &Registry,
        now: Instant,
        waiter: Waiter,
    ) -> Option<Result<Arc<ParsedListing>, DiscoveryError>> {
        if let Some((at, listing)) = &self.fresh {
            if now.saturating_duration_since(*at) < FRESH_FOR {
                return Some(Ok(Arc::clone(listing)));
            }
            self.fresh = None;
        }
        if self.listing_waiters.len() >= MAX_WAITERS {
            return Some(Err(too_many()));
        }
        if matches!(self.exchange, Exchange::Idle) {
            // No one else waits while the exchange is idle: a failure to
            // start is this caller's alone.
            if let Err(e) = self.begin(registry, now) {
                return Some(Err(e));
            }
        }
        self.listing_waiters.push(waiter);
        None
    }

    /// The shared exchange's deadline, for the loop's timeout.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.exchange {
            Exchange::WaitingAddress { deadline } | Exchange::Calling { deadline, .. } => {
                Some(*deadline)
            }
            Exchange::Idle | Exchange::Parsing { .. } => None,
        }
    }

    /// A helper thread has a result.
    pub fn on_wake(&mut self, registry: &Registry, now: Instant) -> Vec<(Waiter, Delivery)> {
        let (address, listing) = match self.slots.lock() {
            Ok(mut s) => (s.address.take(), s.listing.take()),
            Err(_) => (None, None),
        };
        let mut out = Vec::new();
        if let Some(r) = address {
            self.resolving = false;
            match &r {
                Ok(a) => {
                    debug!("discovery service {} is at {a}", self.host);
                    self.cached = Some((now, *a));
                }
                Err(why) => info!("{}", self.unresolved(why.clone())),
            }
            let told = r.clone().map_err(|why| self.unresolved(why).to_string());
            out.extend(
                self.address_waiters
                    .drain(..)
                    .map(|w| (w, Delivery::Address(told.clone()))),
            );
            if matches!(self.exchange, Exchange::WaitingAddress { .. }) {
                self.exchange = Exchange::Idle;
                let started = match r {
                    Ok(addr) => self.call(registry, now, addr),
                    Err(why) => Err(self.unresolved(why)),
                };
                if let Err(e) = started {
                    out.extend(self.fail_listing(e));
                }
            }
        }
        if let Some(r) = listing {
            if let Exchange::Parsing { received } = self.exchange {
                self.exchange = Exchange::Idle;
                let r = r.map(Arc::new);
                if let Ok(l) = &r {
                    debug!(
                        "discovery listing parsed: {} bytes, {} containers",
                        l.body_len(),
                        l.len()
                    );
                    self.fresh = Some((received, Arc::clone(l)));
                }
                out.extend(
                    self.listing_waiters
                        .drain(..)
                        .map(|w| (w, Delivery::Listing(r.clone()))),
                );
            }
        }
        out
    }

    /// The exchange's socket is ready.
    pub fn on_call_ready(&mut self, registry: &Registry, now: Instant) -> Vec<(Waiter, Delivery)> {
        let Exchange::Calling { call, .. } = &mut self.exchange else {
            return Vec::new();
        };
        let result = match call.on_ready() {
            Poll::Pending => return Vec::new(),
            Poll::Ready(r) => r,
        };
        let _ = registry.deregister(call.stream());
        self.exchange = Exchange::Idle;
        match result {
            Ok(resp) => match self.parse(resp.body) {
                Ok(()) => {
                    self.exchange = Exchange::Parsing { received: now };
                    Vec::new()
                }
                Err(e) => self.fail_listing(e),
            },
            Err(e) => {
                if matches!(e, DiscoveryError::Unreachable(_)) {
                    // It may have moved: look the name up again next time.
                    self.cached = None;
                }
                self.fail_listing(e)
            }
        }
    }

    /// The exchange stopped at its read budget with data left: the loop
    /// calls [`Discovery::on_call_ready`] again before it sleeps.
    pub fn call_has_more(&self) -> bool {
        matches!(&self.exchange, Exchange::Calling { call, .. } if call.more())
    }

    /// The loop's clock passed [`Discovery::deadline`].
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) -> Vec<(Waiter, Delivery)> {
        if self.deadline().is_none_or(|d| d > now) {
            return Vec::new();
        }
        if let Exchange::Calling { call, .. } = &mut self.exchange {
            let _ = registry.deregister(call.stream());
        }
        self.exchange = Exchange::Idle;
        self.fail_listing(DiscoveryError::TimedOut)
    }

    fn fail_listing(&mut self, e: DiscoveryError) -> Vec<(Waiter, Delivery)> {
        self.listing_waiters
            .drain(..)
            .map(|w| (w, Delivery::Listing(Err(e.clone()))))
            .collect()
    }

    fn unresolved(&self, why: String) -> DiscoveryError {
        DiscoveryError::Unresolved {
            host: self.host.clone(),
            why,
        }
    }

    fn address(&mut self, now: Instant) -> Poll<Result<SocketAddr, String>> {
        if let Some(a) = self.literal {
            return Poll::Ready(Ok(a));
        }
        if let Some((at, a)) = self.cached {
            if now.saturating_duration_since(at) < ADDRESS_TTL {
                return Poll::Ready(Ok(a));
            }
            self.cached = None;
        }
        if !self.resolving {
            if let Err(why) = self.resolve() {
                return Poll::Ready(Err(why));
            }
            self.resolving = true;
        }
        Poll::Pending
    }

    /// Starts the exchange, or the lookup it waits for.
    fn begin(&mut self, registry: &Registry, now: Instant) -> Result<(), DiscoveryError> {
        match self.address(now) {
            Poll::Ready(Ok(addr)) => self.call(registry, now, addr),
            Poll::Ready(Err(why)) => Err(self.unresolved(why)),
            Poll::Pending => {
                self.exchange = Exchange::WaitingAddress {
                    deadline: now + self.timeout,
                };
                Ok(())
            }
        }
    }

    fn call(
        &mut self,
        registry: &Registry,
        now: Instant,
        addr: SocketAddr,
    ) -> Result<(), DiscoveryError> {
        let mut call = Box::new(DiscoveryCall::start(addr, &self.host, self.port)?);
        registry
            .register(call.stream(), CALL, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| DiscoveryError::Unreachable(e.to_string()))?;
        info!("asking the discovery service at {addr} for its container list");
        self.exchange = Exchange::Calling {
            call,
            deadline: now + self.timeout,
        };
        Ok(())
    }

    /// Hands the name to the resolver thread (started on first use).
    fn resolve(&mut self) -> Result<(), String> {
        if self.resolve_jobs.is_none() {
            let (tx, rx) = sync_channel::<String>(1);
            let (slots, waker, port) =
                (Arc::clone(&self.slots), Arc::clone(&self.waker), self.port);
            crate::service::background::spawn("resolver", move || resolver(rx, port, slots, waker))
                .map_err(|e| format!("cannot start the name resolver thread: {e}"))?;
            self.resolve_jobs = Some(tx);
        }
        let sent = self
            .resolve_jobs
            .as_ref()
            .map(|tx| tx.try_send(self.host.clone()));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => {
                self.resolve_jobs = None;
                Err("the name resolver thread is gone".into())
            }
        }
    }

    /// Hands a body to the parse thread (started on first use).
    fn parse(&mut self, body: Vec<u8>) -> Result<(), DiscoveryError> {
        if self.parse_jobs.is_none() {
            let (tx, rx) = sync_channel::<Vec<u8>>(1);
            let (slots, waker) = (Arc::clone(&self.slots), Arc::clone(&self.waker));
            crate::service::background::spawn("listing-parser", move || parser(rx, slots, waker))
                .map_err(|e| DiscoveryError::BadJson(format!("cannot start the parser: {e}")))?;
            self.parse_jobs = Some(tx);
        }
        let sent = self.parse_jobs.as_ref().map(|tx| tx.try_send(body));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => {
                self.parse_jobs = None;
                Err(DiscoveryError::BadJson("the parser thread is gone".into()))
            }
        }
    }
}

fn too_many() -> DiscoveryError {
    DiscoveryError::Unreachable(format!("{MAX_WAITERS} lookups are already waiting for it"))
}

/// The resolver thread: one system lookup per job.
fn resolver(jobs: Receiver<String>, port: u16, slots: Arc<Mutex<Slots>>, waker: Arc<Waker>) {
    while let Ok(host) = jobs.recv() {
        let r = match (host.as_str(), port).to_socket_addrs() {
            Ok(mut addrs) => addrs
                .next()
                .ok_or_else(|| "the name has no address".to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(mut s) = slots.lock() {
            s.address = Some(r);
        }
        let _ = waker.wake();
    }
}

/// The parse thread: one listing per job.
fn parser(jobs: Receiver<Vec<u8>>, slots: Arc<Mutex<Slots>>, waker: Arc<Waker>) {
    while let Ok(body) = jobs.recv() {
        let r = ParsedListing::parse(body);
        if let Ok(mut s) = slots.lock() {
            s.listing = Some(r);
        }
        let _ = waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(host: &str) -> (mio::Poll, Discovery) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
        (
            poll,
            Discovery::new(host, 5000, Duration::from_secs(5), waker),
        )
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        for (host, want) in [
            ("127.0.0.1", "127.0.0.1:5000"),
            ("[::1]", "[::1]:5000"),
            ("::1", "[::1]:5000"),
        ] {
            let (_poll, mut d) = discovery(host);
            let got = d.want_address(Instant::now(), (0, 1));
            assert_eq!(got.map(|r| r.map(|a| a.to_string())), Some(Ok(want.into())));
            assert!(d.resolve_jobs.is_none(), "{host}: a resolver was started");
        }
    }

    #[test]
    fn a_name_is_looked_up_off_the_loop_and_handed_to_every_waiter() {
        let (mut poll, mut d) = discovery("localhost");
        let now = Instant::now();
        assert!(d.want_address(now, (0, 1)).is_none());
        assert!(d.want_address(now, (1, 2)).is_none());
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut delivered = Vec::new();
        while delivered.is_empty() && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events.iter().any(|e| e.token() == WAKE) {
                delivered = d.on_wake(poll.registry(), Instant::now());
            }
        }
        let waiters: Vec<Waiter> = delivered.iter().map(|(w, _)| *w).collect();
        assert_eq!(waiters, vec![(0, 1), (1, 2)]);
        for (_, got) in &delivered {
            assert!(
                matches!(got, Delivery::Address(Ok(a)) if a.ip().is_loopback() && a.port() == 5000),
                "{got:?}"
            );
        }
        // Cached now: answered at once.
        assert!(matches!(
            d.want_address(Instant::now(), (2, 3)),
            Some(Ok(_))
        ));
    }

    #[test]
    fn a_fresh_listing_serves_new_lookups_and_a_stale_one_does_not() {
        let (poll, mut d) = discovery("127.0.0.1");
        let listing = ParsedListing::parse(br#"{"containers":[]}"#.to_vec()).unwrap();
        let at = Instant::now();
        d.fresh = Some((at, Arc::new(listing)));
        let young = at + FRESH_FOR / 2;
        assert!(matches!(
            d.want_listing(poll.registry(), young, (0, 1)),
            Some(Ok(_))
        ));
        // Older than FRESH_FOR: a new exchange starts (the connect to
        // port 5000 is non-blocking) and the caller waits for it.
        let old = at + FRESH_FOR;
        assert!(d.want_listing(poll.registry(), old, (0, 2)).is_none());
        assert!(d.fresh.is_none());
        assert!(d.deadline().is_some());
    }
}
