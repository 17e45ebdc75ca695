//! The programs under test, run as real processes: the service binary on a
//! free port, or another server a bench compares it with. One launcher for
//! tests and benches: [`Launch`] says how (arguments, environment, working
//! directory, a wrapper command, a descriptor limit, another user, where
//! the output goes), [`Service`] is the running process.
//!
//! Output goes to a scratch file that is printed when a test fails, or to a
//! log the caller keeps. The launcher waits (bounded) until the program
//! accepts connections. On drop the process gets SIGTERM (then SIGKILL
//! after a bound) and is reaped; any capture program it leaves behind is
//! killed too, so no test or bench leaks a dumpcap.

use std::fs::File;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::engine::Engine;
use super::netns::Netns;
use super::procs::{self, ProcSample, ProcStat};

/// How long the program may take to accept connections after exec.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dropped or stopped program gets to exit after SIGTERM before
/// SIGKILL; a test that cares waits itself.
const TERM_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries at picking a free port before giving up (see [`Launch::start`]).
const BIND_ATTEMPTS: usize = 3;
/// Lines of output an error message quotes (the whole output goes with a
/// panic).
const TAIL_LINES: usize = 3;

/// A port nothing listens on right now, on `[::]` (dual-stack, as the
/// service binds), so it is free on 127.0.0.1 too. Released before use: a
/// parallel test may take it first, which [`Launch`] notices and retries.
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("bind [::]:0");
    l.local_addr().expect("local addr").port()
}

/// How to run a program under test.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The binary; `None` is the service cargo built.
    pub program: Option<PathBuf>,
    pub args: Vec<String>,
    /// Added to the environment (the service passes it on to its capture
    /// programs).
    pub env: Vec<(String, String)>,
    /// Working directory; `None` is this process's.
    pub cwd: Option<PathBuf>,
    /// A command that ends by exec'ing the program with its arguments
    /// appended (so the child's pid stays the program's own).
    pub wrapper: Vec<String>,
    /// RLIMIT_NOFILE set to this (soft and hard) before exec.
    pub nofile: Option<u64>,
    /// Run as this user (and its primary group), without supplementary
    /// groups, through `setpriv`; file capabilities of `program` apply.
    pub user: Option<String>,
    /// Where stdout and stderr go, kept after the process ends. `None`:
    /// stderr to a scratch file, printed if the test panics, removed on drop.
    pub log: Option<PathBuf>,
    /// The port the program listens on, which `args` already tell it.
    /// `None`: a free port, given as `--port P` before `args` (the service's
    /// flag), tried again with another if it is taken meanwhile.
    pub port: Option<u16>,
    /// The capture engine, given as `--capture-engine NAME` before `args`;
    /// `None`: the service's default (dumpcap), no flag.
    pub engine: Option<Engine>,
}

/// Why a start failed.
enum Failure {
    /// The free port was taken before the program bound it.
    PortTaken,
    Failed {
        why: String,
        output: String,
    },
}

impl Launch {
    /// The service cargo built, with no arguments.
    pub fn new() -> Launch {
        Launch::default()
    }

