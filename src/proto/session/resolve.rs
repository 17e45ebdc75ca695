//! "Resolving the target" (API.md) as one function: what the request
//! says, what `/proc` says of its process reference, and the discovery
//! service's answer once there is one, decide between capturing in a known
//! namespace, asking the discovery service, and refusing.

use std::sync::Arc;

use super::Refusal;
use crate::proto::discovery::{DiscoveryError, ParsedListing};
use crate::proto::target::Target;

#[derive(Debug, PartialEq)]
pub enum Resolved {
    /// Capture in this target's `netns`.
    Spawn(Target),
    /// Its reference is unknown or stale: look it up by name and prefix.
    Discover,
    Refuse(Refusal),
}

/// The discovery service's answer and its name (for reasons).
pub type Answer<'a> = (&'a Result<Arc<ParsedListing>, DiscoveryError>, &'a str);

/// Whether the target's process reference shows its `netns` to be stale:
/// only a reference with both `pid` and `starttime` is checked, against the
/// start time `/proc` gives for that pid (`None`: no such process).
pub fn stale(t: &Target, proc_starttime: Option<u64>) -> bool {
    crate::proto::target::is_stale(t, |_| proc_starttime)
}

/// Resolves one target. `described`: the request named its target with a
/// JSON description (a bare `netns=` cannot be looked up); `label`: its
/// name in a capture of several targets; `proc_starttime`: what `/proc`
/// says of `t.pid`; `answer`: the discovery service's, once asked.
pub fn resolve(
    t: &Target,
    described: bool,
    label: Option<&str>,
    proc_starttime: Option<u64>,
    answer: Option<Answer>,
) -> Resolved {
    if t.netns != 0 && !stale(t, proc_starttime) {
        return Resolved::Spawn(t.clone());
    }
    if !described || t.name.is_empty() {
        return Resolved::Refuse(Refusal::NoReference {
            target: label.map(str::to_string),
        });
    }
    let Some((listing, service)) = answer else {
        return Resolved::Discover;
    };
    let listing = match listing {
        Ok(l) => l,
        // The whole listing failed: it is nobody's target in particular.
        Err(e) => {
            return Resolved::Refuse(Refusal::Discovery {
                error: e.clone(),
                service: service.to_string(),
                target: None,
            })
        }
    };
    match listing.find(&t.name, &t.prefix) {
        Ok(mut found) => {
            if found.netns == 0 {
                return Resolved::Refuse(Refusal::ListedWithoutNetns {
                    name: found.name,
                    target: label.map(str::to_string),
                });
            }
            // Interfaces the client named win over the listing's.
            if !t.network_interfaces.is_empty() {
                found.network_interfaces = t.network_interfaces.clone();
            }
            Resolved::Spawn(found)
        }
        Err(error) => Resolved::Refuse(Refusal::Discovery {
            error,
            service: service.to_string(),
            target: label.map(str::to_string),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"containers":[
        {"name":"web","type":"docker","netns":4026532000,"pid":0,"starttime":0},
        {"name":"bare","type":"docker","netns":0},
        {"name":"db","prefix":"pod","type":"docker","netns":4026532001,
         "network-interfaces":["eth0"]}]}"#;

    fn listing() -> Result<Arc<ParsedListing>, DiscoveryError> {
        ParsedListing::parse(LISTING.as_bytes().to_vec()).map(Arc::new)
    }

    fn named(name: &str) -> Target {
        Target {
            name: name.into(),
            ..Target::default()
        }
    }

    #[test]
    fn a_known_netns_with_a_matching_start_time_is_used_as_it_is() {
        let t = Target {
            netns: 4026531840,
            pid: 42,
            starttime: 7,
            ..Target::default()
        };
        assert_eq!(resolve(&t, false, None, Some(7), None), Resolved::Spawn(t));
    }

    #[test]
    fn a_netns_without_a_process_reference_is_not_checked() {
        let t = Target {
            netns: 4026531840,
            ..Target::default()
        };
        assert_eq!(
            resolve(&t, false, None, None, None),
            Resolved::Spawn(t.clone())
        );
    }

    #[test]
    fn a_stale_reference_with_a_name_asks_the_discovery_service() {
        let t = Target {
            netns: 4026531840,
            pid: 42,
            starttime: 7,
            name: "web".into(),
            ..Target::default()
        };
        assert_eq!(resolve(&t, true, None, Some(8), None), Resolved::Discover);
        // The process is gone: stale as well.
        assert_eq!(resolve(&t, true, None, None, None), Resolved::Discover);
    }

    #[test]
    fn no_netns_and_no_name_is_refused_naming_the_target() {
        let t = Target::default();
        assert_eq!(
            resolve(&t, true, Some("netns-0"), None, None),
            Resolved::Refuse(Refusal::NoReference {
                target: Some("netns-0".into())
            })
        );
        // A bare netns= (not described) cannot be looked up by name.
        assert!(matches!(
            resolve(&named("web"), false, None, None, None),
            Resolved::Refuse(Refusal::NoReference { target: None })
        ));
    }

    #[test]
    fn the_listing_names_the_netns() {
        let l = listing();
        let got = resolve(&named("web"), true, None, None, Some((&l, "gw:5000")));
        match got {
            Resolved::Spawn(t) => assert_eq!(t.netns, 4026532000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interfaces_the_client_named_win_over_the_listings() {
        let l = listing();
        let mut t = named("db");
        t.prefix = "pod".into();
        let Resolved::Spawn(listed) = resolve(&t, true, None, None, Some((&l, "gw"))) else {
            panic!("not found");
        };
        assert_eq!(listed.network_interfaces, ["eth0"]);
        t.network_interfaces = vec!["lo".into()];
        let Resolved::Spawn(mine) = resolve(&t, true, None, None, Some((&l, "gw"))) else {
            panic!("not found");
        };
        assert_eq!(mine.network_interfaces, ["lo"]);
    }

    #[test]
    fn listed_without_netns_not_listed_and_a_failed_listing_are_refused() {
        let l = listing();
        assert!(matches!(
            resolve(&named("bare"), true, None, None, Some((&l, "gw"))),
            Resolved::Refuse(Refusal::ListedWithoutNetns { .. })
        ));
        match resolve(&named("nowhere"), true, Some("n"), None, Some((&l, "gw"))) {
            Resolved::Refuse(r @ Refusal::Discovery { .. }) => {
                assert_eq!(r.code(), crate::proto::ws::POLICY_VIOLATION);
                assert!(r.text().starts_with("target n: "), "{}", r.text());
            }
            other => panic!("{other:?}"),
        }
        let failed = Err(DiscoveryError::TimedOut);
        match resolve(&named("web"), true, Some("w"), None, Some((&failed, "gw"))) {
            Resolved::Refuse(r @ Refusal::Discovery { target: None, .. }) => {
                assert_eq!(r.code(), crate::proto::ws::INTERNAL_ERROR)
            }
            other => panic!("{other:?}"),
        }
    }
}
