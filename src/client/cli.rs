//! `packetflix-capture`'s command line -> [`Command`].
//!
//! One parser serves people and Wireshark: any `--extcap-*`, `--capture` or
//! `--fifo` flag switches to extcap mode, where Wireshark passes the options
//! our `--extcap-config` declared. No I/O here: the caller decides what a
//! terminal on stdout means and prints what this returns.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use super::extcap::{self, EXTCAP_INTERFACE};
use super::install::Scope;
use super::url::{self, CaptureParams, ServiceUrl, Target, Url};

/// Where the client looks for a service when no URL is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:5001";
/// Packets the demo shows before it stops.
const DEMO_PACKETS: u64 = 8;
/// The demo's upper bound on time, in case its traffic does not arrive.
const DEMO_DURATION: Duration = Duration::from_secs(20);

pub const USAGE: &str = "\
Usage:
  packetflix-capture [capture] [URL] TARGET [OPTIONS] -w FILE|-
  packetflix-capture targets [URL] [--discovery URL] [--json]
  packetflix-capture demo [URL] [-c N] [-a duration:SECONDS]
  packetflix-capture install [--system] | uninstall [--system]
  packetflix-capture open 'packetflix:ws://HOST:PORT/capture?…'
  packetflix-capture --extcap-interfaces | --extcap-dlts | --extcap-config | --capture …

URL is the Packetflix service: http://HOST:PORT, ws://HOST:PORT, HOST[:PORT]
(port 5001), https:// or wss:// for TLS (port 443), or a packetflix:ws[s]://
or packetflix://HOST:PORT/capture?container=… URL from the discovery UI;
default http://127.0.0.1:5001. Also --url URL.

TARGET (exactly one, unless the URL names it):
  --netns INODE           network namespace inode
  --container JSON        target description as the discovery service lists it
  --name NAME [--prefix P]  look the target up by name in the discovery service
  --target T              INODE, JSON or NAME, whichever T looks like
  --container '[JSON,…]'  several targets in one capture (interfaces named
                          <target>/<interface>)

Options:
  -i, --nif IF[/IF…]      interfaces to capture from (repeatable; default: the
                          target's own, else all)
  -f, --filter EXPR       capture filter (pcap-filter syntax)
  -p, --chaste            do not put interfaces into promiscuous mode
  -w, --write FILE        write pcapng to FILE, or to stdout with -
  -c, --count N           stop after N packets
  -a duration:SECONDS     stop after SECONDS (also --duration SECONDS)
      --discovery URL     discovery service (GhostWire) for --name and targets;
                          default: the service's /discover proxy
      --json              targets: print JSON instead of a table
      --token TOKEN       send Authorization: Bearer TOKEN (service --token-file)
      --token-file FILE   the same, the first token line of FILE
      --ca FILE           trust this CA (PEM) for https/wss instead of the system's
      --insecure          do not verify the service's certificate (warns)
  -h, --help              this help;  -V, --version  the version

install puts this program into Wireshark's personal extcap folder (as
tshark -G folders reports it) and makes it the desktop's handler of
packetflix: links, which open in Wireshark capturing through it; --system
does so for every user (as root). uninstall removes exactly what install
made. open LINK is what the handler runs.

Stops on the count, the duration, Ctrl-C or SIGTERM, and ends cleanly (exit 0).
Exit status: 0 done, 1 the capture failed, 2 bad usage.";

/// How the target is named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    Given(Target),
    ByName { name: String, prefix: String },
}

