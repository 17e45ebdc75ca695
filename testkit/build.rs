//! Compiles the synthetic capture program (`src/pcapgen/main.rs`, std only)
//! into `OUT_DIR/packetflix-pcapgen`, so every test and bench linking the kit
//! finds it at a path fixed at compile time (`pcapgen::PROGRAM`), whichever
//! cargo command built them. A `[[bin]]` would not do: cargo builds only the
//! binaries of the package whose tests or benches run (the service's), and
//! making the generator one of those would ship it.
//!
//! Always optimised: the generator must never be what a bench measures.
//! Lints are left to the library build, which compiles the same files.

use std::path::PathBuf;
use std::process::Command;

/// The program's source files, relative to this crate.
const SOURCES: [&str; 3] = [
    "src/pcapgen/main.rs",
    "src/pcapgen/format.rs",
    "src/pcapgen/program.rs",
];

fn main() {
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("packetflix-pcapgen");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "--crate-type", "bin"])
        .args(["--crate-name", "packetflix_pcapgen"])
        .args(["-C", "opt-level=3", "--cap-lints", "allow"])
        .args(["--target", &target])
        .arg("-o")
        .arg(&out)
        .arg(SOURCES[0]);
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }
    let status = cmd.status().expect("run rustc for packetflix-pcapgen");
    assert!(status.success(), "compiling packetflix-pcapgen failed");
}
