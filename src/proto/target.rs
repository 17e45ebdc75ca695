//! The capture target model shared with the GhostWire discovery service: one
//! element of the `containers` list GhostWire serves at `/mobyshark`, which
//! clients also send us as the `container` parameter (see API.md, "Capture
//! parameters" and "Resolving the target").
//!
//! Everything here is pure parsing and deciding, with one exception kept at
//! the bottom of the file: [`process_starttime`] reads `/proc/<pid>/stat`.
//! This module never touches sockets, namespaces or child processes, and it
//! never panics on what a client or GhostWire sends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

pub use crate::config::limits::MAX_TARGET_JSON;

/// Longest text field (`name`, `prefix`, `type`, `node-name`, `cluster.uid`).
/// Bind-mounted namespaces are named by their path, so the longest legitimate
/// name is a path: Linux `PATH_MAX`, 4096 bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// Longest network interface name: Linux `IFNAMSIZ` (16) minus its NUL.
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// The field of `/proc/<pid>/stat` that holds the process start time in clock
/// ticks since boot, counted from 1 as in proc(5).
const STAT_STARTTIME_FIELD: usize = 22;

/// The first field after the parenthesised command name (`state`), as counted
/// in proc(5).
const STAT_FIRST_FIELD_AFTER_COMM: usize = 3;

/// A capture target: a container, pod, process or bind-mounted network
/// namespace, as GhostWire describes it.
///
/// Deserializing goes through the same checks as [`parse_target`] (missing
/// and `null` fields default, wrong types and out-of-range numbers are
/// rejected naming the field), except for the overall size limit, which only
/// [`parse_target`] applies.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "Value")]
pub struct Target {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Inode number of the network namespace; 0 means unknown.
    pub netns: u64,
    /// A process inside the namespace; 0 means none was given.
    pub pid: u32,
    /// Start time of `pid` in clock ticks since boot; 0 means none was given.
    pub starttime: u64,
    pub prefix: String,
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<String>,
    #[serde(rename = "node-name", skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// The Kubernetes cluster a target belongs to, if GhostWire knows it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Cluster {
    pub uid: String,
}

/// Why a container description was refused. Its `Display` is meant for the
/// user (it ends up in a websocket close reason).
#[derive(Clone, Debug, PartialEq)]
pub enum TargetError {
    /// More than [`MAX_TARGET_JSON`] bytes.
    TooLarge { len: usize, max: usize },
    /// Not JSON at all; carries the JSON parser's message.
    Syntax(String),
    /// Valid JSON, but not an object.
    NotAnObject { found: &'static str },
    /// A field has the wrong type or an unacceptable value.
    Field { field: String, problem: String },
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid container description: ")?;
        match self {
            TargetError::TooLarge { len, max } => {
                write!(f, "it is {len} bytes long, more than the {max} allowed")
            }
            TargetError::Syntax(why) => write!(f, "not valid JSON: {why}"),
            TargetError::NotAnObject { found } => {
                write!(f, "expected a JSON object, found {found}")
            }
            TargetError::Field { field, problem } => write!(f, "field \"{field}\": {problem}"),
        }
    }
}

impl std::error::Error for TargetError {}

/// Parses a container description as a client sends it (the `container`
/// parameter) or as GhostWire lists it. Unknown fields are ignored; missing
/// and `null` fields take their default (zero, empty, none).
pub fn parse_target(json: &[u8]) -> Result<Target, TargetError> {
    parse_target_limited(json, MAX_TARGET_JSON)
}

/// [`parse_target`] with a size limit other than [`MAX_TARGET_JSON`].
pub fn parse_target_limited(json: &[u8], max: usize) -> Result<Target, TargetError> {
    if json.len() > max {
        return Err(TargetError::TooLarge {
            len: json.len(),
            max,
        });
    }
    let value: Value =
        serde_json::from_slice(json).map_err(|e| TargetError::Syntax(e.to_string()))?;
    Target::try_from(value)
}

impl TryFrom<Value> for Target {
    type Error = TargetError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let Value::Object(obj) = value else {
            return Err(TargetError::NotAnObject {
                found: kind_of(&value),
            });
        };
        Ok(Target {
            name: text_field(&obj, "name")?,
            kind: text_field(&obj, "type")?,
            netns: u64_field(&obj, "netns")?,
            pid: u32_field(&obj, "pid")?,
            starttime: u64_field(&obj, "starttime")?,
            prefix: text_field(&obj, "prefix")?,
            network_interfaces: interfaces_field(&obj, "network-interfaces")?,
            node_name: text_field(&obj, "node-name")?,
            cluster: cluster_field(&obj, "cluster")?,
        })
    }
}

