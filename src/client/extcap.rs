//! What Wireshark's extcap interface asks of us, as text.
//!
//! Wireshark runs every program in its extcap folder with
//! `--extcap-interfaces`, then `--extcap-dlts` and `--extcap-config` for each
//! interface, and finally `--capture --fifo PATH` with the configured options
//! (see `extcap(4)`). This module only renders the answers; the capture itself
//! is the ordinary client session writing into the fifo. No I/O here.

use super::targets::Listed;

/// The extcap interface name Wireshark lists; also what the original
/// ClusterShark plugin called its packetflix interface. Preferences are
/// named after it (`extcap.packetflix.url`).
pub const EXTCAP_INTERFACE: &str = "packetflix";
/// Where the `extcap` line's help button leads: the public documentation
/// of the service protocol this client speaks.
pub const HELP_URL: &str = "https://github.com/siemens/packetflix";
/// The option Wireshark names in `--extcap-reload-option` to refill the
/// target selector.
pub const TARGETS_OPTION: &str = "targets";
/// The number of the `--targets` argument in [`config`].
const TARGETS_ARG: usize = 7;
/// The option Wireshark names in `--extcap-reload-option` to refill the
/// interface selector.
pub const NIF_OPTION: &str = "nif";
/// The number of the `--nif` argument in [`config`].
const NIF_ARG: usize = 3;
/// The interface selector's value for every interface of the targets.
const ALL_INTERFACES: &str = "all";

/// The link type announced to Wireshark. The stream is pcapng with its own
/// Interface Description Blocks, whose link types Wireshark uses, so this is
/// only a label: LINKTYPE_USER0 (147), as the original ClusterShark plugin
/// reports for its packetflix interface.
const DLT_NUMBER: u32 = 147;

