//! The container image as users run it, with real Docker: built from
//! `deploy/Dockerfile` on the local Debian base, started with
//! `--pid host --network host`, the four capabilities of README
//! "Privileges" and the seccomp profile `deploy/seccomp.json`; it captures
//! from a busybox container (`--network none`, pinging its own loopback) by
//! `netns` and by `container=` with pid and start time, as root and as the
//! image's user 65534 with file capabilities; the health check turns
//! healthy; the profile denies what the service does without. And the
//! systemd unit as shipped, under a real systemd (in a container, since
//! this host has none running): it captures as a dynamic user with ambient
//! capabilities and is restarted when it fails.
//!
//! Needs root and Docker (`scripts/deps.sh` installs it, `scripts/dockerd.sh`
//! starts it). Every container is removed on drop.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::docker::{docker, project_image, systemd_image, unique_name, Container, BUSYBOX_TAG};
use common::pcapng::target_yaml;
use common::{tshark_decode, urlencode, Pcapng, START_TIMEOUT, TRAFFIC_TIMEOUT};

/// The capabilities the image's service needs (README "Privileges").
const CAPS: [&str; 4] = ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "NET_RAW"];
/// Their bits in /proc/PID/status masks (linux/capability.h).
const CAPS_MASK: u64 = (1 << 21) | (1 << 19) | (1 << 12) | (1 << 13);
/// How long the containerized service may take to answer /version.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the health check may take to report healthy at a 1 s interval.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// ICMP echo request, as tshark's icmp.type shows it.
const ECHO_REQUEST: &str = "8";

/// The busybox container, pinging its own loopback five times a second.
fn pinger() -> Container {
    Container::run(
        "ping",
        &[
            "--network",
            "none",
            BUSYBOX_TAG,
            "ping",
            "-i",
            "0.2",
            "127.0.0.1",
        ],
    )
}

/// The project's image with its deployment options; `user` overrides the
/// image's 65534, `extra` goes to docker, `args` to the service. The
/// discovery service is pointed at a port nothing listens on, so a lookup
/// fails fast and visibly.
fn service(user: Option<&str>, extra: &[&str], args_after: &[&str]) -> (Container, u16) {
    let image = project_image();
    let port = common::service::free_port();
    let gw_port = common::service::free_port();
    let seccomp = format!(
        "seccomp={}",
        common::docker::repo().join("deploy/seccomp.json").display()
    );
    let env = format!("PACKETFLIX_PORT={port}");
    let mut args = vec!["--pid", "host", "--network", "host", "--cap-drop", "ALL"];
    for cap in CAPS {
        args.extend(["--cap-add", cap]);
    }
    args.extend(["--security-opt", &seccomp, "-e", &env]);
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    args.extend_from_slice(extra);
    let (port_s, gw_s) = (port.to_string(), gw_port.to_string());
    args.extend([image, "--port", &port_s, "--gw-port", &gw_s]);
    args.extend_from_slice(args_after);
    let c = Container::run("svc", &args);
    let up = common::wait_for(READY_TIMEOUT, || {
        common::http::version_status(port) == Some(200)
    });
    assert!(
        up,
        "containerized service not answering on {port}:\n{}",
        c.logs()
    );
    (c, port)
}

fn netns_inode(pid: i32) -> u64 {
    common::procs::netns_of(pid).expect("stat netns")
}

/// Field 22 of /proc/PID/stat: clock ticks since boot at process start.
fn starttime(pid: i32) -> u64 {
    common::procs::stat(pid).expect("read stat").starttime
}

fn status_field(pid: i32, key: &str) -> String {
    common::procs::status_field(pid, key).unwrap_or_else(|| panic!("no {key} for {pid}"))
}

fn mask(pid: i32, key: &str) -> u64 {
    u64::from_str_radix(status_field(pid, key).trim(), 16).expect("hex mask")
}