    pub fn program(mut self, program: impl Into<PathBuf>) -> Launch {
        self.program = Some(program.into());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn envs(mut self, env: &[(String, String)]) -> Launch {
        self.env.extend_from_slice(env);
        self
    }

    pub fn log(mut self, log: impl Into<PathBuf>) -> Launch {
        self.log = Some(log.into());
        self
    }

    pub fn port(mut self, port: u16) -> Launch {
        self.port = Some(port);
        self
    }

    /// Runs the service with this capture engine.
    pub fn engine(mut self, engine: Engine) -> Launch {
        self.engine = Some(engine);
        self
    }

    /// Starts the program and waits until it accepts connections; panics
    /// with its output otherwise.
    pub fn start(self) -> Service {
        self.launch()
            .unwrap_or_else(|(why, output)| panic!("{why}; output:\n{output}"))
    }

    /// [`Launch::start`] for callers that report a failure instead of
    /// panicking (the benches): the error quotes the output's last lines.
    pub fn try_start(self) -> Result<Service, String> {
        self.launch()
            .map_err(|(why, output)| format!("{why} [output: {}]", tail(&output)))
    }

    /// The process, or why not and its output.
    fn launch(self) -> Result<Service, (String, String)> {
        // A free port may be taken by a parallel test before the service
        // binds it; then a fresh one is tried.
        let attempts = if self.port.is_some() {
            1
        } else {
            BIND_ATTEMPTS
        };
        for _ in 0..attempts {
            match self.spawn_ready() {
                Ok(svc) => return Ok(svc),
                Err(Failure::PortTaken) => continue,
                Err(Failure::Failed { why, output }) => return Err((why, output)),
            }
        }
        Err((
            format!("{}: port in use on every attempt", self.name()),
            String::new(),
        ))
    }

    fn name(&self) -> String {
        let program = self.program.clone().unwrap_or_else(super::bins::service);
        format!("{} {:?}", program.display(), self.args)
    }

    fn spawn_ready(&self) -> Result<Service, Failure> {
        let program = self.program.clone().unwrap_or_else(super::bins::service);
        let port = self.port.unwrap_or_else(free_port);
        let failed = |why: String, output: String| Failure::Failed { why, output };
        let (output, scratch) = match &self.log {
            Some(log) => (log.clone(), false),
            None => (super::scratch_path("service.output"), true),
        };
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("create {}: {e}", dir.display()), String::new()))?;
        }
        let out = File::create(&output)
            .map_err(|e| failed(format!("create {}: {e}", output.display()), String::new()))?;
        let stdout = match &self.log {
            Some(_) => Stdio::from(
                out.try_clone()
                    .map_err(|e| failed(e.to_string(), String::new()))?,
            ),
            None => Stdio::null(),
        };
        let mut words: Vec<std::ffi::OsString> = Vec::new();
        if let Some(user) = &self.user {
            words.extend(
                [
                    "setpriv".to_string(),
                    format!("--reuid={user}"),
                    format!("--regid={}", primary_group(user)),
                    "--clear-groups".into(),
                    "--".into(),
                ]
                .map(Into::into),
            );
        }
        words.extend(self.wrapper.iter().map(Into::into));
        words.push(program.clone().into());
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        if self.port.is_none() {
            cmd.arg("--port").arg(port.to_string());
        }
        if let Some(engine) = self.engine {
            cmd.args(engine.args());
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(out);
        let nofile = self.nofile;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(n) = nofile {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        n,
                        n,
                    )
                    .map_err(std::io::Error::from)?;
                }
                // If this process dies without dropping the guard, the
                // program still gets a SIGTERM (and can reap its captures)
                // instead of running on. A change of user clears this; the
                // guard's drop remains.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let name = self.name();
        let child = cmd
            .spawn()
            .map_err(|e| failed(format!("spawn {name}: {e}"), String::new()))?;
        let mut svc = Service {
            child,
            port,
            output,
            scratch,
            exited: None,
            engine: self.engine.unwrap_or_default(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = svc.exit_status() {
                let output = svc.stderr();
                if self.port.is_none() && output.contains("Address already in use") {
                    return Err(Failure::PortTaken);
                }
                return Err(failed(
                    format!("{name} exited before accepting ({status})"),
                    output,
                ));
            }
            if TcpStream::connect_timeout(&svc.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(svc);
            }
            if Instant::now() >= deadline {
                let output = svc.stderr();
                return Err(failed(
                    format!("{name} did not accept on port {port} within {READY_TIMEOUT:?}"),
                    output,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn primary_group(user: &str) -> String {
    let out = Command::new("id")
        .args(["-gn", user])
        .output()
        .expect("run id");
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The last lines of a program's output, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(TAIL_LINES).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// A running program started by [`Launch`], listening on 127.0.0.1.
pub struct Service {
    child: Child,
    port: u16,
    /// Its stderr (and, for a caller's log, stdout).
    output: PathBuf,
    /// `output` is ours to print on a failed test and remove.
    scratch: bool,
    exited: Option<ExitStatus>,
    engine: Engine,
}

impl Service {
    /// Starts `packetflix --port P ARGS...` and waits until it accepts.
    pub fn start(args: &[&str]) -> Service {
        Launch::new().args(args).start()
    }

    /// Starts `packetflix --port P --capture-engine E ARGS...`.
    pub fn start_engine(engine: Engine, args: &[&str]) -> Service {
        Launch::new().engine(engine).args(args).start()
    }

    /// The capture engine it runs.
    pub fn engine(&self) -> Engine {
        self.engine
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

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.output
    }

    /// Its stderr so far (with its stdout, in a caller's log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits (bounded, 10 s) until its log holds `what`: the log is written
    /// by a helper thread, so a line may come a moment after what it tells.
    pub fn logged(&self, what: &str) -> bool {
        super::wait_for(Duration::from_secs(10), || self.stderr().contains(what))
    }

    /// The last lines of [`Service::stderr`], for error messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr())
    }

    pub fn sample(&self) -> std::io::Result<ProcSample> {
        procs::sample(self.pid())
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

    /// The packet sockets this process itself holds in network namespace
    /// `ns` (the native engine's rings: one per captured interface, one
    /// for `any`). A capture program's sockets are not the service's.
    pub fn packet_sockets_in(&self, ns: &Netns) -> usize {
        procs::packet_sockets_of(self.pid(), &ns.path())
    }

    /// What captures in `ns` for this service: with dumpcap, its live
    /// dumpcap children inside `ns`; with the native engine, its own
    /// packet sockets there (one per interface, one for `any`).
    pub fn sources_in(&self, ns: &Netns) -> usize {
        match self.engine {
            Engine::Dumpcap => {
                let inode = ns.inode();
                self.captures("dumpcap")
                    .iter()
                    .filter(|p| procs::netns_of(p.pid) == Some(inode))
                    .count()
            }
            Engine::Native => self.packet_sockets_in(ns),
        }
    }

    /// Waits (bounded) until [`Service::sources_in`] is `n`.
    pub fn wait_sources_in(&self, ns: &Netns, n: usize, timeout: Duration) -> bool {
        super::wait_for(timeout, || self.sources_in(ns) == n)
    }

    /// Waits (bounded) until nothing captures any more: no child process
    /// (of either engine: the native engine never has one) and no packet
    /// socket of the service's in any of `namespaces`.
    pub fn wait_nothing_captures(&self, namespaces: &[&Netns], timeout: Duration) -> bool {
        super::wait_for(timeout, || {
            self.children().is_empty()
                && namespaces.iter().all(|ns| self.packet_sockets_in(ns) == 0)
        })
    }

    /// Signals the process unless it has been reaped already (its pid may
    /// then belong to another process).
    pub fn signal(&mut self, sig: Signal) {
        if self.exit_status().is_none() {
            let _ = kill(Pid::from_raw(self.pid()), sig);
        }
    }

    /// The exit status, once the process has exited (it is reaped here).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
            }
        }
        self.exited
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ends it: SIGTERM, a bounded wait, SIGKILL; then kills whatever it
    /// left running (the start time guards against signalling a recycled
    /// pid). Dropping does this too.
    pub fn stop(&mut self) {
        // Once reaped, the pid may be another process's: look no further.
        let leftovers = match self.exit_status() {
            None => procs::descendants(self.pid()),
            Some(_) => Vec::new(),
        };
        self.signal(Signal::SIGTERM);
        if self.wait_exit(TERM_TIMEOUT).is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.exited = Some(s);
            }
        }
        for p in leftovers.iter().filter(|p| procs::still_there(p)) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        if self.scratch {
            if std::thread::panicking() {
                eprintln!(
                    "---- stderr of {} (port {}) ----\n{}---- end ----",
                    self.child.id(),
                    self.port,
                    self.stderr()
                );
            }
            let _ = std::fs::remove_file(&self.output);
        }
    }
}
