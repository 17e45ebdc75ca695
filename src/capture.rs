//! Building and spawning the capture program.
//!
//! [`capture_args`] is pure: the argument list API.md fixes, in its order.
//! [`spawn`] starts the program inside a held network namespace: the child
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

/// The capture program's arguments: `-w - -n -q`, `-p` if chaste, `-f FILTER`
/// if given, then `-i IF` per interface (`any` when none is named). dumpcap
/// binds `-p` and `-f` to the `-i` before them, and options given before
/// every `-i` to all interfaces: after the first `-i` a filter would hold
/// on that interface only. Each value is one argument; no shell is ever
/// involved.
pub fn capture_args(interfaces: &[String], filter: Option<&str>, chaste: bool) -> Vec<String> {
    let mut args: Vec<String> = ["-w", "-", "-n", "-q"].map(String::from).to_vec();
    if chaste {
        args.push("-p".into());
    }
    if let Some(f) = filter {
        args.extend(["-f".into(), f.to_string()]);
    }
    if interfaces.is_empty() {
        args.extend(["-i".into(), "any".into()]);
    }
    for nif in interfaces {
        args.extend(["-i".into(), nif.clone()]);
    }
    args
}

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
                crate::privileges::raise_ambient()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn no_interfaces_means_any() {
        assert_eq!(
            capture_args(&[], None, false),
            s(&["-w", "-", "-n", "-q", "-i", "any"])
        );
    }

    #[test]
    fn arguments_come_in_the_documented_order() {
        assert_eq!(
            capture_args(&s(&["eth0", "lo"]), Some("icmp or tcp"), true),
            s(&[
                "-w",
                "-",
                "-n",
                "-q",
                "-p",
                "-f",
                "icmp or tcp",
                "-i",
                "eth0",
                "-i",
                "lo"
            ])
        );
    }

    #[test]
    fn filter_stays_one_argument_whatever_it_contains() {
        let a = capture_args(&[], Some("port 80; rm -rf / $(x)"), false);
        assert_eq!(a[4..6], s(&["-f", "port 80; rm -rf / $(x)"]));
        assert_eq!(a.len(), 8);
    }
}