/// Captures `query` until the pinger's echo requests are there, then closes;
/// returns the stream after checking that tshark decodes them.
fn capture_pings(port: u16, query: &str, headers: &[(&str, &str)]) -> Pcapng {
    let mut c = common::ws::must_connect(port, query, headers);
    c.wait_capturing(START_TIMEOUT);
    pings_from(c, query)
}

/// Reads the capturing `c` until the pinger's echo requests are there,
/// closes it and checks that tshark decodes them.
fn pings_from(mut c: common::ws::Client, what: &str) -> Pcapng {
    let seen = c.read_until(
        |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.has_icmp_from(Ipv4Addr::LOCALHOST)),
        TRAFFIC_TIMEOUT,
    );
    assert!(seen, "no ping from the container captured with {what:?}");
    let _ = c.close(Duration::from_secs(5));
    let rows = tshark_decode(&c.capture.bytes);
    assert!(
        rows.iter()
            .any(|r| r.src == "127.0.0.1" && r.icmp_type == ECHO_REQUEST && r.interface == "lo"),
        "tshark shows no echo request on lo: {rows:?}"
    );
    c.capture.pcapng()
}

/// The target description GhostWire would list for `c`.
fn container_json(c: &Container, netns: u64, pid: i32, starttime: u64) -> String {
    serde_json::json!({
        "netns": netns,
        "pid": pid,
        "starttime": starttime,
        "name": c.name,
        "type": "docker",
        "prefix": "",
        "network-interfaces": ["lo"],
    })
    .to_string()
}

#[test]
fn image_as_root_captures_a_container_by_netns_and_by_container_under_the_seccomp_profile() {
    let ping = pinger();
    let (svc, port) = service(Some("0"), &[], &[]);
    // The profile is in force on the service.
    assert_eq!(status_field(svc.pid(), "Seccomp").trim(), "2");

    let pid = ping.pid();
    let netns = netns_inode(pid);
    capture_pings(port, &format!("netns={netns}&nif=lo"), &[]);

    // pid + starttime as docker inspect and /proc give them: checked by the
    // service inside its container, through the host's PID namespace.
    let st = starttime(pid);
    let json = container_json(&ping, netns, pid, st);
    let p = capture_pings(port, &format!("container={}", urlencode(&json)), &[]);
    let doc = target_yaml(&p).expect("target document in the SHB");
    assert!(
        doc.contains(&format!("container-name: \"{}\"", ping.name))
            && doc.contains("container-type: \"docker\""),
        "{doc}"
    );

    // A wrong start time makes the reference stale: the service turns to
    // discovery (nothing listens there), so the check really read /proc.
    let stale = container_json(&ping, netns, pid, st + 1);
    let reason = common::expect_refusal(port, &format!("container={}", urlencode(&stale)), &[]);
    assert!(reason.contains("discovery"), "{reason}");
}

#[test]
fn image_as_user_65534_captures_with_file_capabilities_and_turns_healthy() {
    let ping = pinger();
    let (svc, port) = service(None, &["--health-interval", "1s"], &[]);
    let spid = svc.pid();
    let uids = status_field(spid, "Uid");
    assert!(uids.split_whitespace().all(|u| u == "65534"), "{uids}");
    assert_eq!(
        mask(spid, "CapEff") & CAPS_MASK,
        CAPS_MASK,
        "file capabilities"
    );
    assert!(
        svc.logs()
            .contains("capture programs get CAP_NET_ADMIN and CAP_NET_RAW as ambient"),
        "{}",
        svc.logs()
    );

    let pid = ping.pid();
    let json = container_json(&ping, netns_inode(pid), pid, starttime(pid));
    // As the Kubernetes pod proxy delivers it: headers only, no query.
    capture_pings(port, "", &[("Clustershark-Container", &json)]);

    let healthy = common::wait_for(HEALTHY_TIMEOUT, || {
        svc.inspect("{{.State.Health.Status}}") == "healthy"
    });
    assert!(healthy, "health: {}", svc.inspect("{{json .State.Health}}"));

    // Under the profile the helper threads lower their own priority
    // (setpriority): the log writer from the start, the reload thread from
    // the first SIGHUP. The loop stays at 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let helpers = ["log-writer", "reload"];
    let all_there = common::wait_for(READY_TIMEOUT, || {
        let threads = common::procs::thread_nices(spid);
        helpers
            .iter()
            .all(|h| threads.iter().any(|(_, comm, _)| comm == h))
    });
    let threads = common::procs::thread_nices(spid);
    println!("threads of the containerized service (tid, name, nice): {threads:?}");
    assert!(all_there, "helper threads missing: {threads:?}");
    for (tid, comm, nice) in &threads {
        let want = if *tid == spid { 0 } else { HELPER_NICE };
        assert_eq!(
            *nice, want,
            "thread {tid} ({comm}) at nice {nice}: {threads:?}"
        );
    }
}

