//! `packetflix-trafficgen`: sends the engine bench's UDP traffic over veth
//! pairs, from a namespace the bench made to the capture namespaces at the
//! other ends. One unbound AF_PACKET socket sends every flow's frames
//! (the interface is named per message), a batch per `sendmmsg`, at a fixed
//! rate per flow on an absolute CLOCK_MONOTONIC schedule (each flow at a
//! random phase and each packet at a random offset within its slot, see
//! [`Pacer`], so many flows are independent streams, not one burst, and no
//! flow phase-locks to a kernel timer) or at full speed. Every frame carries its flow's sequence number and the
//! time it was stamped ([`super::frame`]), taken just before its batch goes
//! to the kernel. It counts what the kernel accepted and prints it.
//!
//! What it must never do: send anywhere but the bench's own namespaces (it
//! refuses a namespace that is its own, i.e. the host's, or that is not
//! named like the bench's), run unbounded (a count and a time limit, both
//! required), or outlive its parent. It pins itself to one CPU so that
//! what it costs stays off the others as far as the scheduler allows; the
//! receiving side's kernel work (veth delivery, the capture sockets' taps)
//! runs in its own context on that CPU too.
//!
//! Command line: `--netns PATH --flow ID=IFNAME... --size BYTES --rate PPS
//! (per flow, 0 = full speed) --count N (per flow) --secs S [--cpu N]
//! [--batch N] [--jitter FRACTION]`. Output (stdout): `started t0_ns=...`, then at the end
//! `sent packets=N attempts=N errors=N elapsed_ns=N flows=n0,n1,...` and,
//! after a send error, `error ...`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::process::ExitCode;

use super::frame;
use super::sys;

/// Longest a generator may run, whatever it is told.
pub const MAX_SECS: u64 = 3600;
/// Frames per `sendmmsg` at full speed: enough to amortise the system call,
/// few enough that a batch's frames are stamped within microseconds of
/// their send.
pub const DEFAULT_BATCH: usize = 64;
/// Most frames one call may carry (the kernel's UIO_MAXIOV).
const MAX_BATCH: usize = 1024;
/// Delay between setup and the first scheduled packet.
const START_DELAY_NS: u64 = 1_000_000;
/// Pause after a failed send before trying again.
const ERROR_PAUSE_NS: u64 = 100_000;
/// Namespaces the bench makes are named `pfx<pid>-...`.
const NETNS_PREFIX: &str = "pfx";
const NANOS: u64 = 1_000_000_000;
/// Default jitter of a paced packet, as a fraction of the period: half a
/// period covers a timer of up to that period whatever the phase.
pub const DEFAULT_JITTER: f64 = 0.5;
/// More jitter than this could let a flow's packets change order.
const MAX_JITTER: f64 = 0.9;

/// What it is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub netns: String,
    /// (flow id, sending interface)
    pub flows: Vec<(usize, String)>,
    pub size: usize,
    /// Packets per second per flow; 0: full speed.
    pub rate: u64,
    /// Packets per flow.
    pub count: u64,
    pub secs: u64,
    pub cpu: Option<usize>,
    pub batch: usize,
    /// Paced packets' random offset within their slot, a fraction of the
    /// period (see [`Pacer`]).
    pub jitter: f64,
}

