//! What a capture program says on stderr, kept for the close reason: lines
//! are cut from the reads (each at most [`MAX_ERR_LINE`] bytes kept), the
//! first one starting with `dumpcap: ` is the reason a user can act on, the
//! first of any kind the fallback. No I/O: the session reads the pipe and
//! feeds the bytes here.

/// Longest stderr line kept from the capture program.
pub const MAX_ERR_LINE: usize = 1024;

#[derive(Debug, Default)]
pub struct ErrLines {
    /// The line being read, cut at [`MAX_ERR_LINE`].
    part: Vec<u8>,
    /// First line starting with `dumpcap: `, prefix removed.
    errline: Option<String>,
    /// First line of any kind.
    firstline: Option<String>,
}

impl ErrLines {
    /// Takes one read; `seen` gets each complete, non-empty line (for the
    /// debug log).
    pub fn feed(&mut self, bytes: &[u8], mut seen: impl FnMut(&str)) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_ERR_LINE.saturating_sub(self.part.len());
            self.part.extend_from_slice(&piece[..piece.len().min(room)]);
            if piece.ends_with(b"\n") {
                let line = std::mem::take(&mut self.part);
                self.line(&line, &mut seen);
            }
        }
    }

    /// The pipe ended: a last line without its newline counts too.
    pub fn finish(&mut self, mut seen: impl FnMut(&str)) {
        let rest = std::mem::take(&mut self.part);
        self.line(&rest, &mut seen);
    }

    pub fn errline(&self) -> Option<&str> {
        self.errline.as_deref()
    }

    pub fn firstline(&self) -> Option<&str> {
        self.firstline.as_deref()
    }

    fn line(&mut self, line: &[u8], seen: &mut impl FnMut(&str)) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        seen(line);
        if self.errline.is_none() {
            if let Some(rest) = line.strip_prefix("dumpcap: ") {
                self.errline = Some(rest.trim().to_string());
            }
        }
        if self.firstline.is_none() {
            self.firstline = Some(line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_dumpcap_line_is_the_reason_split_however_it_arrives() {
        let mut e = ErrLines::default();
        let mut seen = Vec::new();
        e.feed(b"Capturing on 'lo'\ndump", |l| seen.push(l.to_string()));
        e.feed(b"cap: The network adapter \"lo\" is gone.\n", |l| {
            seen.push(l.to_string())
        });
        e.feed(b"dumpcap: later\n", |_| {});
        assert_eq!(e.errline(), Some("The network adapter \"lo\" is gone."));
        assert_eq!(e.firstline(), Some("Capturing on 'lo'"));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_last_line_without_newline_counts_and_long_lines_are_cut() {
        let mut e = ErrLines::default();
        e.feed(&vec![b'x'; 3 * MAX_ERR_LINE], |_| {});
        e.finish(|_| {});
        assert_eq!(e.firstline().map(str::len), Some(MAX_ERR_LINE));
        let mut e = ErrLines::default();
        e.feed(b"dumpcap: no newline", |_| {});
        assert_eq!(e.errline(), None);
        e.finish(|_| {});
        assert_eq!(e.errline(), Some("no newline"));
    }
}
