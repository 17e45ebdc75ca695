//! The rules of a capture of several targets in one stream, sans-IO: reading
//! a JSON array of targets from `container=` / `Clustershark-Container`,
//! naming each target's interfaces, and shaping the close reason that says
//! what happened to each target. The session machine (`crate::proto::session`) does
//! the resolving, spawning and relaying; the merging of the streams is in
//! [`crate::proto::merge`].
//!
//! Nothing here does I/O, and nothing panics on what a client sends.

use crate::proto::http::Request;
use crate::proto::params::{check_filter, parse_nifs, Limits, Nifs, RequestValues};
use crate::proto::target::{parse_target_limited, Target};
use crate::proto::ws::MAX_REASON;

pub use crate::config::limits::DEFAULT_MAX_TARGETS;
pub use crate::config::limits::MAX_TARGETS_LIMIT;

/// A validated request for several targets, before they are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiParams {
    pub targets: Vec<Target>,
    /// Only [`Nifs::Unspecified`] or [`Nifs::All`]: one list of names cannot
    /// mean the same for every target.
    pub nifs: Nifs,
    pub filter: Option<String>,
    pub chaste: bool,
}

/// Reads a several-target request: `Ok(None)` if the target is not a JSON
/// array (a single-target request, handled as before), else the targets or
/// a reason the user can act on. `max_targets` is `--max-targets`.
pub fn multi_params(
    req: &Request,
    limits: &Limits,
    max_targets: usize,
) -> Result<Option<MultiParams>, String> {
    let values = RequestValues::of(req)?;
    let q = |name: &str| values.query(name);
    let h = |name: &str| values.header(name);
    let Some(json) = h("Clustershark-Container")?.or(q("container")) else {
        return Ok(None);
    };
    if !json.trim_start().starts_with('[') {
        return Ok(None);
    }
    if q("netns").is_some() {
        return Err("give either container or netns, not both".into());
    }
    // The bound on one description bounds the whole array's elements too.
    let max_json = limits.max_target_json.saturating_mul(max_targets.max(1));
    if json.len() > max_json {
        return Err(format!(
            "the list of targets is longer than {max_json} bytes"
        ));
    }
    let items = bounded_array(json, max_targets)?;
    if items.is_empty() {
        return Err("the list of targets is empty".into());
    }
    let mut targets = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // Each element's own text, so that it meets exactly the rules (and
        // bound) of a single target's description.
        let t = parse_target_limited(item.get().as_bytes(), limits.max_target_json)
            .map_err(|e| format!("target {}: {e}", i + 1))?;
        targets.push(t);
    }
    let nifs = match h("Clustershark-Nif")?.or(q("nif")) {
        None => Nifs::Unspecified,
        Some(v) => parse_nifs(v)?,
    };
    if let Nifs::List(_) = nifs {
        return Err("with several targets, nif may only be absent, any or all".into());
    }
    let filter = match h("Clustershark-Filter")?.or(q("filter")) {
        None => None,
        Some(f) if f.trim().is_empty() => None,
        Some(f) => Some(check_filter(f, limits.max_filter)?),
    };
    let chaste = req.header("Clustershark-Chaste").is_some() || q("chaste").is_some();
    Ok(Some(MultiParams {
        targets,
        nifs,
        filter,
        chaste,
    }))
}

