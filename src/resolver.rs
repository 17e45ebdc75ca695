//! The discovery service's address, looked up when a session needs it.
//!
//! GhostWire is usually named by a service name (compose, Kubernetes):
//! containers start in any order, and a restarted GhostWire gets a new
//! address, so the name is resolved when a capture or a proxied request
//! needs it, not once at start-up. An IP literal needs no lookup.
//!
//! The system resolver (`getaddrinfo`: `/etc/hosts`, DNS, whatever
//! nsswitch says) only comes as a blocking call, and the loop must never
//! wait. So one resolver thread makes the calls, one at a time, and wakes
//! the loop through a `mio::Waker` with the answer. A non-blocking DNS
//! client was the alternative; it would bypass `/etc/hosts` and nsswitch,
//! which is where compose and many deployments put such names.
//!
//! [`Names`] holds the decisions and no I/O: whether an answer is fresh,
//! who waits for the next one, whether a lookup must be started. Sessions
//! that wait are named by slab key and session id, and the loop hands the
//! answer to those still alive. At most one lookup is in flight; the queue
//! of waiters is bounded by the number of sessions.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an answer is used without asking again. Short, because a
/// restarted discovery service may have a new address; long enough that a
/// burst of requests (csharg lists targets, then captures) shares a lookup.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// What a session gets when it asks for the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ready(SocketAddr),
    /// A lookup is under way; the session is woken with its answer.
    Pending,
    /// No lookup can be made (the resolver thread is gone): the reason.
    Failed(String),
}

/// The outcome of one lookup, as handed to the sessions that waited.
pub type Resolved = Result<SocketAddr, String>;

/// The sans-IO part: cache, waiters, and whether to ask the thread.
#[derive(Debug)]
pub struct Names {
    host: String,
    port: u16,
    literal: Option<SocketAddr>,
    cached: Option<(SocketAddr, Instant)>,
    in_flight: bool,
    waiting: Vec<(usize, u64)>,
}

impl Names {
    pub fn new(host: &str, port: u16) -> Names {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        Names {
            host: bare.to_string(),
            port,
            literal: bare
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port)),
            cached: None,
            in_flight: false,
            waiting: Vec::new(),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The address for session (`key`, `id`), or `Pending` (it is then
    /// remembered as waiting). The second value says whether a lookup must
    /// be started now.
    pub fn lookup(&mut self, now: Instant, key: usize, id: u64) -> (Answer, bool) {
        if let Some(addr) = self.literal {
            return (Answer::Ready(addr), false);
        }
        if let Some((addr, at)) = self.cached {
            if now.saturating_duration_since(at) < FRESH_FOR {
                return (Answer::Ready(addr), false);
            }
        }
        if !self.waiting.contains(&(key, id)) {
            self.waiting.push((key, id));
        }
        let start = !self.in_flight;
        self.in_flight = true;
        (Answer::Pending, start)
    }

    /// A lookup ended: remember a success, and return who waited. Failures
    /// are not remembered, so the next need asks again (the name may
    /// resolve by then).
    pub fn answered(&mut self, now: Instant, result: &Resolved) -> Vec<(usize, u64)> {
        self.in_flight = false;
        if let Ok(addr) = result {
            self.cached = Some((*addr, now));
        }
        std::mem::take(&mut self.waiting)
    }

    /// The address stopped answering: ask again next time.
    pub fn forget(&mut self) {
        self.cached = None;
    }

    /// The reason a session gets when the name does not resolve.
    pub fn failure(&self, why: &str) -> String {
        format!(
            "discovery service name {} does not resolve: {why}",
            self.host
        )
    }
}

/// [`Names`] plus the thread that makes the blocking calls.
pub struct Resolver {
    pub names: Names,
    ask: Option<SyncSender<(String, u16)>>,
    answers: Option<Receiver<Resolved>>,
}

impl Resolver {
    /// Starts the resolver thread, unless the host is an IP literal. The
    /// thread inherits the caller's signal mask: call this after blocking
    /// the signals the loop reads from its signalfd.
    pub fn new(host: &str, port: u16, waker: mio::Waker) -> std::io::Result<Resolver> {
        let names = Names::new(host, port);
        if names.literal.is_some() {
            return Ok(Resolver {
                names,
                ask: None,
                answers: None,
            });
        }
        // One request in flight at a time (see `Names::lookup`): a channel
        // of one is never full when the loop sends.
        let (ask, requests) = mpsc::sync_channel::<(String, u16)>(1);
        let (reply, answers) = mpsc::sync_channel::<Resolved>(1);
        let waker = Arc::new(waker);
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                while let Ok((host, port)) = requests.recv() {
                    let result = resolve(&host, port);
                    if reply.send(result).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver {
            names,
            ask: Some(ask),
            answers: Some(answers),
        })
    }

