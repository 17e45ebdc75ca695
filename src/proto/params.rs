//! Capture parameters: the query string and `Clustershark-*` headers of a
//! `/capture` request turned into a [`CaptureParams`], or a reason the user can
//! act on. No I/O here; target resolution happens later, in the session.
//!
//! A header always wins over the query parameter of the same meaning, because
//! some proxies (the Kubernetes API server's pod proxy) drop query strings on
//! websocket upgrades.

use std::collections::HashSet;

use crate::proto::http::Request;
use crate::proto::target::{parse_target_limited, Target, MAX_INTERFACE_NAME_LEN, MAX_TARGET_JSON};

pub use crate::config::limits::MAX_FILTER;

/// Which interfaces to capture from. There is no bound on the count here: a
/// host namespace or a router may have hundreds, and the request head limit
/// already bounds what a client can send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nifs {
    /// Not said by the request: the target's own list, else all.
    Unspecified,
    /// `any`/`all`: the target's own interfaces, exactly as if `nif` were not
    /// given (the ClusterShark extcap sends `any` by default, csharg `all`
    /// when it knows no list).
    All,
    List(Vec<String>),
}

/// A validated capture request, before its target is resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureParams {
    /// The target as described by `container=`, or only its `netns` for a
    /// bare `netns=` request.
    pub target: Target,
    /// Whether the target came as a container description (which may be
    /// re-resolved through discovery) rather than a bare inode.
    pub described: bool,
    pub nifs: Nifs,
    pub filter: Option<String>,
    pub chaste: bool,
}

impl CaptureParams {
    /// The interfaces to pass to the capture program; empty means dumpcap's
    /// pseudo-interface `any`. `nif` if it names interfaces, else the
    /// target's own list (API.md, "Resolving the target", step 5). Names in
    /// the target's own list that cannot be passed safely are skipped; if
    /// that leaves none of a non-empty list, the capture is refused rather
    /// than widened to all interfaces. Whether the names exist is checked
    /// later, against the target namespace (`crate::proto::links`).
    pub fn interfaces(&self) -> Result<Vec<String>, String> {
        match &self.nifs {
            Nifs::List(l) => Ok(l.clone()),
            Nifs::All | Nifs::Unspecified => {
                let listed = &self.target.network_interfaces;
                let mut seen = HashSet::new();
                let usable: Vec<String> = listed
                    .iter()
                    .filter(|n| valid_ifname(n).is_ok() && seen.insert(n.as_str()))
                    .cloned()
                    .collect();
                if usable.is_empty() && !listed.is_empty() {
                    return Err(format!(
                        "none of the target's interfaces ({}) can be captured; name them with nif",
                        shorten(&listed.join("/"))
                    ));
                }
                Ok(usable)
            }
        }
    }
}

/// Bounds on what a capture request may carry (`--max-target-json`,
/// `--max-filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_target_json: usize,
    pub max_filter: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_target_json: MAX_TARGET_JSON,
            max_filter: MAX_FILTER,
        }
    }
}

/// A request's query parameters and headers, where capture parameters come
/// from (a header wins over the query parameter of the same meaning; the
/// callers decide which pairs those are).
pub struct RequestValues<'a> {
    req: &'a Request,
    query: Vec<(String, String)>,
}

impl<'a> RequestValues<'a> {
    pub fn of(req: &'a Request) -> Result<Self, String> {
        let query = parse_query(req.query.as_deref().unwrap_or(""))?;
        Ok(RequestValues { req, query })
    }

    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Header `name`, trimmed; not UTF-8 is an error naming the header.
    pub fn header(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.req.header(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(|s| Some(s.trim()))
                .map_err(|_| format!("header {name} is not valid UTF-8")),
        }
    }
}

/// Reads the capture parameters from a request, with the default limits.
pub fn capture_params(req: &Request) -> Result<CaptureParams, String> {
    capture_params_limited(req, &Limits::default())
}

