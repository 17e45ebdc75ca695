//! One `GET /mobyshark` exchange with the discovery service over a
//! non-blocking socket: the I/O half of the discovery client. What the
//! answer means is read by `crate::proto::discovery`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::task::Poll;

use mio::net::TcpStream;

use crate::proto::discovery::{
    already_finished, bad, mobyshark_request, DiscoveryError, Response, ResponseParser,
    MAX_DISCOVERY_BODY,
};

/// Bytes read from the socket per `read` call; the socket buffer is drained
/// in a loop, so this only trades stack space for system calls.
const READ_CHUNK: usize = 16 * 1024;

/// Reads per [`DiscoveryCall::on_ready`] before it yields the loop to other
/// clients: the loop's one per-turn budget, so an 8 MiB answer arriving at
/// once is taken over several loop turns, not in one.
const READS_PER_TURN: usize = crate::proto::session::pump::reads_per_turn(READ_CHUNK);

/// A user-facing reason for a socket error: the C library's wording
/// ("connection refused"), without Rust's "(os error 111)" suffix.
fn io_reason(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let desc = nix::errno::Errno::from_raw(code).desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => e.to_string(),
    }
}

/// Where a [`DiscoveryCall`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending { written: usize },
    Receiving,
    Done,
}

/// One `GET /mobyshark` exchange over a non-blocking TCP connection, driven
/// by the reactor: it registers [`DiscoveryCall::stream`] for
/// `READABLE | WRITABLE` and calls [`DiscoveryCall::on_ready`] on every event
/// for it until that returns `Ready`. Dropping the call closes the socket
/// (which also removes it from the poll); that is how the reactor cancels it.
#[derive(Debug)]
pub struct DiscoveryCall {
    stream: TcpStream,
    phase: Phase,
    request: Vec<u8>,
    parser: ResponseParser,
    /// The last `on_ready` stopped at its read budget with data left:
    /// call it again before the loop sleeps (no new event will come).
    more: bool,
}

impl DiscoveryCall {
    /// Starts a non-blocking connect to `addr`. `host_header` and `port` are
    /// the service as the user named it, for the `Host` header.
    pub fn start(addr: SocketAddr, host_header: &str, port: u16) -> Result<Self, DiscoveryError> {
        let stream =
            TcpStream::connect(addr).map_err(|e| DiscoveryError::Unreachable(io_reason(&e)))?;
        Ok(DiscoveryCall {
            stream,
            phase: Phase::Connecting,
            request: mobyshark_request(host_header, port),
            parser: ResponseParser::new(MAX_DISCOVERY_BODY),
            more: false,
        })
    }

    /// The socket, for the reactor to register (and deregister).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Makes all the progress the socket allows right now, without blocking:
    /// completes the connect, sends the request, reads and parses the answer.
    /// Registration is edge-triggered, so every step runs until the socket
    /// says `WouldBlock`. `Ready(Ok)` only for a complete `200 OK` response.
    pub fn on_ready(&mut self) -> Poll<Result<Response, DiscoveryError>> {
        self.more = false;
        let outcome = self.advance();
        if outcome.is_ready() {
            self.phase = Phase::Done;
        }
        outcome
    }

    /// Whether the last [`on_ready`](Self::on_ready) left readable data
    /// for another turn.
    pub fn more(&self) -> bool {
        self.more
    }

    fn advance(&mut self) -> Poll<Result<Response, DiscoveryError>> {
        let mut reads = 0;
        loop {
            match self.phase {
                Phase::Connecting => match self.connected() {
                    Ok(true) => self.phase = Phase::Sending { written: 0 },
                    Ok(false) => return Poll::Pending,
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Phase::Sending { written } => match self.stream.write(&self.request[written..]) {
                    Ok(0) => {
                        return Poll::Ready(Err(DiscoveryError::Unreachable(
                            "the connection closed while the request was sent".into(),
                        )))
                    }
                    Ok(n) if written + n == self.request.len() => self.phase = Phase::Receiving,
                    Ok(n) => {
                        self.phase = Phase::Sending {
                            written: written + n,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Poll::Ready(Err(DiscoveryError::Unreachable(io_reason(&e)))),
                },
                Phase::Receiving => {
                    if reads == READS_PER_TURN {
                        self.more = true;
                        return Poll::Pending;
                    }
                    reads += 1;
                    let mut buf = [0u8; READ_CHUNK];
                    match self.stream.read(&mut buf) {
                        Ok(0) => return Poll::Ready(self.parser.eof().and_then(accept_status)),
                        Ok(n) => match self.parser.feed(&buf[..n]) {
                            Ok(None) => {}
                            Ok(Some(response)) => return Poll::Ready(accept_status(response)),
                            Err(e) => return Poll::Ready(Err(e)),
                        },
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Poll::Ready(Err(bad(format!(
                                "the connection broke before the response was complete ({})",
                                io_reason(&e)
                            ))))
                        }
                    }
                }
                Phase::Done => return Poll::Ready(Err(already_finished())),
            }
        }
    }

    /// Whether the non-blocking connect has completed, following the steps
    /// `mio::net::TcpStream::connect` documents.
    fn connected(&self) -> Result<bool, DiscoveryError> {
        match self.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(DiscoveryError::Unreachable(io_reason(&e))),
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) =>
            {
                Ok(false)
            }
            Err(e) => Err(DiscoveryError::Unreachable(io_reason(&e))),
        }
    }
}

