//! The synthetic capture program's I/O: write the stream [`super::format`]
//! describes to stdout, at full speed, paced, or not at all (idle). Std
//! only, plus the three C calls std has no wrapper for, so `build.rs` can
//! compile it on its own into a program; the library carries it too, so it
//! is linted and tested like the rest of the kit.
//!
//! This program must never be a bottleneck at full speed: packets are
//! patched in place in a prebuilt chunk, and the clock is read once per chunk.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use super::format::{
    corrupt_epb, epb_template, header_blocks, overrun_blocks, patch_epb, phase, restore_epb_tail,
    Corrupt, Mode, Sequencer, Settings,
};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The C library calls, as glibc declares them on 64-bit Linux.
mod sys {
    use std::os::raw::{c_int, c_long, c_short, c_ulong};

    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    compile_error!("the generator's C declarations are for 64-bit Linux");

    /// `struct timespec` (time_t is a long here).
    #[repr(C)]
    pub struct Timespec {
        pub tv_sec: c_long,
        pub tv_nsec: c_long,
    }

    /// `struct pollfd`.
    #[repr(C)]
    pub struct PollFd {
        pub fd: c_int,
        pub events: c_short,
        pub revents: c_short,
    }

    /// <linux/time.h>
    pub const CLOCK_MONOTONIC: c_int = 1;
    pub const TIMER_ABSTIME: c_int = 1;

    extern "C" {
        pub fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
        pub fn clock_nanosleep(
            clock: c_int,
            flags: c_int,
            request: *const Timespec,
            remain: *mut Timespec,
        ) -> c_int;
        pub fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
    }
}

/// CLOCK_MONOTONIC in nanoseconds: what readers compare packet stamps with.
fn mono_ns() -> u64 {
    let mut ts = sys::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { sys::clock_gettime(sys::CLOCK_MONOTONIC, &mut ts) } != 0 {
        // CLOCK_MONOTONIC cannot fail on Linux; a zero stamp would show up
        // as an absurd latency rather than go unnoticed.
        return 0;
    }
    ts.tv_sec as u64 * NANOS_PER_SEC + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `due_ns`. A signal only shortens the
/// sleep; the packet then goes out a bit early.
fn sleep_until(due_ns: u64) {
    let ts = sys::Timespec {
        tv_sec: (due_ns / NANOS_PER_SEC) as _,
        tv_nsec: (due_ns % NANOS_PER_SEC) as _,
    };
    // SAFETY: `ts` is a valid timespec; no remainder is asked for.
    let _ = unsafe {
        sys::clock_nanosleep(
            sys::CLOCK_MONOTONIC,
            sys::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Microseconds since the epoch: the EPB timestamp.
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn run_full_speed(out: &mut File, s: &Settings) -> io::Result<()> {
    let template = epb_template(s.size);
    let per_chunk = (s.chunk / template.len()).max(1);
    let mut chunk = Vec::with_capacity(per_chunk * template.len());
    for _ in 0..per_chunk {
        chunk.extend_from_slice(&template);
    }
    let mut seqs = Sequencer::new(s);
    let mut written: u64 = 0;
    loop {
        let n = if s.count == 0 {
            per_chunk as u64
        } else {
            (s.count - written).min(per_chunk as u64)
        };
        if n == 0 {
            return Ok(());
        }
        let mono = mono_ns();
        let wall = wall_us();
        let bytes = n as usize * template.len();
        for epb in chunk[..bytes].chunks_exact_mut(template.len()) {
            let (seq, bad_len) = seqs.take();
            patch_epb(epb, seq, mono, wall);
            if bad_len {
                corrupt_epb(epb, Corrupt::Len);
            } else {
                restore_epb_tail(epb);
            }
        }
        out.write_all(&chunk[..bytes])?;
        written += n;
    }
}

fn run_paced(out: &mut File, s: &Settings) -> io::Result<()> {
    let mut epb = epb_template(s.size);
    let period = NANOS_PER_SEC / s.rate.max(1);
    let now = mono_ns();
    // A random phase within the first period: generators released together
    // must not tick in lockstep, or a hundred captures would arrive as one
    // burst every period instead of as independent streams.
    let start = now + phase(now ^ u64::from(std::process::id()), period);
    let mut seqs = Sequencer::new(s);
    let mut i: u64 = 0;
    while s.count == 0 || i < s.count {
        sleep_until(start + i * period);
        let (seq, bad_len) = seqs.take();
        patch_epb(&mut epb, seq, mono_ns(), wall_us());
        if bad_len {
            corrupt_epb(&mut epb, Corrupt::Len);
        } else {
            restore_epb_tail(&mut epb);
        }
        out.write_all(&epb)?;
        i += 1;
    }
    Ok(())
}

/// Waits without timers or polling until stdout's reader goes away (the
/// kernel reports POLLERR on a pipe whose read end is closed) or the safety
/// lifetime ends.
fn run_idle(out: &File, s: &Settings) {
    let deadline = Instant::now() + s.idle_max;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let timeout = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // No events asked for: only POLLERR and POLLHUP, which poll always
        // reports, end the wait.
        let mut fds = [sys::PollFd {
            fd: out.as_fd().as_raw_fd(),
            events: 0,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, and its count.
        match unsafe { sys::poll(fds.as_mut_ptr(), 1, timeout) } {
            0 => continue,
            n if n > 0 => return,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            _ => return,
        }
    }
}

/// The program: settings from the environment, the stream to stdout.
pub fn main() -> ExitCode {
    // The dumpcap-style arguments only say where to capture; a synthetic
    // source has nothing to do with them.
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("packetflix-pcapgen: {e}");
            return ExitCode::from(2);
        }
    };
    // Unbuffered: std's stdout is line-buffered, which would split binary
    // chunks at arbitrary 0x0A bytes.
    let mut out = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("packetflix-pcapgen: cannot use stdout: {e}");
            return ExitCode::from(1);
        }
    };
    let mut header = header_blocks(settings.comment.as_deref());
    header.extend(overrun_blocks(settings.corrupt));
    let result = out.write_all(&header).and_then(|()| match settings.mode {
        Mode::Idle => {
            run_idle(&out, &settings);
            Ok(())
        }
        Mode::Stream => {
            if let Some(fifo) = &settings.start_fifo {
                // Blocks until the starter opens the FIFO for writing.
                File::open(fifo).map_err(|e| {
                    io::Error::new(e.kind(), format!("start FIFO {}: {e}", fifo.display()))
                })?;
            }
            if settings.rate == 0 {
                run_full_speed(&mut out, &settings)
            } else {
                run_paced(&mut out, &settings)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away: for a capture program that is a normal end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packetflix-pcapgen: write failed: {e}");
            ExitCode::from(1)
        }
    }
}
