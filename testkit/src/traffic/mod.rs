//! Real traffic for the engine bench: namespaces joined by veth pairs, a
//! UDP generator sending into them, and a reference ring reader capturing
//! at their far ends, the kernel's limit for any capture engine.
//!
//! - [`Fabric`]: one sender namespace and N capture namespaces, each
//!   capture namespace holding one end (`c0`) of a veth pair whose other end
//!   (`g<i>`) is in the sender namespace. No addresses anywhere, IPv6 off on
//!   every end: the only packets on these links are the generator's. Every
//!   namespace is removed on drop (and by the kit's stale-namespace sweep
//!   if the process dies first).
//! - [`Generator`]: runs `packetflix-trafficgen` ([`gen`]) in the sender
//!   namespace; [`RingReader`]: runs `packetflix-ringread` ([`ring`]) on
//!   capture ends. Both are programs of their own, built by `build.rs` like
//!   the synthetic capture program, so their CPU is measured from `/proc`
//!   the same way as the service's.
//! - [`frame`]: what the packets carry; [`check`]: the websocket client's
//!   decoder of a capture of them; [`sys`]: the programs' C declarations.
//!
//! Nothing here sends a packet anywhere but into namespaces it made, and
//! every program it starts is bounded in count and time and dies with its
//! parent.

pub mod check;
pub mod frame;
pub mod gen;
pub mod ring;
pub mod sys;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sched::{setns, CloneFlags};

/// The compiled generator (see `build.rs`).
pub const GENERATOR: &str = concat!(env!("OUT_DIR"), "/packetflix-trafficgen");
/// The compiled reference ring reader (see `build.rs`).
pub const RING_READER: &str = concat!(env!("OUT_DIR"), "/packetflix-ringread");
/// The capture end's name in each capture namespace.
pub const CAPTURE_IF: &str = "c0";
/// How long a reader may take to open its rings (ring setup blocks for
/// 8–16 ms per socket on the VMs measured; 200 rings fit easily).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a program gets to print its result after being told to stop.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

static FABRIC_COUNTER: AtomicU32 = AtomicU32::new(1);

/// `/run/netns/NAME`, where `ip netns add` mounts a namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// Runs `f` on a fresh thread that has entered the network namespace
/// `name` (setns affects only the calling thread; the thread ends after).
pub fn in_netns<T: Send>(
    name: &str,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    let path = netns_path(name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {name}: {e}"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(format!("thread in {name} panicked")))
    })
}

/// `ip -batch -` with `lines` on stdin, optionally inside namespace `ns`.
fn ip_batch(ns: Option<&str>, lines: &[String]) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run ip: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let text = lines.join("\n") + "\n";
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("ip -batch: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Turns IPv6 off on `ifname` (so the kernel sends no router solicitation,
/// DAD or MLD on it) and brings it up; in the calling thread's namespace.
fn quiet_up(ifname: &str) -> Result<(), String> {
    let knob = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    // Without IPv6 in the kernel there is no knob and nothing to silence.
    if std::path::Path::new(&knob).exists() {
        std::fs::write(&knob, "1").map_err(|e| format!("{knob}: {e}"))?;
    }
    // SAFETY: plain system call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= ifr.ifr_name.len() {
        return Err(format!("interface name {ifname} too long"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    let err = |what: &str| format!("{what} {ifname}: {}", std::io::Error::last_os_error());
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write an ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(err("SIOCGIFFLAGS"));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(err("SIOCSIFFLAGS"));
        }
    }
    Ok(())
}

/// One capture namespace of a [`Fabric`].
#[derive(Clone, Debug)]
pub struct CaptureEnd {
    /// Namespace name (under /run/netns).
    pub netns: String,
    /// Its inode, as clients name it in `netns=`.
    pub inode: u64,
    /// The sending end's name in the sender namespace; the flow id is the
    /// index of this end in [`Fabric::captures`].
    pub sender_if: String,
}

/// What the kernel counted on one interface (`/proc/net/dev` in its
/// namespace: the same counters `ip -s link` shows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Parses `ifname`'s line of a `/proc/net/dev` text.
pub fn parse_net_dev(text: &str, ifname: &str) -> Option<LinkCounters> {
    let line = text
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(ifname))?;
    let v: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes
    // packets errs drop ...
    Some(LinkCounters {
        rx_packets: *v.get(1)?,
        rx_dropped: *v.get(3)?,
        tx_packets: *v.get(9)?,
        tx_dropped: *v.get(11)?,
    })
}

