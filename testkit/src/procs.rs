//! Reading processes from /proc, for tests and benches alike: who is whose
//! child, zombies, start times, open descriptors, memory, CPU time, network
//! namespaces, and the whole machine's CPU. Read-only; it never signals
//! anything. Everything is read from the kernel's files
//! (`/proc/PID/stat`, `status`, `fd`, `maps`, `task/*/schedstat`,
//! `ns/net`, `/proc/stat`, a namespace's `/proc/net/packet`), never
//! estimated.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Linux's USER_HZ on every architecture since 2.6, for when sysconf
/// cannot say.
const DEFAULT_CLK_TCK: u64 = 100;
/// The kernel's comm: the file name, cut to TASK_COMM_LEN - 1 bytes.
const COMM_LEN: usize = 15;

/// What /proc/PID/stat says of a process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// utime + stime (fields 14 and 15), in clock ticks.
    pub cpu_ticks: u64,
    /// cutime + cstime (fields 16 and 17): CPU of the children it has
    /// waited for, in clock ticks.
    pub children_cpu_ticks: u64,
    /// Field 20.
    pub threads: u64,
    /// Field 22: clock ticks since boot at its start; with the pid, it
    /// names one process even after the pid is reused.
    pub starttime: u64,
}

/// Parses /proc/PID/stat; `None` once the process is gone (and reaped).
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state), so field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        cpu_ticks: field(14)? + field(15)?,
        children_cpu_ticks: field(16)? + field(17)?,
        threads: field(20)?,
        starttime: field(22)?,
    })
}

/// Each thread of `pid`: (thread id, its comm, its nice value, field 19 of
/// its /proc stat), in no particular order; empty once the process is gone.
pub fn thread_nices(pid: i32) -> Vec<(i32, String, i64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: i32 = t.file_name().to_str()?.parse().ok()?;
            let text = fs::read_to_string(t.path().join("stat")).ok()?;
            let comm = text[text.find('(')? + 1..text.rfind(')')?].to_string();
            let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
            // rest[0] is field 3, so field 19 is rest[16].
            Some((tid, comm, rest.get(16)?.parse().ok()?))
        })
        .collect()
}

/// True while /proc/PID exists, i.e. the process runs or is an unreaped
/// zombie.
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// True while the process `p` was (same pid, same start time) still exists.
pub fn still_there(p: &ProcStat) -> bool {
    stat(p.pid).is_some_and(|now| now.starttime == p.starttime)
}

pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

pub fn children(pid: i32) -> Vec<ProcStat> {
    all().into_iter().filter(|p| p.ppid == pid).collect()
}

/// All descendants, children before grandchildren.
pub fn descendants(pid: i32) -> Vec<ProcStat> {
    let procs = all();
    let mut out: Vec<ProcStat> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            out.push(p.clone());
        }
    }
    out
}

/// Children of `ppid` whose comm is that of `exe`, zombies included (a
/// zombie is a capture its parent has not reaped yet: not finished from our
/// side). Reads the parent's `/proc/PID/task/*/children` lists rather than
/// all of `/proc`, so polling it between measurements stays cheap.
pub fn children_running(ppid: i32, exe: &Path) -> u64 {
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let comm = &name.as_bytes()[..name.len().min(COMM_LEN)];
    let Ok(tasks) = fs::read_dir(format!("/proc/{ppid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for task in tasks.flatten() {
        let Ok(list) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        n += list
            .split_whitespace()
            .filter_map(|pid| stat(pid.parse().ok()?))
            .filter(|p| p.comm.as_bytes() == comm)
            .count() as u64;
    }
    n
}

/// Processes running `exe` anywhere on the host.
pub fn processes_running(exe: &Path) -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() == Some(exe))
        .count() as u64
}

/// Every live process named `comm` inside one of the network namespaces
/// `inodes`, whoever its parent is.
pub fn in_namespaces(comm: &str, inodes: &[u64]) -> Vec<ProcStat> {
    all()
        .into_iter()
        .filter(|p| p.comm == comm && p.state != 'Z')
        .filter(|p| netns_of(p.pid).is_some_and(|ino| inodes.contains(&ino)))
        .collect()
}

/// The inodes of the sockets `pid` holds (`socket:[N]` in /proc/PID/fd).
pub fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let link = fs::read_link(e.path()).ok()?;
            let text = link.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The inodes of every packet socket in the network namespace at
