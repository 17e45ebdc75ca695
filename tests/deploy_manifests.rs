//! The deployment files cannot rot: Debian's `docker-compose config` accepts
//! `deploy/compose.yaml`, `systemd-analyze verify` accepts
//! `deploy/packetflix.service`, the manifests parse as YAML with the fields
//! README "Deploying" names, and every flag they pass is one the service
//! binary accepts. The unit's way of running (a non-root user holding the
//! capabilities as ambient ones, under no_new_privs) is run for real and
//! captures with the real dumpcap.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;

use common::{Launch, Netns, Scratch, Service};

/// The four capabilities, as Docker and Kubernetes spell them.
const CAPS: [&str; 4] = ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "NET_RAW"];

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn yaml(file: &str) -> Value {
    let text = std::fs::read_to_string(deploy(file)).expect("read manifest");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// Capability names without the optional `CAP_` prefix.
fn caps(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = strings(v)
        .into_iter()
        .map(|s| s.trim_start_matches("CAP_").to_string())
        .collect();
    c.sort();
    c
}

fn want_caps() -> Vec<String> {
    let mut c: Vec<String> = CAPS.iter().map(|s| s.to_string()).collect();
    c.sort();
    c
}

fn compose_service() -> Value {
    yaml("compose.yaml")["services"]["edgeshark"].clone()
}

fn daemonset_container(name: &str) -> Value {
    let ds = yaml("kubernetes/daemonset.yaml");
    ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
        .clone()
}

/// The flags `ExecStart=` passes, after the binary.
fn unit_flags() -> Vec<String> {
    let unit = std::fs::read_to_string(deploy("packetflix.service")).expect("read unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let mut words = line.split_whitespace().map(str::to_string);
    // A bare name: systemd looks in /usr/local/bin (installed by hand)
    // before /usr/bin (the Debian package), so one unit serves both.
    assert_eq!(words.next().as_deref(), Some("packetflix"));
    words.collect()
}

fn unit_values(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(deploy("packetflix.service")).expect("read unit");
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn compose_file_is_accepted_by_docker_compose() {
    // From deploy/, as README says: the seccomp path is relative to it, and
    // docker-compose reads the profile, so a missing or broken one fails.
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(deploy(""))
        .stdin(Stdio::null())
        .output()
        .expect("run docker-compose (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved: Value = serde_yaml::from_slice(&out.stdout).expect("config output is YAML");
    let svc = &resolved["services"]["edgeshark"];
    assert_eq!(svc["pid"].as_str(), Some("host"));
    assert_eq!(svc["ports"][0]["target"].as_u64(), Some(5001));
    assert_eq!(svc["ports"][0]["published"].as_u64(), Some(5001));
    assert!(resolved["services"]["gostwire"].is_mapping());

    // The same check fails where the profile cannot be read: it is real.
    let elsewhere = Command::new("docker-compose")
        .arg("-f")
        .arg(deploy("compose.yaml"))
        .arg("config")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run docker-compose");
    assert!(!elsewhere.status.success());
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("seccomp"));
}

#[test]
fn compose_service_is_a_drop_in_for_edgeshark() {
    let file = yaml("compose.yaml");
    let svc = compose_service();
    let gw = &file["services"]["gostwire"];
    assert_eq!(svc["pid"].as_str(), Some("host"));
    assert_eq!(strings(&svc["ports"]), ["5001:5001"]);
    assert_eq!(strings(&svc["cap_drop"]), ["ALL"]);
    assert_eq!(caps(&svc["cap_add"]), want_caps());
    let opts = strings(&svc["security_opt"]);
    assert!(
        opts.contains(&"seccomp:seccomp.json".to_string()),
        "{opts:?}"
    );
    assert!(
        opts.contains(&"apparmor:unconfined".to_string()),
        "{opts:?}"
    );
    assert_eq!(svc["user"].as_str(), Some("65534"));
    // The discovery service is reached by the host name Edgeshark gives it.
    let entry = strings(&svc["entrypoint"]);
    let host = gw["hostname"].as_str().expect("gostwire hostname");
    assert!(
        entry.contains(&format!("--discovery-service={host}")),
        "{entry:?}"
    );
    assert!(entry.contains(&"--port=5001".to_string()));
    assert_eq!(gw["image"].as_str(), Some("ghcr.io/siemens/ghostwire"));
    assert_eq!(
        file["networks"]["99-ghost-in-da-edge"]["name"].as_str(),
        Some("ghost-in-da-edge")
    );
}

#[test]
fn daemonset_and_service_have_the_named_fields() {
    let ds = yaml("kubernetes/daemonset.yaml");
    assert_eq!(ds["kind"].as_str(), Some("DaemonSet"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    let c = daemonset_container("packetflix");
    let sc = &c["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(caps(&sc["capabilities"]["add"]), want_caps());
    assert_eq!(sc["runAsUser"].as_u64(), Some(65534));
    // no_new_privs would void the file capabilities.
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(true));
    assert_eq!(sc["seccompProfile"]["type"].as_str(), Some("Localhost"));
    assert_eq!(
        sc["seccompProfile"]["localhostProfile"].as_str(),
        Some("packetflix.json")
    );
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(5001));
    let port_name = c["ports"][0]["name"].as_str().expect("port name");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some("/version"));
        assert_eq!(c[probe]["httpGet"]["port"].as_str(), Some(port_name));
    }
    for kind in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(!c["resources"][kind][what].is_null(), "{kind}.{what}");
        }
    }

    let svc = yaml("kubernetes/service.yaml");
    assert_eq!(svc["kind"].as_str(), Some("Service"));
    assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(5001));
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let ns = yaml("kubernetes/namespace.yaml");
    assert_eq!(ns["metadata"]["name"], ds["metadata"]["namespace"]);
}

