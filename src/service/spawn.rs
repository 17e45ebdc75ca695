//! Spawning the capture program inside a held network namespace: the child
//! enters the namespace (setns) between fork and exec, gets its own process
//! group (a Ctrl-C meant for the service does not reach it directly), asks the
//! kernel to kill it should the service die, and inherits nothing but its
//! three standard streams (every descriptor of ours is close-on-exec; std
//! resets the signal mask and SIGPIPE in the child).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use mio::unix::pipe::Receiver;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A started capture program: its pid and its output pipes, non-blocking.
pub struct Spawned {
    pub pid: Pid,
    pub stdout: Receiver,
    pub stderr: Receiver,
}

/// Starts `program` with `args` inside the network namespace `netns`.
/// `ambient`: raise CAP_NET_ADMIN/CAP_NET_RAW into the child's ambient set
/// (a non-root service with file capabilities).
pub fn spawn(
    program: &Path,
    args: &[String],
    netns: &impl AsFd,
    ambient: bool,
) -> io::Result<Spawned> {
    let ns_fd = netns.as_fd().as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (setns, prctl, getppid); nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            // The service blocks SIGCHLD/SIGTERM/SIGINT for its signalfd and
            // ignores SIGPIPE; a blocked SIGTERM would make the capture
            // program deaf to being stopped. Start it with a clean slate.
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(io::Error::from)?;
            for sig in nix::sys::signal::Signal::iterator() {
                if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
                    let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
                }
            }
            let fd = std::os::fd::BorrowedFd::borrow_raw(ns_fd);
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            if ambient {
                crate::service::privileges::raise_ambient()?;
            }
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The service may have died before the prctl took effect.
            if nix::libc::getppid() == 1 {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (Receiver::from(o), Receiver::from(e)),
        _ => unreachable_pipes(pid)?,
    };
    stdout.set_nonblocking(true)?;
    stderr.set_nonblocking(true)?;
    // `child` is dropped without waiting: the reactor reaps it through the
    // signalfd and waitpid(WNOHANG).
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

fn unreachable_pipes(pid: Pid) -> io::Result<(Receiver, Receiver)> {
    // Both were requested as pipes, so std always provides them; should that
    // ever change, do not leave the child running unobserved.
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    Err(io::Error::other(
        "capture program started without output pipes",
    ))
}
