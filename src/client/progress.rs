//! The live progress line of a capture into a file on a terminal, as dumpcap
//! and tshark show one: packets, bytes, elapsed time, and drops once the
//! stream reports any, rewritten in place a few times a second and replaced
//! by the final summary.
//!
//! Only for a person watching: the caller enables it when stderr is a
//! terminal and the capture goes to a file, never in extcap mode (Wireshark
//! shows whatever an extcap writes on stderr as an error) and never when
//! stderr is a file or a pipe, where carriage returns would only litter.
//! Writing the line is the caller's I/O; this module decides what and when.

use std::time::{Duration, Instant};

/// How often the line is rewritten: four times a second reads as live
/// without flicker (dumpcap updates its count about once a second, tshark's
/// `-q` counter on every packet batch).
pub const INTERVAL: Duration = Duration::from_millis(250);

/// What the capture has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
}

/// The line's state: when it started, when it was last drawn, how wide.
#[derive(Debug)]
pub struct Progress {
    started: Option<Instant>,
    drawn: Option<Instant>,
    width: usize,
    target: String,
}

impl Progress {
    /// A line about a capture into `target` (the file's name).
    pub fn new(target: &str) -> Progress {
        Progress {
            started: None,
            drawn: None,
            width: 0,
            target: target.to_string(),
        }
    }

    /// The text to write now, if the line is due: `\r`, the line, and
    /// blanks over what is left of a longer earlier line. The first call
    /// starts the clock (the capture has just been accepted).
    pub fn update(&mut self, tally: Tally, now: Instant) -> Option<String> {
        let started = *self.started.get_or_insert(now);
        if self.drawn.is_some_and(|d| now.duration_since(d) < INTERVAL) {
            return None;
        }
        self.drawn = Some(now);
        let line = line(tally, now.duration_since(started), &self.target);
        Some(self.overwrite(line, ""))
    }

    /// The text that replaces the line with the final summary and ends it;
    /// just the summary and a newline if the line was never drawn.
    pub fn finish(&mut self, summary: &str) -> String {
        if self.drawn.is_none() {
            return format!("{summary}\n");
        }
        self.drawn = None;
        self.overwrite(summary.to_string(), "\n")
    }

    /// The text that blanks the line out and leaves the cursor at its start,
    /// for a message that must stand on its own (an error).
    pub fn clear(&mut self) -> String {
        if self.drawn.take().is_none() {
            return String::new();
        }
        let blank = self.overwrite(String::new(), "");
        format!("{blank}\r")
    }

    fn overwrite(&mut self, text: String, end: &str) -> String {
        let len = text.chars().count();
        let pad = self.width.saturating_sub(len);
        self.width = len;
        format!("\r{text}{:pad$}{end}", "")
    }
}

/// `packetflix-capture: 1234 packets (1.5 MB) to out.pcapng, 12.3 s, 5 dropped`
pub fn line(tally: Tally, elapsed: Duration, target: &str) -> String {
    let mut s = format!(
        "packetflix-capture: {} packet{} ({}) to {target}, {:.1} s",
        tally.packets,
        if tally.packets == 1 { "" } else { "s" },
        human_bytes(tally.bytes),
        elapsed.as_secs_f64()
    );
    if tally.drops > 0 {
        s.push_str(&format!(", {} dropped", tally.drops));
    }
    s
}

/// Bytes in SI units, as tshark's capinfos and dumpcap print sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(packets: u64, bytes: u64, drops: u64) -> Tally {
        Tally {
            packets,
            bytes,
            drops,
        }
    }

    #[test]
    fn the_line_names_packets_bytes_time_and_drops_only_once_there_are_some() {
        let d = Duration::from_millis(12_340);
        assert_eq!(
            line(tally(1, 98, 0), d, "out.pcapng"),
            "packetflix-capture: 1 packet (98 B) to out.pcapng, 12.3 s"
        );
        assert_eq!(
            line(tally(1234, 1_534_000, 5), d, "x"),
            "packetflix-capture: 1234 packets (1.5 MB) to x, 12.3 s, 5 dropped"
        );
    }

    #[test]
    fn sizes_are_in_si_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(2_500_000_000), "2.5 GB");
        assert_eq!(human_bytes(u64::MAX), "18446744.1 TB");
    }

    #[test]
    fn updates_come_at_most_every_interval_and_start_the_clock() {
        let t0 = Instant::now();
        let mut p = Progress::new("f");
        let first = p.update(tally(0, 0, 0), t0).unwrap();
        assert_eq!(first, "\rpacketflix-capture: 0 packets (0 B) to f, 0.0 s");
        assert_eq!(p.update(tally(1, 10, 0), t0 + INTERVAL / 2), None);
        let later = p.update(tally(2, 20, 0), t0 + INTERVAL * 2).unwrap();
        assert!(later.ends_with("2 packets (20 B) to f, 0.5 s"), "{later}");
    }

    #[test]
    fn a_shorter_text_blanks_out_the_rest_of_the_longer_line() {
        let t0 = Instant::now();
        let mut p = Progress::new("f");
        let long = p.update(tally(123_456, 1, 99), t0).unwrap();
        let end = p.finish("done");
        assert_eq!(end.len(), long.len() + 1, "{end:?}");
        assert!(end.starts_with("\rdone   "));
        assert!(end.ends_with(" \n"));
    }

    #[test]
    fn clearing_blanks_the_drawn_line_and_returns_to_its_start() {
        let mut p = Progress::new("f");
        assert_eq!(p.clear(), "", "nothing drawn, nothing to clear");
        let drawn = p.update(tally(1, 1, 0), Instant::now()).unwrap();
        let cleared = p.clear();
        assert_eq!(cleared.len(), drawn.len() + 1);
        assert!(cleared.starts_with('\r') && cleared.ends_with('\r'));
        assert!(cleared[1..cleared.len() - 1].chars().all(|c| c == ' '));
    }

    #[test]
    fn a_line_never_drawn_ends_as_a_plain_summary() {
        assert_eq!(Progress::new("f").finish("done"), "done\n");
    }
}
