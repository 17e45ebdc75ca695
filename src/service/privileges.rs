//! The capabilities capturing needs, checked once at start-up.
//!
//! Entering another process's network namespace needs CAP_SYS_ADMIN and
//! CAP_SYS_PTRACE; capturing needs CAP_NET_ADMIN and CAP_NET_RAW. As root all
//! are there. Run as a non-root user with file capabilities, the service
//! holds them but a child would lose them at exec: CAP_NET_ADMIN and
//! CAP_NET_RAW are then made inheritable here and raised into the capture
//! program's ambient set between fork and exec (see `capture::spawn`).

use caps::{CapSet, Capability, CapsHashSet};

const NEEDED: [(Capability, &str); 4] = [
    (Capability::CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    (Capability::CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    (Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (Capability::CAP_NET_RAW, "CAP_NET_RAW"),
];
/// Passed on to the capture program when not running as root.
const PASSED_ON: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

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

/// The needed capabilities missing from an effective set.
pub fn missing_from(effective: &CapsHashSet) -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(cap, _)| !effective.contains(cap))
        .map(|(_, name)| *name)
        .collect()
}

/// Checks this process's capabilities and, when not root, makes the ones to
/// pass on inheritable.
pub fn init() -> Privileges {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    let missing = missing_from(&effective);
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

fn make_inheritable(wanted: &[Capability]) -> Result<(), caps::errors::CapsError> {
    for &cap in wanted {
        caps::raise(None, CapSet::Inheritable, cap)?;
    }
    Ok(())
}

/// Raises the passed-on capabilities into the ambient set. Called in the
/// child between fork and exec: only the prctl syscall, no allocation. (Not
/// the `caps` crate here: its errors are formatted `String`s, and a child
/// forked from a process with threads must not allocate, or a lock another
/// thread held at the fork could hang it, and the spawn with it.)
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
                nix::libc::c_ulong::from(cap.index()),
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
    fn missing_capabilities_are_named() {
        assert!(missing_from(&caps::all()).is_empty());
        assert_eq!(
            missing_from(&CapsHashSet::default()),
            vec![
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW"
            ]
        );
        let only_net = CapsHashSet::from_iter(PASSED_ON);
        assert_eq!(
            missing_from(&only_net),
            vec!["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
        );
        let p = Privileges {
            missing: missing_from(&only_net),
            ambient: false,
        };
        let r = p.refusal().unwrap();
        assert!(r.contains("CAP_SYS_ADMIN, CAP_SYS_PTRACE"), "{r}");
        assert_eq!(Privileges::default().refusal(), None);
    }
}
