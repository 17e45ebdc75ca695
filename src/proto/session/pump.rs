//! The read pump: how a ready descriptor is read into the machine. Shared by
//! the service's driver and the simulated world, so both read exactly as
//! the machine allows.
//!
//! A source is read while the machine wants it ([`Session::may_read`]),
//! each read handed over as its event, at most [`reads_per_turn`] reads per
//! turn; what is left is asked for again before the loop sleeps
//! ([`Host::resume`]), so one busy descriptor cannot hold the loop while
//! others wait. The same budget in bytes ([`BYTES_PER_TURN`]) bounds every
//! reader of the service, whatever its read size.

use super::{Broken, Env, Event, Host, Read, Session, Source};

/// Bytes one descriptor may have read per loop turn before the others get
/// theirs: 1 MiB, sixteen reads of a full default pipe (64 KiB).
pub const BYTES_PER_TURN: usize = 1024 * 1024;

/// Reads of `chunk` bytes that make one turn's budget (at least one).
pub const fn reads_per_turn(chunk: usize) -> usize {
    if chunk == 0 || chunk >= BYTES_PER_TURN {
        1
    } else {
        BYTES_PER_TURN / chunk
    }
}

impl Session {
    /// Reads `src` into `buf` (the loop's one read buffer) while the
    /// machine wants it, within the turn's budget.
    pub fn pump(&mut self, env: &Env, host: &mut dyn Host, src: Source, buf: &mut [u8]) {
        let budget = reads_per_turn(buf.len());
        for reads in 0.. {
            if self.finished() || !self.may_read(src, &*host, env.now) {
                return;
            }
            if reads == budget {
                host.resume(src);
                return;
            }
            let ev = match host.read(src, buf) {
                Read::WouldBlock => return,
                Read::Data(n) => {
                    let chunk = &mut buf[..n];
                    match src {
                        Source::Client => Event::ClientData(chunk),
                        Source::Upstream => Event::UpstreamData(chunk),
                        Source::Output(i) => Event::Output(i, chunk),
                        Source::Diag(i) => Event::Diag(i, Some(chunk)),
                    }
                }
                Read::End => {
                    self.on(env, host, end(src, None));
                    return;
                }
                Read::Failed(e) => {
                    self.on(env, host, end(src, Some(e)));
                    return;
                }
                Read::Ended(how) => {
                    if let Source::Output(i) = src {
                        self.on(env, host, Event::SourceEnded(i, how));
                    }
                    return;
                }
            };
            self.on(env, host, ev);
        }
    }
}

/// The event for the end of `src`, with the read error that ended it.
fn end(src: Source, error: Option<std::io::Error>) -> Event<'static> {
    match (src, error) {
        (Source::Client, None) => Event::ClientEof,
        (Source::Client, Some(e)) => Event::ClientBroke(Broken(e)),
        (Source::Upstream, None) => Event::UpstreamEof,
        (Source::Upstream, Some(e)) => Event::UpstreamFailed(e),
        (Source::Output(i), e) => Event::OutputEnd(i, e),
        (Source::Diag(i), _) => Event::Diag(i, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reader_gets_the_same_byte_budget() {
        assert_eq!(reads_per_turn(64 * 1024), 16);
        assert_eq!(reads_per_turn(16 * 1024), 64);
        assert_eq!(reads_per_turn(4 * 1024 * 1024), 1);
        assert_eq!(reads_per_turn(0), 1);
    }
}