/// `--extcap-interfaces`: the plugin and its one interface.
pub fn interfaces() -> String {
    format!(
        "extcap {{version={}}}{{display=Packetflix container capture}}{{help={HELP_URL}}}\n\
         interface {{value={EXTCAP_INTERFACE}}}{{display=Packetflix: capture inside a container, pod or netns}}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `--extcap-dlts`.
pub fn dlts() -> String {
    format!("dlt {{number={DLT_NUMBER}}}{{name=PACKETFLIX}}{{display=Packetflix stream (link types as captured)}}\n")
}

/// `--extcap-config`: the options Wireshark shows, and passes back to
/// `--capture` as `--call value` (a `boolflag` as the bare `--call`). In
/// tshark they are set as `-o extcap.packetflix.<call>:<value>`.
pub fn config() -> String {
    let args: [&str; 12] = [
        "{call=--url}{display=Service URL}{type=string}{required=true}{default=http://127.0.0.1:5001}\
         {tooltip=http(s)://HOST:PORT of the Packetflix service, or a packetflix:// URL from the discovery UI}{group=Target}",
        "{call=--target}{display=Target}{type=string}\
         {tooltip=network namespace inode, container JSON, or container name as the discovery service lists it}{group=Target}",
        "{call=--prefix}{display=Name prefix}{type=string}{tooltip=prefix of a target named by name (e.g. a Docker-in-Docker host)}{group=Target}",
        // A selector, not an editselector: Wireshark 4.0 makes a string
        // preference of a selector (tshark's -o sets any value, also
        // eth0/lo), but none of an editselector.
        "{call=--nif}{display=Interfaces}{type=selector}{reload=true}{placeholder=Load the interfaces}\
         {tooltip=interfaces of the chosen targets as the discovery service lists them, or all; press reload to fetch them; \
         unset: the target's own, else all (several targets: unset or all)}{group=Capture}",
        "{call=--filter}{display=Capture filter}{type=string}{tooltip=pcap-filter expression applied by the service}{group=Capture}",
        "{call=--chaste}{display=Avoid promiscuous mode}{type=boolflag}{default=false}{group=Capture}",
        "{call=--discovery}{display=Discovery URL}{type=string}\
         {tooltip=GhostWire URL to look names up; empty: the service's /discover proxy}{group=Target}",
        "{call=--targets}{display=Targets}{type=multicheck}{reload=true}{placeholder=Load the targets}\
         {tooltip=targets listed by the discovery service; press reload to fetch them; several make one capture}{group=Target}",
        "{call=--token}{display=Bearer token}{type=password}\
         {tooltip=token the service requires (its --token-file); sent as Authorization: Bearer}{group=Security}",
        "{call=--insecure}{display=Do not verify the certificate}{type=boolflag}{default=false}{group=Security}",
        "{call=--ca}{display=CA certificate}{type=fileselect}{mustexist=true}\
         {tooltip=PEM file of the CA that signed the service's certificate; empty: the system's CAs}{group=Security}",
        // Wireshark neither saves a password field nor passes one set with
        // -o, so a link opened from the discovery UI could never send the
        // token; a file's path is a saved preference like any other.
        "{call=--token-file}{display=Token file}{type=fileselect}{mustexist=true}\
         {tooltip=file whose first token line is sent as Authorization: Bearer (saved with the preferences, unlike the token field)}{group=Security}",
    ];
    let mut out: String = args
        .iter()
        .enumerate()
        .map(|(i, a)| format!("arg {{number={i}}}{a}\n"))
        .collect();
    out.push_str(&nif_initial());
    out
}

/// `--extcap-config --extcap-reload-option targets`: the selector's values,
/// one per listed target, displayed by name (and prefix and type); the value
/// is the target's description, hex-encoded because Wireshark joins the
/// values of a multicheck with commas.
pub fn target_values(listed: &[Listed]) -> String {
    listed
        .iter()
        .map(|l| {
            let t = &l.target;
            let mut display = String::new();
            if !t.prefix.is_empty() {
                display.push_str(&t.prefix);
                display.push(':');
            }
            display.push_str(if t.name.is_empty() {
                "(unnamed)"
            } else {
                &t.name
            });
            if !t.kind.is_empty() {
                display.push_str(&format!(" ({})", t.kind));
            }
            format!(
                "value {{arg={TARGETS_ARG}}}{{value={}}}{{display={}}}\n",
                hex(l.raw.to_string().as_bytes()),
                sanitize(&display)
            )
        })
        .collect()
}

/// The initial values of the interface selector in `--extcap-config`.
fn nif_initial() -> String {
    format!("value {{arg={NIF_ARG}}}{{value={ALL_INTERFACES}}}{{display=all interfaces}}\n")
}

/// `--extcap-config --extcap-reload-option nif`: "all", then the
/// interfaces the discovery service lists for the chosen targets (every
/// listed target when none is chosen), each name once, in listing order.
/// `chosen` holds (name, prefix) pairs. A name that could not be passed back
/// intact (braces, commas, line breaks, `/`) is left out.
pub fn nif_values(listed: &[Listed], chosen: &[(String, String)]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for l in listed {
        let t = &l.target;
        if !chosen.is_empty() && !chosen.iter().any(|(n, p)| *n == t.name && *p == t.prefix) {
            continue;
        }
        for nif in &t.network_interfaces {
            let clean = !nif.is_empty()
                && !nif.contains(['{', '}', ',', '/', '\n', '\r'])
                && nif != ALL_INTERFACES
                && nif != "any";
            if clean && !seen.contains(&nif.as_str()) {
                seen.push(nif);
            }
        }
    }
    let mut out = nif_initial();
    for nif in seen {
        out.push_str(&format!(
            "value {{arg={NIF_ARG}}}{{value={nif}}}{{display={nif}}}\n"
        ));
    }
    out
}

/// The targets whose interfaces the selector lists: those of `--targets`
/// (Wireshark passes the other options' current values with a reload), or
/// `--target` when it is a name (with `--prefix`); none means every target.
pub fn chosen_targets(
    targets: Option<&str>,
    target: Option<&str>,
    prefix: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    if let Some(list) = targets {
        let array = decode_targets(list)?;
        let v: serde_json::Value =
            serde_json::from_str(&array).map_err(|e| format!("--targets: {e}"))?;
        let field = |t: &serde_json::Value, k: &str| {
            t.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        return Ok(v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| (field(t, "name"), field(t, "prefix")))
                    .collect()
            })
            .unwrap_or_default());
    }
    match target {
        Some(t) if !t.is_empty() && !t.starts_with(['{', '[']) && t.parse::<u64>().is_err() => Ok(
            vec![(t.to_string(), prefix.unwrap_or_default().to_string())],
        ),
        _ => Ok(Vec::new()),
    }
}