/// `netns_path` (a `/run/netns/NAME` or `/proc/PID/ns/net`): the last
/// column of `/proc/net/packet`, which the kernel fills for the namespace
/// of the reader. A helper thread enters the namespace to read it (setns
/// moves only the calling thread) and ends.
pub fn packet_socket_inodes(netns_path: &str) -> Vec<u64> {
    let path = netns_path.to_string();
    let read = std::thread::spawn(move || {
        let ns = fs::File::open(&path).ok()?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        fs::read_to_string("/proc/thread-self/net/packet").ok()
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default();
    read.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect()
}

/// How many of the packet sockets in the namespace at `netns_path` are
/// `pid`'s own.
pub fn packet_sockets_of(pid: i32, netns_path: &str) -> usize {
    let mine = socket_inodes(pid);
    if mine.is_empty() {
        return 0;
    }
    packet_socket_inodes(netns_path)
        .iter()
        .filter(|i| mine.contains(i))
        .count()
}

/// Lines of /proc/PID/maps: the process's memory mappings (a packet
/// ring left mapped shows as one more).
pub fn mappings(pid: i32) -> usize {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

pub fn open_fds(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What each of a process's descriptors refers to (`/proc/PID/fd/*` link
/// targets such as `pipe:[123]`, `socket:[456]`, `/dev/null`).
pub fn fd_targets(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A field of /proc/PID/status, value text trimmed.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_value(&text, key)
}

fn status_value(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The first number of a status field (`VmRSS:  1234 kB` gives 1234).
fn status_number(status: &str, key: &str) -> Option<u64> {
    status_value(status, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: i32) -> Option<u64> {
    status_number(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS",
    )
}

/// The real uid of a process (first number of `Uid:`).
pub fn uid(pid: i32) -> Option<u32> {
    status_number(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "Uid",
    )
    .and_then(|u| u.try_into().ok())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of the CPU
/// fields of [`ProcStat`].
pub fn clock_ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => DEFAULT_CLK_TCK,
    }
}

/// The first field of a schedstat file: time on CPU, in nanoseconds.
fn schedstat_ns(path: &Path) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of the process's main thread so far, in nanoseconds, as the
/// scheduler accounts it (`/proc/PID/schedstat`).
pub fn main_thread_run_ns(pid: i32) -> Option<u64> {
    schedstat_ns(Path::new(&format!("/proc/{pid}/schedstat")))
}

/// CPU time of all the process's live threads so far, in nanoseconds
/// (`/proc/PID/task/*/schedstat`); threads that have exited are missing.
pub fn tasks_run_ns(pid: i32) -> Option<u64> {
    let mut sum = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        sum += schedstat_ns(&task.path().join("schedstat"))?;
    }
    Some(sum)
}

/// Voluntary plus involuntary context switches of all the process's live
/// threads (`/proc/PID/task/*/status`): how often it went to sleep and was
/// woken, or was preempted; the wakeups a quiet program should not make.
pub fn task_ctx_switches(pid: i32) -> Option<u64> {
    let mut sum = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        sum += status_number(&text, "voluntary_ctxt_switches").unwrap_or(0)
            + status_number(&text, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Some(sum)
}

/// Anonymous resident memory in KiB (`RssAnon` of /proc/PID/status): what
/// the process itself allocated, without file and shared mappings.
pub fn rss_anon_kib(pid: i32) -> Option<u64> {
    status_number(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "RssAnon",
    )
}

/// Proportional set size in KiB (`Pss` of /proc/PID/smaps_rollup): each
/// shared page counted as its share, so the sum over processes is what
/// they cost together.
pub fn pss_kib(pid: i32) -> Option<u64> {
    status_number(
        &fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?,
        "Pss",
    )
}

/// The inode of the network namespace a process is in.
pub fn netns_of(pid: i32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The inode of this process's network namespace.
pub fn own_netns() -> Option<u64> {
    netns_of(std::process::id() as i32)
}

/// One look at a process, for measuring it between two looks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU time in nanoseconds: the tasks' scheduler run time
    /// ([`tasks_run_ns`]) where that accounts for everything, else utime +
    /// stime. Ticks (10 ms) are too coarse for a sub-second run; the
    /// per-task sum misses threads that have exited, which the tick count
    /// then reveals.
    pub cpu_ns: u64,
    /// cutime + cstime: CPU of children it has waited for (its capture
    /// programs), in clock ticks.
    pub children_cpu_ticks: u64,
    pub rss_kib: u64,
    pub fds: u64,
    /// Voluntary and involuntary context switches.
    pub ctx_switches: u64,
    pub threads: u64,
}

/// Samples `pid`; an error once it is gone.
pub fn sample(pid: i32) -> io::Result<ProcSample> {
    let gone = || io::Error::new(io::ErrorKind::NotFound, format!("no process {pid}"));
    let st = stat(pid).ok_or_else(gone)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut s = ProcSample {
        cpu_ticks: st.cpu_ticks,
        children_cpu_ticks: st.children_cpu_ticks,
        threads: st.threads,
        rss_kib: status_number(&status, "VmRSS").unwrap_or(0),
        ctx_switches: status_number(&status, "voluntary_ctxt_switches").unwrap_or(0)
            + status_number(&status, "nonvoluntary_ctxt_switches").unwrap_or(0),
        fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        ..Default::default()
    };
    let tck = clock_ticks_per_second();
    let ticks_ns = s.cpu_ticks * 1_000_000_000 / tck;
    let tick_ns = 1_000_000_000 / tck;
    s.cpu_ns = match tasks_run_ns(pid) {
        Some(run) if run.abs_diff(ticks_ns) <= 2 * tick_ns => run,
        _ => ticks_ns,
    };
    Ok(s)
}

/// The whole machine's CPU: (busy, total) jiffies summed over all cores,
/// from the first line of `/proc/stat`.
pub fn machine_cpu() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
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
