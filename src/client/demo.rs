//! `packetflix-capture demo`: a first live capture on a fresh machine.
//!
//! Makes a throw-away network namespace, sends UDP datagrams inside it (on
//! its loopback, so no demo traffic ever touches the host's networks),
//! captures inside it through a running
//! Packetflix service, prints each packet as it arrives and removes the
//! namespace again. The namespace is removed on every path: errors, Ctrl-C
//! (the demo installs its signal handler without the hard second-signal exit)
//! and panics all pass through [`Namespace`]'s `Drop`. Only this client
//! process blocks and sleeps here; nothing of it runs in the service.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::cli::DemoArgs;
use super::decode::Decoder;
use super::http;
use super::output::{BlockSink, Sink, Written};
use super::session::{self, Ending, Limits};
use super::url::{CaptureParams, Target, Url};

/// The UDP port the demo traffic goes to; nothing listens there, so the
/// namespace also answers with ICMP port unreachable, which shows a second
/// protocol.
const DEMO_PORT: u16 = 9999;
/// Pause between demo datagrams: a few per second reads well on screen.
const TRAFFIC_INTERVAL: Duration = Duration::from_millis(250);
/// How long `/version` may take before we call the service absent.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespace the demo made; removed when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Result<Namespace, String> {
        ip(&["netns", "add", name])?;
        // From here on, Drop cleans up whatever the next steps leave.
        let ns = Namespace {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn inode(&self) -> Result<u64, String> {
        let path = self.path();
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|e| format!("cannot stat {path}: {e}"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        match ip(&["netns", "del", &self.name]) {
            Ok(()) => eprintln!("demo: removed network namespace {}", self.name),
            Err(e) => eprintln!(
                "demo: could not remove network namespace {}: {e}",
                self.name
            ),
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2 is needed for the demo): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Prints each packet as its block is written to the file.
struct Printer {
    file: Sink,
    decoder: Decoder,
}

impl BlockSink for Printer {
    fn write_blocks(&mut self, blocks: &[u8], stop: &AtomicBool) -> Result<Written, String> {
        for line in self.decoder.blocks(blocks) {
            println!("{line}");
        }
        self.file.write_blocks(blocks, stop)
    }

    fn reader_gone(&self) -> bool {
        false
    }
}

pub fn run(args: &DemoArgs, stop: &AtomicBool) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "the demo makes a network namespace, which needs root: run it with sudo".into(),
        );
    }
    check_service(args, stop)?;
    let pid = std::process::id();
    let name = format!("pfdemo-{pid}");
    let ns = Namespace::create(&name)?;
    let inode = ns.inode()?;
    eprintln!("demo: made network namespace {name} (inode {inode})");
    let path = std::env::temp_dir().join(format!("packetflix-demo-{pid}.pcapng"));
    let mut printer = Printer {
        file: Sink::create(&path)?,
        decoder: Decoder::new(),
    };
    let params = CaptureParams {
        target: Some(Target::Netns(inode)),
        nif: Some("lo".into()),
        filter: None,
        chaste: false,
    };
    eprintln!(
        "demo: sending UDP to 127.0.0.1:{DEMO_PORT} inside {name} and capturing {} packets on its lo through {} ...",
        args.count,
        args.service.authority()
    );
    let traffic_done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| send_traffic(&ns.path(), &traffic_done));
        let limits = Limits {
            count: Some(args.count),
            duration: Some(args.duration),
        };
        let result = session::capture(
            &args.service,
            &params,
            limits,
            &mut printer,
            stop,
            &mut |_| {},
        );
        traffic_done.store(true, Ordering::SeqCst);
        result
    });
    drop(ns);
    let summary = result?;
    let why = match summary.ending {
        Ending::Stopped(session::StopCause::Count) => String::new(),
        Ending::Stopped(session::StopCause::Duration) => {
            format!(" (only these within {}s)", args.duration.as_secs())
        }
        Ending::Stopped(_) => " (stopped)".into(),
        Ending::ServiceEnded { reason } => format!(" (the service ended the capture: {reason})"),
    };
    let (packets, path) = (summary.packets, path.display());
    eprintln!("demo: {packets} packets{why} saved to {path}; look at them with: tshark -r {path} or wireshark {path}");
    Ok(())
}

fn check_service(args: &DemoArgs, stop: &AtomicBool) -> Result<(), String> {
    let url = Url {
        path: "/version".into(),
        query: Vec::new(),
        ..args.service.url.clone()
    };
    let hint = "start one with `sudo packetflix` (or give its URL)";
    let response = match http::get(&url, VERSION_TIMEOUT, stop) {
        Ok(Some(r)) => r,
        Ok(None) => return Err("interrupted".into()),
        Err(e) => {
            return Err(format!(
                "no Packetflix service at {}: {e}; {hint}",
                args.service.authority()
            ))
        }
    };
    let version: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    if response.status != 200 || version["name"] != "packetflix" {
        return Err(format!(
            "{} is not a Packetflix service (GET /version: HTTP {}); {hint}",
            args.service.authority(),
            response.status
        ));
    }
    eprintln!(
        "demo: found packetflix {} at {}",
        version["version"].as_str().unwrap_or("?"),
        args.service.authority()
    );
    Ok(())
}

/// Sends numbered datagrams to the namespace's own loopback until `done`.
/// The sending thread enters the namespace (setns affects only the calling
/// thread), so the traffic never leaves it.
fn send_traffic(ns_path: &str, done: &AtomicBool) {
    let entered = std::fs::File::open(ns_path)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
        });
    if let Err(e) = entered {
        eprintln!("demo: cannot enter {ns_path}: {e}; no traffic will be sent");
        return;
    }
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        eprintln!("demo: cannot bind a UDP socket in the namespace; no traffic will be sent");
        return;
    };
    let mut n = 0u32;
    while !done.load(Ordering::SeqCst) {
        let _ = socket.send_to(
            format!("hello from packetflix demo #{n}").as_bytes(),
            (Ipv4Addr::LOCALHOST, DEMO_PORT),
        );
        n += 1;
        std::thread::sleep(TRAFFIC_INTERVAL);
    }
}
