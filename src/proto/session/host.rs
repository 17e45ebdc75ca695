//! The one contract between the session machine and the world that runs it.
//!
//! The machine (this folder) decides; a [`Host`] does. Whatever the machine
//! asks and gets answered at once is a method call that returns the
//! answer: locate a namespace and list its interfaces, start or signal a
//! capture source, a process's start time, the discovery service's listing
//! or address when they are at hand, the next read of a descriptor. What
//! really arrives later (a listing or an address that had to be fetched, a
//! namespace scan, a source that exited, a deadline, a descriptor that
//! became ready) comes back as an [`Event`](super::Event).
//!
//! The service implements the trait over the operating system
//! (`crate::service::driver`); the unit tests and the `session` fuzz target
//! implement it over a simulated world ([`super::sim`]). Both run the same
//! machine and the same read pump ([`super::pump`]), so nothing the driver
//! decides is written twice. A host never calls back into the machine:
//! every method returns before the machine goes on, which keeps each
//! transition one plain function call.
//!
//! Nothing here does I/O; the types only name what crosses the boundary.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core::net::SocketAddr;

use crate::metrics::{End, Lookup, Refusal as Refused};
use crate::proto::discovery::{DiscoveryError, ParsedListing};

/// A descriptor of a session, as reads, resumes and tokens name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Client,
    /// The discovery service, while a request is proxied to it.
    Upstream,
    /// Target `i`'s capture output (a capture program's stdout).
    Output(usize),
    /// Target `i`'s diagnostics (a capture program's stderr).
    Diag(usize),
}

/// The client connection broke (the peer is gone), with the error that
/// said so.
#[derive(Debug)]
pub struct Broken(pub io::Error);

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where bytes for a peer go: the client's connection, or the discovery
/// service's while a request is proxied. The service's socket queues
/// implement it; tests and the fuzzer use vectors.
pub trait Out {
    /// Bytes not yet taken by the kernel (queue and TLS): the watermarks
    /// compare against this.
    fn pending(&self) -> usize;
    /// Queues `bytes` behind whatever waits and writes what the socket takes.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken>;
    /// `parts` in order as one unit, written straight from the caller's
    /// buffers when nothing waits.
    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken>;
    /// `head` then `body` as one unit, like `send_slices` (the relay's
    /// hot path).
    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> Result<(), Broken> {
        self.send_slices(&[head, body])
    }
}

/// What one read of a source gave.
#[derive(Debug)]
pub enum Read {
    /// This many bytes, at the start of the buffer.
    Data(usize),
    /// The source ended (EOF).
    End,
    /// Reading failed; the source is over.
    Failed(io::Error),
    /// A source the service runs itself ended this way, its output all
    /// read (a capture program's end is its exit, reaped later).
    Ended(SourceEnd),
    /// Nothing to read now (or the source is gone).
    WouldBlock,
}

/// A namespace to find and hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Locate {
    pub netns: u64,
    /// Tried first: the process the reference names.
    pub pid: u32,
    /// A miss is final only after a namespace scan that started after this.
    pub asked_at: Instant,
    /// List the namespace's interfaces too.
    pub links: bool,
}

/// Why a namespace was not found.
#[derive(Clone, Debug, PartialEq)]
pub enum LocateError {
    /// No process and no bind mount holds it.
    NotFound { netns: u64 },
    /// The lookup would wait for a scan, and too many wait already.
    TooManyWaiting { netns: u64 },
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let netns = match self {
            LocateError::NotFound { netns } | LocateError::TooManyWaiting { netns } => netns,
        };
        write!(
            f,
            "no network namespace with inode {netns} exists on this host (neither a process's nor a bind-mounted one)"
        )?;
        if let LocateError::TooManyWaiting { .. } = self {
            f.write_str(" (too many namespace lookups are waiting to check)")?;
        }
        Ok(())
    }
}

/// Where a namespace lookup ended.
#[derive(Debug)]
pub enum Located {
    /// Held until its source has started; its interfaces if asked for (or
    /// why they could not be listed).
    Held {
        links: Result<HashSet<String>, io::Error>,
    },
    Missing(LocateError),
    /// Not where it was last seen: asked again after the next namespace
    /// scan ([`Event::Rescanned`](super::Event::Rescanned)).
    Wait,
}

/// What to start for one target, in its held namespace.
#[derive(Clone, Copy, Debug)]
pub enum Spec<'a> {
    /// The capture program with these arguments (`-w - -n -q ... -i ...`).
    Process { args: &'a [String] },
    /// Packet rings read by the service itself: these interfaces in this
    /// order (none: every interface, cooked, as dumpcap's `any`), the
    /// filter as the program would get it, no promiscuous mode if chaste.
    Native {
        interfaces: &'a [String],
        filter: Option<&'a str>,
        chaste: bool,
    },
}

