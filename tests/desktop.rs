//! End-to-end tests of the desktop side: `packetflix-capture install` into
//! a scratch home (`HOME`, `XDG_CONFIG_HOME`, `XDG_DATA_HOME`, `TMPDIR` all
//! the test's own) with Debian's real `xdg-mime`, `tshark` and
//! `desktop-file-validate`; `packetflix:` links opened with the real
//! `xdg-open` under a virtual display (`Xvfb`) of the test's own, captured
//! through the real service from a network namespace the test makes: by the
//! real Wireshark GUI (the capture file it writes is checked, and a
//! screenshot of its window kept in `target/test-artifacts/`), by `tshark`
//! in Wireshark's place for every link form, and from a click on a page in
//! Debian's Chromium under a managed policy. `uninstall` must leave the
//! scratch folders exactly as they were.
//!
//! Every process a test starts runs in a process group of its own and is
//! killed on every path (guards); processes a browser started are found by
//! the test's unique folder in their command line. Every wait is bounded.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use packetflix_testkit as common;

use common::pcapng::{target_yaml, yaml_value};
use common::{encode_uri_component, Netns, NsProcess, Pcapng, ScratchDir, Service};

const CLIENT: &str = env!("CARGO_BIN_EXE_packetflix-capture");
/// Bound on one helper program (xdg-mime, tshark -D, desktop-file-validate).
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// Bound on a capture started from a link, Wireshark's start included.
const CAPTURE_LIMIT: Duration = Duration::from_secs(90);
/// Packets each link's capture must bring: a few seconds of the pings.
const PACKETS: usize = 6;
/// The handler the scratch home names before install, to be restored.
const OLDER_HANDLER: &str = "older-handler.desktop";

// ---------------------------------------------------------------- the scratch desktop

/// A user's home in a scratch folder, with a folder of programs that come
/// first in PATH (for tshark in Wireshark's place).
struct Desk {
    dir: ScratchDir,
}

impl Desk {
    fn new() -> Desk {
        let dir = ScratchDir::new("desk");
        for sub in ["home", "bin", "tmp"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        Desk { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    fn config(&self) -> PathBuf {
        self.home().join("config")
    }
    fn data(&self) -> PathBuf {
        self.home().join("data")
    }
    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The environment of a desktop session of this user, nothing else of
    /// the test's (no XDG_CURRENT_DESKTOP: xdg-utils' generic mode).
    fn env(&self, display: Option<&str>) -> Vec<(String, String)> {
        let s = |p: PathBuf| p.to_str().unwrap().to_string();
        let mut env = vec![
            ("HOME".into(), s(self.home())),
            ("XDG_CONFIG_HOME".into(), s(self.config())),
            ("XDG_DATA_HOME".into(), s(self.data())),
            ("XDG_CACHE_HOME".into(), s(self.dir.join("cache"))),
            ("XDG_RUNTIME_DIR".into(), s(self.tmp())),
            ("TMPDIR".into(), s(self.tmp())),
            (
                "PATH".into(),
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.dir.join("bin").display()
                ),
            ),
        ];
        if let Some(d) = display {
            env.push(("DISPLAY".into(), d.into()));
        }
        env
    }

    fn command(&self, program: &str, args: &[&str], display: Option<&str>) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .env_clear()
            .envs(self.env(display))
            .stdin(Stdio::null());
        c
    }

    /// Runs a program to its end within `STEP_LIMIT`.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut c = self.command(program, args, None);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        finish(Group::spawn(c), STEP_LIMIT)
    }

    fn client(&self, args: &[&str]) -> Output {
        self.run(CLIENT, args)
    }