/// A present, non-null field: `null` means the same as absent, because some
/// producers write `null` for "not known".
fn present<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn field_error(field: &str, problem: impl Into<String>) -> TargetError {
    TargetError::Field {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// How a JSON value looks to a user who sent the wrong one.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() => "an unsigned integer",
        Value::Number(n) if n.is_i64() => "a negative number",
        Value::Number(_) => "a fraction or a number too large for 64 bits",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn u64_field(obj: &Map<String, Value>, key: &str) -> Result<u64, TargetError> {
    match present(obj, key) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            field_error(
                key,
                format!("expected an unsigned integer, found {}", kind_of(v)),
            )
        }),
    }
}

fn u32_field(obj: &Map<String, Value>, key: &str) -> Result<u32, TargetError> {
    let wide = u64_field(obj, key)?;
    u32::try_from(wide).map_err(|_| {
        field_error(
            key,
            format!(
                "expected an unsigned integer up to {}, found {wide}",
                u32::MAX
            ),
        )
    })
}

fn checked_text(field: &str, value: &Value) -> Result<String, TargetError> {
    let Value::String(s) = value else {
        return Err(field_error(
            field,
            format!("expected a string, found {}", kind_of(value)),
        ));
    };
    if s.len() > MAX_TEXT_LEN {
        return Err(field_error(
            field,
            format!(
                "{} bytes long, more than the {MAX_TEXT_LEN} allowed",
                s.len()
            ),
        ));
    }
    Ok(s.clone())
}

fn text_field(obj: &Map<String, Value>, key: &str) -> Result<String, TargetError> {
    present(obj, key).map_or(Ok(String::new()), |v| checked_text(key, v))
}

/// The kernel's own rule for interface names (`dev_valid_name` in
/// net/core/dev.c): no legitimate name fails it, and anything that fails it
/// cannot be captured from anyway.
fn is_valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME_LEN
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| {
            matches!(
                b,
                b'/' | b':' | b'\0' | b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'
            )
        })
}

fn interfaces_field(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, TargetError> {
    let Some(value) = present(obj, key) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(field_error(
            key,
            format!("expected an array of strings, found {}", kind_of(value)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}]");
            let name = checked_text(&at, item)?;
            if is_valid_interface_name(&name) {
                Ok(name)
            } else {
                Err(field_error(
                    &at,
                    format!(
                        "{name:?} is not a network interface name (1 to \
                         {MAX_INTERFACE_NAME_LEN} bytes, no \"/\", \":\" or white space)"
                    ),
                ))
            }
        })
        .collect()
}

fn cluster_field(obj: &Map<String, Value>, key: &str) -> Result<Option<Cluster>, TargetError> {
    let Some(value) = present(obj, key) else {
        return Ok(None);
    };
    let Value::Object(cluster) = value else {
        return Err(field_error(
            key,
            format!("expected an object, found {}", kind_of(value)),
        ));
    };
    let uid = match present(cluster, "uid") {
        None => String::new(),
        Some(v) => checked_text(&format!("{key}.uid"), v)?,
    };
    Ok(Some(Cluster { uid }))
}

