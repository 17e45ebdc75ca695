//! Compiles the kit's programs, std only, into `OUT_DIR`: the synthetic
//! capture program (`src/pcapgen/main.rs` → `packetflix-pcapgen`), and the
//! engine bench's traffic generator and reference ring reader
//! (`src/traffic/{gen,ring}_main.rs` → `packetflix-trafficgen`,
//! `packetflix-ringread`), so every test and bench linking the kit finds
//! them at paths fixed at compile time (`pcapgen::PROGRAM`,
//! `traffic::GENERATOR`, `traffic::RING_READER`), whichever cargo command
//! built them. A `[[bin]]` would not do: cargo builds only the
//! binaries of the package whose tests or benches run (the service's), and
//! making the generator one of those would ship it.
//!
//! Always optimised: a generator must never be what a bench measures, and
//! the ring reader is the reference the service is measured against.
//! Lints are left to the library build, which compiles the same files.

use std::path::PathBuf;
use std::process::Command;

/// The programs and their source files, relative to this crate; the first
/// file of each is its root.
const PROGRAMS: [(&str, &str, &[&str]); 3] = [
    (
        "packetflix-pcapgen",
        "packetflix_pcapgen",
        &[
            "src/pcapgen/main.rs",
            "src/pcapgen/format.rs",
            "src/pcapgen/program.rs",
        ],
    ),
    (
        "packetflix-trafficgen",
        "packetflix_trafficgen",
        &[
            "src/traffic/gen_main.rs",
            "src/traffic/gen.rs",
            "src/traffic/frame.rs",
            "src/traffic/sys.rs",
        ],
    ),
    (
        "packetflix-ringread",
        "packetflix_ringread",
        &[
            "src/traffic/ring_main.rs",
            "src/traffic/ring.rs",
            "src/traffic/frame.rs",
            "src/traffic/sys.rs",
        ],
    ),
];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    for (name, crate_name, sources) in PROGRAMS {
        for s in sources {
            println!("cargo:rerun-if-changed={s}");
        }
        let mut cmd = Command::new(&rustc);
        cmd.args(["--edition", "2021", "--crate-type", "bin"])
            .args(["--crate-name", crate_name])
            .args(["-C", "opt-level=3", "--cap-lints", "allow"])
            .args(["--target", &target])
            .arg("-o")
            .arg(out_dir.join(name))
            .arg(sources[0]);
        if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
            let mut arg = std::ffi::OsString::from("linker=");
            arg.push(linker);
            cmd.arg("-C").arg(arg);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("run rustc for {name}: {e}"));
        assert!(status.success(), "compiling {name} failed");
    }
}