/// Only `200 OK` carries the container list.
fn accept_status(response: Response) -> Result<Response, DiscoveryError> {
    const OK: u16 = 200;
    if response.status == OK {
        Ok(response)
    } else {
        Err(DiscoveryError::BadStatus(response.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::discovery::find_target;
    use mio::{Events, Interest, Token};
    use std::net::{TcpListener, TcpStream as StdTcpStream};
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    fn ok(body: &[u8]) -> Result<Response, DiscoveryError> {
        Ok(Response {
            status: 200,
            body: body.to_vec(),
        })
    }

    fn fixture() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ghostwire-mobyshark.json"
        );
        std::fs::read(path).unwrap()
    }

    // --- DiscoveryCall against real loopback sockets ---------------------

    /// Bound on everything a test waits for, so a broken call fails the
    /// test instead of hanging it.
    const TEST_LIMIT: Duration = Duration::from_secs(10);
    /// One poll round of the test reactor.
    const TURN: Duration = Duration::from_millis(20);
    const CALL: Token = Token(7);

    /// A one-connection HTTP server on 127.0.0.1: reads the request head,
    /// then lets `answer` do the rest. Joining it yields the request.
    struct Server {
        addr: SocketAddr,
        thread: JoinHandle<Vec<u8>>,
    }

    impl Server {
        fn start(answer: impl FnOnce(&mut StdTcpStream) + Send + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let thread = thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                stream.set_read_timeout(Some(TEST_LIMIT)).unwrap();
                stream.set_write_timeout(Some(TEST_LIMIT)).unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") && request.len() < 64 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                answer(&mut stream);
                request
            });
            Server { addr, thread }
        }

        fn request(self) -> String {
            String::from_utf8(self.thread.join().unwrap()).unwrap()
        }
    }

    /// The reactor's side, reduced to one source.
    struct Driver {
        poll: mio::Poll,
        events: Events,
    }

    enum Turn {
        Idle,
        Pending,
        Ready(Result<Response, DiscoveryError>),
    }

    impl Driver {
        fn new(call: &mut DiscoveryCall) -> Driver {
            let poll = mio::Poll::new().unwrap();
            poll.registry()
                .register(call.stream(), CALL, Interest::READABLE | Interest::WRITABLE)
                .unwrap();
            Driver {
                poll,
                events: Events::with_capacity(8),
            }
        }

        fn turn(&mut self, call: &mut DiscoveryCall) -> Turn {
            match self.poll.poll(&mut self.events, Some(TURN)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Turn::Idle,
                result => result.unwrap(),
            }
            if self.events.is_empty() {
                return Turn::Idle;
            }
            for event in &self.events {
                assert_eq!(event.token(), CALL);
                if let Poll::Ready(outcome) = call.on_ready() {
                    return Turn::Ready(outcome);
                }
            }
            Turn::Pending
        }

        fn finish(&mut self, call: &mut DiscoveryCall) -> Result<Response, DiscoveryError> {
            let deadline = Instant::now() + TEST_LIMIT;
            while Instant::now() < deadline {
                if let Turn::Ready(outcome) = self.turn(call) {
                    return outcome;
                }
            }
            panic!("the discovery call did not finish within {TEST_LIMIT:?}");
        }
    }

    fn call(addr: SocketAddr) -> Result<Response, DiscoveryError> {
        let mut call = DiscoveryCall::start(addr, "127.0.0.1", addr.port())?;
        Driver::new(&mut call).finish(&mut call)
    }

    #[test]
    fn call_fetches_the_listing_from_a_real_server() {
        let listing = fixture();
        let served = listing.clone();
        let server = Server::start(move |stream| {
            let (first, second) = served.split_at(served.len() / 2);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap();
            for part in [first, second] {
                stream
                    .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .unwrap();
                stream.write_all(part).unwrap();
                stream.write_all(b"\r\n").unwrap();
                stream.flush().unwrap();
            }
            stream.write_all(b"0\r\n\r\n").unwrap();
        });
        let addr = server.addr;
        let response = call(addr).unwrap();
        assert_eq!(response.body, listing);
        assert_eq!(
            find_target(&response.body, "mosquitto", "dind-1")
                .unwrap()
                .netns,
            4026532999
        );
        let request = server.request();
        assert!(request.starts_with(&format!(
            "GET /mobyshark HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
            addr.port()
        )));
    }

    #[test]
    fn large_close_delimited_answer_is_read_to_the_end() {
        // Many socket reads and several readiness events.
        let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let served = body.clone();
        let server = Server::start(move |stream| {
            stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
            stream.write_all(&served).unwrap();
        });
        assert_eq!(call(server.addr).unwrap().body, body);
        server.request();
    }

    /// A loopback port held by a socket that is bound but not listening
    /// (the local end of a connection), so connecting to it is refused and
    /// no other test can take the port while the sockets live.
    fn refusing_port() -> ((TcpListener, StdTcpStream), SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = StdTcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let addr = client.local_addr().unwrap();
        ((listener, client), addr)
    }

    #[test]
    fn refused_connection_is_unreachable() {
        let (_reserved, addr) = refusing_port();
        let error = call(addr).unwrap_err();
        assert_eq!(
            error,
            DiscoveryError::Unreachable("connection refused".into())
        );
        assert_eq!(
            error.describe(&addr.to_string()),
            format!("discovery service (GhostWire) at {addr} is unreachable: connection refused")
        );
    }

    #[test]
    fn server_closing_without_answering_is_a_bad_response() {
        let server = Server::start(|_| {});
        assert_eq!(
            call(server.addr),
            Err(DiscoveryError::BadResponse(
                "it closed the connection without answering".into()
            ))
        );
        assert!(server.request().starts_with("GET /mobyshark "));
    }

    #[test]
    fn error_status_is_reported() {
        let server = Server::start(|stream| {
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
                .unwrap();
        });
        assert_eq!(call(server.addr), Err(DiscoveryError::BadStatus(503)));
        server.request();
    }

    #[test]
    fn slow_server_leaves_the_call_pending_and_the_loop_free() {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (sent_tx, sent_rx) = mpsc::channel::<()>();
        let server = Server::start(move |stream| {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"contai")
                .unwrap();
            stream.flush().unwrap();
            sent_tx.send(()).unwrap();
            // Bounded, so the thread ends even if the test fails early.
            if go_rx.recv_timeout(TEST_LIMIT).is_ok() {
                let _ = stream.write_all(b"ners\":[]}");
            }
        });
        let mut call = DiscoveryCall::start(server.addr, "127.0.0.1", server.addr.port()).unwrap();
        let mut driver = Driver::new(&mut call);
        let deadline = Instant::now() + TEST_LIMIT;
        while sent_rx.try_recv().is_err() {
            assert!(
                Instant::now() < deadline,
                "the server never got the request"
            );
            if let Turn::Ready(outcome) = driver.turn(&mut call) {
                panic!("finished before the server answered: {outcome:?}");
            }
        }
        // The head and part of the body are there; the rest is not. Every
        // turn must come back, with the call still pending, and the poll
        // must end in its own timeout more than once.
        const IDLE_TURNS: usize = 3;
        let mut idle = 0;
        for _ in 0..(TEST_LIMIT.as_millis() / TURN.as_millis()) {
            match driver.turn(&mut call) {
                Turn::Idle => idle += 1,
                Turn::Pending => {}
                Turn::Ready(outcome) => panic!("finished before the server did: {outcome:?}"),
            }
            if idle == IDLE_TURNS {
                break;
            }
        }
        assert_eq!(idle, IDLE_TURNS);
        go_tx.send(()).unwrap();
        assert_eq!(driver.finish(&mut call), ok(b"{\"containers\":[]}"));
        server.request();
    }

    #[test]
    fn finished_call_does_not_start_over() {
        let server = Server::start(|stream| {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
        });
        let mut call = DiscoveryCall::start(server.addr, "127.0.0.1", server.addr.port()).unwrap();
        assert_eq!(Driver::new(&mut call).finish(&mut call), ok(b"{}"));
        assert!(matches!(call.on_ready(), Poll::Ready(Err(_))));
        server.request();
    }
}
