//! The last phases of a connection: `Held` (a final response waits for its
//! time), `Closing` (our close frame is out, the client's is awaited) and
//! `Flush` (a final response or close answer is going out; then the write
//! side is shut and the session is done).

use std::time::Instant;

use log::debug;

use super::{flush_then_close, Cx, Event, Phase};
use crate::proto::ws::FrameReader;

/// The `Closing` phase's transitions.
pub(super) fn closing(
    mut reader: Box<FrameReader>,
    deadline: Instant,
    cx: &mut Cx,
    ev: Event,
) -> Phase {
    match ev {
        // Pongs are not owed once our close frame is out.
        Event::ClientData(data) if reader.feed(data, &mut Vec::new()).is_some() => {
            return flush_then_close(cx);
        }
        Event::Timeout => {
            debug!("[c{}] client did not finish closing in time", cx.id);
            return Phase::Done;
        }
        Event::ClientEof | Event::ClientBroke(_) | Event::Shutdown => return Phase::Done,
        _ => {}
    }
    Phase::Closing { reader, deadline }
}

/// The `Flush` phase's transitions (its end, once everything is out, is
/// [`finish_if_flushed`]'s).
pub(super) fn flushing(deadline: Instant, cx: &mut Cx, ev: Event) -> Phase {
    match ev {
        Event::Timeout => {
            debug!(
                "[c{}] client did not take the final response in time",
                cx.id
            );
            Phase::Done
        }
        Event::ClientEof | Event::ClientBroke(_) => Phase::Done,
        _ => Phase::Flush { deadline },
    }
}

/// The `Held` phase's transitions: the refusal goes out at its deadline.
pub(super) fn held(resp: Box<[u8]>, deadline: Instant, cx: &mut Cx, ev: Event) -> Phase {
    match ev {
        Event::Timeout => super::respond_close(cx, &resp),
        Event::ClientEof | Event::ClientBroke(_) | Event::Shutdown | Event::Displaced => {
            Phase::Done
        }
        _ => Phase::Held { resp, deadline },
    }
}

/// After every event: a connection whose final bytes are all out shuts its
/// write side and is done.
pub(super) fn finish_if_flushed(next: Phase, cx: &mut Cx) -> Phase {
    if matches!(next, Phase::Flush { .. }) && cx.host.pending() == 0 {
        cx.host.shutdown_write();
        return Phase::Done;
    }
    next
}
