//! Which of the requested interface names are real network interfaces of the
//! target namespace.
//!
//! The capture program takes more than interfaces as capture sources:
//! dumpcap reads `TCP@host:port` as "connect there and read pcap", and a
//! name that is a FIFO, socket or file path as "read from it". A client must
//! never reach those, so every name is checked against the kernel's own list
//! of links in the target namespace before anything is spawned (API.md,
//! "Resolving the target", step 5).
//!
//! [`check`] decides, without I/O, against the names the kernel listed
//! (`crate::service::netns::names_in`).

use std::collections::HashSet;

/// The interfaces to capture from, after the check.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// Passed to the capture program in this order; empty means `-i any`.
    pub interfaces: Vec<String>,
    /// Names of the target's own list that do not exist (for a log line).
    pub skipped: Vec<String>,
}

/// Checks `wanted` against the names that exist. `explicit`: the client
/// named them (`nif`), so a missing one refuses the capture; otherwise they
/// are the target's own list, whose missing names are skipped (a container
/// description can be older than its interfaces), unless none is left.
/// An empty `wanted` is dumpcap's `any` and needs no check.
pub fn check(
    wanted: &[String],
    explicit: bool,
    existing: &HashSet<String>,
) -> Result<Checked, String> {
    let (found, missing): (Vec<String>, Vec<String>) =
        wanted.iter().cloned().partition(|n| existing.contains(n));
    if explicit && !missing.is_empty() {
        return Err(format!(
            "no interface {} in the target's namespace; it has: {}",
            first_of(&missing),
            sorted(existing)
        ));
    }
    if !wanted.is_empty() && found.is_empty() {
        return Err(format!(
            "none of the target's interfaces ({}) is in its namespace; it has: {}",
            first_of(wanted),
            sorted(existing)
        ));
    }
    Ok(Checked {
        interfaces: found,
        skipped: missing,
    })
}

/// The first name, quoted so that an odd one reads as a name, and how many
/// more there are: close reasons are short (123 bytes), and the names that
/// do exist must still fit after it.
fn first_of(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("{one:?}"),
        [first, rest @ ..] => format!("{first:?} and {} more", rest.len()),
    }
}

/// The existing names, sorted so that reasons are stable, `/`-separated as
/// `nif` takes them. Reasons are cut to the close-reason limit later; the
/// list comes last so that cutting only shortens it.
fn sorted(existing: &HashSet<String>) -> String {
    let mut names: Vec<&str> = existing.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requested_names_that_exist_are_kept_in_order() {
        let c = check(&v(&["lo", "eth0"]), true, &set(&["eth0", "lo", "eth1"])).unwrap();
        assert_eq!(c.interfaces, v(&["lo", "eth0"]));
        assert!(c.skipped.is_empty());
    }

    #[test]
    fn a_requested_name_that_does_not_exist_is_refused_naming_those_that_do() {
        for bad in ["TCP@127.1:5555", "pipe.fifo", "/tmp/x", "eth9"] {
            let e = check(&v(&["lo", bad]), true, &set(&["lo", "eth0"])).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.ends_with("it has: eth0/lo"), "{e}");
        }
    }

    #[test]
    fn the_reason_keeps_room_for_the_existing_names() {
        let many: Vec<String> = (0..300).map(|i| format!("nosuch{i}")).collect();
        let e = check(&many, true, &set(&["lo", "eth0"])).unwrap_err();
        assert_eq!(
            e,
            "no interface \"nosuch0\" and 299 more in the target's namespace; it has: eth0/lo"
        );
        let e = check(&many, false, &set(&["lo"])).unwrap_err();
        assert!(
            e.starts_with("none of the target's interfaces (\"nosuch0\" and 299 more)"),
            "{e}"
        );
        // With the prefix a refusal gets, the list still fits the limit.
        let reason = format!("capture refused: {e}");
        assert!(reason.len() <= 123, "{} bytes: {reason}", reason.len());
    }

    #[test]
    fn missing_names_of_the_targets_list_are_skipped() {
        let c = check(&v(&["eth0", "gone0", "lo"]), false, &set(&["lo", "eth0"])).unwrap();
        assert_eq!(c.interfaces, v(&["eth0", "lo"]));
        assert_eq!(c.skipped, v(&["gone0"]));
    }

    #[test]
    fn a_target_list_with_none_left_is_refused_not_widened() {
        let e = check(&v(&["gone0", "gone1"]), false, &set(&["lo"])).unwrap_err();
        assert!(
            e.contains("\"gone0\" and 1 more") && e.ends_with("it has: lo"),
            "{e}"
        );
    }

    #[test]
    fn no_names_means_any_and_needs_no_check() {
        let c = check(&[], true, &HashSet::new()).unwrap();
        assert!(c.interfaces.is_empty());
    }
}
