//! The service under test, run as the real binary on a free port. Its stderr
//! goes to a scratch file that is printed when a test fails. On drop it gets
//! SIGTERM (then SIGKILL after a bound) and is reaped; any capture program it
//! leaves behind is killed too, so no test leaks a dumpcap.

use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::procs::{self, ProcStat};

/// How long the service may take to accept connections after exec.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the service may take to exit after SIGTERM before SIGKILL.
const TERM_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries at picking a free port before giving up (see [`Service::start`]).
const BIND_ATTEMPTS: usize = 3;

/// A port nothing listens on right now (dual-stack, as the service binds).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("bind [::]:0");
    l.local_addr().expect("local addr").port()
}

/// How to run the service: from another working directory, or through a
/// wrapper command that ends by exec'ing the binary with its arguments
/// appended (so the child's pid stays the service's own).
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub cwd: Option<PathBuf>,
    pub wrapper: Vec<String>,
}

pub struct Service {
    child: Child,
    port: u16,
    stderr_path: PathBuf,
}

impl Service {
    /// Starts `packetflix --port P ARGS...` and waits until it accepts.
    pub fn start(args: &[&str]) -> Service {
        Service::start_with(&Launch::default(), args)
    }

    /// [`Service::start`], run through `launch`.
    pub fn start_with(launch: &Launch, args: &[&str]) -> Service {
        // The free port may be taken by a parallel test before the service
        // binds it; then a fresh one is tried.
        for _ in 1..BIND_ATTEMPTS {
            if let Some(svc) = Service::try_start(launch, args) {
                return svc;
            }
        }
        Service::try_start(launch, args).expect("port in use on every attempt")
    }

    /// `None` only if the port was taken meanwhile; panics on other failures.
    fn try_start(launch: &Launch, args: &[&str]) -> Option<Service> {
        let port = free_port();
        let stderr_path = super::scratch_path("service.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let bin = super::bins::service();
        let mut cmd = match launch.wrapper.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
        };
        if let Some(dir) = &launch.cwd {
            cmd.current_dir(dir);
        }
        cmd.arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // If the test process dies without dropping us, the service still
        // gets a SIGTERM (and can reap its captures) instead of running on.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
        let child = cmd.spawn().expect("spawn packetflix");
        let mut svc = Service {
            child,
            port,
            stderr_path,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = svc.child.try_wait() {
                if svc.stderr().contains("Address already in use") {
                    return None;
                }
                panic!(
                    "packetflix {args:?} exited before accepting ({status}); stderr:\n{}",
                    svc.stderr()
                );
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Some(svc);
            }
            if Instant::now() >= deadline {
                panic!(
                    "packetflix {args:?} did not accept on port {port} within {READY_TIMEOUT:?}; stderr:\n{}",
                    svc.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the service pointed at a discovery service on 127.0.0.1:`gw_port`.
    pub fn with_discovery(gw_port: u16, timeout_secs: u32, extra: &[&str]) -> Service {
        let gw = gw_port.to_string();
        let t = timeout_secs.to_string();
        let mut args = vec![
            "--discovery-service",
            "127.0.0.1",
            "--gw-port",
            &gw,
            "--discovery-timeout",
            &t,
        ];
        args.extend_from_slice(extra);
        Service::start(&args)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn children(&self) -> Vec<ProcStat> {
        procs::children(self.pid())
    }

    pub fn zombies(&self) -> Vec<ProcStat> {
        self.children()
            .into_iter()
            .filter(|p| p.state == 'Z')
            .collect()
    }

    pub fn open_fds(&self) -> usize {
        procs::open_fds(self.pid())
    }

    /// The descriptor count once it has stopped changing (the readiness
    /// probe's connection, say, has been closed by the service): a baseline
    /// to compare with after a capture.
    pub fn settled_fds(&self) -> usize {
        let mut last = self.open_fds();
        let mut same = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while same < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.open_fds();
            same = if now == last { same + 1 } else { 0 };
            last = now;
        }
        last
    }

    /// The service's children running the capture program `comm`.
    pub fn captures(&self, comm: &str) -> Vec<ProcStat> {
        self.children()
            .into_iter()
            .filter(|p| p.comm == comm && p.state != 'Z')
            .collect()
    }

    /// Waits (bounded) until exactly `n` live `dumpcap` children run.
    pub fn wait_dumpcaps(&self, n: usize, timeout: Duration) -> Vec<ProcStat> {
        let mut seen = Vec::new();
        super::wait_for(timeout, || {
            seen = self.captures("dumpcap");
            seen.len() == n
        });
        seen
    }

    /// Sends SIGTERM and waits (bounded) for the service to exit; returns
    /// whether it exited by itself within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.send_sigterm();
        self.wait_exit(timeout)
    }

    /// Signals the service unless it has been reaped already (its pid may
    /// then belong to another process).
    pub fn send_sigterm(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        }
    }

    /// Waits (bounded) for the service to exit; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Once reaped, the pid may be another process's: look no further.
        let leftovers = match self.child.try_wait() {
            Ok(None) => procs::descendants(self.pid()),
            _ => Vec::new(),
        };
        if !self.terminate(TERM_TIMEOUT) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Whatever the service left running must not outlive the test. The
        // start time guards against signalling a recycled pid.
        for p in leftovers {
            if procs::stat(p.pid).is_some_and(|now| now.starttime == p.starttime) {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- packetflix stderr (port {}) ----\n{}---- end ----",
                self.port,
                self.stderr()
            );
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}