/// The process start time (field 22, clock ticks since boot) from the
/// contents of `/proc/<pid>/stat`. The command name in field 2 may contain
/// spaces and parentheses, but it is the only field that can contain `)`, so
/// the fields after it start after the last `)` (the rule proc(5) implies and
/// procfs uses).
pub fn starttime_from_stat(stat: &[u8]) -> Option<u64> {
    let comm_end = stat.iter().rposition(|&b| b == b')')?;
    let field = stat[comm_end + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|token| !token.is_empty())
        .nth(STAT_STARTTIME_FIELD - STAT_FIRST_FIELD_AFTER_COMM)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Whether a target's process reference shows its `netns` to be stale
/// (API.md, "Resolving the target", step 1). Only a reference with both `pid`
/// and `starttime` set is checked; without one there is nothing to check and
/// the answer is "not stale" (a `netns` of 0 is unknown either way, which is
/// the caller's concern). A process that cannot be read, or one whose start
/// time differs (the pid was reused), makes the reference stale.
pub fn is_stale(target: &Target, read_starttime: impl Fn(u32) -> Option<u64>) -> bool {
    if target.pid == 0 || target.starttime == 0 {
        return false;
    }
    read_starttime(target.pid) != Some(target.starttime)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ghostwire-mobyshark.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn field_problem(json: &str) -> (String, String) {
        match parse_target(json.as_bytes()) {
            Err(TargetError::Field { field, problem }) => (field, problem),
            other => panic!("expected a field error for {json}, got {other:?}"),
        }
    }

    #[test]
    fn every_fixture_entry_parses_with_its_values() {
        let fixture = fixture();
        let entries = fixture["containers"].as_array().unwrap();
        let targets: Vec<Target> = entries
            .iter()
            .map(|e| parse_target(e.to_string().as_bytes()).unwrap())
            .collect();
        assert_eq!(targets.len(), 5);
        assert_eq!(
            targets[3],
            Target {
                name: "mosquitto".into(),
                kind: "docker".into(),
                netns: 4026532999,
                pid: 5151,
                starttime: 654321,
                prefix: "dind-1".into(),
                network_interfaces: vec!["eth0".into(), "eth1".into(), "lo".into()],
                node_name: String::new(),
                cluster: None,
            }
        );
        assert_eq!(targets[0].name, "/run/netns/blue");
        assert_eq!(targets[0].kind, "bindmount");
        assert_eq!(targets[0].pid, 0);
        assert_eq!(targets[4].name, "kube-system/coredns-5d78c9869d-7xkqp");
    }

    #[test]
    fn serialized_target_uses_ghostwire_field_names_and_round_trips() {
        let target = Target {
            name: "web".into(),
            kind: "pod".into(),
            netns: 4026533100,
            pid: 6060,
            starttime: 777777,
            prefix: "p".into(),
            network_interfaces: vec!["eth0".into()],
            node_name: "node-a".into(),
            cluster: Some(Cluster { uid: "c-1".into() }),
        };
        let json = serde_json::to_value(&target).unwrap();
        assert_eq!(json["type"], "pod");
        assert_eq!(json["network-interfaces"][0], "eth0");
        assert_eq!(json["node-name"], "node-a");
        assert_eq!(json["cluster"]["uid"], "c-1");
        assert_eq!(parse_target(json.to_string().as_bytes()).unwrap(), target);
        // The derived Deserialize takes the same path.
        assert_eq!(serde_json::from_value::<Target>(json).unwrap(), target);
    }

    #[test]
    fn serialized_target_omits_unknown_node_and_cluster() {
        let json = serde_json::to_value(Target::default()).unwrap();
        let obj = json.as_object().unwrap();
        assert!(!obj.contains_key("node-name"));
        assert!(!obj.contains_key("cluster"));
        assert_eq!(obj["netns"], 0);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let t = parse_target(br#"{"netns":5,"labels":{"a":[1,2]},"x-new":null}"#).unwrap();
        assert_eq!(
            t,
            Target {
                netns: 5,
                ..Target::default()
            }
        );
    }

    #[test]
    fn missing_and_null_fields_take_defaults() {
        assert_eq!(parse_target(b"{}").unwrap(), Target::default());
        let all_null = br#"{"name":null,"type":null,"netns":null,"pid":null,"starttime":null,
            "prefix":null,"network-interfaces":null,"node-name":null,"cluster":null}"#;
        assert_eq!(parse_target(all_null).unwrap(), Target::default());
    }

    #[test]
    fn cluster_without_uid_is_present_but_empty() {
        let t = parse_target(br#"{"cluster":{"uid":null}}"#).unwrap();
        assert_eq!(t.cluster, Some(Cluster::default()));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let (field, problem) = field_problem(r#"{"netns":"4026532999"}"#);
        assert_eq!(field, "netns");
        assert_eq!(problem, "expected an unsigned integer, found a string");
        let (field, problem) = field_problem(r#"{"name":42}"#);
        assert_eq!(
            (field.as_str(), problem.as_str()),
            ("name", "expected a string, found an unsigned integer")
        );
        let (field, _) = field_problem(r#"{"network-interfaces":"eth0"}"#);
        assert_eq!(field, "network-interfaces");
        let (field, _) = field_problem(r#"{"network-interfaces":["eth0",7]}"#);
        assert_eq!(field, "network-interfaces[1]");
        let (field, _) = field_problem(r#"{"cluster":"abc"}"#);
        assert_eq!(field, "cluster");
        let (field, _) = field_problem(r#"{"cluster":{"uid":1}}"#);
        assert_eq!(field, "cluster.uid");
        let (field, _) = field_problem(r#"{"pid":true}"#);
        assert_eq!(field, "pid");
    }

    #[test]
    fn error_message_tells_the_user_what_to_fix() {
        let err = parse_target(br#"{"netns":"x"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid container description: field \"netns\": expected an unsigned integer, found a string"
        );
    }

    #[test]
    fn negative_fractional_and_overflowing_numbers_are_rejected() {
        assert_eq!(
            field_problem(r#"{"netns":-1}"#).1,
            "expected an unsigned integer, found a negative number"
        );
        assert_eq!(field_problem(r#"{"starttime":1.5}"#).0, "starttime");
        assert_eq!(
            field_problem(r#"{"netns":18446744073709551616}"#).0,
            "netns"
        );
        assert_eq!(
            field_problem(r#"{"pid":4294967296}"#).1,
            "expected an unsigned integer up to 4294967295, found 4294967296"
        );
        let t = parse_target(br#"{"pid":4294967295,"netns":18446744073709551615}"#).unwrap();
        assert_eq!((t.pid, t.netns), (u32::MAX, u64::MAX));
    }

    #[test]
    fn invalid_json_and_non_objects_are_refused() {
        assert!(matches!(
            parse_target(b"{\"netns\":"),
            Err(TargetError::Syntax(_))
        ));
        assert!(matches!(parse_target(b""), Err(TargetError::Syntax(_))));
        assert!(matches!(parse_target(b"{} x"), Err(TargetError::Syntax(_))));
        assert_eq!(
            parse_target(b"[1]"),
            Err(TargetError::NotAnObject { found: "an array" })
        );
        assert!(parse_target(b"null")
            .unwrap_err()
            .to_string()
            .contains("expected a JSON object, found null"));
    }

    #[test]
    fn oversized_description_is_refused_before_parsing() {
        let mut json = br#"{"name":""#.to_vec();
        json.resize(MAX_TARGET_JSON + 1 - 2, b'a');
        json.extend_from_slice(br#""}"#);
        assert_eq!(json.len(), MAX_TARGET_JSON + 1);
        assert_eq!(
            parse_target(&json),
            Err(TargetError::TooLarge {
                len: MAX_TARGET_JSON + 1,
                max: MAX_TARGET_JSON
            })
        );
    }

    #[test]
    fn text_fields_longer_than_a_path_are_refused() {
        let ok = format!(r#"{{"name":"{}"}}"#, "n".repeat(MAX_TEXT_LEN));
        assert_eq!(
            parse_target(ok.as_bytes()).unwrap().name.len(),
            MAX_TEXT_LEN
        );
        let long = format!(r#"{{"prefix":"{}"}}"#, "p".repeat(MAX_TEXT_LEN + 1));
        assert_eq!(field_problem(&long).0, "prefix");
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        let t = parse_target(br#"{"network-interfaces":["veth3a9f21c0123","eth,0"]}"#).unwrap();
        assert_eq!(t.network_interfaces, ["veth3a9f21c0123", "eth,0"]);
        for bad in [
            "",
            "veth3a9f21c01234",
            "a/b",
            "eth0:1",
            "a b",
            "..",
            "a\\u0000",
        ] {
            let json = format!(r#"{{"network-interfaces":["lo","{bad}"]}}"#);
            assert_eq!(field_problem(&json).0, "network-interfaces[1]", "{bad:?}");
        }
    }

    fn stat_line(comm: &str, starttime: u64) -> Vec<u8> {
        // Fields 3..=21, then starttime (22), then a few more, as the kernel writes them.
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 100 0 0 0 3 1 0 0 20 0 1 0 {starttime} \
             12345 678 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn starttime_is_field_22_even_with_tricky_command_names() {
        for comm in [
            "mosquitto",
            "a) (b c",
            "x) 1 2 3 4 5 6 7 8 9 10",
            "(",
            ")",
            "",
            "a b",
        ] {
            assert_eq!(
                starttime_from_stat(&stat_line(comm, 987654)),
                Some(987654),
                "{comm:?}"
            );
        }
    }

    #[test]
    fn malformed_stat_gives_no_starttime() {
        assert_eq!(starttime_from_stat(b""), None);
        assert_eq!(starttime_from_stat(b"4242 mosquitto S 1 2 3"), None);
        assert_eq!(starttime_from_stat(b"4242 (short) S 1 2 3\n"), None);
        let negative = String::from_utf8(stat_line("x", 7))
            .unwrap()
            .replace(" 7 12345", " -7 12345");
        assert_eq!(starttime_from_stat(negative.as_bytes()), None);
    }

    pub(crate) fn referenced(pid: u32, starttime: u64) -> Target {
        Target {
            netns: 4026532777,
            pid,
            starttime,
            ..Target::default()
        }
    }

    #[test]
    fn reference_without_pid_or_starttime_is_never_stale() {
        let unreadable = |_| None;
        assert!(!is_stale(&referenced(0, 0), unreadable));
        assert!(!is_stale(&referenced(4242, 0), unreadable));
        assert!(!is_stale(&referenced(0, 123456), unreadable));
    }

    #[test]
    fn matching_starttime_is_not_stale() {
        assert!(!is_stale(&referenced(4242, 123456), |pid| {
            (pid == 4242).then_some(123456)
        }));
    }

    #[test]
    fn reused_pid_with_other_starttime_is_stale() {
        assert!(is_stale(&referenced(4242, 123456), |_| Some(123457)));
    }

    #[test]
    fn unreadable_process_is_stale() {
        assert!(is_stale(&referenced(4242, 123456), |_| None));
    }
}
