//! Where captured blocks go: a file, stdout, or Wireshark's extcap fifo.
//!
//! Writes are plain blocking writes that a stop signal interrupts (`EINTR`,
//! see [`super::signals`]); a reader that went away (Wireshark closed its
//! fifo, `| head` exited) ends the capture cleanly rather than as an error.
//! The capture loop also asks [`Sink::reader_gone`] while the stream is idle,
//! because a fifo reader that left is otherwise only noticed on the next write,
//! which may never come on a quiet interface.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

/// How a write ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    All,
    /// The reading end of a pipe or fifo is gone.
    ReaderGone,
    /// A stop signal interrupted a blocked write.
    Stopped,
}

/// Receives whole pcapng blocks.
pub trait BlockSink {
    fn write_blocks(&mut self, blocks: &[u8], stop: &AtomicBool) -> Result<Written, String>;
    /// True if nobody will read what we write any more.
    fn reader_gone(&self) -> bool;
}

/// An open output.
pub struct Sink {
    file: File,
    name: String,
}

impl Sink {
    /// Creates (truncates) a regular file.
    pub fn create(path: &Path) -> Result<Sink, String> {
        let file =
            File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Sink {
            file,
            name: path.display().to_string(),
        })
    }

    /// Standard output, unbuffered (std's stdout is line-buffered, which would
    /// cut binary data at every 0x0A byte).
    pub fn stdout() -> Result<Sink, String> {
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("cannot use stdout: {e}"))?;
        Ok(Sink {
            file: File::from(fd),
            name: "stdout".into(),
        })
    }

    /// Opens Wireshark's fifo for writing; this waits for Wireshark to open
    /// the reading end. `Ok(None)`: a stop signal came first.
    pub fn open_fifo(path: &Path, stop: &AtomicBool) -> Result<Option<Sink>, String> {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            // nix's open does not retry on EINTR, so a signal wakes us here.
            match open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(fd) => {
                    return Ok(Some(Sink {
                        file: File::from(fd),
                        name: path.display().to_string(),
                    }))
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot open the fifo {}: {}",
                        path.display(),
                        e.desc()
                    ))
                }
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl BlockSink for Sink {
    fn write_blocks(&mut self, mut blocks: &[u8], stop: &AtomicBool) -> Result<Written, String> {
        while !blocks.is_empty() {
            match self.file.write(blocks) {
                Ok(0) => return Err(format!("cannot write to {}: no space taken", self.name)),
                Ok(n) => blocks = &blocks[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(Written::Stopped);
                    }
                }
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(Written::ReaderGone),
                Err(e) => return Err(format!("cannot write to {}: {e}", self.name)),
            }
        }
        Ok(Written::All)
    }

    fn reader_gone(&self) -> bool {
        // A pipe's writing end polls POLLERR once its last reader closed;
        // regular files and terminals never do.
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLERR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pipe_reader_leaving_is_noticed_without_writing() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let sink = Sink {
            file: File::from(write_end),
            name: "pipe".into(),
        };
        assert!(!sink.reader_gone());
        drop(read_end);
        assert!(sink.reader_gone());
    }

    #[test]
    fn writing_into_a_closed_pipe_reports_reader_gone() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let mut sink = Sink {
            file: File::from(write_end),
            name: "pipe".into(),
        };
        let stop = AtomicBool::new(false);
        assert_eq!(sink.write_blocks(b"abcd", &stop), Ok(Written::All));
        let mut got = [0u8; 4];
        File::from(read_end).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcd");
        // Rust ignores SIGPIPE, so the write fails with EPIPE instead.
        assert_eq!(sink.write_blocks(b"efgh", &stop), Ok(Written::ReaderGone));
    }

    #[test]
    fn regular_files_never_report_reader_gone() {
        let path = std::env::temp_dir().join(format!("pf-sink-{}", std::process::id()));
        let mut sink = Sink::create(&path).unwrap();
        assert!(!sink.reader_gone());
        assert_eq!(
            sink.write_blocks(b"1234", &AtomicBool::new(false)),
            Ok(Written::All)
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"1234");
        std::fs::remove_file(&path).unwrap();
    }
}