/// Reads the capture parameters from a request.
pub fn capture_params_limited(req: &Request, limits: &Limits) -> Result<CaptureParams, String> {
    let values = RequestValues::of(req)?;
    let q = |name: &str| values.query(name);
    let h = |name: &str| values.header(name);

    let container = h("Clustershark-Container")?.or(q("container"));
    let netns = q("netns");
    let (target, described) = match (container, netns) {
        (Some(_), Some(_)) => {
            return Err("give either container or netns, not both".into());
        }
        (None, None) => {
            return Err("no capture target: give container=<JSON> or netns=<inode>".into());
        }
        (Some(json), None) => (
            parse_target_limited(json.as_bytes(), limits.max_target_json)
                .map_err(|e| e.to_string())?,
            true,
        ),
        (None, Some(n)) => (
            Target {
                netns: parse_inode(n)?,
                ..Target::default()
            },
            false,
        ),
    };

    let nifs = match h("Clustershark-Nif")?.or(q("nif")) {
        None => Nifs::Unspecified,
        Some(v) => parse_nifs(v)?,
    };
    let filter = match h("Clustershark-Filter")?.or(q("filter")) {
        None => None,
        Some(f) if f.trim().is_empty() => None,
        Some(f) => Some(check_filter(f, limits.max_filter)?),
    };
    let chaste = req.header("Clustershark-Chaste").is_some() || q("chaste").is_some();
    Ok(CaptureParams {
        target,
        described,
        nifs,
        filter,
        chaste,
    })
}

fn parse_inode(v: &str) -> Result<u64, String> {
    let v = v.trim();
    match v.parse::<u64>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "netns must be a network namespace inode number (decimal, > 0), not '{}'",
            shorten(v)
        )),
    }
}

/// `a/b/c` -> interfaces, duplicates dropped; `any` or `all` anywhere means
/// the target's own interfaces.
pub fn parse_nifs(v: &str) -> Result<Nifs, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(Nifs::Unspecified);
    }
    let names: Vec<&str> = v.split('/').collect();
    if names.iter().any(|n| *n == "any" || *n == "all") {
        return Ok(Nifs::All);
    }
    // A set, not a scan of the list: a head may carry tens of thousands of
    // names, and a quadratic check would let one request stall the loop.
    let mut seen = HashSet::with_capacity(names.len());
    let mut list: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        valid_ifname(n)?;
        if seen.insert(n) {
            list.push(n.to_string());
        }
    }
    Ok(Nifs::List(list))
}

/// Linux's rules for interface names (`dev_valid_name`), plus no leading `-`
/// so that a name can never read as an option of the capture program.
pub fn valid_ifname(n: &str) -> Result<(), String> {
    let why = if n.is_empty() {
        "empty interface name in nif (names are separated by '/')"
    } else if n.len() > MAX_INTERFACE_NAME_LEN {
        "interface name longer than 15 bytes"
    } else if n == "." || n == ".." {
        "'.' and '..' are not interface names"
    } else if n.starts_with('-') {
        "interface name must not start with '-'"
    } else if n
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        "interface name must not contain whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(format!("{why}: '{}'", shorten(n)))
}

pub fn check_filter(f: &str, max: usize) -> Result<String, String> {
    if f.len() > max {
        return Err(format!("capture filter longer than {max} bytes"));
    }
    if f.contains('\0') {
        return Err("capture filter must not contain NUL bytes".into());
    }
    Ok(f.to_string())
}

/// Decodes `application/x-www-form-urlencoded` pairs as Go's `url.ParseQuery`
/// does (`+` is a space); a key without `=` has an empty value.
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in q.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v).map_err(|e| format!("query parameter '{}': {e}", shorten(&k)))?;
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    // The crate passes a `%` without two hex digits through as it is; Go's
    // ParseQuery refuses it, and so do we.
    let b = s.as_bytes();
    let broken = b.iter().enumerate().any(|(i, c)| {
        *c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if broken {
        return Err("invalid percent-encoding".into());
    }
    // `+` is a space in a query; a literal plus arrives as %2B, which is
    // decoded only after this replacement.
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| "not valid UTF-8 after percent-decoding".into())
}