/// One sender namespace and `n` capture namespaces joined by veth pairs.
pub struct Fabric {
    pub sender: String,
    pub captures: Vec<CaptureEnd>,
    /// Every namespace made so far, removed on drop.
    made: Vec<String>,
}

impl Fabric {
    /// Makes the namespaces and links; everything made is removed again if
    /// a step fails.
    pub fn new(n: usize) -> Result<Fabric, String> {
        if n == 0 || n > frame::MAX_FLOWS {
            return Err(format!(
                "{n} capture namespaces: want 1..={}",
                frame::MAX_FLOWS
            ));
        }
        let id = FABRIC_COUNTER.fetch_add(1, Ordering::Relaxed);
        // `pfx<pid>-...`: the kit's sweep removes these if we die unclean.
        let base = format!("pfx{}-e{id}", std::process::id());
        let mut f = Fabric {
            sender: format!("{base}s"),
            captures: Vec::new(),
            made: Vec::new(),
        };
        let names: Vec<String> = std::iter::once(f.sender.clone())
            .chain((0..n).map(|i| format!("{base}c{i}")))
            .collect();
        // Claimed before they exist, so a half-made fabric is still removed.
        f.made = names.clone();
        ip_batch(
            None,
            &names
                .iter()
                .map(|n| format!("netns add {n}"))
                .collect::<Vec<_>>(),
        )?;
        let links: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "link add g{i} address {} netns {} type veth peer name {CAPTURE_IF} \
                     address {} netns {}",
                    frame::mac_text(&frame::sender_mac(i)),
                    f.sender,
                    frame::mac_text(&frame::capture_mac(i)),
                    names[i + 1]
                )
            })
            .collect();
        ip_batch(None, &links)?;
        in_netns(&f.sender, || {
            (0..n).try_for_each(|i| quiet_up(&format!("g{i}")))
        })?;
        for (i, name) in names[1..].iter().enumerate() {
            in_netns(name, || quiet_up(CAPTURE_IF))?;
            let inode = std::fs::metadata(netns_path(name))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .map_err(|e| format!("{name}: {e}"))?;
            f.captures.push(CaptureEnd {
                netns: name.clone(),
                inode,
                sender_if: format!("g{i}"),
            });
        }
        Ok(f)
    }

    /// The kernel's counters of the capture ends `which` (indexes into
    /// [`Fabric::captures`]), read on one thread that visits each namespace.
    pub fn capture_counters(&self, which: &[usize]) -> Result<Vec<LinkCounters>, String> {
        let names: Vec<String> = which
            .iter()
            .map(|&i| {
                self.captures
                    .get(i)
                    .map(|c| c.netns.clone())
                    .ok_or_else(|| format!("no capture end {i}"))
            })
            .collect::<Result<_, _>>()?;
        std::thread::scope(|s| {
            s.spawn(|| {
                names
                    .iter()
                    .map(|name| {
                        let path = netns_path(name);
                        let ns = std::fs::File::open(&path)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        setns(&ns, CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("setns {name}: {e}"))?;
                        // thread-self: /proc/self/net is the main thread's view.
                        let text = std::fs::read_to_string("/proc/thread-self/net/dev")
                            .map_err(|e| format!("net/dev in {name}: {e}"))?;
                        parse_net_dev(&text, CAPTURE_IF)
                            .ok_or_else(|| format!("no {CAPTURE_IF} in {name}"))
                    })
                    .collect()
            })
            .join()
            .unwrap_or_else(|_| Err("counter thread panicked".into()))
        })
    }

    /// The counters of the sending ends of `which`, in the sender namespace.
    pub fn sender_counters(&self, which: &[usize]) -> Result<Vec<LinkCounters>, String> {
        let text = in_netns(&self.sender, || {
            std::fs::read_to_string("/proc/thread-self/net/dev").map_err(|e| e.to_string())
        })?;
        which
            .iter()
            .map(|&i| parse_net_dev(&text, &format!("g{i}")).ok_or_else(|| format!("no g{i}")))
            .collect()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Removing a namespace removes the veth end in it, and so the pair.
        let lines: Vec<String> = self.made.iter().map(|n| format!("netns del {n}")).collect();
        if ip_batch(None, &lines).is_err() {
            // One failure stops a batch; remove what is left one by one.
            for n in &self.made {
                let _ = Command::new("ip")
                    .args(["netns", "del", n])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `key=value` pairs of a program's output line (after its first word).
pub fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &BTreeMap<String, String>, key: &str) -> Result<u64, String> {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no number {key} in the program's output"))
}

fn list(f: &BTreeMap<String, String>, key: &str) -> Vec<u64> {
    f.get(key)
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// The last CPU: where the generator pins itself (the measured programs
/// are left to the scheduler).
pub fn generator_cpu() -> Option<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n > 1).then(|| n - 1)
}

/// A child program whose stdout lines arrive on a channel.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Program {
    fn spawn(path: &str, args: &[String], name: &'static str) -> Result<Program, String> {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {path}: {e}"))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Program {
            child,
            stdin,
            lines,
            name,
        })
    }

    /// The next line starting with `word`, waiting at most `timeout`.
    fn line(&mut self, word: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.split_whitespace().next() == Some(word) => return Ok(l),
                Ok(_) => {}
                Err(_) => return Err(self.failed(&format!("no `{word}` line within {timeout:?}"))),
            }
        }
    }

    /// Waits (bounded) for the program to exit; returns the lines it
    /// printed that were not taken yet.
    fn wait_lines(&mut self, timeout: Duration) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => return Err(self.failed(&format!("still running after {timeout:?}"))),
                Err(e) => return Err(format!("{}: wait: {e}", self.name)),
            }
        }
        // The reading thread ends at EOF, which follows the exit at once.
        Ok(std::iter::from_fn(|| self.lines.recv_timeout(FINISH_TIMEOUT).ok()).collect())
    }

    /// Kills it and says why, with what it wrote on stderr.
    fn failed(&mut self, why: &str) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        format!("{}: {why}: {}", self.name, err.trim())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub struct GenSpec {
    /// Capture ends to send to (indexes into [`Fabric::captures`]).
    pub to: Vec<usize>,
    /// Frame size on the wire (64..=1514).
    pub size: usize,
    /// Packets per second per capture end; 0: full speed.
    pub rate: u64,
    /// Packets per capture end.
    pub count: u64,
    /// Time limit.
    pub secs: u64,
}

