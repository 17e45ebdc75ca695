//! The Debian packages as an operator and a desktop user get them: both
//! `.deb` files built here with cargo-deb (`cargo deb`, `cargo deb --variant
//! capture --multiarch foreign`), installed with `apt-get install ./….deb`
//! into a container made from the local Debian base image
//! (`scripts/docker-images.sh` makes `packetflix-base:bookworm`); the
//! service started from the package's own files (the unit's command line)
//! captures from a test container through the packaged client, `tshark -D`
//! lists the packaged extcap, and `dpkg -r` leaves nothing behind; then the
//! package's client, `install --system` over another default handler and
//! `uninstall --system`, puts back exactly what was there. Also:
//! `scripts/docker-images.sh` fails naming what is missing when apt's
//! sources name no mirror.
//!
//! Containers are removed by guards; the build and every docker step are
//! bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use packetflix_testkit as common;

use common::docker::{docker, docker_ok, ensure_base_images, Container, BASE_TAG, BUSYBOX_TAG};
use common::pcapng::target_yaml;
use common::{Pcapng, ScratchDir};

/// Bound on building both packages: a release build from scratch on two
/// shared cores takes a few minutes.
const BUILD_LIMIT: Duration = Duration::from_secs(1200);
/// How long the packaged service may take to answer /version.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// Runs `cargo deb ARGS --output DIR` in the checkout; the package's path.
fn cargo_deb(args: &[&str], out: &Path) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = Command::new("timeout")
        .arg(BUILD_LIMIT.as_secs().to_string())
        .arg(cargo)
        .arg("deb")
        .args(args)
        .arg("--output")
        .arg(out)
        .current_dir(common::bins::repo())
        .stdin(Stdio::null())
        .output()
        .expect("run cargo deb (scripts/deps.sh installs cargo-deb)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "cargo deb {args:?}: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let path = stdout
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .expect("cargo deb names the package it made")
        .trim()
        .to_string();
    std::path::PathBuf::from(path)
}

