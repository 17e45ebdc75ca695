//! The root of the standalone `packetflix-pcapgen` program that `build.rs`
//! compiles: the same modules the library carries as `pcapgen::format` and
//! `pcapgen::program`, std only, so no crate has to be linked in.

mod format;
mod program;

fn main() -> std::process::ExitCode {
    program::main()
}
