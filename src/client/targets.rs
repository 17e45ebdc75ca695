//! GhostWire's target list as the client shows and searches it.
//!
//! The discovery service answers `GET /mobyshark` with
//! `{"containers":[<target>, …], …}`. A target found by name is sent to the
//! service exactly as GhostWire listed it (unknown fields included), so the
//! raw JSON value is kept next to the few fields shown in the table. No I/O
//! here.

use serde::Deserialize;
use serde_json::Value;

use crate::proto::target::Target;

/// One capture target: GhostWire's description as listed, and its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub raw: Value,
    pub target: Target,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    containers: Vec<Value>,
}

/// Parses a `/mobyshark` answer into its targets, in GhostWire's order. The
/// fields are read by the service's own target model, with its defaults.
pub fn parse_listing(body: &[u8]) -> Result<Vec<Listed>, String> {
    let listing: Listing =
        serde_json::from_slice(body).map_err(|e| format!("unreadable target list: {e}"))?;
    listing
        .containers
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let target =
                Target::try_from(raw.clone()).map_err(|e| format!("containers[{i}]: {e}"))?;
            Ok(Listed { raw, target })
        })
        .collect()
}

/// The first target whose name and prefix both match, as the service itself
/// resolves stale targets.
pub fn find<'a>(targets: &'a [Listed], name: &str, prefix: &str) -> Option<&'a Listed> {
    targets
        .iter()
        .find(|t| t.target.name == name && t.target.prefix == prefix)
}

/// Why no target matched, with the nearest candidates a user may have meant.
pub fn not_found_message(targets: &[Listed], name: &str, prefix: &str) -> String {
    let same_name: Vec<String> = targets
        .iter()
        .filter(|t| t.target.name == name)
        .map(|t| format!("{:?}", t.target.prefix))
        .collect();
    let wanted = if prefix.is_empty() {
        format!("{name:?}")
    } else {
        format!("{name:?} with prefix {prefix:?}")
    };
    if same_name.is_empty() {
        format!("no target named {wanted} among the {} targets discovered (try `packetflix-capture targets`)", targets.len())
    } else {
        format!(
            "no target named {wanted}; that name exists with prefix {} (use --prefix)",
            same_name.join(", ")
        )
    }
}

/// A plain-text table: name, type, prefix, netns, interfaces.
pub fn render_table(targets: &[Listed]) -> String {
    let header = ["NAME", "TYPE", "PREFIX", "NETNS", "INTERFACES"];
    let rows: Vec<[String; 5]> = targets
        .iter()
        .map(|Listed { target: t, .. }| {
            [
                t.name.clone(),
                t.kind.clone(),
                if t.prefix.is_empty() {
                    "-".into()
                } else {
                    t.prefix.clone()
                },
                t.netns.to_string(),
                t.network_interfaces.join("/"),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    out
}

/// The targets as a pretty JSON array of GhostWire's own descriptions, ready
/// to be passed back with `--container`.
pub fn render_json(targets: &[Listed]) -> String {
    let raw: Vec<&Value> = targets.iter().map(|t| &t.raw).collect();
    let mut s = serde_json::to_string_pretty(&raw).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FIXTURE: &str = r#"{
      "metadata": {"hostname": "edge-node-1"},
      "containers": [
        {"name": "/run/netns/blue", "type": "bindmount", "netns": 4026532601,
         "network-interfaces": ["eth0", "lo"], "pid": 0, "starttime": 0, "prefix": ""},
        {"name": "mosquitto", "type": "docker", "netns": 4026532777,
         "network-interfaces": ["eth0", "lo"], "pid": 4242, "starttime": 123456, "prefix": ""},
        {"name": "mosquitto", "type": "docker", "netns": 4026532999,
         "network-interfaces": ["eth0", "eth1", "lo"], "pid": 5151, "starttime": 654321,
         "prefix": "dind-1", "node-name": "n1", "cluster": {"uid": "c-1"}}
      ]
    }"#;

    #[test]
    fn listing_keeps_order_fields_and_raw_description() {
        let t = parse_listing(FIXTURE.as_bytes()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].target.kind, "bindmount");
        assert_eq!(t[2].target.network_interfaces, ["eth0", "eth1", "lo"]);
        assert_eq!(t[2].raw["cluster"]["uid"], "c-1");
    }

    #[test]
    fn missing_fields_default_and_missing_containers_mean_none() {
        let t = parse_listing(br#"{"containers":[{"name":"x"}]}"#).unwrap();
        assert_eq!(
            (
                t[0].target.netns,
                t[0].target.prefix.as_str(),
                t[0].target.network_interfaces.len()
            ),
            (0, "", 0)
        );
        assert!(parse_listing(b"{}").unwrap().is_empty());
    }

    #[test]
    fn garbage_listing_is_an_error_not_an_empty_list() {
        assert!(parse_listing(b"<html>502</html>").is_err());
        assert!(parse_listing(br#"{"containers":[{"netns":"x"}]}"#).is_err());
    }

    #[test]
    fn lookup_needs_name_and_prefix_to_match() {
        let t = parse_listing(FIXTURE.as_bytes()).unwrap();
        assert_eq!(
            find(&t, "mosquitto", "").map(|t| t.target.netns),
            Some(4026532777)
        );
        assert_eq!(
            find(&t, "mosquitto", "dind-1").map(|t| t.target.netns),
            Some(4026532999)
        );
        assert!(find(&t, "mosquitto", "dind-2").is_none());
    }

    #[test]
    fn not_found_names_the_prefixes_that_do_exist() {
        let t = parse_listing(FIXTURE.as_bytes()).unwrap();
        let m = not_found_message(&t, "mosquitto", "dind-2");
        assert!(m.contains(r#""", "dind-1""#), "{m}");
        let m = not_found_message(&t, "nginx", "");
        assert!(m.contains("among the 3 targets"), "{m}");
    }

    #[test]
    fn table_aligns_columns_and_marks_empty_prefix() {
        let t = parse_listing(FIXTURE.as_bytes()).unwrap();
        let table = render_table(&t);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("NAME             TYPE       PREFIX  NETNS       INTERFACES"),
            "{table}"
        );
        assert_eq!(
            lines[2],
            "mosquitto        docker     -       4026532777  eth0/lo"
        );
        assert_eq!(
            lines[3],
            "mosquitto        docker     dind-1  4026532999  eth0/eth1/lo"
        );
    }

    #[test]
    fn json_output_round_trips_to_the_raw_descriptions() {
        let t = parse_listing(FIXTURE.as_bytes()).unwrap();
        let back: Vec<Value> = serde_json::from_str(&render_json(&t)).unwrap();
        assert_eq!(back[2], t[2].raw);
    }
}
