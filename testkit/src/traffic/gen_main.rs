//! The root of the standalone `packetflix-trafficgen` program that
//! `build.rs` compiles: the same modules the library carries as
//! `traffic::gen`, `traffic::frame` and `traffic::sys`, std only.

mod frame;
mod gen;
mod sys;

fn main() -> std::process::ExitCode {
    gen::main()
}