/// Where the pcapng goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `-w -`, or nothing while stdout is not a terminal.
    Stdout,
    /// Not given: stdout if it is not a terminal (the caller checks).
    Unset,
    File(PathBuf),
    /// Wireshark's extcap fifo.
    Fifo(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureArgs {
    pub service: ServiceUrl,
    pub wanted: Wanted,
    /// Interfaces, filter and chaste; the target is filled in from `wanted`.
    pub params: CaptureParams,
    pub discovery: Option<Url>,
    pub output: Output,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetsArgs {
    pub service: ServiceUrl,
    pub discovery: Option<Url>,
    pub json: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoArgs {
    pub service: ServiceUrl,
    pub count: u64,
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extcap {
    Interfaces,
    Dlts,
    Config,
    /// `--extcap-config --extcap-reload-option NAME`: the values of one
    /// selector, fetched afresh.
    Reload {
        option: String,
        service: Box<ServiceUrl>,
        discovery: Option<Box<Url>>,
        /// (name, prefix) of the targets chosen so far, for the interface
        /// selector; empty: every listed target.
        chosen: Vec<(String, String)>,
    },
    Capture(Box<CaptureArgs>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Capture(CaptureArgs),
    Targets(TargetsArgs),
    Demo(DemoArgs),
    Extcap(Extcap),
    /// `install [--system]`.
    Install(Scope),
    /// `uninstall [--system]`.
    Uninstall(Scope),
    /// `open LINK`: the desktop entry's command.
    Open(String),
}

#[derive(Default)]
struct Raw {
    subcommand: Option<String>,
    url: Option<String>,
    /// The URL came as a word, not as `--url`.
    url_positional: bool,
    netns: Option<String>,
    container: Option<String>,
    name: Option<String>,
    prefix: Option<String>,
    target: Option<String>,
    /// Several targets picked in the extcap's selector (`--targets`).
    targets: Option<String>,
    nifs: Vec<String>,
    filter: Option<String>,
    chaste: bool,
    write: Option<String>,
    count: Option<u64>,
    duration: Option<Duration>,
    discovery: Option<String>,
    json: bool,
    /// `--system` for install and uninstall.
    system: bool,
    /// Capture-only options seen, to refuse them where they mean nothing.
    capture_only: Vec<&'static str>,
    extcap_seen: bool,
    extcap_interfaces: bool,
    extcap_dlts: bool,
    extcap_config: bool,
    extcap_interface: Option<String>,
    extcap_capture: bool,
    fifo: Option<String>,
    extcap_filter: Option<String>,
    reload_option: Option<String>,
    access: super::tls::Access,
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut raw = Raw::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("url") => raw.url = nonempty(string(&mut p)?),
            Long("netns") => {
                raw.netns = capture_opt(&mut raw.capture_only, "--netns", string(&mut p)?)
            }
            Long("container") => {
                raw.container = capture_opt(&mut raw.capture_only, "--container", string(&mut p)?)
            }
            Long("name") => {
                raw.name = capture_opt(&mut raw.capture_only, "--name", string(&mut p)?)
            }
            Long("prefix") => {
                raw.prefix = capture_opt(&mut raw.capture_only, "--prefix", string(&mut p)?)
            }
            Long("target") => {
                raw.target = capture_opt(&mut raw.capture_only, "--target", string(&mut p)?)
            }
            Long("targets") => {
                raw.targets = capture_opt(&mut raw.capture_only, "--targets", string(&mut p)?)
            }
            Long("extcap-reload-option") => raw.reload_option = Some(string(&mut p)?),
            Short('i') | Long("nif") => {
                if let Some(nif) = capture_opt(&mut raw.capture_only, "--nif", string(&mut p)?) {
                    raw.nifs.push(nif);
                }
            }
            Short('f') | Long("filter") => {
                raw.filter = capture_opt(&mut raw.capture_only, "--filter", string(&mut p)?)
            }
            Short('p') | Long("chaste") => {
                raw.capture_only.push("--chaste");
                raw.chaste = true;
            }
            Short('w') | Long("write") => {
                raw.write = capture_opt(&mut raw.capture_only, "--write", string(&mut p)?)
            }
            Short('c') | Long("count") => {
                raw.capture_only.push("--count");
                raw.count = Some(parse_count(&string(&mut p)?)?);
            }
            Short('a') => {
                raw.capture_only.push("-a");
                let cond = string(&mut p)?;
                let secs = cond
                    .strip_prefix("duration:")
                    .ok_or(format!("-a {cond}: only duration:SECONDS is supported"))?;
                raw.duration = Some(parse_duration(secs)?);
            }
            Long("duration") => {
                raw.capture_only.push("--duration");
                raw.duration = Some(parse_duration(&string(&mut p)?)?);
            }
            Long("discovery") => raw.discovery = nonempty(string(&mut p)?),
            Long("json") => raw.json = true,
            Long("system") => raw.system = true,
            Long("token") => raw.access.token = nonempty(string(&mut p)?),
            Long("token-file") => {
                raw.access.token_file = nonempty(string(&mut p)?).map(PathBuf::from)
            }
            Long("ca") => raw.access.ca = nonempty(string(&mut p)?).map(PathBuf::from),
            Long("insecure") => raw.access.insecure = true,
            Long("extcap-interfaces") => raw.extcap_interfaces = true,
            Long("extcap-dlts") => raw.extcap_dlts = true,
            Long("extcap-config") => raw.extcap_config = true,
            Long("extcap-interface") => raw.extcap_interface = Some(string(&mut p)?),
            Long("capture") => raw.extcap_capture = true,
            Long("fifo") => raw.fifo = Some(string(&mut p)?),
            Long("extcap-capture-filter") => raw.extcap_filter = nonempty(string(&mut p)?),
            // Wireshark announces its version, and offers control pipes we do
            // not declare (no `{control}` lines), so neither changes anything.
            Long("extcap-version") => {
                raw.extcap_seen = true;
                let _ = p.optional_value();
            }
            Long("extcap-control-in") | Long("extcap-control-out") => {
                raw.extcap_seen = true;
                let _ = string(&mut p)?;
            }
            Value(v) => {
                let v = v
                    .into_string()
                    .map_err(|v| format!("argument {v:?} is not UTF-8"))?;
                // A subcommand comes before any other word; `--url` may
                // precede it.
                if raw.subcommand.is_none()
                    && !raw.url_positional
                    && ["capture", "targets", "demo", "install", "uninstall", "open"]
                        .contains(&v.as_str())
                {
                    raw.subcommand = Some(v);
                } else if !raw.url_positional {
                    raw.url = Some(v);
                    raw.url_positional = true;
                } else {
                    return Err(format!("unexpected argument {v:?}"));
                }
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    raw.extcap_seen |= raw.extcap_interfaces
        || raw.extcap_dlts
        || raw.extcap_config
        || raw.extcap_capture
        || raw.fifo.is_some()
        || raw.extcap_interface.is_some();
    if raw.extcap_seen {
        return extcap(raw);
    }
    let sub = raw.subcommand.as_deref().unwrap_or("capture");
    if raw.system && !["install", "uninstall"].contains(&sub) {
        return Err("--system only applies to install and uninstall".into());
    }
    if ["install", "uninstall", "open"].contains(&sub) {
        refuse_capture_options(&raw, sub)?;
        if raw.json || raw.discovery.is_some() || raw.access != Default::default() {
            return Err(format!(
                "{sub} takes no --json, --discovery or access options (the link handler \
                 takes them from Wireshark's saved preferences)"
            ));
        }
    }
    let scope = if raw.system {
        Scope::System
    } else {
        Scope::User
    };
    match raw.subcommand.as_deref() {
        Some("install") | Some("uninstall") => {
            if let Some(url) = &raw.url {
                return Err(format!("unexpected argument {url:?} to {sub}"));
            }
            Ok(if sub == "install" {
                Command::Install(scope)
            } else {
                Command::Uninstall(scope)
            })
        }
        Some("open") => match raw.url {
            Some(link) if raw.url_positional => Ok(Command::Open(link)),
            _ => Err("open needs the link: packetflix-capture open 'packetflix:…'".into()),
        },
        Some("targets") => {
            refuse_capture_options(&raw, "targets")?;
            Ok(Command::Targets(TargetsArgs {
                service: service(&raw)?,
                discovery: discovery(&raw)?,
                json: raw.json,
            }))
        }
        Some("demo") => {
            if let Some(opt) = raw
                .capture_only
                .iter()
                .find(|o| !["--count", "-a", "--duration"].contains(o))
            {
                return Err(format!("{opt} does not apply to demo"));
            }
            if raw.json || raw.discovery.is_some() {
                return Err("--json and --discovery do not apply to demo".into());
            }
            Ok(Command::Demo(DemoArgs {
                service: service(&raw)?,
                count: raw.count.unwrap_or(DEMO_PACKETS),
                duration: raw.duration.unwrap_or(DEMO_DURATION),
            }))
        }
        _ => {
            if raw.json {
                return Err("--json only applies to targets".into());
            }
            let output = match raw.write.as_deref() {
                None => Output::Unset,
                Some("-") => Output::Stdout,
                Some(path) => Output::File(PathBuf::from(path)),
            };
            Ok(Command::Capture(capture(&raw, output)?))
        }
    }
}

fn extcap(raw: Raw) -> Result<Command, String> {
    let actions = [
        raw.extcap_interfaces,
        raw.extcap_dlts,
        raw.extcap_config,
        raw.extcap_capture,
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        return Err("extcap mode needs exactly one of --extcap-interfaces, --extcap-dlts, --extcap-config, --capture".into());
    }
    if raw.extcap_interfaces {
        return Ok(Command::Extcap(Extcap::Interfaces));
    }
    match raw.extcap_interface.as_deref() {
        Some(EXTCAP_INTERFACE) => {}
        Some(other) => {
            return Err(format!(
                "unknown extcap interface {other:?} (this plugin offers {EXTCAP_INTERFACE:?})"
            ))
        }
        None => return Err("--extcap-interface is missing".into()),
    }
    if raw.extcap_dlts {
        return Ok(Command::Extcap(Extcap::Dlts));
    }
    if raw.extcap_config {
        if let Some(option) = raw.reload_option.clone() {
            let chosen = if option == extcap::NIF_OPTION {
                extcap::chosen_targets(
                    raw.targets.as_deref(),
                    raw.target.as_deref(),
                    raw.prefix.as_deref(),
                )?
            } else {
                Vec::new()
            };
            return Ok(Command::Extcap(Extcap::Reload {
                option,
                service: Box::new(service(&raw)?),
                discovery: discovery(&raw)?.map(Box::new),
                chosen,
            }));
        }
        return Ok(Command::Extcap(Extcap::Config));
    }
    let fifo = raw.fifo.clone().ok_or("--capture needs --fifo")?;
    let mut args = capture(&raw, Output::Fifo(PathBuf::from(fifo)))?;
    // Wireshark's own capture filter field arrives here; an explicit
    // configured filter wins.
    if args.params.filter.is_none() {
        args.params.filter = raw.extcap_filter;
    }
    Ok(Command::Extcap(Extcap::Capture(Box::new(args))))
}

fn capture(raw: &Raw, output: Output) -> Result<CaptureArgs, String> {
    let service = service(raw)?;
    let mut params = service.params.clone();
    let named: Vec<&str> = [
        ("--netns", &raw.netns),
        ("--container", &raw.container),
        ("--name", &raw.name),
        ("--target", &raw.target),
        ("--targets", &raw.targets),
    ]
    .iter()
    .filter(|(_, v)| v.is_some())
    .map(|(n, _)| *n)
    .collect();
    if named.len() > 1 {
        return Err(format!(
            "name the target once, not with {}",
            named.join(" and ")
        ));
    }
    let prefix = raw.prefix.clone().unwrap_or_default();
    let wanted = if let Some(n) = &raw.netns {
        Wanted::Given(Target::Netns(url::parse_netns(n)?))
    } else if let Some(json) = &raw.container {
        Wanted::Given(Target::Container(url::compact_json(json)?))
    } else if let Some(name) = &raw.name {
        Wanted::ByName {
            name: name.clone(),
            prefix: prefix.clone(),
        }
    } else if let Some(t) = &raw.target {
        target_from_text(t, &prefix)?
    } else if let Some(list) = &raw.targets {
        Wanted::Given(Target::Container(extcap::decode_targets(list)?))
    } else if let Some(t) = params.target.take() {
        Wanted::Given(t)
    } else {
        return Err(
            "no target: give --netns, --container, --name or a packetflix:// URL naming one \
             (list them with `packetflix-capture targets`)"
                .into(),
        );
    };
    // Wireshark keeps a prefix field filled in while the target field changes;
    // only a person typing both gets told off.
    if raw.prefix.is_some() && !raw.extcap_seen && !matches!(wanted, Wanted::ByName { .. }) {
        return Err("--prefix only goes with a target named by --name".into());
    }
    params.target = None;
    if !raw.nifs.is_empty() {
        params.nif = Some(raw.nifs.join("/"));
    }
    if raw.filter.is_some() {
        params.filter = raw.filter.clone();
    }
    params.chaste |= raw.chaste;
    Ok(CaptureArgs {
        service,
        wanted,
        params,
        discovery: discovery(raw)?,
        output,
        count: raw.count,
        duration: raw.duration,
    })
}

/// `--target`: an inode if it is all digits, a description if it is a JSON
/// object, else a name.
fn target_from_text(t: &str, prefix: &str) -> Result<Wanted, String> {
    let t = t.trim();
    if t.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Wanted::Given(Target::Netns(url::parse_netns(t)?)))
    } else if t.starts_with('{') {
        Ok(Wanted::Given(Target::Container(url::compact_json(t)?)))
    } else {
        Ok(Wanted::ByName {
            name: t.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

fn service(raw: &Raw) -> Result<ServiceUrl, String> {
    let mut s = ServiceUrl::parse(raw.url.as_deref().unwrap_or(DEFAULT_URL))?;
    s.url.access = raw.access.clone();
    Ok(s)
}

fn discovery(raw: &Raw) -> Result<Option<Url>, String> {
    raw.discovery.as_deref().map(url::discovery_url).transpose()
}

fn refuse_capture_options(raw: &Raw, sub: &str) -> Result<(), String> {
    match raw.capture_only.first() {
        Some(opt) => Err(format!("{opt} does not apply to {sub}")),
        None => Ok(()),
    }
}

fn string(p: &mut lexopt::Parser) -> Result<String, String> {
    let v = p.value().map_err(|e| e.to_string())?;
    v.into_string()
        .map_err(|v| format!("argument {v:?} is not UTF-8"))
}

/// Empty values mean "not set": Wireshark may pass an empty field as `""`.
fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn capture_opt(seen: &mut Vec<&'static str>, name: &'static str, value: String) -> Option<String> {
    seen.push(name);
    nonempty(value)
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("count {s:?}: expected a number of packets above 0")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = s.strip_suffix('s').unwrap_or(s);
    match secs.parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() && f < 1e9 => Ok(Duration::from_secs_f64(f)),
        _ => Err(format!("duration {s:?}: expected seconds above 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    fn cap(args: &[&str]) -> CaptureArgs {
        match cmd(args) {
            Ok(Command::Capture(c)) => c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn netns_capture_to_a_file_with_all_options() {
        let c = cap(&[
            "http://h:6001",
            "--netns",
            "4026531840",
            "-i",
            "eth0",
            "--nif",
            "lo",
            "-f",
            "udp",
            "--chaste",
            "-w",
            "out.pcapng",
            "-c",
            "5",
            "-a",
            "duration:2.5",
        ]);
        assert_eq!(c.service.authority(), "h:6001");
        assert_eq!(c.wanted, Wanted::Given(Target::Netns(4026531840)));
        assert_eq!(c.params.nif.as_deref(), Some("eth0/lo"));
        assert_eq!(c.params.filter.as_deref(), Some("udp"));
        assert!(c.params.chaste);
        assert_eq!(c.output, Output::File("out.pcapng".into()));
        assert_eq!(
            (c.count, c.duration),
            (Some(5), Some(Duration::from_millis(2500)))
        );
    }

    #[test]
    fn capture_subcommand_is_optional_and_defaults_to_local_service() {
        let c = cap(&["--url", "h:1", "capture", "--netns=7", "-w", "-"]);
        assert_eq!(c.service.authority(), "h:1");
        let c = cap(&["capture", "--netns=7", "-w", "-"]);
        assert_eq!(c.service.authority(), "127.0.0.1:5001");
        assert_eq!(c.output, Output::Stdout);
        assert_eq!(cap(&["--netns", "7"]).output, Output::Unset);
    }

    #[test]
    fn name_with_prefix_is_looked_up_later() {
        let c = cap(&[
            "--name",
            "mosquitto",
            "--prefix",
            "dind-1",
            "--discovery",
            "gw:5000",
        ]);
        assert_eq!(
            c.wanted,
            Wanted::ByName {
                name: "mosquitto".into(),
                prefix: "dind-1".into()
            }
        );
        assert_eq!(c.discovery.map(|u| u.path), Some("/mobyshark".into()));
    }

    #[test]
    fn packetflix_url_supplies_target_and_options_override_its_query() {
        let c = cap(&[
            "packetflix://h:5001/capture?container=%7B%22name%22%3A%22x%22%7D&nif=eth0&filter=tcp",
            "-f",
            "udp",
        ]);
        assert_eq!(
            c.wanted,
            Wanted::Given(Target::Container(r#"{"name":"x"}"#.into()))
        );
        assert_eq!(c.params.nif.as_deref(), Some("eth0"));
        assert_eq!(c.params.filter.as_deref(), Some("udp"));
        assert_eq!(c.params.target, None, "the target travels in `wanted` only");
    }

    #[test]
    fn target_option_guesses_inode_json_or_name() {
        assert_eq!(
            cap(&["--target", "12"]).wanted,
            Wanted::Given(Target::Netns(12))
        );
        assert_eq!(
            cap(&["--target", "{\"name\":\"a\"}"]).wanted,
            Wanted::Given(Target::Container(r#"{"name":"a"}"#.into()))
        );
        assert_eq!(
            cap(&["--target", "web", "--prefix", "p"]).wanted,
            Wanted::ByName {
                name: "web".into(),
                prefix: "p".into()
            }
        );
    }

    #[test]
    fn target_is_required_exactly_once() {
        assert!(cmd(&["-w", "x"]).unwrap_err().contains("no target"));
        assert!(cmd(&["--netns", "1", "--name", "x"])
            .unwrap_err()
            .contains("--netns and --name"));
        assert!(cmd(&["--netns", "1", "--prefix", "p"]).is_err());
        assert!(cmd(&["--container", "[]"]).is_err());
        assert!(cmd(&["--netns", "abc"]).is_err());
    }

    #[test]
    fn bad_counts_durations_and_unknown_flags_are_usage_errors() {
        for bad in [
            &["--netns", "1", "-c", "0"][..],
            &["--netns", "1", "-a", "filesize:10"],
            &["--netns", "1", "--duration", "-1"],
            &["--netns", "1", "--bogus"],
            &["a", "b"],
        ] {
            assert!(cmd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_takes_discovery_and_json_but_no_capture_options() {
        match cmd(&["targets", "ws://h:1", "--json"]).unwrap() {
            Command::Targets(t) => {
                assert!(t.json);
                assert_eq!(t.service.discovery_url().path, "/discover/mobyshark");
            }
            other => panic!("{other:?}"),
        }
        assert!(cmd(&["targets", "--netns", "1"])
            .unwrap_err()
            .contains("--netns does not apply"));
        assert!(cmd(&["--netns", "1", "--json"]).is_err());
    }

    #[test]
    fn demo_takes_count_and_duration_with_defaults() {
        match cmd(&["demo"]).unwrap() {
            Command::Demo(d) => assert_eq!((d.count, d.duration), (DEMO_PACKETS, DEMO_DURATION)),
            other => panic!("{other:?}"),
        }
        match cmd(&["demo", "-c", "3"]).unwrap() {
            Command::Demo(d) => assert_eq!(d.count, 3),
            other => panic!("{other:?}"),
        }
        assert!(cmd(&["demo", "--netns", "1"]).is_err());
    }

    #[test]
    fn wireshark_discovery_calls_are_recognised() {
        assert_eq!(
            cmd(&["--extcap-interfaces", "--extcap-version=4.0"]),
            Ok(Command::Extcap(Extcap::Interfaces))
        );
        assert_eq!(
            cmd(&["--extcap-interface", "packetflix", "--extcap-dlts"]),
            Ok(Command::Extcap(Extcap::Dlts))
        );
        assert_eq!(
            cmd(&["--extcap-config", "--extcap-interface", "packetflix"]),
            Ok(Command::Extcap(Extcap::Config))
        );
        assert!(cmd(&["--extcap-dlts", "--extcap-interface", "eth0"]).is_err());
        assert!(cmd(&["--extcap-dlts"]).is_err());
    }

    #[test]
    fn wireshark_capture_call_writes_to_the_fifo_with_its_filter() {
        let c = match cmd(&[
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--fifo",
            "/tmp/ws-fifo",
            "--extcap-capture-filter",
            "icmp",
            "--url",
            "http://h:5001",
            "--target",
            "4026531840",
            "--nif",
            "",
            "--chaste",
        ]) {
            Ok(Command::Extcap(Extcap::Capture(c))) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.output, Output::Fifo("/tmp/ws-fifo".into()));
        assert_eq!(c.params.filter.as_deref(), Some("icmp"));
        assert_eq!(c.params.nif, None, "an empty field means unset");
        assert!(c.params.chaste);
        let c = match cmd(&[
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--fifo",
            "f",
            "--extcap-capture-filter",
            "icmp",
            "--filter",
            "udp",
            "--target",
            "1",
        ]) {
            Ok(Command::Extcap(Extcap::Capture(c))) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.params.filter.as_deref(), Some("udp"));
    }

    #[test]
    fn extcap_capture_needs_a_fifo_and_one_action() {
        assert!(cmd(&[
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--target",
            "1"
        ])
        .is_err());
        assert!(cmd(&[
            "--capture",
            "--extcap-config",
            "--extcap-interface",
            "packetflix"
        ])
        .is_err());
    }

    /// Every option `--extcap-config` declares comes back from Wireshark as
    /// `--call value`: the parser must take each of them.
    #[test]
    fn every_extcap_config_call_is_an_option_the_parser_knows() {
        let config = extcap::config();
        let calls: Vec<&str> = config
            .lines()
            .filter(|l| l.starts_with("arg "))
            .filter_map(|l| l.split("{call=").nth(1)?.split('}').next())
            .collect();
        assert!(calls.len() >= 10, "{calls:?}");
        let hex_target: String = br#"{"netns":1}"#.iter().map(|b| format!("{b:02x}")).collect();
        let mut args: Vec<String> = [
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--fifo",
            "f",
        ]
        .map(String::from)
        .to_vec();
        for call in &calls {
            args.push(call.to_string());
            let boolflag = config
                .lines()
                .any(|l| l.contains(&format!("{{call={call}}}")) && l.contains("{type=boolflag}"));
            if !boolflag {
                args.push(match *call {
                    "--url" => "http://h:1".into(),
                    "--target" => "1".into(),
                    "--targets" => hex_target.clone(),
                    _ => "x".into(),
                });
            }
        }
        // --target and --targets both name targets: one at a time.
        assert!(parse(args.clone()).is_err());
        let at = args.iter().position(|a| a == "--target").unwrap();
        args.drain(at..at + 2);
        assert_eq!(
            parse(args.clone()).map(|c| matches!(c, Command::Extcap(Extcap::Capture(_)))),
            Ok(true),
            "{args:?}"
        );
    }

    #[test]
    fn install_uninstall_and_open_take_their_own_arguments_only() {
        assert_eq!(cmd(&["install"]), Ok(Command::Install(Scope::User)));
        assert_eq!(
            cmd(&["install", "--system"]),
            Ok(Command::Install(Scope::System))
        );
        assert_eq!(
            cmd(&["uninstall", "--system"]),
            Ok(Command::Uninstall(Scope::System))
        );
        let link = "packetflix:ws://h:5001/capture?netns=1&nif=eth0/lo";
        assert_eq!(cmd(&["open", link]), Ok(Command::Open(link.into())));
        for bad in [
            &["install", "http://h:1"][..],
            &["install", "--netns", "1"],
            &["uninstall", "--token", "t"],
            &["open"],
            &["open", "--url", link],
            &["--netns", "1", "--system"],
            &["targets", "--system"],
        ] {
            assert!(cmd(bad).is_err(), "{bad:?}");
        }
    }
}
