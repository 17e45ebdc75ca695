//! Network namespaces made by a test, and processes run inside them. Each
//! namespace gets an identity address on its loopback so its own traffic can
//! be told apart from any other namespace's in a capture. Addresses come from
//! the documentation ranges (RFC 5737) and exist only inside the namespaces:
//! nothing is routed to or from the host.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// Linux limits interface (and so our derived) names to IFNAMSIZ - 1.
const IFNAMSIZ_MAX: usize = 15;

static NS_COUNTER: AtomicU32 = AtomicU32::new(1);
static PAIR_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes namespaces left behind by test processes that died without
/// running their guards (killed by a harness timeout, say). Our names carry
/// the creating pid, so a namespace whose creator is gone is ours to remove.
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pfx") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if pid != std::process::id() as i32 && !super::procs::exists(pid) {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A namespace named `pfx<pid>-<n>`, loopback up, with an identity address
/// `198.51.100.<n>/32` on `lo`. Deleted on drop.
pub struct Netns {
    pub name: String,
    pub addr: Ipv4Addr,
}

impl Netns {
    // Not a `Default`: making one creates real resources (a namespace,
    // files), which a default value should not.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Netns {
        SWEEP.call_once(sweep_stale);
        let id = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        assert!(id < 255, "too many namespaces for the identity range");
        let name = format!("pfx{}-{id}", std::process::id());
        assert!(name.len() <= IFNAMSIZ_MAX);
        ip(&["netns", "add", &name]);
        // From here on the guard exists, so a failing step below cleans up.
        let ns = Netns {
            name,
            addr: Ipv4Addr::new(198, 51, 100, id as u8),
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/32", ns.addr),
            "dev",
            "lo",
        ]);
        ns
    }

    /// The inode number of the namespace, as clients pass it in `netns=`.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path()).expect("stat netns").ino()
    }

    /// The namespace's bind mount (what `setns` opens).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null());
        c
    }

    /// Runs `cmd` inside the namespace to completion. Callers only run
    /// commands that end by themselves within a bounded time.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        self.command(cmd).output().expect("ip netns exec")
    }

    /// Bounded ping: at most `count` echoes 200 ms apart, 1 s reply wait.
    pub fn ping(&self, target: &str, count: u32) -> bool {
        self.exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            target,
        ])
        .status
        .success()
    }

    /// Pings the namespace's own identity address: traffic only on its `lo`.
    pub fn ping_self(&self, count: u32) -> bool {
        self.ping(&self.addr.to_string(), count)
    }

    /// Makes one TCP connection attempt to `addr:port` from inside the
    /// namespace (nothing listens, so SYN + RST): a bit of TCP traffic.
    pub fn tcp_poke(&self, addr: &str, port: u16) {
        let _ = self.exec(&[
            "timeout",
            "2",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}"),
        ]);
    }

    /// A UDP socket made inside the namespace (a helper thread enters it,
    /// binds `0.0.0.0:0`, and ends; the socket stays in the namespace), so
    /// a test sends datagrams there without a process per send.
    pub fn udp_socket(&self) -> std::net::UdpSocket {
        let path = self.path();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind in netns")
        })
        .join()
        .expect("socket thread")
    }

    /// Starts a long-running process inside the namespace; killed on drop.
    /// `ip netns exec` execs the command without forking, so the child's pid
    /// is the command's own.
    pub fn spawn(&self, cmd: &[&str]) -> NsProcess {
        let child = self
            .command(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        let pid = child.id() as i32;
        let p = NsProcess { child };
        // Wait until the exec has happened so /proc shows the real command.
        let want = cmd[0].rsplit('/').next().unwrap_or(cmd[0]).to_string();
        let ok = super::wait_for(std::time::Duration::from_secs(5), || {
            super::procs::stat(pid).is_some_and(|s| s.comm == want)
        });
        assert!(ok, "process {cmd:?} did not start in {}", self.name);
        p
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A process running inside a test namespace; killed and reaped on drop.
pub struct NsProcess {
    pub child: Child,
}

impl NsProcess {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn starttime(&self) -> u64 {
        super::procs::stat(self.pid())
            .expect("process is running")
            .starttime
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces joined by a veth pair, `a_if` in `a` with `a_addr`,
/// `b_if` in `b` with `b_addr` (a /30 out of 192.0.2.0/24).
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

impl VethPair {
    // Not a `Default`: making one creates real resources (a namespace,
    // files), which a default value should not.
    #[allow(clippy::new_without_default)]
    pub fn new() -> VethPair {
        let a = Netns::new();
        let b = Netns::new();
        let p = PAIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        assert!(p < 64, "too many veth pairs for 192.0.2.0/24 in /30s");
        let a_if = format!("pv{p}a");
        let b_if = format!("pv{p}b");
        let a_addr = Ipv4Addr::new(192, 0, 2, (4 * p + 1) as u8);
        let b_addr = Ipv4Addr::new(192, 0, 2, (4 * p + 2) as u8);
        // Created directly inside the namespaces: never in the host's.
        ip(&[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ]);
        for (ns, ifname, addr) in [(&a, &a_if, a_addr), (&b, &b_if, b_addr)] {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                ifname,
            ]);
            ip(&["-n", &ns.name, "link", "set", ifname, "up"]);
        }
        VethPair {
            a,
            b,
            a_if,
            b_if,
            a_addr,
            b_addr,
        }
    }
}