/// Quotes user input in a reason without letting it fill the reason.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request;

    fn req(target: &str, headers: &[(&str, &str)]) -> Request {
        let mut s = format!("GET {target} HTTP/1.1\r\n");
        for (n, v) in headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    fn params(target: &str, headers: &[(&str, &str)]) -> Result<CaptureParams, String> {
        capture_params(&req(target, headers))
    }

    #[test]
    fn bare_netns_names_the_target_inode() {
        let p = params("/capture?netns=4026532601", &[]).unwrap();
        assert_eq!(p.target.netns, 4026532601);
        assert!(!p.described);
        assert_eq!(p.nifs, Nifs::Unspecified);
        assert_eq!((p.filter, p.chaste), (None, false));
    }

    #[test]
    fn netns_must_be_a_positive_decimal() {
        for bad in [
            "0",
            "-1",
            "abc",
            "0x10",
            "",
            "1.5",
            "99999999999999999999999",
        ] {
            let e = params(&format!("/capture?netns={bad}"), &[]).unwrap_err();
            assert!(e.contains("netns"), "{bad}: {e}");
        }
    }

    #[test]
    fn both_or_neither_target_is_refused() {
        let c = "%7B%22netns%22%3A1%7D";
        assert!(params(&format!("/capture?netns=1&container={c}"), &[])
            .unwrap_err()
            .contains("not both"));
        assert!(params("/capture", &[])
            .unwrap_err()
            .contains("no capture target"));
        assert!(params("/capture?nif=eth0", &[])
            .unwrap_err()
            .contains("no capture target"));
    }

    #[test]
    fn container_json_comes_from_query_or_header_and_header_wins() {
        let q = "/capture?container=%7B%22name%22%3A%22q%22%2C%22netns%22%3A7%7D";
        let p = params(q, &[]).unwrap();
        assert_eq!(
            (p.target.name.as_str(), p.target.netns, p.described),
            ("q", 7, true)
        );
        let p = params(
            q,
            &[("clustershark-container", r#"{"name":"h","netns":8}"#)],
        )
        .unwrap();
        assert_eq!((p.target.name.as_str(), p.target.netns), ("h", 8));
    }

    #[test]
    fn unparsable_container_is_refused_with_the_reason() {
        let e = params("/capture?container=%7Bnope", &[]).unwrap_err();
        assert!(e.to_lowercase().contains("container"), "{e}");
    }

    #[test]
    fn nif_splits_on_slash_and_any_or_all_mean_every_interface() {
        let p = params("/capture?netns=1&nif=eth0/lo/eth0", &[]).unwrap();
        assert_eq!(p.nifs, Nifs::List(vec!["eth0".into(), "lo".into()]));
        assert_eq!(
            p.interfaces().unwrap(),
            vec!["eth0".to_string(), "lo".to_string()]
        );
        for all in ["any", "all", "eth0/any"] {
            let p = params(&format!("/capture?netns=1&nif={all}"), &[]).unwrap();
            assert_eq!(p.nifs, Nifs::All);
            // A bare netns has no list of its own: dumpcap's `any`.
            assert!(p.interfaces().unwrap().is_empty());
        }
        // Commas are legal in Linux interface names: no splitting there.
        let p = params("/capture?netns=1&nif=we%2Cird", &[]).unwrap();
        assert_eq!(p.nifs, Nifs::List(vec!["we,ird".into()]));
    }

    #[test]
    fn bad_interface_names_are_refused() {
        for bad in ["-i", "a%20b", "0123456789abcdef", "eth0//lo", "..", "a%09b"] {
            assert!(
                params(&format!("/capture?netns=1&nif={bad}"), &[]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_and_all_mean_the_targets_own_interfaces() {
        let c = r#"{"netns":3,"network-interfaces":["eth0","eth1"]}"#;
        for all in ["any", "all", "lo/all"] {
            let p = params(
                &format!("/capture?nif={all}"),
                &[("Clustershark-Container", c)],
            )
            .unwrap();
            assert_eq!(
                p.interfaces().unwrap(),
                vec!["eth0".to_string(), "eth1".to_string()],
                "{all}"
            );
        }
        // Without a list of the target's own: dumpcap's pseudo-interface.
        let p = params(
            "/capture?nif=any",
            &[("Clustershark-Container", r#"{"netns":3}"#)],
        )
        .unwrap();
        assert!(p.interfaces().unwrap().is_empty());
    }

    #[test]
    fn hundreds_of_interfaces_are_accepted_without_a_count_limit() {
        let names: Vec<String> = (0..3000).map(|i| format!("veth{i}")).collect();
        let joined = names.join("/");
        let p = params(&format!("/capture?netns=1&nif={joined}/{joined}"), &[]).unwrap();
        assert_eq!(
            p.interfaces().unwrap(),
            names,
            "duplicates dropped, order kept"
        );
        let json = serde_json::json!({"netns": 3, "network-interfaces": names}).to_string();
        let p = params(
            "/capture?nif=all",
            &[
                ("Clustershark-Container", &json),
                ("Clustershark-Nif", "all"),
            ],
        )
        .unwrap();
        assert_eq!(p.interfaces().unwrap().len(), 3000);
    }

    #[test]
    fn headers_win_over_query_for_nif_filter_and_container() {
        let p = params(
            "/capture?netns=1&nif=eth0&filter=tcp",
            &[
                ("Clustershark-Nif", "lo"),
                ("CLUSTERSHARK-FILTER", "udp port 53"),
            ],
        )
        .unwrap();
        assert_eq!(p.nifs, Nifs::List(vec!["lo".into()]));
        assert_eq!(p.filter.as_deref(), Some("udp port 53"));
    }

    #[test]
    fn chaste_is_set_by_presence_in_query_or_header() {
        assert!(params("/capture?netns=1&chaste", &[]).unwrap().chaste);
        assert!(params("/capture?netns=1&chaste=0", &[]).unwrap().chaste);
        assert!(
            params("/capture?netns=1", &[("Clustershark-Chaste", "")])
                .unwrap()
                .chaste
        );
        assert!(!params("/capture?netns=1", &[]).unwrap().chaste);
    }

    #[test]
    fn filter_is_decoded_and_bounded() {
        let p = params("/capture?netns=1&filter=icmp+or+tcp%20port%2080", &[]).unwrap();
        assert_eq!(p.filter.as_deref(), Some("icmp or tcp port 80"));
        assert_eq!(
            params("/capture?netns=1&filter=", &[]).unwrap().filter,
            None
        );
        let long = "a".repeat(MAX_FILTER + 1);
        assert!(params(&format!("/capture?netns=1&filter={long}"), &[]).is_err());
        assert!(params("/capture?netns=1&filter=a%00b", &[]).is_err());
    }

    #[test]
    fn target_interfaces_are_used_when_nif_is_not_given() {
        let p = params(
            "/capture",
            &[(
                "Clustershark-Container",
                r#"{"netns":3,"network-interfaces":["eth1","lo","-x"]}"#,
            )],
        )
        .unwrap();
        assert_eq!(
            p.interfaces().unwrap(),
            vec!["eth1".to_string(), "lo".to_string()]
        );
    }

    #[test]
    fn target_listing_only_unusable_interfaces_is_refused_not_widened() {
        let p = params(
            "/capture",
            &[(
                "Clustershark-Container",
                r#"{"netns":3,"network-interfaces":["-x"]}"#,
            )],
        )
        .unwrap();
        assert!(p.interfaces().unwrap_err().contains("nif"));
        let p = params(
            "/capture?nif=lo",
            &[(
                "Clustershark-Container",
                r#"{"netns":3,"network-interfaces":["-x"]}"#,
            )],
        )
        .unwrap();
        assert_eq!(p.interfaces().unwrap(), vec!["lo".to_string()]);
    }

    #[test]
    fn configured_limits_bound_target_json_and_filter() {
        let limits = Limits {
            max_target_json: 20,
            max_filter: 3,
        };
        let r = req("/capture?netns=1&filter=tcpx", &[]);
        assert!(capture_params_limited(&r, &limits)
            .unwrap_err()
            .contains("longer than 3"));
        let r = req(
            "/capture",
            &[(
                "Clustershark-Container",
                r#"{"name":"abcdefghijkl","netns":1}"#,
            )],
        );
        assert!(capture_params_limited(&r, &limits)
            .unwrap_err()
            .contains("more than the 20"));
        let r = req("/capture?netns=1&filter=tcp", &[]);
        assert!(capture_params_limited(&r, &limits).is_ok());
    }

    #[test]
    fn broken_percent_encoding_is_refused() {
        assert!(params("/capture?netns=1&filter=%zz", &[])
            .unwrap_err()
            .contains("filter"));
        assert!(params("/capture?netns=1&filter=%ff", &[]).is_err());
    }

    #[test]
    fn plus_is_a_space_and_an_escaped_plus_stays_a_plus() {
        let q = parse_query("filter=a+b%2Bc%20d&k%2B=%E2%9C%93").unwrap();
        assert_eq!(q[0], ("filter".to_string(), "a b+c d".to_string()));
        assert_eq!(q[1], ("k+".to_string(), "\u{2713}".to_string()));
        for bad in ["f=%", "f=%4", "f=%4g", "f=a%"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_of_repeated_query_parameters_wins() {
        let p = params("/capture?netns=1&nif=eth0&nif=lo", &[]).unwrap();
        assert_eq!(p.nifs, Nifs::List(vec!["eth0".into()]));
    }
}