    /// [`Names::lookup`], starting the thread's lookup when needed.
    pub fn lookup(&mut self, now: Instant, key: usize, id: u64) -> Answer {
        let (answer, start) = self.names.lookup(now, key, id);
        if start {
            let sent = self.ask.as_ref().is_some_and(|a| {
                a.try_send((self.names.host.clone(), self.names.port))
                    .is_ok()
            });
            if !sent {
                // Only if the thread died: nothing would ever answer.
                let why = "the resolver thread has stopped".to_string();
                log::error!("cannot look up {}: {why}", self.names.host);
                self.names.answered(now, &Err(why.clone()));
                return Answer::Failed(self.names.failure(&why));
            }
        }
        answer
    }

    /// The loop was woken: the answer, if one came, and who waited for it.
    pub fn take_answer(&mut self, now: Instant) -> Option<(Resolved, Vec<(usize, u64)>)> {
        let result = match self.answers.as_ref()?.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                self.answers = None;
                self.ask = None;
                Err("the resolver thread has stopped".into())
            }
        };
        let waiting = self.names.answered(now, &result);
        Some((result, waiting))
    }
}

/// The blocking call, made on the resolver thread only.
fn resolve(host: &str, port: u16) -> Resolved {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "the name has no address".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_literal_needs_no_lookup() {
        let now = Instant::now();
        let mut n = Names::new("127.0.0.1", 5000);
        assert_eq!(
            n.lookup(now, 1, 1),
            (Answer::Ready("127.0.0.1:5000".parse().unwrap()), false)
        );
        let mut n = Names::new("[::1]", 5000);
        assert_eq!(
            n.lookup(now, 1, 1),
            (Answer::Ready("[::1]:5000".parse().unwrap()), false)
        );
    }

    #[test]
    fn a_name_is_looked_up_once_for_all_who_wait() {
        let now = Instant::now();
        let mut n = Names::new("ghostwire", 5000);
        assert_eq!(n.lookup(now, 1, 10), (Answer::Pending, true));
        assert_eq!(n.lookup(now, 2, 20), (Answer::Pending, false));
        assert_eq!(n.lookup(now, 2, 20), (Answer::Pending, false));
        let addr: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(n.answered(now, &Ok(addr)), vec![(1, 10), (2, 20)]);
        assert_eq!(n.lookup(now, 3, 30), (Answer::Ready(addr), false));
    }

    #[test]
    fn an_answer_goes_stale_and_is_asked_again() {
        let now = Instant::now();
        let mut n = Names::new("ghostwire", 5000);
        n.lookup(now, 1, 1);
        let addr: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        n.answered(now, &Ok(addr));
        let later = now + FRESH_FOR;
        assert_eq!(n.lookup(later, 1, 2), (Answer::Pending, true));
        n.answered(later, &Ok(addr));
        n.forget();
        assert_eq!(n.lookup(later, 1, 3), (Answer::Pending, true));
    }

    #[test]
    fn failures_are_not_remembered() {
        let now = Instant::now();
        let mut n = Names::new("gw.invalid", 5000);
        n.lookup(now, 1, 1);
        assert_eq!(n.answered(now, &Err("no".into())), vec![(1, 1)]);
        assert_eq!(n.lookup(now, 1, 2), (Answer::Pending, true));
        assert!(n.failure("no").contains("gw.invalid does not resolve"));
    }

    #[test]
    fn the_thread_answers_through_the_waker() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(7)).unwrap();
        let mut r = Resolver::new("localhost", 5000, waker).unwrap();
        assert_eq!(r.lookup(Instant::now(), 1, 1), Answer::Pending);
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if let Some(a) = r.take_answer(Instant::now()) {
                break a;
            }
            assert!(Instant::now() < deadline, "no answer");
        };
        let (result, waiting) = answer;
        assert_eq!(waiting, vec![(1, 1)]);
        assert!(result.unwrap().ip().is_loopback());
    }
}
