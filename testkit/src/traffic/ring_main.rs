//! The root of the standalone `packetflix-ringread` program that `build.rs`
//! compiles: the same modules the library carries as `traffic::ring`,
//! `traffic::frame` and `traffic::sys`, std only.

mod frame;
mod ring;
mod sys;

fn main() -> std::process::ExitCode {
    ring::main()
}