/// `sh -c SCRIPT` in the container, which must succeed; its stdout.
fn sh(c: &Container, script: &str) -> String {
    let out = c.exec(&[], &["sh", "-c", script]);
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Everything on the container's file system whose name says packetflix,
/// but the test's own scratch files in /tmp.
fn packetflix_files(c: &Container) -> Vec<String> {
    sh(
        c,
        "find / -xdev \\( -path /proc -o -path /sys -o -path /tmp \\) -prune \
         -o -iname '*packetflix*' -print",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn both_packages_install_with_apt_capture_from_a_container_and_leave_nothing_when_removed() {
    ensure_base_images();
    let dir = ScratchDir::new("debs");
    let service_deb = cargo_deb(&["-p", "packetflix"], dir.path());
    let client_deb = cargo_deb(
        &[
            "-p",
            "packetflix",
            "--variant",
            "capture",
            "--multiarch",
            "foreign",
        ],
        dir.path(),
    );
    for (deb, name) in [
        (&service_deb, "packetflix_"),
        (&client_deb, "packetflix-capture_"),
    ] {
        assert!(
            deb.file_name().unwrap().to_str().unwrap().starts_with(name),
            "{}",
            deb.display()
        );
    }
    // What dpkg-deb says about them before anything is installed.
    let info = |deb: &Path, field: &str| -> String {
        let out = Command::new("dpkg-deb")
            .args(["-f", deb.to_str().unwrap(), field])
            .output()
            .expect("dpkg-deb");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let depends = info(&service_deb, "Depends");
    assert!(
        depends.contains("libc6") && depends.contains("wireshark-common"),
        "service Depends: {depends}"
    );
    assert!(info(&client_deb, "Depends").contains("libc6"));
    assert_eq!(info(&client_deb, "Multi-Arch"), "foreign");

    // A Debian 12 root with apt and nothing else of ours; --pid host so the
    // service finds the test container's namespace, host networking for
    // the Debian mirror and the service's port; Docker's default
    // capabilities (apt needs them) and the service's four (README,
    // Privileges); AppArmor counts reading /proc/PID/ns/* as ptrace.
    let host = Container::run(
        "debs",
        &[
            "--pid",
            "host",
            "--network",
            "host",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_RAW",
            "--security-opt",
            "apparmor=unconfined",
            BASE_TAG,
            "sleep",
            "infinity",
        ],
    );
    let before = packetflix_files(&host);
    assert!(before.is_empty(), "{before:?}");
    for deb in [&service_deb, &client_deb] {
        docker_ok(&["cp", deb.to_str().unwrap(), &format!("{}:/tmp/", host.name)]);
    }
    let service_file = service_deb.file_name().unwrap().to_str().unwrap();
    let client_file = client_deb.file_name().unwrap().to_str().unwrap();
    sh(
        &host,
        &format!(
            "echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections \
             && apt-get update -qq \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                ./tmp/{service_file} ./tmp/{client_file} tshark curl >/tmp/apt.log 2>&1 \
             || {{ tail -30 /tmp/apt.log; exit 1; }}"
        ),
    );
    let listed = sh(&host, "dpkg-query -L packetflix packetflix-capture");
    println!("installed files:\n{listed}");

    // The unit is there and disabled: nothing links to it.
    sh(&host, "test -f /usr/lib/systemd/system/packetflix.service");
    let wants = sh(
        &host,
        "find /etc/systemd -name 'packetflix*' 2>/dev/null || true",
    );
    assert!(wants.trim().is_empty(), "enabled: {wants}");

    // The extcap is in the folder Wireshark reports, and tshark lists it.
    let folders = sh(&host, "tshark -G folders 2>/dev/null");
    let extcap_dir = folders
        .lines()
        .find_map(|l| {
            l.strip_prefix("Extcap path:")
                .or_else(|| l.strip_prefix("Global Extcap path:"))
        })
        .expect("tshark names its extcap folder")
        .trim()
        .to_string();
    sh(&host, &format!("test -x {extcap_dir}/packetflix-capture"));
    let interfaces = sh(&host, "tshark -D 2>/dev/null");
    assert!(
        interfaces.contains("packetflix (Packetflix: capture inside a container, pod or netns)"),
        "{interfaces}"
    );
    // The link handler (the same entry install writes; a unit test keeps
    // them equal, tests/desktop.rs validates it).
    sh(
        &host,
        "grep -qx 'MimeType=x-scheme-handler/packetflix;' /usr/share/applications/packetflix-capture.desktop \
         && grep -qx 'Exec=/usr/bin/packetflix-capture open %u' /usr/share/applications/packetflix-capture.desktop",
    );

    // The service, started as the unit starts it (its ExecStart, found on
    // systemd's search path), on a free port instead of 5001.
    let exec_start = sh(
        &host,
        "sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/packetflix.service",
    );
    let mut words = exec_start.split_whitespace();
    let program = words.next().expect("ExecStart names a program");
    let resolved = sh(&host, &format!("command -v {program}"));
    assert_eq!(resolved.trim(), "/usr/bin/packetflix");
    let port = common::service::free_port();
    let flags: Vec<String> = words
        .filter(|w| !w.starts_with("--port"))
        .map(str::to_string)
        .collect();
    // The container shares the host's PIDs: stop exactly this process.
    let start = format!(
        "echo $$ >/tmp/service.pid; exec {program} --port={port} {} >/tmp/service.log 2>&1",
        flags.join(" ")
    );
    let out = host.exec(&["-d"], &["sh", "-c", &start]);
    assert!(out.status.success());
    assert!(
        common::wait_for(READY_LIMIT, || {
            host.exec(
                &[],
                &["curl", "-fsS", &format!("http://127.0.0.1:{port}/version")],
            )
            .status
            .success()
        }),
        "the packaged service answers: {}",
        sh(&host, "cat /tmp/service.log")
    );

    // A test container to capture from, through the packaged client.
    let pinger = Container::run(
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
    );
    let inode = common::procs::netns_of(pinger.pid()).expect("netns of the container");
    sh(
        &host,
        &format!(
            "packetflix-capture 127.0.0.1:{port} --netns {inode} --nif lo -c 6 -a duration:30 \
             -w /tmp/packaged.pcapng 2>/tmp/client.log || {{ cat /tmp/client.log; exit 1; }}"
        ),
    );
    let bytes = host.exec(&[], &["cat", "/tmp/packaged.pcapng"]).stdout;
    let capture = Pcapng::parse(&bytes).expect("a pcapng capture");
    assert_eq!(capture.packets.len(), 6);
    assert_eq!(capture.icmp().len(), 6, "the container's pings");
    assert!(target_yaml(&capture).is_some(), "written by the service");
    sh(&host, "kill $(cat /tmp/service.pid)");

    // Removal: dpkg forgets both packages and leaves no file of theirs.
    sh(&host, "dpkg -r packetflix packetflix-capture >/dev/null");
    let status = sh(
        &host,
        "dpkg-query -W -f='${db:Status-Status}\\n' packetflix packetflix-capture 2>/dev/null || true",
    );
    assert!(
        status
            .lines()
            .all(|s| s.trim().is_empty() || s.trim() == "not-installed"),
        "{status}"
    );
    for path in listed.lines().map(str::trim).filter(|p| p.starts_with('/')) {
        let left = host.exec(&[], &["test", "-f", path]).status.success()
            || host.exec(&[], &["test", "-L", path]).status.success();
        assert!(!left, "{path} is left behind");
    }
    let after = packetflix_files(&host);
    assert!(after.is_empty(), "left behind: {after:?}");

    // `install --system` from the package's binary, as root, over a
    // system default that names another handler: every user's extcap and
    // handler; twice is once; `uninstall --system` puts back exactly what
    // was there.
    sh(
        &host,
        &format!("dpkg-deb -x /tmp/{client_file} /tmp/client-root"),
    );
    let client = "/tmp/client-root/usr/bin/packetflix-capture";
    sh(
        &host,
        "mkdir -p /etc/xdg && printf '[Default Applications]\\nx-scheme-handler/packetflix=other.desktop;\\n' \
         > /etc/xdg/mimeapps.list",
    );
    let state = format!(
        "find /usr/share/applications /etc/xdg {extcap_dir} 2>/dev/null | sort; cat /etc/xdg/mimeapps.list"
    );
    let before = sh(&host, &state);
    let said = sh(
        &host,
        &format!("{client} install --system && {client} install --system"),
    );
    println!("install --system said:\n{said}");
    assert!(said.contains("uninstall --system"), "{said}");
    sh(&host, &format!("test -x {extcap_dir}/packetflix-capture"));
    let interfaces = sh(&host, "tshark -D 2>/dev/null");
    assert!(
        interfaces.contains("packetflix (Packetflix"),
        "{interfaces}"
    );
    let default = sh(
        &host,
        "sed -n 's/^x-scheme-handler\\/packetflix=//p' /etc/xdg/mimeapps.list",
    );
    assert_eq!(
        default.trim().trim_end_matches(';'),
        "packetflix-capture.desktop"
    );
    sh(
        &host,
        "grep -q '^Exec=.* open %u$' /usr/share/applications/packetflix-capture.desktop",
    );
    sh(&host, &format!("{client} uninstall --system"));
    let restored = sh(&host, &state);
    assert_eq!(restored, before, "uninstall --system left a change");
}

#[test]
fn docker_images_script_names_the_missing_mirror_instead_of_guessing_one() {
    // apt's sources hidden in a mount namespace of the script's own, and a
    // tag that does not exist, so the script must find a mirror.
    let script = common::bins::repo().join("scripts/docker-images.sh");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /etc/apt && exec \"$0\"")
        .arg(&script)
        .env(
            "BASE_TAG",
            format!("pfx-no-such-base-{}:x", std::process::id()),
        )
        .env_remove("MIRROR")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("apt's sources name no Debian mirror") && stderr.contains("MIRROR=URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("debootstrap bookworm from"), "{stderr}");
    let images = docker(&["image", "ls", "-q", "pfx-no-such-base-*"]);
    assert!(images.stdout.is_empty(), "no image was made");
}