/// Runs the real binary with `flags` then `--help`: the parser reads every
/// flag before `--help` ends it, so exit 0 means all of them were accepted.
fn binary_accepts(flags: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_packetflix"))
        .args(flags)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("run packetflix");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn every_flag_the_deployments_pass_is_accepted_by_the_binary() {
    let compose = strings(&compose_service()["entrypoint"]);
    assert_eq!(compose[0], "/packetflix");
    let ds = strings(&daemonset_container("packetflix")["args"]);
    let unit = unit_flags();
    for (what, flags) in [
        ("compose", &compose[1..]),
        ("daemonset", &ds[..]),
        ("unit", &unit[..]),
    ] {
        assert!(!flags.is_empty(), "{what} passes no flags");
        let (ok, err) = binary_accepts(flags);
        assert!(ok, "{what}: {flags:?}: {err}");
        match packetflix::config::parse_args(flags.iter().cloned()) {
            Ok(packetflix::config::Command::Run(cfg)) => assert_eq!(cfg.port, 5001, "{what}"),
            other => panic!("{what}: {flags:?} parse to {other:?}"),
        }
    }
    // The check can fail: a flag the binary does not know is refused.
    let (ok, err) = binary_accepts(&["--no-such-flag".to_string()]);
    assert!(!ok && err.contains("--no-such-flag"), "{err}");
}

#[test]
fn unit_runs_unprivileged_with_ambient_capabilities_restarts_and_logs_to_the_journal() {
    let want: Vec<String> = CAPS.iter().map(|c| format!("CAP_{c}")).collect();
    let mut ambient = unit_values("AmbientCapabilities");
    ambient.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(ambient, want_sorted);
    let mut bounding = unit_values("CapabilityBoundingSet");
    bounding.sort();
    assert_eq!(bounding, want_sorted);
    assert_eq!(unit_values("DynamicUser"), ["yes"]);
    assert!(unit_values("User").is_empty(), "no root user named");
    assert_eq!(unit_values("Restart"), ["on-failure"]);
    assert_eq!(unit_values("StandardError"), ["journal"]);
    // Ambient capabilities survive no_new_privs; the unit sets it.
    assert_eq!(unit_values("NoNewPrivileges"), ["yes"]);
}

#[test]
fn systemd_accepts_the_unit() {
    // verify also checks that ExecStart's binary exists: point it at the
    // one cargo built, changing nothing else.
    let unit = std::fs::read_to_string(deploy("packetflix.service")).expect("read unit");
    let dir = common::ScratchDir::new("unit");
    let copy = dir.join("packetflix.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=packetflix ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_packetflix")),
        ),
    )
    .expect("write unit copy");
    let verify = |path: &std::path::Path| {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .expect("run systemd-analyze (package systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let about_it: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains(path.to_str().expect("UTF-8")) || l.contains("packetflix"))
            .map(str::to_string)
            .collect();
        (out.status.success(), about_it)
    };
    let (ok, complaints) = verify(&copy);
    assert!(ok && complaints.is_empty(), "{complaints:?}");

    // A misspelt option is reported the same way: the check is real.
    let bad = dir.join("packetflix-bad.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&copy)
            .expect("read copy")
            .replace("ProtectHome=", "ProtectHomes="),
    )
    .expect("write bad copy");
    let (_, complaints) = verify(&bad);
    assert!(
        complaints.iter().any(|l| l.contains("ProtectHomes")),
        "{complaints:?}"
    );
}

/// The service as the unit starts it: uid 65534, the four capabilities
/// ambient, inheritable and bounding, no_new_privs; stopped on drop.
fn as_the_unit(extra: &[&str]) -> Service {
    let caps = "-all,+sys_admin,+sys_ptrace,+net_admin,+net_raw";
    let wrapper = [
        "setpriv".to_string(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
        "--no-new-privs".into(),
        "--".into(),
    ];
    Launch {
        wrapper: wrapper.into(),
        ..Launch::default()
    }
    .args(extra)
    .start()
}

#[test]
fn service_run_as_the_unit_runs_it_captures_with_dumpcap() {
    let svc = as_the_unit(&[]);
    assert!(svc.logged("as ambient capabilities"), "{}", svc.stderr());
    let ns = Netns::new();
    let mut c = common::ws::must_connect(svc.port(), &format!("netns={}&nif=lo", ns.inode()), &[]);
    c.wait_capturing(common::START_TIMEOUT);
    assert!(
        common::ping_self_until_seen(&mut c, &ns),
        "{}",
        svc.stderr()
    );
    let _ = c.close(Duration::from_secs(5));
    let rows = common::tshark_decode(&c.capture.bytes);
    assert!(
        rows.iter().any(|r| r.src == ns.addr.to_string()),
        "{rows:?}"
    );
}

#[test]
fn capture_program_gets_only_the_network_capabilities_as_ambient() {
    // A stand-in capture program that reports its own capability sets as
    // its error line; the service puts that line into the close reason.
    let probe = Scratch::script(
        "capprobe",
        "echo \"dumpcap: $(grep CapAmb /proc/self/status | tr -d '\\t')\" >&2\nexit 3\n",
    );
    let svc = as_the_unit(&["--capture-program", probe.path()]);
    let ns = Netns::new();
    let reason = common::expect_refusal(svc.port(), &format!("netns={}", ns.inode()), &[]);
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only, not the service's four.
    assert_eq!(reason, "CapAmb:0000000000003000", "{}", svc.stderr());
}