/// Braces and line breaks would end an extcap sentence's field.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '{' | '}' | '\n' | '\r' => '_',
            c => c,
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `--targets` value Wireshark passes back: comma-separated hex-encoded
/// descriptions -> the descriptions, as one JSON array.
pub fn decode_targets(list: &str) -> Result<String, String> {
    let mut items = Vec::new();
    for v in list.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let bytes = (0..v.len())
            .step_by(2)
            .map(|i| v.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("--targets: {v:?} is not a value of the target selector"))?;
        let json = String::from_utf8(bytes).map_err(|_| "--targets: not UTF-8".to_string())?;
        items.push(super::url::compact_json(&json)?);
    }
    if items.is_empty() {
        return Err("--targets names no target".into());
    }
    Ok(format!("[{}]", items.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `kind {k=v}{k=v}` lines as Wireshark's extcap parser does.
    fn sentences(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        text.lines()
            .map(|line| {
                let (kind, rest) = line.split_once(' ').unwrap();
                let fields = rest
                    .strip_prefix('{')
                    .unwrap()
                    .strip_suffix('}')
                    .unwrap()
                    .split("}{")
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (kind.to_string(), fields)
            })
            .collect()
    }

    fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn interfaces_announce_the_packetflix_interface_and_version() {
        let s = sentences(&interfaces());
        assert_eq!(s[0].0, "extcap");
        assert_eq!(field(&s[0].1, "version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(s[1].0, "interface");
        assert_eq!(field(&s[1].1, "value"), Some("packetflix"));
    }

    #[test]
    fn dlts_name_one_link_type() {
        let s = sentences(&dlts());
        assert_eq!(s.len(), 1);
        assert_eq!(field(&s[0].1, "number"), Some("147"));
    }

    #[test]
    fn config_args_are_numbered_in_order() {
        let s = sentences(&config());
        let calls: Vec<&str> = s.iter().filter_map(|(_, f)| field(f, "call")).collect();
        assert_eq!(
            calls,
            [
                "--url",
                "--target",
                "--prefix",
                "--nif",
                "--filter",
                "--chaste",
                "--discovery",
                "--targets",
                "--token",
                "--insecure",
                "--ca",
                "--token-file"
            ]
        );
        for (i, (kind, f)) in s.iter().filter(|(k, _)| k == "arg").enumerate() {
            assert_eq!(kind, "arg");
            assert_eq!(field(f, "number"), Some(i.to_string().as_str()));
            assert!(field(f, "type").is_some());
        }
    }

    #[test]
    fn the_extcap_line_carries_a_help_url() {
        let s = sentences(&interfaces());
        assert_eq!(field(&s[0].1, "help"), Some(HELP_URL));
    }

    #[test]
    fn nif_offers_all_and_targets_reload_from_discovery() {
        let s = sentences(&config());
        let nif = &s
            .iter()
            .find(|(_, f)| field(f, "call") == Some("--nif"))
            .unwrap()
            .1;
        assert_eq!(field(nif, "type"), Some("selector"));
        assert_eq!(field(nif, "reload"), Some("true"));
        assert!(field(nif, "tooltip").unwrap().contains("or all"));
        let all: Vec<_> = s
            .iter()
            .filter(|(k, f)| k == "value" && field(f, "arg") == Some("3"))
            .map(|(_, f)| field(f, "value").unwrap())
            .collect();
        assert_eq!(all, ["all"]);
        let t = &s[TARGETS_ARG].1;
        assert_eq!(field(t, "call"), Some("--targets"));
        assert_eq!(field(t, "type"), Some("multicheck"));
        assert_eq!(field(t, "reload"), Some("true"));
    }

    #[test]
    fn interface_values_are_all_then_the_chosen_targets_interfaces_once() {
        let body = br#"{"containers":[
            {"name":"a","netns":5,"network-interfaces":["eth0","lo"]},
            {"name":"b","prefix":"p","netns":6,"network-interfaces":["lo","net1","bad,name"]},
            {"name":"c","netns":7,"network-interfaces":["eth9"]}]}"#;
        let listed = crate::client::targets::parse_listing(body).unwrap();
        let values = |chosen: &[(String, String)]| -> Vec<String> {
            sentences(&nif_values(&listed, chosen))
                .iter()
                .map(|(k, f)| {
                    assert_eq!(k, "value");
                    assert_eq!(field(f, "arg"), Some("3"));
                    field(f, "value").unwrap().to_string()
                })
                .collect()
        };
        assert_eq!(values(&[]), ["all", "eth0", "lo", "net1", "eth9"]);
        let picked = [
            hex(br#"{"name":"a","netns":5}"#),
            hex(br#"{"name":"b","prefix":"p","netns":6}"#),
        ]
        .join(",");
        let chosen = chosen_targets(Some(&picked), None, None).unwrap();
        assert_eq!(values(&chosen), ["all", "eth0", "lo", "net1"]);
        let chosen = chosen_targets(None, Some("c"), None).unwrap();
        assert_eq!(values(&chosen), ["all", "eth9"]);
        // A name with the wrong prefix, or an inode, chooses nothing listed
        // by name: only "all" stays, or every target's.
        let chosen = chosen_targets(None, Some("b"), None).unwrap();
        assert_eq!(values(&chosen), ["all"]);
        assert!(chosen_targets(None, Some("4026531840"), None)
            .unwrap()
            .is_empty());
        assert!(chosen_targets(Some("zz"), None, None).is_err());
    }

    #[test]
    fn selector_values_round_trip_to_a_json_array() {
        let body = br#"{"containers":[{"name":"a,b","type":"docker","netns":5},{"name":"c{}","prefix":"p","netns":6}]}"#;
        let listed = crate::client::targets::parse_listing(body).unwrap();
        let text = target_values(&listed);
        let s = sentences(&text);
        assert_eq!(s.len(), 2);
        assert_eq!(field(&s[0].1, "display"), Some("a,b (docker)"));
        assert_eq!(field(&s[1].1, "display"), Some("p:c__"));
        let picked: Vec<&str> = s.iter().map(|(_, f)| field(f, "value").unwrap()).collect();
        let array = decode_targets(&picked.join(",")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&array).unwrap();
        assert_eq!(v[0]["name"], "a,b");
        assert_eq!(v[1]["netns"], 6);
        assert!(decode_targets("zz").is_err());
        assert!(decode_targets("").is_err());
    }
}
