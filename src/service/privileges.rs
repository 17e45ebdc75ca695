//! The capabilities capturing needs, checked once at start-up.
//!
//! Entering another process's network namespace needs CAP_SYS_ADMIN and
//! CAP_SYS_PTRACE; capturing needs CAP_NET_ADMIN and CAP_NET_RAW. As root all
//! are there. Run as a non-root user with file capabilities, the service
//! holds them but a child would lose them at exec: CAP_NET_ADMIN and
//! CAP_NET_RAW are then made inheritable here and raised into the capture
//! program's ambient set between fork and exec (see `capture::spawn`).

/// Capability numbers from `<linux/capability.h>`.
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;

const NEEDED: [(u32, &str); 4] = [
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_NET_RAW, "CAP_NET_RAW"),
];
/// Passed on to the capture program when not running as root.
const PASSED_ON: [u32; 2] = [CAP_NET_ADMIN, CAP_NET_RAW];

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// What start-up found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    /// Names of needed capabilities missing from the effective set.
    pub missing: Vec<&'static str>,
    /// Whether capture programs get CAP_NET_ADMIN/CAP_NET_RAW as ambient
    /// capabilities (non-root with those capabilities).
    pub ambient: bool,
}

impl Privileges {
    /// The reason to refuse a capture with, if capturing cannot work.
    pub fn refusal(&self) -> Option<String> {
        if self.missing.is_empty() {
            return None;
        }
        Some(format!(
            "capture refused: the service lacks {} (run it as root or grant these as file capabilities)",
            self.missing.join(", ")
        ))
    }
}

/// The hex capability mask of `key` (e.g. `CapEff`) in a
/// `/proc/PID/status` text.
pub fn status_mask(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The needed capabilities missing from an effective mask.
pub fn missing_from(effective: u64) -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(bit, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Checks this process's capabilities and, when not root, makes the ones to
/// pass on inheritable.
pub fn init() -> Privileges {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status_mask(&status, "CapEff").unwrap_or(0);
    let missing = missing_from(effective);
    let root = nix::unistd::geteuid().is_root();
    let mut ambient = false;
    if !root && missing.is_empty() {
        ambient = make_inheritable(&PASSED_ON).is_ok();
        if !ambient {
            log::warn!("cannot make CAP_NET_ADMIN/CAP_NET_RAW inheritable; captures may fail");
        }
    }
    Privileges { missing, ambient }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn make_inheritable(caps: &[u32]) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes at most two CapData for version 3; both point to
    // live, properly sized memory.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for &cap in caps {
        data[(cap / 32) as usize].inheritable |= 1 << (cap % 32);
    }
    // SAFETY: as above; capset only reads.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_capset, &mut header, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the passed-on capabilities into the ambient set. Called in the
/// child between fork and exec: only the prctl syscall, no allocation.
/// The ambient set is cleared first: a service started with ambient
/// capabilities (systemd's AmbientCapabilities=) would otherwise hand all of
/// them, CAP_SYS_ADMIN too, to the capture program.
pub fn raise_ambient() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0 as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for cap in PASSED_ON {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            nix::libc::prctl(
                nix::libc::PR_CAP_AMBIENT,
                nix::libc::PR_CAP_AMBIENT_RAISE,
                cap as nix::libc::c_ulong,
                0 as nix::libc::c_ulong,
                0 as nix::libc::c_ulong,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_read_from_proc_status_text() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(status_mask(s, "CapEff"), Some(0x1ff_ffff_ffff));
        assert_eq!(status_mask(s, "CapInh"), Some(0));
        assert_eq!(status_mask(s, "CapBnd"), None);
    }

    #[test]
    fn missing_capabilities_are_named() {
        assert!(missing_from(u64::MAX).is_empty());
        assert_eq!(
            missing_from(0),
            vec![
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW"
            ]
        );
        let only_net = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW);
        assert_eq!(
            missing_from(only_net),
            vec!["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
        );
        let p = Privileges {
            missing: missing_from(only_net),
            ambient: false,
        };
        let r = p.refusal().unwrap();
        assert!(r.contains("CAP_SYS_ADMIN, CAP_SYS_PTRACE"), "{r}");
        assert_eq!(Privileges::default().refusal(), None);
    }
}
