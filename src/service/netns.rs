//! Finding, checking and holding network namespaces by inode number.
//!
//! A namespace is found among the processes' `/proc/PID/ns/net` first, then
//! among bind-mounted namespaces (`nsfs` mounts in `/proc/self/mountinfo`,
//! such as `/run/netns/NAME`). The returned descriptor *holds* the namespace:
//! as long as it is open the inode cannot be reused for another namespace, so
//! the capture program enters exactly the namespace that was checked.
//!
//! Only local procfs reads happen here; nothing waits on the network.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::proto::session::LocateError;
use crate::proto::target::starttime_from_stat;

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: u64 = 0xb703;

/// An open network namespace, held until dropped.
#[derive(Debug)]
pub struct Netns {
    pub file: File,
    pub inode: u64,
    /// Where it was found, for logs.
    pub path: PathBuf,
}

/// The inode of the namespace a `/proc/PID/ns/net`-like path refers to.
pub fn inode_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Locates and opens the network namespace with inode `inode`. `hint_pid`, if
/// not 0, is tried first (the target's own process usually is in it).
pub fn locate(inode: u64, hint_pid: u32) -> Result<Netns, LocateError> {
    if hint_pid != 0 {
        if let Some(ns) = try_open(&PathBuf::from(format!("/proc/{hint_pid}/ns/net")), inode) {
            return Ok(ns);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if inode_of(&path) == Some(inode) {
                // The process may have exited or moved since the stat; then
                // keep looking rather than fail.
                if let Some(ns) = try_open(&path, inode) {
                    return Ok(ns);
                }
            }
        }
    }
    for path in nsfs_mounts() {
        if inode_of(&path) == Some(inode) {
            if let Some(ns) = try_open(&path, inode) {
                return Ok(ns);
            }
        }
    }
    Err(LocateError::NotFound { netns: inode })
}

/// Notes where the namespace of the `/proc` entry `name` (if it is a pid)
/// is, inode -> path; the first place seen is kept.
pub fn note_process(name: &std::ffi::OsStr, seen: &mut std::collections::HashMap<u64, PathBuf>) {
    let Some(pid) = name
        .to_str()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
    else {
        return;
    };
    let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    if let Some(ino) = inode_of(&path) {
        seen.entry(ino).or_insert(path);
    }
}

/// Notes the bind-mounted namespaces (`nsfs` mounts), inode -> mount point.
pub fn note_mounts(seen: &mut std::collections::HashMap<u64, PathBuf>) {
    for path in nsfs_mounts() {
        if let Some(ino) = inode_of(&path) {
            seen.entry(ino).or_insert(path);
        }
    }
}

/// Opens `path` if it is, on the opened descriptor, the network namespace
/// `inode`: how a remembered place is checked before it is trusted.
pub fn open_checked(path: &Path, inode: u64) -> Option<Netns> {
    try_open(path, inode)
}

/// Mount points of `nsfs` mounts, i.e. bind-mounted namespaces.
fn nsfs_mounts() -> Vec<PathBuf> {
    procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| {
            m.0.into_iter()
                .filter(|mi| mi.fs_type == "nsfs")
                .map(|mi| mi.mount_point)
                .collect()
        })
        .unwrap_or_default()
}

/// Opens `path` and checks, on the open descriptor, that it is the network
/// namespace with `inode` (the path may have changed between stat and open).
fn try_open(path: &Path, inode: u64) -> Option<Netns> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if meta.ino() != inode || !is_netns(&file) {
        return None;
    }
    Some(Netns {
        file,
        inode,
        path: path.to_path_buf(),
    })
}

fn is_netns(file: &File) -> bool {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor,
    // which stays open for the duration of the call.
    let kind = unsafe { nix::libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == nix::libc::CLONE_NEWNET
}

/// The names of the network interfaces in the namespace `netns`: the loop
/// thread enters the namespace, lists its links (`if_nameindex`, a netlink
/// link dump the kernel answers from memory), and returns to its own at
/// once. If it cannot return, the service stops: every socket it made
/// afterwards would be made in the wrong namespace.
pub fn names_in(netns: &impl AsFd) -> io::Result<HashSet<String>> {
    // This thread's own namespace, to return to (the process's may differ
    // from the thread's only if someone else moved this thread).
    let own = File::open("/proc/thread-self/ns/net")?;
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let listed = nix::net::if_::if_nameindex();
    if let Err(e) = setns(own.as_fd(), CloneFlags::CLONE_NEWNET) {
        log::error!(
            "cannot return to the service's own network namespace after listing interfaces: {e}; stopping"
        );
        std::process::abort();
    }
    let listed = listed.map_err(io::Error::from)?;
    Ok(listed
        .iter()
        .map(|i| i.name().to_string_lossy().into_owned())
        .collect())
}

/// The start time of process `pid`, read from `/proc/<pid>/stat`; `None` if
/// there is no such process (any more) or its stat cannot be read or parsed.
/// procfs answers from kernel memory, so this read does not wait on devices.
pub fn process_starttime(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    starttime_from_stat(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::target::is_stale;
    use crate::proto::target::tests::referenced;

    #[test]
    fn own_process_starttime_matches_its_stat() {
        let own = std::fs::read("/proc/self/stat").unwrap();
        let expected = starttime_from_stat(&own).unwrap();
        assert_eq!(process_starttime(std::process::id()), Some(expected));
    }

    #[test]
    fn missing_process_has_no_starttime() {
        // Above the kernel's largest possible pid_max (2^22).
        assert_eq!(process_starttime(u32::MAX), None);
        assert_eq!(process_starttime(0), None);
    }

    #[test]
    fn live_reference_to_this_process_is_not_stale() {
        let pid = std::process::id();
        let starttime = process_starttime(pid).unwrap();
        assert!(!is_stale(&referenced(pid, starttime), process_starttime));
        assert!(is_stale(&referenced(pid, starttime + 1), process_starttime));
    }
    #[test]
    fn own_namespace_lists_loopback_and_the_thread_comes_back() {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let ns = File::open("/proc/self/ns/net").unwrap();
        let Ok(names) = names_in(&ns) else {
            eprintln!("setns not permitted here; skipping");
            return;
        };
        assert!(names.contains("lo"), "{names:?}");
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            before
        );
    }
    #[test]
    fn own_namespace_is_found_and_held() {
        let Some(ino) = inode_of(Path::new("/proc/self/ns/net")) else {
            eprintln!("no /proc/self/ns/net here; skipping");
            return;
        };
        let ns = locate(ino, std::process::id()).unwrap();
        assert_eq!(ns.inode, ino);
        assert_eq!(ns.file.metadata().unwrap().ino(), ino);
        // Without a hint the /proc scan finds it too.
        assert_eq!(locate(ino, 0).unwrap().inode, ino);
    }

    #[test]
    fn unknown_inode_is_a_reason_naming_it() {
        let err = locate(1, 0).unwrap_err().to_string();
        assert!(err.contains("inode 1"), "{err}");
    }

    #[test]
    fn other_namespace_types_are_not_taken_for_network_namespaces() {
        // Our mount namespace's inode must not resolve as a network namespace.
        let Some(mnt) = inode_of(Path::new("/proc/self/ns/mnt")) else {
            return;
        };
        assert!(try_open(Path::new("/proc/self/ns/mnt"), mnt).is_none());
    }
}