/// Parses the command line (without the program name).
pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        netns: String::new(),
        flows: Vec::new(),
        size: frame::MIN_FRAME,
        rate: 0,
        count: 0,
        secs: 0,
        cpu: None,
        batch: DEFAULT_BATCH,
        jitter: DEFAULT_JITTER,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: &String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: bad number {v}"))
        };
        match flag.as_str() {
            "--netns" => a.netns = value()?.clone(),
            "--flow" => {
                let v = value()?;
                let (id, ifname) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--flow {v}: want ID=IFNAME"))?;
                let id: usize = id.parse().map_err(|_| format!("--flow {v}: bad id"))?;
                if id >= frame::MAX_FLOWS || ifname.is_empty() || ifname.len() > 15 {
                    return Err(format!("--flow {v}: id or interface out of range"));
                }
                a.flows.push((id, ifname.to_string()));
            }
            "--size" => a.size = num(value()?)? as usize,
            "--rate" => a.rate = num(value()?)?,
            "--count" => a.count = num(value()?)?,
            "--secs" => a.secs = num(value()?)?,
            "--cpu" => a.cpu = Some(num(value()?)? as usize),
            "--batch" => a.batch = num(value()?)? as usize,
            "--jitter" => {
                let v = value()?;
                a.jitter = v
                    .parse::<f64>()
                    .ok()
                    .filter(|j| (0.0..=MAX_JITTER).contains(j))
                    .ok_or_else(|| format!("--jitter {v}: want 0..={MAX_JITTER}"))?;
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.flows.is_empty() || a.netns.is_empty() {
        return Err("need --netns and at least one --flow".into());
    }
    if a.count == 0 || a.secs == 0 || a.secs > MAX_SECS {
        return Err(format!(
            "need --count > 0 and 0 < --secs <= {MAX_SECS}: every run is bounded"
        ));
    }
    if !(frame::MIN_FRAME..=frame::MAX_FRAME).contains(&a.size) {
        return Err(format!(
            "--size must be {}..={}",
            frame::MIN_FRAME,
            frame::MAX_FRAME
        ));
    }
    if a.rate > NANOS {
        return Err("--rate above 1e9 per second".into());
    }
    a.batch = a.batch.clamp(1, MAX_BATCH);
    Ok(a)
}

/// Refuses any namespace but one the bench made: not the generator's own
/// (the host's), and named as the bench names them.
fn check_netns(path: &str) -> Result<File, String> {
    use std::os::unix::fs::MetadataExt;
    let name = std::path::Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if !name.starts_with(NETNS_PREFIX) {
        return Err(format!("{path}: not a namespace of the bench"));
    }
    let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let ino = f.metadata().map_err(|e| format!("{path}: {e}"))?.ino();
    let own = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("/proc/self/ns/net: {e}"))?
        .ino();
    if ino == own {
        return Err(format!("{path} is this process's own namespace"));
    }
    Ok(f)
}

/// A small xorshift: phases only need to be spread, not unpredictable.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The paced schedule: flow `f`'s packet `k` is due at `t0 + phase[f] +
/// k·period + jitter`, the phase random within a period, the jitter random
/// within `jitter` (a fraction of the period) for every packet. Exactly
/// periodic traffic phase-locks to the kernel's periodic timers (a jiffy,
/// a V3 block timeout, a capture program's poll timeout) whenever the
/// periods are commensurate, and then measures one phase instead of the
/// distribution; the jitter keeps the mean rate exact and each flow's
/// packets in order (consecutive ones stay more than `period·(1 − jitter)`
/// apart).
pub struct Pacer {
    t0: u64,
    period: u64,
    jitter: u64,
    count: u64,
    phase: Vec<u64>,
    /// Packets of each flow scheduled so far.
    k: Vec<u64>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
    rng: u64,
}

impl Pacer {
    pub fn new(flows: usize, rate: u64, count: u64, jitter: f64, t0: u64, seed: u64) -> Pacer {
        let period = (NANOS / rate.max(1)).max(1);
        let mut p = Pacer {
            t0,
            period,
            jitter: (period as f64 * jitter.clamp(0.0, MAX_JITTER)) as u64,
            count,
            phase: Vec::with_capacity(flows),
            k: vec![0; flows],
            due: BinaryHeap::with_capacity(flows),
            rng: seed | 1,
        };
        for f in 0..flows {
            let phase = xorshift(&mut p.rng) % period;
            p.phase.push(phase);
            if count > 0 {
                let d = p.slot(f);
                p.due.push(Reverse((d, f)));
            }
        }
        p
    }

    /// When flow `f`'s next packet is due.
    fn slot(&mut self, f: usize) -> u64 {
        let j = if self.jitter > 0 {
            xorshift(&mut self.rng) % self.jitter
        } else {
            0
        };
        self.t0 + self.phase[f] + self.k[f] * self.period + j
    }

    /// When the next packet of any flow is due; `None` once all are sent.
    pub fn next_due(&self) -> Option<u64> {
        self.due.peek().map(|Reverse((d, _))| *d)
    }

    /// The flow whose packet is due by `now`, if any, scheduling its next.
    pub fn pop_due(&mut self, now: u64) -> Option<usize> {
        match self.due.peek() {
            Some(Reverse((d, _))) if *d <= now => {}
            _ => return None,
        }
        let Reverse((_, f)) = self.due.pop()?;
        self.k[f] += 1;
        if self.k[f] < self.count {
            let d = self.slot(f);
            self.due.push(Reverse((d, f)));
        }
        Some(f)
    }
}