/// What the generator says it did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenReport {
    pub t0_ns: u64,
    pub sent: u64,
    pub attempts: u64,
    pub errors: u64,
    pub elapsed_ns: u64,
    /// Sent per flow, in the order of [`GenSpec::to`].
    pub per_flow: Vec<u64>,
    pub error: Option<String>,
}

/// A running `packetflix-trafficgen`.
pub struct Generator {
    p: Program,
    t0_ns: u64,
}

impl Generator {
    /// Starts sending; returns once the program has set up (or failed).
    pub fn start(fabric: &Fabric, spec: &GenSpec) -> Result<Generator, String> {
        let mut args = vec![
            "--netns".to_string(),
            netns_path(&fabric.sender).display().to_string(),
        ];
        for &i in &spec.to {
            let c = fabric
                .captures
                .get(i)
                .ok_or_else(|| format!("no capture end {i}"))?;
            args.extend(["--flow".to_string(), format!("{i}={}", c.sender_if)]);
        }
        args.extend([
            "--size".into(),
            spec.size.to_string(),
            "--rate".into(),
            spec.rate.to_string(),
            "--count".into(),
            spec.count.to_string(),
            "--secs".into(),
            spec.secs.to_string(),
        ]);
        if let Some(cpu) = generator_cpu() {
            args.extend(["--cpu".to_string(), cpu.to_string()]);
        }
        let mut p = Program::spawn(GENERATOR, &args, "packetflix-trafficgen")?;
        let started = p.line("started", READY_TIMEOUT)?;
        let t0_ns = num(&fields(&started), "t0_ns")?;
        Ok(Generator { p, t0_ns })
    }

    pub fn pid(&self) -> i32 {
        self.p.child.id() as i32
    }

    /// When the first packet was due (CLOCK_MONOTONIC ns).
    pub fn t0_ns(&self) -> u64 {
        self.t0_ns
    }

