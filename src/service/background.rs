//! Threads beside the loop, for the few jobs that can only be done by
//! waiting: writing to a stderr nobody may be draining, and looking host
//! names up. Each talks to the loop only through bounded queues (and a
//! `mio::Waker` where the loop needs the answer).
//!
//! They run at a lower priority than the loop (niceness 10), never touch
//! the loop's state and never receive signals: they start
//! with every signal blocked, so SIGCHLD, SIGTERM and SIGINT keep arriving
//! through the loop's signalfd only (a signal delivered to a thread that
//! does not block it would bypass the signalfd, and SIGTERM would kill the
//! process outright).

use std::io;
use std::thread::JoinHandle;

use nix::sys::signal::{SigSet, SigmaskHow};

/// Spawns `f` on a named thread that blocks every signal.
pub fn spawn<F>(name: &str, f: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // The new thread inherits the spawning thread's mask; block all for the
    // spawn, then restore ours.
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )
    .map_err(io::Error::from)?;
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            f()
        });
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    spawned
}

/// Niceness of helper threads relative to the loop.
const HELPER_NICENESS: i32 = 10;

/// On a busy host the loop must win the CPU over its helpers (parsing a
/// large listing takes a core for a while): Linux applies niceness per
/// thread, so this thread alone is lowered.
fn lower_priority() {
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority with plain integers; failure leaves the default.
    unsafe {
        nix::libc::setpriority(
            nix::libc::PRIO_PROCESS,
            tid as nix::libc::id_t,
            HELPER_NICENESS,
        );
    }
}