struct Sender {
    fd: c_int,
    /// Per flow index (position in `Args::flows`): template and address.
    templates: Vec<Vec<u8>>,
    addrs: Vec<sys::SockaddrLl>,
    /// Next sequence number per flow = frames of it the kernel accepted.
    sent: Vec<u64>,
    /// Frames of each flow in the batch being built (zero between sends).
    queued: Vec<u64>,
    bufs: Vec<Vec<u8>>,
    iovs: Vec<sys::Iovec>,
    msgs: Vec<sys::Mmsghdr>,
    attempts: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Sender {
    fn new(fd: c_int, a: &Args, ifindex: &[c_int]) -> Sender {
        let templates = a
            .flows
            .iter()
            .map(|(id, _)| frame::template(a.size, *id))
            .collect();
        let addrs = a
            .flows
            .iter()
            .zip(ifindex)
            .map(|((id, _), &ix)| {
                let mut addr = [0u8; 8];
                addr[..6].copy_from_slice(&frame::capture_mac(*id));
                sys::SockaddrLl {
                    sll_family: sys::AF_PACKET as u16,
                    sll_protocol: sys::ETH_P_IP.to_be(),
                    sll_ifindex: ix,
                    sll_halen: 6,
                    sll_addr: addr,
                    ..Default::default()
                }
            })
            .collect();
        let empty = sys::Mmsghdr {
            msg_hdr: sys::Msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: std::ptr::null_mut(),
                msg_iovlen: 0,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        };
        Sender {
            fd,
            templates,
            addrs,
            sent: vec![0; a.flows.len()],
            queued: vec![0; a.flows.len()],
            bufs: (0..a.batch).map(|_| vec![0u8; a.size]).collect(),
            iovs: vec![
                sys::Iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                a.batch
            ],
            msgs: vec![empty; a.batch],
            attempts: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Sends one frame per entry of `batch` (flow indexes); returns how
    /// many the kernel took. A flow's sequence number advances only with
    /// what was taken, so a failed send leaves no gap in what arrives.
    fn send(&mut self, batch: &[usize]) -> usize {
        for (j, &f) in batch.iter().enumerate() {
            let buf = &mut self.bufs[j];
            buf.copy_from_slice(&self.templates[f]);
            // Frames of the same flow earlier in this batch come first.
            let seq = self.sent[f] + self.queued[f];
            self.queued[f] += 1;
            frame::stamp(buf, seq, sys::mono_ns());
            self.iovs[j] = sys::Iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let m = &mut self.msgs[j].msg_hdr;
            m.msg_name = (&mut self.addrs[f] as *mut sys::SockaddrLl).cast();
            m.msg_namelen = std::mem::size_of::<sys::SockaddrLl>() as u32;
            m.msg_iov = &mut self.iovs[j];
            m.msg_iovlen = 1;
        }
        for &f in batch {
            self.queued[f] = 0;
        }
        self.attempts += batch.len() as u64;
        // SAFETY: every message points into `bufs`, `iovs` and `addrs`,
        // which live and stay put for the call.
        let taken = match unsafe { sys::send_mmsg(self.fd, &mut self.msgs[..batch.len()]) } {
            Ok(n) => n,
            Err(e) => {
                self.first_error.get_or_insert_with(|| e.to_string());
                0
            }
        };
        for &f in &batch[..taken] {
            self.sent[f] += 1;
        }
        if taken < batch.len() {
            self.errors += (batch.len() - taken) as u64;
            sys::sleep_until(sys::mono_ns() + ERROR_PAUSE_NS);
        }
        taken
    }
}

fn setup(a: &Args) -> Result<(c_int, Vec<c_int>), String> {
    let ns = check_netns(&a.netns)?;
    if let Some(cpu) = a.cpu {
        sys::pin_to_cpu(cpu).map_err(|e| format!("pin to CPU {cpu}: {e}"))?;
    }
    // A single-threaded process may change its network namespace; every
    // socket and interface lookup from here on is inside the bench's.
    sys::enter_netns(ns.as_raw_fd()).map_err(|e| format!("setns {}: {e}", a.netns))?;
    let fd = sys::packet_socket().map_err(|e| format!("packet socket: {e}"))?;
    // The veth's queue is `noqueue` anyway; bypassing the layer saves work.
    let _ = sys::set_int_opt(fd, sys::SOL_PACKET, sys::PACKET_QDISC_BYPASS, 1);
    let mut ix = Vec::new();
    for (_, ifname) in &a.flows {
        ix.push(sys::ifindex(ifname).map_err(|e| format!("interface {ifname}: {e}"))?);
    }
    Ok((fd, ix))
}

/// Runs the schedule; returns the elapsed nanoseconds.
fn run(a: &Args, s: &mut Sender) -> u64 {
    let n = a.flows.len();
    let total = a.count * n as u64;
    let t0 = sys::mono_ns() + START_DELAY_NS;
    let deadline = t0 + a.secs * NANOS;
    println!("started t0_ns={t0}");
    let mut batch = Vec::with_capacity(a.batch);
    if a.rate == 0 {
        sys::sleep_until(t0);
        let mut next_flow = 0;
        let mut in_batch = vec![0u64; n];
        let mut sent_total = 0;
        while sent_total < total && sys::mono_ns() < deadline {
            batch.clear();
            let mut passed = 0;
            // Round robin over the flows that still have packets to send.
            while batch.len() < a.batch && passed < n {
                let f = next_flow;
                next_flow = (next_flow + 1) % n;
                if s.sent[f] + in_batch[f] < a.count {
                    batch.push(f);
                    in_batch[f] += 1;
                    passed = 0;
                } else {
                    passed += 1;
                }
            }
            for &f in &batch {
                in_batch[f] = 0;
            }
            if batch.is_empty() {
                break;
            }
            sent_total += s.send(&batch) as u64;
        }
        return sys::mono_ns() - t0;
    }
    let mut pacer = Pacer::new(n, a.rate, a.count, a.jitter, t0, t0);
    loop {
        let now = sys::mono_ns();
        if now >= deadline {
            break;
        }
        batch.clear();
        while batch.len() < a.batch {
            match pacer.pop_due(now) {
                Some(f) => batch.push(f),
                None => break,
            }
        }
        if !batch.is_empty() {
            s.send(&batch);
        }
        if batch.len() < a.batch {
            match pacer.next_due() {
                Some(next) if next < deadline => sys::sleep_until(next),
                _ => break,
            }
        }
    }
    sys::mono_ns() - t0
}

/// The program.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("packetflix-trafficgen: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sys::die_with_parent() {
        eprintln!("packetflix-trafficgen: prctl: {e}");
        return ExitCode::FAILURE;
    }
    let (fd, ix) = match setup(&a) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("packetflix-trafficgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut s = Sender::new(fd, &a, &ix);
    let elapsed = run(&a, &mut s);
    let flows: Vec<String> = s.sent.iter().map(u64::to_string).collect();
    println!(
        "sent packets={} attempts={} errors={} elapsed_ns={elapsed} flows={}",
        s.sent.iter().sum::<u64>(),
        s.attempts,
        s.errors,
        flows.join(",")
    );
    if let Some(e) = &s.first_error {
        println!("error {e}");
    }
    let _ = sys::close_fd(fd);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_run_without_a_count_or_a_time_limit_is_refused() {
        let base = ["--netns", "/run/netns/pfx1-a", "--flow", "0=g0"];
        assert!(args(&base).is_err());
        let mut v = base.to_vec();
        v.extend(["--count", "10"]);
        assert!(args(&v).is_err());
        v.extend(["--secs", "2"]);
        assert!(args(&v).is_ok());
        let mut too_long = v.clone();
        too_long.extend(["--secs", "100000"]);
        assert!(args(&too_long).is_err());
    }

    #[test]
    fn a_namespace_not_made_by_the_bench_is_refused() {
        assert!(check_netns("/proc/self/ns/net").is_err());
        assert!(check_netns("/run/netns/other").is_err());
    }

    #[test]
    fn paced_flows_keep_their_rate_and_order_and_do_not_lock_to_a_period() {
        let period = 1_000_000; // 1,000 per second
        let mut p = Pacer::new(3, 1_000, 100, DEFAULT_JITTER, 0, 42);
        let mut last: Vec<Option<u64>> = vec![None; 3];
        let mut offsets = std::collections::BTreeSet::new();
        let mut sent = [0u64; 3];
        let mut prev_due = 0;
        while let Some(due) = p.next_due() {
            assert!(due >= prev_due, "the schedule goes backwards");
            prev_due = due;
            let f = p.pop_due(due).expect("due now");
            sent[f] += 1;
            if let Some(l) = last[f] {
                // Order kept, mean rate exact: within half a period of the slot.
                assert!(
                    due - l > period / 2 && due - l < 3 * period / 2,
                    "gap {}",
                    due - l
                );
            }
            last[f] = Some(due);
            offsets.insert((due % period) / 10_000);
        }
        assert_eq!(sent, [100, 100, 100]);
        // The last packet of each flow is due near 99 periods after its first.
        assert!(prev_due < 101 * period);
        // Many phases within the period are sampled, not three.
        assert!(offsets.len() > 30, "{} distinct offsets", offsets.len());
        assert_eq!(p.pop_due(u64::MAX), None);
    }

    #[test]
    fn without_jitter_a_flow_is_exactly_periodic() {
        let mut p = Pacer::new(1, 100, 5, 0.0, 7, 9);
        let dues: Vec<u64> = std::iter::from_fn(|| {
            let d = p.next_due()?;
            p.pop_due(d).map(|_| d)
        })
        .collect();
        let gaps: Vec<u64> = dues.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, vec![10_000_000; 4]);
    }
}