    /// Whether it has finished (without waiting).
    pub fn done(&mut self) -> bool {
        matches!(self.p.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (bounded) for it to finish and reads its report.
    pub fn finish(mut self, timeout: Duration) -> Result<GenReport, String> {
        let lines = self.p.wait_lines(timeout)?;
        let find = |w: &str| {
            lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(w))
        };
        let f = fields(find("sent").ok_or("packetflix-trafficgen: no `sent` line")?);
        Ok(GenReport {
            t0_ns: self.t0_ns,
            sent: num(&f, "packets")?,
            attempts: num(&f, "attempts")?,
            errors: num(&f, "errors")?,
            elapsed_ns: num(&f, "elapsed_ns")?,
            per_flow: list(&f, "flows"),
            error: find("error").map(|l| l.trim_start_matches("error").trim().to_string()),
        })
    }
}

/// How to run the reference reader.
#[derive(Clone, Debug)]
pub struct ReaderSpec {
    pub mode: ring::Mode,
    /// Capture ends to read (indexes into [`Fabric::captures`]).
    pub on: Vec<usize>,
    pub ring_kib: usize,
    pub max_secs: u64,
}

/// What the reader says it saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReaderReport {
    pub packets: u64,
    pub other: u64,
    pub gaps: u64,
    pub backwards: u64,
    pub wakeups: u64,
    pub sweeps: u64,
    pub switches: u64,
    pub kernel_packets: u64,
    pub kernel_drops: u64,
    pub user_us: u64,
    pub sys_us: u64,
    pub dead_rings: u64,
    /// Our packets per ring, in the order of [`ReaderSpec::on`].
    pub ring_packets: Vec<u64>,
    pub ring_drops: Vec<u64>,
    /// Wall time of opening each ring (socket, ring, mmap, bind), µs.
    pub setup_us: Vec<u64>,
    /// Wall time of closing each ring (munmap, close), µs.
    pub close_us: Vec<u64>,
    /// Every latency recorded, ns.
    pub latencies_ns: Vec<u64>,
}

/// A running `packetflix-ringread`.
pub struct RingReader {
    p: Program,
    samples: crate::Scratch,
    setup_us: Vec<u64>,
}

impl RingReader {
    /// Starts the reader; returns once every ring is open.
    pub fn start(fabric: &Fabric, spec: &ReaderSpec) -> Result<RingReader, String> {
        let samples = crate::Scratch::new("ringread.samples");
        let mut args = vec![
            "--mode".to_string(),
            spec.mode.arg(),
            "--ring-kib".into(),
            spec.ring_kib.to_string(),
            "--max-secs".into(),
            spec.max_secs.to_string(),
            "--samples".into(),
            samples.path().to_string(),
        ];
        for &i in &spec.on {
            let c = fabric
                .captures
                .get(i)
                .ok_or_else(|| format!("no capture end {i}"))?;
            args.extend([
                "--ring".to_string(),
                format!("{}={CAPTURE_IF}", netns_path(&c.netns).display()),
            ]);
        }
        let mut p = Program::spawn(RING_READER, &args, "packetflix-ringread")?;
        let ready = p.line("ready", READY_TIMEOUT)?;
        let setup_us = list(&fields(&ready), "setup_us");
        Ok(RingReader {
            p,
            samples,
            setup_us,
        })
    }

    pub fn pid(&self) -> i32 {
        self.p.child.id() as i32
    }

    /// Tells it to stop (closes its stdin), waits (bounded), reads its report.
    pub fn finish(mut self) -> Result<ReaderReport, String> {
        drop(self.p.stdin.take());
        let lines = self.p.wait_lines(FINISH_TIMEOUT)?;
        let line = lines
            .iter()
            .find(|l| l.starts_with("result "))
            .ok_or("packetflix-ringread: no `result` line")?;
        let f = fields(line);
        let bytes = std::fs::read(&self.samples.0).unwrap_or_default();
        let latencies_ns = bytes
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        Ok(ReaderReport {
            packets: num(&f, "packets")?,
            other: num(&f, "other")?,
            gaps: num(&f, "gaps")?,
            backwards: num(&f, "backwards")?,
            wakeups: num(&f, "wakeups")?,
            sweeps: num(&f, "sweeps")?,
            switches: num(&f, "switches")?,
            kernel_packets: num(&f, "kernel_packets")?,
            kernel_drops: num(&f, "kernel_drops")?,
            user_us: num(&f, "user_us")?,
            sys_us: num(&f, "sys_us")?,
            dead_rings: num(&f, "dead_rings")?,
            ring_packets: list(&f, "ring_packets"),
            ring_drops: list(&f, "ring_drops"),
            setup_us: std::mem::take(&mut self.setup_us),
            close_us: list(&f, "close_us"),
            latencies_ns,
        })
    }
}