    fn default_handler(&self) -> String {
        let out = self.run(
            "xdg-mime",
            &["query", "default", "x-scheme-handler/packetflix"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// Puts a program named `name` first in PATH.
    fn shim(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Wireshark's saved preferences for the plugin (extcap.packetflix.*).
    fn preferences(&self, lines: &[(&str, &str)]) {
        let dir = self.config().join("wireshark");
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = lines
            .iter()
            .map(|(k, v)| format!("extcap.packetflix.{k}: {v}\n"))
            .collect();
        std::fs::write(dir.join("preferences"), text).unwrap();
    }

    fn install(&self) {
        let out = self.client(&["install"]);
        assert!(
            out.status.success(),
            "install: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        // Whatever a browser or xdg-open started outside our groups still
        // names this folder (its profile, the capture file, the plugin).
        kill_mentioning(self.dir.path());
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Every file, folder and link under `root`, with contents or targets.
fn snapshot(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            out.push((
                rel,
                format!("-> {}", std::fs::read_link(&p).unwrap().display()),
            ));
        } else if meta.is_dir() {
            out.push((rel, "dir".into()));
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        } else {
            out.push((rel, text(&std::fs::read(&p).unwrap())));
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- processes

/// A child in a process group of its own; the whole group is killed on
/// drop.
struct Group(Option<Child>);

impl Group {
    fn spawn(mut c: Command) -> Group {
        c.process_group(0);
        Group(Some(c.spawn().expect("spawn")))
    }

    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Waits (bounded) for the child, reading its output meanwhile.
fn finish(mut g: Group, limit: Duration) -> Output {
    let child = g.0.as_mut().unwrap();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    })
    .collect();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "process did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    g.0.take();
    let mut outs = readers.into_iter().map(|r| r.join().unwrap());
    Output {
        status,
        stdout: outs.next().unwrap(),
        stderr: outs.next().unwrap(),
    }
}

/// Kills the processes whose command line names `dir` (only the test's
/// own: the folder is unique to it).
fn kill_mentioning(dir: &Path) {
    let needle = dir.to_str().unwrap().as_bytes();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A virtual X display of the test's own: Xvfb picks a free display number
/// and tells it on a pipe (`-displayfd`), so parallel tests never collide.
struct Display {
    name: String,
    _server: Group,
}

impl Display {
    fn start() -> Display {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let mut c = Command::new("Xvfb");
        c.args([
            "-displayfd",
            &write_end.as_raw_fd().to_string(),
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let server = Group::spawn(c);
        drop(write_end);
        let mut file = std::fs::File::from(read_end);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut number = String::new();
            let mut byte = [0u8; 1];
            while file.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
                number.push(byte[0] as char);
            }
            let _ = tx.send(number);
        });
        let number = rx.recv_timeout(STEP_LIMIT).expect("Xvfb names its display");
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "Xvfb (pid {}) did not start: {number:?}",
            server.pid()
        );
        Display {
            name: format!(":{number}"),
            _server: server,
        }
    }
}

// ---------------------------------------------------------------- captures

/// A namespace with `lo` and a second interface `d0` (one end of a veth
/// pair inside it), pinging its own loopback ten times a second.
fn pinging_namespace() -> (Netns, NsProcess) {
    let ns = Netns::new();
    for cmd in [
        &[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ][..],
        &["ip", "link", "set", "d0", "up"],
        &["ip", "link", "set", "d1", "up"],
    ] {
        let out = ns.exec(cmd);
        assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    }
    let ping = ns.spawn(&["ping", "-n", "-q", "-i", "0.1", "127.0.0.1"]);
    (ns, ping)
}

/// What a capture file holds, as far as it is complete.
fn read_capture(path: &Path) -> Option<Pcapng> {
    Pcapng::parse(&std::fs::read(path).ok()?).ok()
}

/// Checks a capture taken through the service: at least `PACKETS` ICMP
/// packets (the namespace's pings; nothing else in it sends ICMP), and the
/// service's capture target document, which only the service writes (with
/// the container's name when the link described one).
fn assert_captured_pings(p: &Pcapng, container: Option<&str>, what: &str) {
    let icmp = p.icmp();
    assert!(icmp.len() >= PACKETS, "{what}: {} ICMP packets", icmp.len());
    assert!(
        icmp.iter()
            .all(|k| k.src.is_loopback() && k.dst.is_loopback()),
        "{what}: {icmp:?}"
    );
    let doc = target_yaml(p).unwrap_or_else(|| panic!("{what}: no target document"));
    if let Some(name) = container {
        assert_eq!(
            yaml_value(&doc, "container-name").as_deref(),
            Some(format!("\"{name}\"").as_str()),
            "{what}: {doc}"
        );
    }
}

/// tshark in Wireshark's place: the same arguments less `-k` (tshark
/// starts at once anyway), writing `$PFX_OUT` and stopping by itself after
/// a few packets more than the pings the checks want (a second interface
/// brings some IPv6 neighbour discovery of its own).
fn tshark_as_wireshark(desk: &Desk) {
    desk.shim(
        "wireshark",
        &format!(
            "[ \"$1\" = -k ] && shift\n\
             echo \"$@\" > \"$PFX_OUT.args\"\n\
             exec tshark -w \"$PFX_OUT\" -c {} -a duration:60 \"$@\"\n",
            3 * PACKETS
        ),
    );
}

/// `xdg-open LINK` on `display`, to its end (tshark in Wireshark's place
/// ends by itself); the capture file it wrote.
fn xdg_open_with_tshark(desk: &Desk, display: &Display, link: &str, out: &Path) -> Pcapng {
    let mut c = desk.command("xdg-open", &[link], Some(&display.name));
    c.env("PFX_OUT", out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = finish(Group::spawn(c), CAPTURE_LIMIT);
    let args = std::fs::read_to_string(format!("{}.args", out.display())).unwrap_or_default();
    assert!(
        run.status.success(),
        "xdg-open {link}: {}{} (wireshark got: {args})",
        text(&run.stdout),
        text(&run.stderr)
    );
    read_capture(out).unwrap_or_else(|| panic!("{link}: no capture file; wireshark got: {args}"))
}

// ================================================================ tests

#[test]
fn install_makes_the_default_handler_and_uninstall_leaves_the_home_as_it_was() {
    for (what, prepare) in [
        ("an empty home", None),
        (
            "a home with a handler and Wireshark settings",
            Some(format!(
                "[Default Applications]\ntext/html=browser.desktop\n\
                 x-scheme-handler/packetflix={OLDER_HANDLER}\nimage/png=viewer.desktop\n"
            )),
        ),
    ] {
        let desk = Desk::new();
        if let Some(mimeapps) = &prepare {
            std::fs::create_dir_all(desk.config().join("wireshark")).unwrap();
            std::fs::write(desk.config().join("mimeapps.list"), mimeapps).unwrap();
            std::fs::write(desk.config().join("wireshark/recent"), "# mine\n").unwrap();
            let apps = desk.data().join("applications");
            std::fs::create_dir_all(&apps).unwrap();
            std::fs::write(
                apps.join(OLDER_HANDLER),
                "[Desktop Entry]\nType=Application\nName=Older\nExec=true %u\n\
                 MimeType=x-scheme-handler/packetflix;\n",
            )
            .unwrap();
        }
        let before = snapshot(&desk.home());
        if prepare.is_some() {
            assert_eq!(desk.default_handler(), OLDER_HANDLER);
        }

        let out = desk.client(&["install"]);
        let said = text(&out.stdout);
        assert!(out.status.success(), "{what}: {said}{}", text(&out.stderr));
        assert!(said.contains("xdg-mime default"), "{said}");
        assert!(said.contains("packetflix-capture uninstall"), "{said}");
        let plugin = desk.config().join("wireshark/extcap/packetflix-capture");
        assert_eq!(std::fs::read_link(&plugin).unwrap(), Path::new(CLIENT));
        let listed = desk.run("tshark", &["-D"]);
        assert!(
            text(&listed.stdout)
                .contains("packetflix (Packetflix: capture inside a container, pod or netns)"),
            "{what}: tshark -D: {}",
            text(&listed.stdout)
        );
        assert_eq!(
            desk.default_handler(),
            "packetflix-capture.desktop",
            "{what}"
        );
        let entry = desk.data().join("applications/packetflix-capture.desktop");
        let valid = desk.run("desktop-file-validate", &[entry.to_str().unwrap()]);
        assert!(
            valid.status.success() && valid.stdout.is_empty(),
            "{}{}",
            text(&valid.stdout),
            text(&valid.stderr)
        );
        let installed = snapshot(&desk.home());

        // Again: nothing changes.
        desk.install();
        assert_eq!(snapshot(&desk.home()), installed, "{what}: install twice");

        let out = desk.client(&["uninstall"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(snapshot(&desk.home()), before, "{what}: uninstall");
        if prepare.is_some() {
            assert_eq!(desk.default_handler(), OLDER_HANDLER);
        }
        // Nothing left to undo.
        let out = desk.client(&["uninstall"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("nothing to uninstall"));
    }
}

#[test]
fn xdg_open_captures_every_link_form_through_the_service_with_tshark_in_wiresharks_place() {
    let service = Service::start(&[]);
    let (ns, _ping) = pinging_namespace();
    let desk = Desk::new();
    desk.install();
    tshark_as_wireshark(&desk);
    // Saved choices of an earlier capture, which the link must override.
    desk.preferences(&[("target", "1"), ("nif", "eth9"), ("chaste", "true")]);
    let display = Display::start();
    let port = service.port();
    let inode = ns.inode();
    let json = format!(
        r#"{{"netns":{inode},"name":"pfx-desk","type":"bindmount","prefix":"","network-interfaces":["lo","d0"]}}"#
    );
    let links = [
        format!("packetflix:ws://127.0.0.1:{port}/capture?netns={inode}&nif=lo"),
        format!(
            "packetflix://127.0.0.1:{port}/capture?container={}&nif=lo/d0",
            encode_uri_component(&json)
        ),
        format!(
            "packetflix:ws://127.0.0.1:{port}/capture?container={}&nif=d0/lo&chaste",
            encode_uri_component(&json)
        ),
    ];
    for (i, link) in links.iter().enumerate() {
        let out = desk.dir.join(&format!("link{i}.pcapng"));
        let p = xdg_open_with_tshark(&desk, &display, link, &out);
        let container = link.contains("container=").then_some("pfx-desk");
        assert_captured_pings(&p, container, link);
        let names: Vec<_> = p.sections_interfaces[0]
            .iter()
            .filter_map(|i| i.name.clone())
            .collect();
        let want: &[&str] = if link.contains("nif=lo&") || link.ends_with("nif=lo") {
            &["lo"]
        } else {
            &["lo", "d0"]
        };
        for w in want {
            assert!(names.iter().any(|n| n == w), "{link}: interfaces {names:?}");
        }
    }
}

#[test]
fn a_wss_link_takes_token_file_and_ca_from_wiresharks_saved_preferences() {
    let desk = Desk::new();
    let pki = common::pki::make(desk.dir.path()).expect("certificates");
    let tokens = desk.dir.join("tokens");
    std::fs::write(&tokens, "# the service's and the user's\ndesk-token-1\n").unwrap();
    let service = Service::start(&[
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
        "--token-file",
        tokens.to_str().unwrap(),
    ]);
    let (ns, _ping) = pinging_namespace();
    desk.install();
    tshark_as_wireshark(&desk);
    let display = Display::start();
    let link = format!(
        "packetflix:wss://localhost:{}/capture?netns={}&nif=lo",
        service.port(),
        ns.inode()
    );
    // Without them the service refuses: the saved preferences do the work.
    let refused = desk.dir.join("refused.pcapng");
    let mut c = desk.command("xdg-open", &[&link], Some(&display.name));
    c.env("PFX_OUT", &refused)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let run = finish(Group::spawn(c), CAPTURE_LIMIT);
    assert!(
        read_capture(&refused).is_none_or(|p| p.packets.is_empty()),
        "captured without token and CA: {}",
        text(&run.stderr)
    );
    desk.preferences(&[
        ("ca", pki.ca.to_str().unwrap()),
        ("tokenfile", tokens.to_str().unwrap()),
    ]);
    let p = xdg_open_with_tshark(&desk, &display, &link, &desk.dir.join("wss.pcapng"));
    assert_captured_pings(&p, None, &link);
}

#[test]
fn xdg_open_starts_the_wireshark_gui_which_captures_through_the_service() {
    let service = Service::start(&[]);
    let (ns, _ping) = pinging_namespace();
    let desk = Desk::new();
    desk.install();
    let display = Display::start();
    let link = format!(
        "packetflix:ws://127.0.0.1:{}/capture?netns={}&nif=lo",
        service.port(),
        ns.inode()
    );
    let started = Instant::now();
    let mut c = desk.command("xdg-open", &[&link], Some(&display.name));
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let wireshark = Group::spawn(c);
    // Wireshark writes a live capture into a temporary file in TMPDIR
    // ("wireshark_<interface>...pcapng") and removes it when it quits: read
    // it while it captures.
    let mut capture = None;
    while started.elapsed() < CAPTURE_LIMIT {
        let file = std::fs::read_dir(desk.tmp())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                name.starts_with("wireshark_") && name.ends_with(".pcapng")
            });
        if let Some(p) = file.as_deref().and_then(read_capture) {
            if p.icmp().len() >= 2 * PACKETS {
                capture = Some(p);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "Wireshark's capture file had {} ICMP packets after {:?}",
        2 * PACKETS,
        started.elapsed()
    );
    // The window, as a person sees it, kept as a test artifact.
    let artifacts = common::bins::repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("wireshark-packetflix-link.png");
    let out = desk.run(
        "sh",
        &[
            "-c",
            "DISPLAY=\"$1\" scrot -o \"$2\"",
            "sh",
            &display.name,
            shot.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "scrot: {}", text(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    println!("screenshot: {}", shot.display());
    let title = desk.run(
        "sh",
        &[
            "-c",
            "DISPLAY=\"$1\" xdotool search --name 'Capturing from'",
            "sh",
            &display.name,
        ],
    );
    drop(wireshark);
    let capture = capture.expect("Wireshark captured the pings");
    assert_captured_pings(&capture, None, "Wireshark");
    assert!(
        title.status.success() && !title.stdout.is_empty(),
        "a window titled 'Capturing from ...'"
    );
}

#[test]
fn chromium_clicking_a_packetflix_link_on_a_loopback_page_starts_the_handler() {
    let service = Service::start(&[]);
    let (ns, _ping) = pinging_namespace();
    let desk = Desk::new();
    desk.install();
    tshark_as_wireshark(&desk);
    let display = Display::start();
    let link = format!(
        "packetflix:ws://127.0.0.1:{}/capture?netns={}&nif=lo",
        service.port(),
        ns.inode()
    );
    // The page, served by a real HTTP server on loopback: one link over the
    // whole window, so a click anywhere follows it.
    let www = desk.dir.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(
        www.join("index.html"),
        format!(
            "<!doctype html><title>packetflix-link-page</title>\
             <body style=\"margin:0\"><a href=\"{link}\" style=\"display:block;width:100vw;height:100vh\">capture</a>"
        ),
    )
    .unwrap();
    let http_port = common::service::free_port();
    let mut c = desk.command(
        "python3",
        &[
            "-m",
            "http.server",
            &http_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
            www.to_str().unwrap(),
        ],
        None,
    );
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let _http = Group::spawn(c);
    let origin = format!("http://127.0.0.1:{http_port}");
    // The managed policy that lets this origin launch packetflix: links
    // without asking, in a mount namespace of the browser's own: the
    // machine's /etc/chromium is not touched.
    let policy = desk.dir.join("packetflix-test-policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"AutoLaunchProtocolsFromOrigins":[{{"protocol":"packetflix","allowed_origins":["{origin}"]}}]}}"#
        ),
    )
    .unwrap();
    let out = desk.dir.join("chromium.pcapng");
    let profile = desk.dir.join("profile");
    let mut c = desk.command(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs none /etc/chromium && mkdir -p /etc/chromium/policies/managed \
             && cp \"$1\" /etc/chromium/policies/managed/ && shift && exec \"$@\"",
            "sh",
            policy.to_str().unwrap(),
            "chromium",
            "--no-sandbox",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            &format!("--user-data-dir={}", profile.display()),
            "--window-position=0,0",
            "--window-size=1280,800",
            &origin,
        ],
        Some(&display.name),
    );
    c.env("PFX_OUT", &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _browser = Group::spawn(c);
    let xdotool = |args: &str| {
        desk.run(
            "sh",
            &[
                "-c",
                &format!("DISPLAY=\"$1\" xdotool {args}"),
                "sh",
                &display.name,
            ],
        )
    };
    assert!(
        common::wait_for(CAPTURE_LIMIT, || {
            !xdotool("search --onlyvisible --name packetflix-link-page")
                .stdout
                .is_empty()
        }),
        "Chromium shows the page"
    );
    let click = xdotool("mousemove 640 400 click 1");
    assert!(click.status.success(), "{}", text(&click.stderr));
    assert!(
        common::wait_for(CAPTURE_LIMIT, || {
            read_capture(&out).is_some_and(|p| p.icmp().len() >= PACKETS)
        }),
        "the click started the handler, which captured; it got: {}",
        std::fs::read_to_string(format!("{}.args", out.display())).unwrap_or_default()
    );
    assert_captured_pings(&read_capture(&out).unwrap(), None, "Chromium");
}