#[test]
fn image_with_the_native_engine_captures_as_user_65534_under_the_seccomp_profile() {
    let ping = pinger();
    let (svc, port) = service(None, &[], &["--capture-engine", "native"]);
    let spid = svc.pid();
    assert_eq!(status_field(spid, "Seccomp").trim(), "2");
    let version = common::http::get(port, "/version");
    let body = String::from_utf8_lossy(&version.body);
    assert!(body.contains(r#""capture-engine":"native""#), "{body}");

    let pid = ping.pid();
    let netns = netns_inode(pid);
    let ns_path = format!("/proc/{pid}/ns/net");
    let mut c = common::ws::must_connect(port, &format!("netns={netns}&nif=lo"), &[]);
    c.wait_capturing(START_TIMEOUT);
    // The ring is the service's own packet socket in the container's
    // namespace (opened there by a thread that entered it, under the
    // profile), alone once it took over from the socket read while it was
    // set up; no capture program runs.
    assert!(
        common::wait_for(Duration::from_secs(5), || {
            common::procs::packet_sockets_of(spid, &ns_path) == 1
        }),
        "packet sockets: {}",
        common::procs::packet_sockets_of(spid, &ns_path)
    );
    assert!(
        common::procs::children(spid).is_empty(),
        "{:?}",
        common::procs::children(spid)
    );
    pings_from(c, "the native engine");
    // Closing the capture closes the ring.
    let closed = common::wait_for(START_TIMEOUT, || {
        common::procs::packet_sockets_of(spid, &ns_path) == 0
    });
    assert!(closed, "packet socket left open after the capture ended");
}

/// The niceness the service's helper threads give themselves
/// (`service::background`).
const HELPER_NICE: i64 = 10;

/// Runs a container to its end; returns its output. Removed on every path.
fn run_to_end(args: &[&str]) -> std::process::Output {
    let guard = Container {
        name: unique_name("once"),
    };
    let mut full = vec!["run", "--name", &guard.name];
    full.extend_from_slice(args);
    docker(&full)
}

#[test]
fn seccomp_profile_denies_new_namespaces_that_dockers_default_allows() {
    let image = project_image();
    let seccomp = format!(
        "seccomp={}",
        common::docker::repo().join("deploy/seccomp.json").display()
    );
    let unshare = |profile: &[&str]| {
        let mut args = vec![
            "--network",
            "none",
            "--user",
            "0",
            "--cap-add",
            "SYS_ADMIN",
            "--entrypoint",
            "unshare",
        ];
        args.extend_from_slice(profile);
        args.extend([image, "--net", "true"]);
        run_to_end(&args)
    };
    // Docker's own profile lets CAP_SYS_ADMIN make namespaces ...
    let default = unshare(&[]);
    assert!(
        default.status.success(),
        "{}",
        String::from_utf8_lossy(&default.stderr)
    );
    // ... ours does not: the service only ever enters existing ones.
    let ours = unshare(&["--security-opt", &seccomp]);
    assert!(!ours.status.success());
    let err = String::from_utf8_lossy(&ours.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
}

/// How long systemd may take to boot in its container, and the unit to
/// (re)start.
const SYSTEMD_TIMEOUT: Duration = Duration::from_secs(30);

/// `sh -c SCRIPT` inside `c`, which must succeed; its stdout.
fn sh(c: &Container, script: &str) -> Vec<u8> {
    let out = c.exec(&[], &["sh", "-c", script]);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sh_text(c: &Container, script: &str) -> String {
    String::from_utf8_lossy(&sh(c, script)).trim().to_string()
}

#[test]
fn unit_under_systemd_captures_as_a_dynamic_user_and_restarts_on_failure() {
    let image = systemd_image();
    // systemd as the container's init: it needs to mount (the unit's
    // Protect*= and Private*= options), the capabilities the unit grants,
    // and the cgroup tree; its own network namespace stays empty.
    let mut args = vec!["--network", "none"];
    for cap in CAPS {
        args.extend(["--cap-add", cap]);
    }
    args.extend([
        "--security-opt",
        "seccomp=unconfined",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        image,
    ]);
    let host = Container::run("systemd", &args);
    let booted = common::wait_for(SYSTEMD_TIMEOUT, || {
        let out = host.exec(&[], &["systemctl", "is-system-running"]);
        matches!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "running" | "degraded"
        )
    });
    assert!(booted, "systemd did not boot: {}", host.logs());
    sh(&host, "systemctl start packetflix");
    let main_pid = || sh_text(&host, "systemctl show -p MainPID --value packetflix");
    let serving = || {
        host.exec(
            &[],
            &[
                "curl",
                "-fsS",
                "-o",
                "/dev/null",
                "http://127.0.0.1:5001/version",
            ],
        )
        .status
        .success()
    };
    assert!(
        common::wait_for(SYSTEMD_TIMEOUT, serving),
        "unit not serving"
    );
    let first = main_pid();

    // Not root, exactly the four capabilities, no_new_privs.
    let status = sh_text(&host, &format!("cat /proc/{first}/status"));
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in {status}"))
    };
    let uid = field("Uid");
    assert!(
        !uid.split_whitespace().any(|u| u == "0"),
        "runs as root: {uid}"
    );
    assert_eq!(
        u64::from_str_radix(&field("CapEff"), 16).unwrap(),
        CAPS_MASK
    );
    assert_eq!(field("NoNewPrivs"), "1");

    // A namespace with traffic, made inside that host; captured through the
    // unit's service with the project's client, decoded here with tshark.
    sh(
        &host,
        "ip netns add t1 && ip -n t1 link set lo up && \
         (ip netns exec t1 ping -c 150 -i 0.2 127.0.0.1 >/dev/null 2>&1 &)",
    );
    let inode = sh_text(&host, "stat -L -c %i /run/netns/t1");
    let pcap = sh(
        &host,
        &format!("timeout 20 packetflix-capture --netns {inode} -i lo -c 4 -w -"),
    );
    let rows = tshark_decode(&pcap);
    assert!(
        rows.iter()
            .any(|r| r.icmp_type == ECHO_REQUEST && r.src == "127.0.0.1"),
        "{rows:?}"
    );

    // Restart=on-failure: a killed service comes back. (Not SIGSEGV: Rust's
    // stack-overflow handler lets a process survive one sent by kill.)
    sh(&host, &format!("kill -KILL {first}"));
    let restarted = common::wait_for(SYSTEMD_TIMEOUT, || {
        let now = main_pid();
        now != "0" && now != first && serving()
    });
    assert!(restarted, "not restarted after a crash");
    // Its lines are in the journal, from both runs.
    let journal = sh_text(&host, "journalctl -u packetflix --no-pager -o cat");
    assert_eq!(
        journal.matches("listening on port 5001").count(),
        2,
        "{journal}"
    );
    assert!(journal.contains("capture started"), "{journal}");
}
