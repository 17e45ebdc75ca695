//! Docker for the deployment tests: the daemon and the local base images
//! (`scripts/docker-images.sh`, once per machine), the project's image (built
//! from `deploy/Dockerfile` once per set of inputs, under a file lock, since
//! nextest runs every test in a process of its own), a systemd host to run
//! the unit in, and containers owned by guards that remove them on drop,
//! also when a test fails.
//!
//! Containers get names unique to the process and call; test containers run
//! with `--network none`, so their traffic stays on their own loopback.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The Debian base image `docker-images.sh` makes (the Dockerfile's BASE).
pub const BASE_TAG: &str = "packetflix-base:bookworm";
/// The small image to capture from.
pub const BUSYBOX_TAG: &str = "packetflix-busybox:test";
/// The project's image as the tests build it; tagged per checkout (see
/// [`checkout_tag`]).
const IMAGE_REPO: &str = "packetflix";
/// A systemd host for the unit (tests/fixtures/systemd.Dockerfile).
const SYSTEMD_REPO: &str = "packetflix-systemd";
/// Label on the test images holding a hash of what each was built from.
const INPUTS_LABEL: &str = "packetflix.test-inputs";
/// Bound on one docker command (an image build with apt included).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(600);
/// Serializes image builds among the test processes of this machine.
const BUILD_LOCK: &str = "/run/packetflix-test-image.lock";

pub fn repo() -> PathBuf {
    super::bins::repo()
}

/// Runs `docker ARGS` to completion, bounded by `DOCKER_TIMEOUT`.
pub fn docker(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(DOCKER_TIMEOUT.as_secs().to_string())
        .arg("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// `docker ARGS`, which must succeed; its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The daemon runs and the base images exist (made once per machine).
pub fn ensure_base_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(repo().join("scripts/docker-images.sh"))
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/docker-images.sh");
        assert!(
            out.status.success(),
            "scripts/docker-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The project's image, built from the binaries of this test run: the
/// Dockerfile takes them from BIN_DIR (here cargo's debug output, so the
/// suite needs no release build). Built once per set of inputs; other test
/// processes wait on the lock and find it built.
pub fn project_image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tag = checkout_tag(IMAGE_REPO);
        build_cached(&tag, "deploy/Dockerfile", &[]);
        tag
    })
}

/// A Debian host with systemd and the test run's binaries, to run
/// `deploy/packetflix.service` as shipped.
pub fn systemd_image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tag = checkout_tag(SYSTEMD_REPO);
        build_cached(
            &tag,
            "tests/fixtures/systemd.Dockerfile",
            &["deploy/packetflix.service"],
        );
        tag
    })
}

/// `REPO:test-<hash of the checkout's path>`: image tags are machine-wide,
/// and two checkouts testing at once must not run each other's binaries.
fn checkout_tag(repo_name: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    repo().hash(&mut h);
    format!("{repo_name}:test-{:08x}", h.finish() as u32)
}

/// Builds `dockerfile` (relative to the checkout, the build context) as
/// `tag` on [`BASE_TAG`] unless `tag` was built from the same inputs: the
/// Dockerfile, `.dockerignore`, the binaries, `more` files and the base.
fn build_cached(tag: &str, dockerfile: &str, more: &[&str]) {
    ensure_base_images();
    let repo = repo();
    let bin = super::bins::service();
    let client = super::bins::capture_client();
    let dir = bin.parent().expect("binary directory");
    let bin_dir = dir
        .strip_prefix(&repo)
        .expect("cargo's target directory must be inside the checkout (the build context)")
        .to_str()
        .expect("UTF-8 path")
        .to_string();
    let mut paths = vec![repo.join(dockerfile), repo.join(".dockerignore")];
    paths.extend(more.iter().map(|m| repo.join(m)));
    paths.extend([bin.to_path_buf(), client.to_path_buf()]);
    // A new base (made again on this machine) also calls for a rebuild.
    let base = docker_ok(&["image", "inspect", "-f", "{{.Id}}", BASE_TAG]);
    let inputs = format!(
        "{}-{}",
        inputs_hash(&paths),
        base.trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or(&base)
    );
    let lock = std::fs::File::create(BUILD_LOCK).expect("create the build lock");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("take the build lock");
    let label = docker(&[
        "image",
        "inspect",
        "-f",
        &format!("{{{{index .Config.Labels \"{INPUTS_LABEL}\"}}}}"),
        tag,
    ]);
    if String::from_utf8_lossy(&label.stdout).trim() == inputs {
        return;
    }
    let out = Command::new("timeout")
        .arg(DOCKER_TIMEOUT.as_secs().to_string())
        .args(["docker", "build", "--network", "host", "-q"])
        .args(["-f", dockerfile])
        .args(["--build-arg", &format!("BASE={BASE_TAG}")])
        .args(["--build-arg", &format!("BIN_DIR={bin_dir}")])
        .args(["--label", &format!("{INPUTS_LABEL}={inputs}")])
        .args(["-t", tag, "."])
        .current_dir(&repo)
        // The daemon's classic builder: needs no buildx plugin.
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "docker build -f {dockerfile} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Earlier builds of the test images, untagged now: not kept.
    let _ = docker(&[
        "image",
        "prune",
        "-f",
        "--filter",
        &format!("label={INPUTS_LABEL}"),
    ]);
}

/// Size and modification time of the binaries, content of the rest.
fn inputs_hash(paths: &[PathBuf]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if meta.len() < 1 << 20 {
            std::fs::read(p).expect("read input").hash(&mut h);
        } else {
            meta.len().hash(&mut h);
            meta.modified().expect("mtime").hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// A container name unique to this process and call.
pub fn unique_name(what: &str) -> String {
    format!("pfx-{}-{}-{what}", std::process::id(), super::next_id())
}

/// A running container, removed (with `-f`) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS...`; the guard exists before the run,
    /// so a container that was created but failed to start is removed too.
    pub fn run(what: &str, args: &[&str]) -> Container {
        let c = Container {
            name: unique_name(what),
        };
        let mut full = vec!["run", "-d", "--name", &c.name];
        full.extend_from_slice(args);
        docker_ok(&full);
        c
    }

    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    /// The container's first process as the host's PID namespace sees it.
    pub fn pid(&self) -> i32 {
        self.inspect("{{.State.Pid}}")
            .parse()
            .expect("container pid")
    }

    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `docker exec ARGS... NAME CMD...`
    pub fn exec(&self, opts: &[&str], cmd: &[&str]) -> Output {
        let mut full = vec!["exec"];
        full.extend_from_slice(opts);
        full.push(&self.name);
        full.extend_from_slice(cmd);
        docker(&full)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}