/// The elements of the JSON array `json` as their own text, at most `max`
/// of them: reading stops at the element after the `max`-th, so an array of
/// tens of thousands of small objects costs what `max` of them and a scan
/// to the next one cost, not a value for each (a counting visitor over
/// borrowed raw elements: nothing is built for an element but a slice).
fn bounded_array(json: &str, max: usize) -> Result<Vec<&serde_json::value::RawValue>, String> {
    use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    /// The visitor; `too_many` tells the caller why it stopped.
    struct Counting<'c> {
        max: usize,
        too_many: &'c std::cell::Cell<bool>,
    }

    impl<'de> Visitor<'de> for Counting<'_> {
        type Value = Vec<&'de RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of targets")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(self.max.min(DEFAULT_MAX_TARGETS));
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if items.len() == self.max {
                    self.too_many.set(true);
                    return Err(A::Error::custom("too many targets"));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    impl<'de> DeserializeSeed<'de> for Counting<'_> {
        type Value = Vec<&'de RawValue>;

        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    let too_many = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(json);
    let read = Counting {
        max,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|items| de.end().map(|()| items));
    match read {
        Ok(items) => Ok(items),
        Err(_) if too_many.get() => Err(format!(
            "more than {max} targets in one capture; at most {max} are allowed"
        )),
        Err(e) => Err(format!(
            "the list of targets is not a JSON array of objects: {e}"
        )),
    }
}

/// The names that prefix each target's interfaces: the target's name, or
/// `netns-<inode>` for a bare namespace; a name taken by an earlier target
/// gets `#2`, `#3`, ... so that every prefix is unique. `/` in a name would
/// make `<name>/<interface>` ambiguous and becomes `_`.
pub fn target_labels(targets: &[Target]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::with_capacity(targets.len());
    for t in targets {
        let base = if t.name.is_empty() {
            format!("netns-{}", t.netns)
        } else {
            t.name.replace('/', "_")
        };
        let mut label = base.clone();
        let mut n = 2;
        while labels.contains(&label) {
            label = format!("{base}#{n}");
            n += 1;
        }
        labels.push(label);
    }
    labels
}

