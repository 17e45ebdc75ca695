//! Capture parameter parsing: the query string, the `Clustershark-*`
//! headers and the container description (target JSON), as `capture_params`
//! reads them from a request head.
//!
//! Input layout: one mode byte. Bit 7 set: the rest is a container
//! description for `target::parse_target` alone. Otherwise bits 0 to 3 say
//! which of the headers `Clustershark-Container`, `-Nif`, `-Filter`,
//! `-Chaste` are present, and the rest is split at 0xFF bytes into the query
//! string and those header values, in that order.
//!
//! Invariants: no panic; accepted parameters keep every promise of the
//! contract (valid, unique interface names, bounded filter without NUL, the
//! target that was asked for); refusals have a reason that fits a close
//! frame; a target survives a JSON round trip; `serde` deserialization and
//! `parse_target` agree; the SHB document cannot be given extra lines.

#![no_main]

use fuzz_support::{check_close_frame, check_shaped};
use libfuzzer_sys::fuzz_target;
use packetflix::proto::http::Request;
use packetflix::proto::params::{
    capture_params, parse_query, valid_ifname, CaptureParams, Nifs, MAX_FILTER,
};
use packetflix::proto::pcapng::{target_document, TargetInfo, TARGET_MARKER};
use packetflix::proto::target::{
    parse_target, starttime_from_stat, Target, MAX_INTERFACE_NAME_LEN, MAX_TARGET_JSON,
    MAX_TEXT_LEN,
};
use packetflix::proto::ws;

const HEADERS: [&str; 4] = [
    "Clustershark-Container",
    "Clustershark-Nif",
    "Clustershark-Filter",
    "Clustershark-Chaste",
];

fn check_target(t: &Target) {
    for s in [&t.name, &t.kind, &t.prefix, &t.node_name] {
        assert!(s.len() <= MAX_TEXT_LEN);
    }
    if let Some(c) = &t.cluster {
        assert!(c.uid.len() <= MAX_TEXT_LEN);
    }
    for n in &t.network_interfaces {
        assert!(!n.is_empty() && n.len() <= MAX_INTERFACE_NAME_LEN, "{n:?}");
    }
    // What we accepted, written back out, reads the same.
    let json = serde_json::to_vec(t).expect("a target always serializes");
    if json.len() <= MAX_TARGET_JSON {
        assert_eq!(parse_target(&json).as_ref(), Ok(t), "round trip of {t:?}");
    }
}

fn target_json(json: &[u8]) {
    let parsed = parse_target(json);
    let _ = starttime_from_stat(json);
    match &parsed {
        Ok(t) => check_target(t),
        Err(e) => {
            let reason = format!("capture refused: {e}");
            check_close_frame(&ws::close_frame(ws::POLICY_VIOLATION, &reason));
        }
    }
    // Deserializing through serde applies the same checks (but not the
    // overall size limit).
    if json.len() <= MAX_TARGET_JSON {
        let via_serde = serde_json::from_slice::<Target>(json);
        match (&parsed, &via_serde) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!("parse_target {parsed:?} but serde {via_serde:?}"),
        }
    }
}

fn check_params(req: &Request, p: &CaptureParams) {
    let container = req.header("Clustershark-Container").is_some()
        || parse_query(req.query.as_deref().unwrap_or(""))
            .map(|q| q.iter().any(|(k, _)| k == "container"))
            .unwrap_or(false);
    assert_eq!(p.described, container, "described but no container given");
    if !p.described {
        assert!(p.target.netns > 0, "bare netns of 0 accepted");
        assert_eq!(
            Target {
                netns: p.target.netns,
                ..Target::default()
            },
            p.target
        );
    }
    check_target(&p.target);
    match &p.nifs {
        Nifs::List(l) => {
            assert!(!l.is_empty());
            for (i, n) in l.iter().enumerate() {
                assert!(valid_ifname(n).is_ok(), "accepted interface {n:?}");
                assert!(!l[..i].contains(n), "duplicate interface {n:?}");
            }
            assert_eq!(p.interfaces().as_ref(), Ok(l));
        }
        // `any`/`all` mean the target's own list, as if nif were not given.
        Nifs::All | Nifs::Unspecified => {
            let mut unsaid = p.clone();
            unsaid.nifs = Nifs::Unspecified;
            assert_eq!(p.interfaces(), unsaid.interfaces());
        }
    }
    let interfaces = match p.interfaces() {
        Ok(i) => i,
        Err(reason) => {
            // Only a target whose own list is all unusable; never widened.
            assert!(!matches!(p.nifs, Nifs::List(_)) && !p.target.network_interfaces.is_empty());
            let reason = format!("capture refused: {reason}");
            check_close_frame(&ws::close_frame(ws::POLICY_VIOLATION, &reason));
            Vec::new()
        }
    };
    for n in interfaces {
        // Never an option of the capture program, never more than one argv
        // element's worth of name.
        assert!(valid_ifname(&n).is_ok() && !n.starts_with('-'), "{n:?}");
    }
    if let Some(f) = &p.filter {
        assert!(f.len() <= MAX_FILTER && !f.contains('\0') && !f.trim().is_empty());
    }
    let t = &p.target;
    let doc = target_document(&TargetInfo {
        container_name: &t.name,
        container_type: &t.kind,
        node_name: &t.node_name,
        cluster_uid: t.cluster.as_ref().map(|c| c.uid.as_str()),
        capture_filter: p.filter.as_deref(),
        no_promiscuous: p.chaste,
    });
    assert!(doc.starts_with(TARGET_MARKER));
    assert_eq!(doc.matches(TARGET_MARKER).count(), 1);
    let lines = 2
        + 3
        + if t.cluster.is_some() { 2 } else { 0 }
        + usize::from(p.filter.is_some())
        + usize::from(p.chaste);
    assert_eq!(doc.lines().count(), lines, "document lines: {doc:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 != 0 {
        return target_json(rest);
    }
    let mut parts = rest.split(|&b| b == 0xFF);
    let query = parts
        .next()
        .map(|q| String::from_utf8_lossy(q).into_owned())
        .filter(|q| !q.is_empty());
    let mut headers = Vec::new();
    for (i, name) in HEADERS.iter().enumerate() {
        let value = parts.next().unwrap_or_default();
        if mode & (1 << i) != 0 {
            headers.push((name.to_string(), value.to_vec()));
        }
    }
    let req = Request {
        method: "GET".into(),
        path: "/capture".into(),
        query,
        minor_version: 1,
        headers,
        head_len: 0,
    };
    match capture_params(&req) {
        Ok(p) => check_params(&req, &p),
        Err(reason) => {
            assert!(!reason.is_empty());
            let reason = format!("capture refused: {reason}");
            check_shaped(&reason, ws::shape_reason(&reason));
            check_close_frame(&ws::close_frame(ws::POLICY_VIOLATION, &reason));
        }
    }
});
