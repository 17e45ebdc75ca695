//! What Wireshark's extcap interface asks of us, as text.
//!
//! Wireshark runs every program in its extcap folder with
//! `--extcap-interfaces`, then `--extcap-dlts` and `--extcap-config` for each
//! interface, and finally `--capture --fifo PATH` with the configured options
//! (see `extcap(4)`). This module only renders the answers; the capture itself
//! is the ordinary client session writing into the fifo. No I/O here.

use super::cli::EXTCAP_INTERFACE;
use super::targets::Listed;

/// Where the `extcap` line's help button leads: the public documentation
/// of the service protocol this client speaks.
pub const HELP_URL: &str = "https://github.com/siemens/packetflix";
/// The option Wireshark names in `--extcap-reload-option` to refill the
/// target selector.
pub const TARGETS_OPTION: &str = "targets";
/// The number of the `--targets` argument in [`config`].
const TARGETS_ARG: usize = 7;

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
    let args: [&str; 11] = [
        "{call=--url}{display=Service URL}{type=string}{required=true}{default=http://127.0.0.1:5001}\
         {tooltip=http(s)://HOST:PORT of the Packetflix service, or a packetflix:// URL from the discovery UI}{group=Target}",
        "{call=--target}{display=Target}{type=string}\
         {tooltip=network namespace inode, container JSON, or container name as the discovery service lists it}{group=Target}",
        "{call=--prefix}{display=Name prefix}{type=string}{tooltip=prefix of a target named by name (e.g. a Docker-in-Docker host)}{group=Target}",
        // A string, not an editselector: Wireshark 4.0 makes no preference
        // of an editselector, so tshark's -o could not set it.
        "{call=--nif}{display=Interfaces}{type=string}\
         {tooltip=interfaces separated by /, or all; empty: the target's own, else all (several targets: empty or all)}{group=Capture}",
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
    ];
    args.iter()
        .enumerate()
        .map(|(i, a)| format!("arg {{number={i}}}{a}\n"))
        .collect()
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
    fn config_args_are_numbered_in_order_and_call_options_the_parser_knows() {
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
                "--ca"
            ]
        );
        for (i, (kind, f)) in s.iter().filter(|(k, _)| k == "arg").enumerate() {
            assert_eq!(kind, "arg");
            assert_eq!(field(f, "number"), Some(i.to_string().as_str()));
            assert!(field(f, "type").is_some());
        }
        let mut args: Vec<String> = [
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--fifo",
            "f",
        ]
        .map(String::from)
        .to_vec();
        for call in calls {
            args.push(call.to_string());
            if call != "--chaste" && call != "--insecure" {
                args.push(if call == "--target" {
                    "1".into()
                } else if call == "--targets" {
                    hex(br#"{"netns":1}"#)
                } else {
                    "x".into()
                });
            }
        }
        args[6] = "http://h:1".into();
        // --target and --targets both name targets: one at a time.
        let with_target = args.clone();
        assert!(super::super::cli::parse(with_target).is_err());
        let at = args.iter().position(|a| a == "--target").unwrap();
        args.drain(at..at + 2);
        assert!(super::super::cli::parse(args).is_ok());
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
        assert_eq!(field(nif, "type"), Some("string"));
        assert!(field(nif, "tooltip").unwrap().contains("or all"));
        let t = &s[TARGETS_ARG].1;
        assert_eq!(field(t, "call"), Some("--targets"));
        assert_eq!(field(t, "type"), Some("multicheck"));
        assert_eq!(field(t, "reload"), Some("true"));
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
