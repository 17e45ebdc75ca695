//! `packetflix-pcapgen`: a synthetic capture program for benchmarks and tests.
//!
//! It stands in for `dumpcap` behind `--capture-program`: it accepts (and
//! ignores) the dumpcap-style arguments the service passes (`-w - -n -q [-p]
//! [-i IF]... [-f FILTER]`) and writes a valid pcapng stream to stdout: one
//! Section Header Block, one Interface Description Block, then Enhanced Packet
//! Blocks. Because the service passes fixed arguments, the generator takes its
//! own settings from environment variables ([`Settings`] reads and writes
//! them; the service passes its environment on):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PFX_GEN_MODE` | `stream` | `stream` writes packets; `idle` writes the two header blocks and then waits, without timers or polling, until its reader goes away |
//! | `PFX_GEN_SIZE` | 64 | captured bytes per packet (34 ..= 65535) |
//! | `PFX_GEN_COUNT` | 0 | packets to write, then exit 0; 0 = until the reader goes away |
//! | `PFX_GEN_RATE` | 0 | packets per second, each written on its own; 0 = full speed, written in chunks |
//! | `PFX_GEN_CHUNK` | 65536 | bytes per `write` at full speed |
//! | `PFX_GEN_START_FIFO` | unset | after the header blocks, open this FIFO for reading before the first packet: the open returns when someone opens it for writing, so many captures can be set up first and then all start at once |
//! | `PFX_GEN_CORRUPT` | unset | `seq` (or `1`): skip one sequence number; `len`: write one block with a wrong trailing length. Halfway through the count (packet 1000 without a count). `overrun`: right after the header blocks, a 40-byte packet block whose captured length (1,000,000) runs past it; `overrun-swapped`: the same block in a big-endian section of its own. Lets tests prove the reader notices |
//! | `PFX_GEN_IDLE_MAX_SECS` | 600 | an idle generator exits after this long even if nobody closed its stdout, so a crashed run leaves nothing behind |
//! | `PFX_GEN_COMMENT` | unset | an `opt_comment` for the SHB (the service keeps it and adds its own) |
//!
//! Every packet is an Ethernet frame (local experimental EtherType 0x88B5)
//! whose payload begins with the magic `PFXG`, a little-endian `u64` sequence
//! number (0, 1, 2, … per run) and a little-endian `u64` CLOCK_MONOTONIC time
//! in nanoseconds taken just before the write, so a reader on the same host
//! can check the stream is intact and compute each packet's latency: the
//! [`check::StreamCheck`]. Writer and reader share [`mod@format`], so they cannot
//! drift apart.
//!
//! The program itself is [`program`], compiled on its own by the kit's
//! `build.rs` into cargo's build directory (optimised, whatever the profile:
//! it must never be the bottleneck) and found at [`PROGRAM`]: every test and
//! bench that links the kit has it, under `cargo test`, `cargo nextest` and
//! `cargo bench` alike, and it is not one of the service's binaries.

pub mod check;
pub mod format;
pub mod program;

pub use check::StreamCheck;
pub use format::{Corrupt, Mode, Settings};

/// The compiled program (see `build.rs`).
pub const PROGRAM: &str = concat!(env!("OUT_DIR"), "/packetflix-pcapgen");

/// [`PROGRAM`] as a path.
pub fn program_path() -> std::path::PathBuf {
    PROGRAM.into()
}