/// The close reason naming what happened to each target (`label: what`,
/// joined by `; `), within [`MAX_REASON`] bytes. When that does not fit,
/// shorter forms are tried, each still naming every target: an unnamed
/// target by its inode alone (`netns-4026532001` -> `4026532001`), and
/// targets that ended alike grouped (`ended: a, b, 4026532001`); then each
/// outcome cut to [`OUTCOME_SHARE`] bytes and each name to an equal share
/// of the rest (an inode keeps its last digits, where inodes differ); only
/// when not even that fits are the last targets summed up as `+N more`.
pub fn outcomes_reason(outcomes: &[(&str, &str)]) -> String {
    let fits = |s: &str| s.len() <= MAX_REASON;
    let full = outcomes
        .iter()
        .map(|(label, what)| format!("{label}: {what}"))
        .collect::<Vec<_>>()
        .join("; ");
    if fits(&full) || outcomes.is_empty() {
        return crate::proto::ws::shape_reason(&full).to_string();
    }
    // Outcomes in order of first appearance, each with its targets.
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (label, what) in outcomes {
        let short = short_label(label);
        match groups.iter_mut().find(|(w, _)| w == what) {
            Some((_, labels)) => labels.push(short),
            None => groups.push((what, vec![short])),
        }
    }
    let render = |what_max: usize, label_max: usize| {
        groups
            .iter()
            .map(|(what, labels)| {
                let labels: Vec<&str> = labels.iter().map(|l| cut_label(l, label_max)).collect();
                format!("{}: {}", cut_at(what, what_max), labels.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let grouped = render(usize::MAX, usize::MAX);
    if fits(&grouped) {
        return grouped;
    }
    // Equal shares: what the outcomes (cut) and separators leave, per name.
    let outcome_bytes: usize = groups
        .iter()
        .map(|(w, _)| cut_at(w, OUTCOME_SHARE).len() + ": ".len())
        .sum::<usize>()
        + "; ".len() * (groups.len() - 1)
        + ", ".len() * (outcomes.len() - groups.len());
    let share = MAX_REASON.saturating_sub(outcome_bytes) / outcomes.len();
    if share >= MIN_LABEL_SHARE {
        let cut = render(OUTCOME_SHARE, share);
        if fits(&cut) {
            return cut;
        }
    }
    // Too many targets to name in a close frame: as many as fit, then a count
    // (the log line has them all).
    let cut = render(OUTCOME_SHARE, usize::MAX);
    let mut names = 0;
    let mut end = 0;
    for (i, c) in cut.char_indices() {
        if c == ',' || c == ';' {
            names += 1;
        }
        let rest = outcomes.len().saturating_sub(names);
        if i + format!(" +{rest} more").len() > MAX_REASON {
            break;
        }
        if c == ',' || c == ';' {
            end = i;
        }
    }
    let named = cut[..end].matches([',', ';']).count();
    let more = outcomes.len().saturating_sub(named);
    format!("{} +{more} more", &cut[..end])
}

/// Longest outcome text in a shortened reason.
pub const OUTCOME_SHARE: usize = 24;
/// Fewest bytes of a name still worth showing: below it the reason counts
/// the targets it cannot name instead.
const MIN_LABEL_SHARE: usize = 4;

/// A target's name in a shortened reason: an unnamed target's inode alone.
fn short_label(label: &str) -> &str {
    match label.strip_prefix("netns-") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => label,
    }
}

/// `label` within `max` bytes, its end kept: inodes of one host differ in
/// their last digits, and names of one topology in their numbers at the end
/// (`router1`, `router2`) more often than in their beginnings.
fn cut_label(label: &str, max: usize) -> &str {
    if label.len() <= max {
        return label;
    }
    let mut start = label.len() - max;
    while !label.is_char_boundary(start) {
        start += 1;
    }
    &label[start..]
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut_at(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request;

    fn req(query: &str, headers: &[(&str, &str)]) -> Request {
        let mut head = format!("GET /capture?{query} HTTP/1.1\r\nHost: x\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        parse_request(head.as_bytes()).unwrap().unwrap()
    }

    fn params(query: &str, headers: &[(&str, &str)]) -> Result<Option<MultiParams>, String> {
        multi_params(
            &req(query, headers),
            &Limits::default(),
            DEFAULT_MAX_TARGETS,
        )
    }

    #[test]
    fn a_single_target_is_left_to_the_single_path() {
        assert_eq!(params("container=%7B%22netns%22%3A1%7D", &[]), Ok(None));
        assert_eq!(params("netns=5", &[]), Ok(None));
    }

    #[test]
    fn an_array_in_the_header_gives_every_target_in_order() {
        let p = params(
            "nif=any&filter=tcp&chaste",
            &[(
                "Clustershark-Container",
                r#"[{"netns":11,"name":"a"},{"netns":12,"name":"b","type":"docker"}]"#,
            )],
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.targets.len(), 2);
        assert_eq!((p.targets[0].netns, p.targets[0].name.as_str()), (11, "a"));
        assert_eq!(p.targets[1].kind, "docker");
        assert_eq!(p.nifs, Nifs::All);
        assert_eq!(p.filter.as_deref(), Some("tcp"));
        assert!(p.chaste);
    }

    #[test]
    fn an_interface_list_is_refused_with_several_targets() {
        let e = params("container=%5B%7B%22netns%22%3A1%7D%5D&nif=eth0", &[]).unwrap_err();
        assert!(e.contains("nif may only be"), "{e}");
        assert!(params("container=%5B%7B%22netns%22%3A1%7D%5D&nif=all", &[]).is_ok());
    }

    #[test]
    fn bad_arrays_are_refused_with_a_reason() {
        let c = |json: &str| params("", &[("Clustershark-Container", json)]);
        assert!(c("[]").unwrap_err().contains("empty"));
        assert!(c("[1]").unwrap_err().contains("target 1"));
        assert!(c("[{\"netns\":1},").unwrap_err().contains("JSON array"));
        let many = format!("[{}]", vec!["{\"netns\":1}"; 17].join(","));
        assert!(c(&many).unwrap_err().contains("at most 16"));
        assert!(c("[{\"netns\":1}] x").unwrap_err().contains("JSON array"));
        let e = params("container=%5B%5D&netns=1", &[]).unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn a_long_array_is_refused_after_max_targets_elements_without_reading_on() {
        // Past the 17th element the text is not even JSON: reading stopped.
        let mut json = format!("[{}", vec!["{\"netns\":1}"; 17].join(","));
        json.push_str(", this is never read ]]]");
        assert!(
            bounded_array(&json, 16)
                .unwrap_err()
                .contains("more than 16 targets"),
            "{json}"
        );
        // Up to the bound the elements come back as their own text.
        let items = bounded_array(r#"[ {"netns":1} , {"name":"b"} ]"#, 2).unwrap();
        let texts: Vec<&str> = items.iter().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"netns":1}"#, r#"{"name":"b"}"#]);
        assert!(bounded_array("{}", 2).unwrap_err().contains("JSON array"));
    }

    #[test]
    fn labels_are_names_or_netns_and_unique() {
        let t = |name: &str, netns| Target {
            name: name.into(),
            netns,
            ..Target::default()
        };
        let l = target_labels(&[t("a", 1), t("", 42), t("a", 3), t("x/y", 4), t("a", 5)]);
        assert_eq!(l, ["a", "netns-42", "a#2", "x_y", "a#3"]);
    }

    #[test]
    fn outcome_reasons_fit_and_name_every_target() {
        assert_eq!(
            outcomes_reason(&[("a", "ended"), ("b", "killed by SIGKILL")]),
            "a: ended; b: killed by SIGKILL"
        );
        let long = "é".repeat(80);
        let r = outcomes_reason(&[("first", &long), ("second", &long), ("third", "ok")]);
        assert!(r.len() <= MAX_REASON, "{}", r.len());
        for label in ["first", "second", "third"] {
            assert!(r.contains(label), "{r}");
        }
    }

    #[test]
    fn sixteen_unnamed_targets_are_each_named_by_their_inode() {
        let labels: Vec<String> = (0..16).map(|i| format!("netns-40265320{i:02}")).collect();
        let outcomes: Vec<(&str, &str)> = labels.iter().map(|l| (l.as_str(), "ended")).collect();
        let r = outcomes_reason(&outcomes);
        assert!(r.len() <= MAX_REASON, "{} {r}", r.len());
        assert!(!r.contains("netns; netns"), "{r}");
        // Every target is told apart by the digits it keeps.
        for i in 0..16 {
            assert!(r.contains(&format!("{i:02}")), "{i}: {r}");
        }
        assert!(r.starts_with("ended: "), "{r}");
        // Named targets that ended alike are grouped and named whole.
        let names: Vec<String> = (1..=16).map(|i| format!("r{i}")).collect();
        let how = |n: &str| {
            if n == "r3" {
                "killed by SIGKILL"
            } else {
                "ended"
            }
        };
        let outcomes: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), how(n))).collect();
        let r = outcomes_reason(&outcomes);
        assert!(r.len() <= MAX_REASON, "{r}");
        for n in &names {
            assert!(r.split([' ', ',', ';']).any(|w| w == n), "{n}: {r}");
        }
        assert!(r.contains("killed by SIGKILL: r3"), "{r}");
        // Longer names keep their ends, where they differ.
        let names: Vec<String> = (1..=16).map(|i| format!("router{i}")).collect();
        let outcomes: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "ended")).collect();
        let r = outcomes_reason(&outcomes);
        assert!(r.len() <= MAX_REASON, "{r}");
        assert!(r.contains("er16") && r.contains("ter9"), "{r}");
        // Far too many to name: as many as fit, then a count, within bounds.
        let many: Vec<String> = (0..126).map(|i| format!("netns-40265{i:05}")).collect();
        let outcomes: Vec<(&str, &str)> = many.iter().map(|l| (l.as_str(), "ended")).collect();
        let r = outcomes_reason(&outcomes);
        assert!(r.len() <= MAX_REASON && r.ends_with(" more"), "{r}");
    }
}
