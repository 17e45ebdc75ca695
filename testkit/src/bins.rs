//! Where the programs under test are: the checkout, and the binaries cargo
//! built for the test or bench that is running.
//!
//! `env!("CARGO_BIN_EXE_…")` exists only while cargo compiles an integration
//! test or bench of the package that owns the binary, not while it compiles
//! this library; so the binaries are found at run time, where cargo puts
//! them: test and bench executables in `<target>/<profile>/deps/`, the
//! package's binaries one directory up. Cargo builds those binaries before it
//! runs any integration test or bench of the package. `tests/testkit.rs`
//! checks that this finds what `env!` names.

use std::path::{Path, PathBuf};

/// The packetflix checkout (this crate lives in its `testkit/`), with
/// symbolic links resolved as in [`cargo_bin`]'s paths, so one can be made
/// relative to the other.
pub fn repo() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = kit.parent().unwrap_or(kit);
    repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf())
}

/// The binary `name` of the packetflix package, built for the running test
/// or bench (same target directory, same profile), symbolic links resolved
/// (the kernel's name of the running executable). Panics if it is not
/// there: the running executable is not one cargo built as a test or bench.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe.parent().expect("executable directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("profile directory");
    }
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not found beside {}: run tests and benches through cargo",
        bin.display(),
        exe.display()
    );
    bin
}

/// The service binary, `packetflix`.
pub fn service() -> PathBuf {
    cargo_bin("packetflix")
}

/// The client binary, `packetflix-capture`.
pub fn capture_client() -> PathBuf {
    cargo_bin("packetflix-capture")
}