/// A source that started.
#[derive(Debug)]
pub enum Started {
    /// A capture program with this pid; `watched`: whether its output can
    /// be watched (it runs, and is stopped and reaped, either way).
    Process {
        pid: u32,
        watched: Result<(), io::Error>,
    },
    /// Packet rings are being opened (off the loop); their output comes as
    /// it does from a program, the first bytes once they are open, and the
    /// end as [`Read::Ended`].
    Native,
}

/// How a source the service runs itself ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEnd {
    /// Asked to stop, it stopped.
    Stopped,
    /// It ended by itself for a reason a user should see (a captured
    /// interface was deleted): a normal end (1000), as dumpcap's.
    Ended(String),
    /// It failed on the service's side (1011).
    Failed(String),
    /// The request cannot be served as asked (a filter libpcap refuses):
    /// the request's fault (1008).
    Refused(String),
}

/// Why a source did not start.
#[derive(Debug)]
pub enum StartError {
    /// Its namespace was not held (a host that lost it).
    NotHeld,
    /// The kernel refused (fork, setns, exec, a socket).
    Failed(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NotHeld => f.write_str("its network namespace is not held"),
            StartError::Failed(e) => e.fmt(f),
        }
    }
}

/// Why a proxied request's upstream connection could not start.
#[derive(Debug)]
pub enum ProxyFailure {
    /// The discovery service cannot be reached (502).
    Unreachable(io::Error),
    /// The upstream socket cannot be watched (502).
    CannotWatch(io::Error),
}

/// How the machine asks a running source to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// Stop cleanly (SIGTERM for a process).
    Term,
    /// Stop now (SIGKILL).
    Kill,
}

/// How a source ended (a reaped process's status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    /// Killed by the signal with this number and name (`SIGKILL`).
    Signaled(i32, &'static str),
    /// Anything else the kernel reported.
    Other,
}

/// Something the service counts (`/metrics`), reported by the machine as
/// data: the machine never touches the process-wide counters itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Count {
    Refused(Refused),
    /// A discovery lookup ended this way after this long.
    Lookup(Lookup, Duration),
    /// Sources started for a capture that runs.
    Started(usize),
    Ended(End),
    /// A capture's sources waited this long for a slow client.
    Paused(Duration),
    /// Capture bytes sent to a client.
    Relayed(usize),
}

/// A listing of the discovery service, or why there is none.
pub type Listing = Result<Arc<ParsedListing>, DiscoveryError>;

/// What the machine asks of the world. See the module's documentation.
pub trait Host: Out {
    // ---- the descriptors ---------------------------------------------------

    /// One read of `src` into `buf` (the loop's one read buffer).
    fn read(&mut self, src: Source, buf: &mut [u8]) -> Read;
    /// Read `src` again before the loop sleeps (it was paused, its turn's
    /// budget ran out, or bytes may wait that no new readiness announces).
    fn resume(&mut self, src: Source);
    /// Let this descriptor go: nobody reads it any more.
    fn forget(&mut self, src: Source);
    /// Everything is out: shut the client connection's write side.
    fn shutdown_write(&mut self);

    // ---- questions answered on the spot ------------------------------------

    /// A process's start time (`/proc/PID/stat` field 22), if it exists.
    fn starttime(&mut self, pid: u32) -> Option<u64>;
    /// Finds and holds target `target`'s namespace.
    fn locate(&mut self, target: usize, q: &Locate) -> Located;
    /// Lets every namespace held for this session go (its start ended).
    fn release_namespaces(&mut self);
    /// Starts target `target`'s source in its held namespace (then lets the
    /// namespace go).
    fn start(&mut self, target: usize, spec: Spec) -> Result<Started, StartError>;
    /// Asks target `target`'s source to stop. Only a source not yet reaped
    /// is signalled; the machine never asks for another.
    fn signal(&mut self, target: usize, sig: Sig);
    /// The discovery service's listing, if one is at hand; else it is
    /// fetched and arrives as [`Event::Listing`](super::Event::Listing).
    fn want_listing(&mut self) -> Option<Listing>;
    /// The discovery service's address, likewise
    /// ([`Event::Address`](super::Event::Address)).
    fn want_address(&mut self) -> Option<Result<SocketAddr, String>>;
    /// A request from `peer` carried no valid token: counts the failure
    /// and says how long its `401` must be held back (`proto::throttle`).
    fn token_refused(&mut self, peer: core::net::IpAddr) -> Duration;
    /// The service's counters in Prometheus' text format.
    fn metrics_text(&mut self) -> String;
    /// Counts one event.
    fn count(&mut self, c: Count);

    // ---- the proxied exchange's upstream -----------------------------------

    /// Starts connecting to the discovery service (non-blocking); the
    /// connection is reported by [`Event::UpstreamReady`](super::Event::UpstreamReady).
    fn connect_upstream(&mut self, addr: SocketAddr) -> Result<(), ProxyFailure>;
    /// The upstream connection's queue, while there is one.
    fn upstream(&mut self) -> Option<&mut dyn Out>;
    /// Bytes waiting for the upstream socket.
    fn upstream_pending(&self) -> usize;
    /// The exchange is over: let the upstream connection go.
    fn end_upstream(&mut self);
}
