//! The raw baseline: the simplest relay from a capture program's stdout to a
//! TCP socket, measured beside the service on the same generator.
//!
//! Per accepted connection one thread spawns the generator (stdout piped,
//! stderr to /dev/null), then loops `poll(pipe, socket hang-up)` →
//! `read(pipe, 64 KiB)` → `write_all(socket)` until the generator ends or the
//! client leaves. No framing, no buffering beyond one read, no event loop:
//! the floor any relay can reach with read+write on this machine. (The poll
//! is what any relay needs to notice a client leaving while the capture is
//! quiet; without it an idle capture would outlive its client.) Its CPU is each relay thread's own
//! (`getrusage(RUSAGE_THREAD)`), which like the service's excludes the
//! generator. It never outlives [`RawRelay::stop`] (also run on drop):
//! generators still running then are terminated and reaped.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::thread_cpu_ns;

/// One read from the pipe: the default Linux pipe capacity, so a full pipe
/// is drained in one call (the same chunk the service reads, presumably).
const RELAY_CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    cpu_ns: AtomicU64,
    bytes: AtomicU64,
    live: Mutex<HashSet<u32>>,
}

/// A running relay listening on 127.0.0.1.
pub struct RawRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl RawRelay {
    /// Starts listening; each connection runs `generator` with `env`.
    pub fn start(generator: &Path, env: &[(String, String)]) -> io::Result<RawRelay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let gen: PathBuf = generator.to_path_buf();
        let env = env.to_vec();
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("raw-accept".into())
            .spawn(move || {
                let mut workers = Vec::new();
                for conn in listener.incoming() {
                    if sh.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(sock) = conn else { continue };
                    let (gen, env, sh) = (gen.clone(), env.clone(), sh.clone());
                    let w = std::thread::Builder::new()
                        .name("raw-relay".into())
                        .stack_size(64 * 1024)
                        .spawn(move || relay_one(sock, &gen, &env, &sh));
                    if let Ok(w) = w {
                        workers.push(w);
                    }
                }
                workers
            })?;
        Ok(RawRelay {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// CPU time all relay threads that ended have used, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.shared.cpu_ns.load(Ordering::SeqCst)
    }

    /// Bytes relayed by connections that ended.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }

    /// Stops accepting, terminates generators still running and waits for
    /// every relay thread.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Ok(live) = self.shared.live.lock() {
            for pid in live.iter() {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
            }
        }
        if let Ok(workers) = acceptor.join() {
            for w in workers {
                let _ = w.join();
            }
        }
    }

    /// Waits (bounded) until every relay thread has ended, so their CPU is
    /// in [`RawRelay::cpu_ns`].
    pub fn settle(&self, limit: std::time::Duration) {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if self
                .shared
                .live
                .lock()
                .map(|l| l.is_empty())
                .unwrap_or(true)
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for RawRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay_one(mut sock: TcpStream, gen: &Path, env: &[(String, String)], sh: &Shared) {
    if sh.stop.load(Ordering::SeqCst) {
        return;
    }
    let cpu0 = thread_cpu_ns();
    let _ = sock.set_nodelay(true);
    let mut cmd = Command::new(gen);
    cmd.args(["-w", "-", "-n", "-q"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child: Child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) => return,
    };
    let pid = child.id();
    if let Ok(mut live) = sh.live.lock() {
        live.insert(pid);
    }
    let mut relayed = 0u64;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0u8; RELAY_CHUNK];
        loop {
            let mut fds = [
                PollFd::new(out.as_fd(), PollFlags::POLLIN),
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            // A raw client never sends: any event on the socket means it left.
            if fds[1].any().unwrap_or(true) {
                break;
            }
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sock.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    relayed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    // The client left or the generator ended: either way it is over.
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let _ = child.wait();
    drop(sock);
    sh.bytes.fetch_add(relayed, Ordering::SeqCst);
    sh.cpu_ns
        .fetch_add(thread_cpu_ns().saturating_sub(cpu0), Ordering::SeqCst);
    if let Ok(mut live) = sh.live.lock() {
        live.remove(&pid);
    }
}
