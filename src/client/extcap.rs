//! What Wireshark's extcap interface asks of us, as text.
//!
//! Wireshark runs every program in its extcap folder with
//! `--extcap-interfaces`, then `--extcap-dlts` and `--extcap-config` for each
//! interface, and finally `--capture --fifo PATH` with the configured options
//! (see `extcap(4)`). This module only renders the answers; the capture itself
//! is the ordinary client session writing into the fifo. No I/O here.

use super::cli::EXTCAP_INTERFACE;

/// The link type announced to Wireshark. The stream is pcapng with its own
/// Interface Description Blocks, whose link types Wireshark uses, so this is
/// only a label: LINKTYPE_USER0 (147), as the original ClusterShark plugin
/// reports for its packetflix interface.
const DLT_NUMBER: u32 = 147;

/// `--extcap-interfaces`: the plugin and its one interface.
pub fn interfaces() -> String {
    format!(
        "extcap {{version={}}}{{display=Packetflix container capture}}\n\
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
    let args: [&str; 10] = [
        "{call=--url}{display=Service URL}{type=string}{required=true}{default=http://127.0.0.1:5001}\
         {tooltip=http(s)://HOST:PORT of the Packetflix service, or a packetflix:// URL from the discovery UI}{group=Target}",
        "{call=--target}{display=Target}{type=string}\
         {tooltip=network namespace inode, container JSON, or container name as the discovery service lists it}{group=Target}",
        "{call=--prefix}{display=Name prefix}{type=string}{tooltip=prefix of a target named by name (e.g. a Docker-in-Docker host)}{group=Target}",
        "{call=--nif}{display=Interfaces}{type=string}{tooltip=interfaces separated by /; empty: the target's own, else all}{group=Capture}",
        "{call=--filter}{display=Capture filter}{type=string}{tooltip=pcap-filter expression applied by the service}{group=Capture}",
        "{call=--chaste}{display=Avoid promiscuous mode}{type=boolflag}{default=false}{group=Capture}",
        "{call=--discovery}{display=Discovery URL}{type=string}\
         {tooltip=GhostWire URL to look names up; empty: the service's /discover proxy}{group=Target}",
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
        let calls: Vec<&str> = s.iter().map(|(_, f)| field(f, "call").unwrap()).collect();
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
                "--token",
                "--insecure",
                "--ca"
            ]
        );
        for (i, (kind, f)) in s.iter().enumerate() {
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
                } else {
                    "x".into()
                });
            }
        }
        args[6] = "http://h:1".into();
        assert!(super::super::cli::parse(args).is_ok());
    }
}
