//! SIGINT and SIGTERM become a stop request the capture loop polls.
//!
//! The handler only sets a flag (and, for the second signal where allowed,
//! exits at once); everything else happens in the loop, which notices within
//! one read tick. The handlers are installed without `SA_RESTART`, so a read
//! or a write blocked in the kernel returns `EINTR` and the loop looks at the
//! flag right away. Wireshark stops an extcap with SIGTERM on Linux, and a
//! person with Ctrl-C; both end the capture cleanly.
//!
//! Not the `signal-hook` crate: its registry installs every handler with
//! `SA_RESTART` (signal-hook-registry 1.4, no option to leave it out), and
//! with it the kernel restarts the extcap's open(2) of Wireshark's fifo and
//! blocking writes into a full pipe, so a stop that comes while the plugin
//! waits there is never seen (`tests/client.rs`,
//! `extcap_waiting_for_wiresharks_fifo_stops_on_sigterm`, hangs with it).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Set by the first SIGINT/SIGTERM.
pub static STOP: AtomicBool = AtomicBool::new(false);
static RECEIVED: AtomicU32 = AtomicU32::new(0);
static HARD_EXIT_ON_SECOND: AtomicBool = AtomicBool::new(false);
/// Exit status for a second signal: 128 + SIGINT, as shells report it.
const SECOND_SIGNAL_EXIT: i32 = 130;

extern "C" fn on_stop_signal(_signal: nix::libc::c_int) {
    let before = RECEIVED.fetch_add(1, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    if before > 0 && HARD_EXIT_ON_SECOND.load(Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe; nothing else runs here.
        unsafe { nix::libc::_exit(SECOND_SIGNAL_EXIT) };
    }
}

/// Installs the handlers. With `hard_exit_on_second`, a second signal exits
/// at once for a user who does not want to wait for the close handshake;
/// the demo passes `false`, because it must always remove its namespace.
pub fn install(hard_exit_on_second: bool) -> nix::Result<()> {
    HARD_EXIT_ON_SECOND.store(hard_exit_on_second, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls _exit.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}
