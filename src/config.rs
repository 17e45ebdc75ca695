//! Command line -> [`Config`]. Pure: parses the argument list and returns
//! what to do; printing and exiting are the binary's job.

use std::path::PathBuf;
use std::time::Duration;

/// Limits the command line sets (`--max-*`): their defaults and bounds.
/// The protocol wing enforces them and reads them from here, so this
/// module, shared by every wing, imports nothing from any.
pub mod limits {
    /// Largest request head accepted: 1 MiB, what the original service accepts
    /// (Go's `http.DefaultMaxHeaderBytes`). csharg sends a target description
    /// and its interface list twice (query and headers), so a target with
    /// hundreds of interfaces makes heads of tens of KiB.
    pub const MAX_HEAD: usize = 1024 * 1024;

    /// Most header lines accepted in one head; well above what any real client
    /// sends, small enough to keep parsing cheap.
    pub const MAX_HEADERS: usize = 64;

    /// Default of `--max-targets`: a containerlab topology of a few nodes fits,
    /// and each target is one capture program.
    pub const DEFAULT_MAX_TARGETS: usize = 16;

    /// Largest `--max-targets` accepted: each target takes two of the 256
    /// descriptor roles a session's poll tokens have (`service::driver::Tok`).
    pub const MAX_TARGETS_LIMIT: usize = 126;

    /// Largest `container` description we accept from a client, in bytes of JSON.
    /// A real description is a few hundred bytes, but a host namespace or a
    /// router lists hundreds or thousands of interfaces (about 20 bytes each):
    /// 256 KiB fits a bind-mount path of `PATH_MAX` plus ten thousand names, and
    /// still leaves room in a [`MAX_HEAD`] head for csharg's second
    /// copy (query string and `Clustershark-Container`).
    pub const MAX_TARGET_JSON: usize = 256 * 1024;

    /// Longest capture filter accepted. Real pcap filters are a few hundred bytes;
    /// the bound keeps argv and the SHB comment small.
    pub const MAX_FILTER: usize = 4096;
}

/// Where a capture's packets come from (`--capture-engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureEngine {
    /// The capture program (dumpcap), one process per target: what the
    /// original service does, and what operators audit.
    #[default]
    Dumpcap,
    /// Packet rings read by the service itself, no process per target.
    Native,
}

impl CaptureEngine {
    /// Its name on the command line, in `/version` and in the target
    /// document.
    pub fn name(self) -> &'static str {
        match self {
            CaptureEngine::Dumpcap => "dumpcap",
            CaptureEngine::Native => "native",
        }
    }
}

/// Everything the service takes from its command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub port: u16,
    pub discovery_service: String,
    pub gw_port: u16,
    pub discovery_timeout: Duration,
    pub proxy_discovery: bool,
    pub debug: bool,
    pub log_requests: bool,
    pub log_headers: bool,
    pub capture_program: PathBuf,
    /// Where packets come from: the capture program, or the service itself.
    pub capture_engine: CaptureEngine,
    /// How long a capture program may ignore SIGTERM before it gets SIGKILL.
    pub term_timeout: Duration,
    /// Open client connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Running captures; more are answered 503 before the upgrade.
    pub max_captures: usize,
    /// Request head size and header count (431 beyond).
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// Size of a target description and of a capture filter.
    pub max_target_json: usize,
    pub max_filter: usize,
    /// Targets in one capture (`container=[...]`); each counts as a capture.
    pub max_targets: usize,
    /// Captures of the service's own namespace include its own connection.
    pub no_self_exclusion: bool,
    /// Address to listen on; `None`: `[::]` dual-stack.
    pub listen: Option<std::net::IpAddr>,
    /// Browser origins admitted for upgrades besides the request's own.
    pub allow_origins: Vec<String>,
    /// Host names the service is reached by, besides IP literals,
    /// `localhost` and the machine's own name (browser upgrades under
    /// other names are refused: DNS rebinding).
    pub allow_hosts: Vec<String>,
    /// Bearer tokens, one per line; `None`: no token needed.
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS/wss.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 5001,
            discovery_service: "127.0.0.1".into(),
            gw_port: 5000,
            discovery_timeout: Duration::from_secs(20),
            proxy_discovery: false,
            debug: false,
            log_requests: false,
            log_headers: false,
            capture_program: PathBuf::from("/usr/bin/dumpcap"),
            capture_engine: CaptureEngine::Dumpcap,
            term_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_captures: 1024,
            max_head_bytes: limits::MAX_HEAD,
            max_headers: limits::MAX_HEADERS,
            max_target_json: limits::MAX_TARGET_JSON,
            max_filter: limits::MAX_FILTER,
            max_targets: limits::DEFAULT_MAX_TARGETS,
            no_self_exclusion: false,
            listen: None,
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

pub const USAGE: &str = "\
Usage: packetflix [OPTIONS]

Streams live packet captures from container network namespaces to websocket
clients (GET /capture), with GET /version for clients to check the service.

Options:
  -p, --port PORT                service port [default: 5001]
      --discovery-service HOST   discovery service (GhostWire) host [default: 127.0.0.1]
      --gw-port PORT             discovery service port [default: 5000]
      --discovery-timeout SECS   deadline for a discovery exchange [default: 20]
      --proxy-discovery          forward other requests to the discovery service
      --capture-program PATH     capture program [default: /usr/bin/dumpcap]
      --capture-engine NAME      dumpcap (a capture program per target) or native
                                 (packet rings read by the service) [default: dumpcap]
      --term-timeout SECS        SIGTERM -> SIGKILL deadline for captures [default: 10]
      --max-connections N        open connections; more get 503 [default: 4096]
      --max-captures N           running captures; more get 503 [default: 1024]
      --max-head-bytes N         request head size; larger get 431 [default: 1048576]
      --max-headers N            request header count; more get 431 [default: 64]
      --max-target-json N        container description size [default: 262144]
      --max-filter N             capture filter length [default: 4096]
      --max-targets N            targets in one capture, each counting as a
                                 capture [default: 16, at most 126]
      --no-self-exclusion        let captures of the service's own namespace
                                 include their own connection
      --listen ADDR              address to listen on [default: [::], dual-stack]
      --token-file FILE          bearer tokens, one per line: /capture and proxied
                                 requests need one (reloaded on SIGHUP)
      --allow-origin ORIGIN      also admit websocket upgrades from this browser
                                 origin (repeatable)
      --allow-host NAME          a host name the service is reached by (besides IP
                                 addresses, localhost and the machine's name):
                                 browser pages under it may capture (repeatable)
      --tls-cert FILE            PEM certificate chain: serve HTTPS and wss://
                                 (reloaded on SIGHUP)
      --tls-key FILE             PEM private key for --tls-cert
      --debug                    debug logging
      --log-requests             log each request (common log format)
      --log-headers              also log request headers
      --version                  print the version and exit
  -h, --help                     print this help and exit
";

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut cfg = Config::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both "--flag value" and "--flag=value".
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            "-p" | "--port" => cfg.port = port(&flag, &value(&flag)?)?,
            "--gw-port" => cfg.gw_port = port(&flag, &value(&flag)?)?,
            "--discovery-service" => {
                let v = value(&flag)?;
                if v.is_empty() {
                    return Err(format!("{flag} must not be empty"));
                }
                cfg.discovery_service = v;
            }
            "--discovery-timeout" => cfg.discovery_timeout = seconds(&flag, &value(&flag)?)?,
            "--term-timeout" => cfg.term_timeout = seconds(&flag, &value(&flag)?)?,
            "--capture-program" => cfg.capture_program = PathBuf::from(value(&flag)?),
            "--capture-engine" => {
                cfg.capture_engine = match value(&flag)?.as_str() {
                    "dumpcap" => CaptureEngine::Dumpcap,
                    "native" => CaptureEngine::Native,
                    other => {
                        return Err(format!(
                            "{flag}: '{other}' is not a capture engine (dumpcap or native)"
                        ))
                    }
                }
            }
            "--max-connections" => cfg.max_connections = count(&flag, &value(&flag)?, 1, 1 << 20)?,
            "--max-captures" => cfg.max_captures = count(&flag, &value(&flag)?, 1, 1 << 20)?,
            "--max-head-bytes" => cfg.max_head_bytes = count(&flag, &value(&flag)?, 256, 1 << 20)?,
            "--max-headers" => cfg.max_headers = count(&flag, &value(&flag)?, 4, 256)?,
            "--max-target-json" => cfg.max_target_json = count(&flag, &value(&flag)?, 2, 1 << 20)?,
            "--max-filter" => cfg.max_filter = count(&flag, &value(&flag)?, 1, 1 << 16)?,
            "--max-targets" => {
                let max = limits::MAX_TARGETS_LIMIT;
                cfg.max_targets = count(&flag, &value(&flag)?, 1, max)?;
            }
            "--listen" => {
                let v = value(&flag)?;
                let bare = v.trim_start_matches('[').trim_end_matches(']');
                cfg.listen = Some(bare.parse().map_err(|_| {
                    format!("{flag}: '{v}' is not an IP address (e.g. 127.0.0.1 or [::1])")
                })?);
            }
            "--allow-origin" => cfg.allow_origins.push(value(&flag)?),
            "--allow-host" => cfg.allow_hosts.push(value(&flag)?),
            "--token-file" => cfg.token_file = Some(PathBuf::from(value(&flag)?)),
            "--tls-cert" => cfg.tls_cert = Some(PathBuf::from(value(&flag)?)),
            "--tls-key" => cfg.tls_key = Some(PathBuf::from(value(&flag)?)),
            "--proxy-discovery"
            | "--debug"
            | "--log-requests"
            | "--log-headers"
            | "--no-self-exclusion"
                if inline.is_some() =>
            {
                return Err(format!("{flag} takes no value"));
            }
            "--proxy-discovery" => cfg.proxy_discovery = true,
            "--debug" => cfg.debug = true,
            "--no-self-exclusion" => cfg.no_self_exclusion = true,
            "--log-requests" => cfg.log_requests = true,
            "--log-headers" => cfg.log_headers = true,
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    if cfg.tls_cert.is_some() != cfg.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    Ok(Command::Run(Box::new(cfg)))
}

fn port(flag: &str, v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{flag}: '{v}' is not a port number (1-65535)")),
    }
}

fn count(flag: &str, v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag}: '{v}' is not a number from {min} to {max}")),
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{flag}: '{v}' is not a number of seconds (0 < s <= 86400)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_give_the_documented_defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.port, 5001);
        assert_eq!(c.gw_port, 5000);
        assert_eq!(c.discovery_service, "127.0.0.1");
        assert_eq!(c.discovery_timeout, Duration::from_secs(20));
        assert_eq!(c.term_timeout, Duration::from_secs(10));
        assert_eq!(c.capture_program, PathBuf::from("/usr/bin/dumpcap"));
        assert!(!c.proxy_discovery && !c.debug && !c.log_requests && !c.log_headers);
    }

    #[test]
    fn short_and_long_and_inline_values_are_accepted() {
        assert_eq!(run(&["-p", "6000"]).unwrap().port, 6000);
        assert_eq!(run(&["--port=6001"]).unwrap().port, 6001);
        let c = run(&[
            "--discovery-service",
            "gw.local",
            "--gw-port",
            "5555",
            "--discovery-timeout",
            "0.5",
            "--proxy-discovery",
            "--debug",
            "--log-requests",
            "--log-headers",
            "--capture-program",
            "/bin/true",
        ])
        .unwrap();
        assert_eq!(c.discovery_service, "gw.local");
        assert_eq!(c.gw_port, 5555);
        assert_eq!(c.discovery_timeout, Duration::from_millis(500));
        assert!(c.proxy_discovery && c.debug && c.log_requests && c.log_headers);
        assert_eq!(c.capture_program, PathBuf::from("/bin/true"));
    }

    #[test]
    fn help_and_version_win_wherever_they_stand() {
        let p = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string())).unwrap();
        assert_eq!(p(&["--debug", "-h"]), Command::Help);
        assert_eq!(p(&["--help"]), Command::Help);
        assert_eq!(p(&["--version"]), Command::Version);
    }

    #[test]
    fn bad_flags_and_values_are_errors_naming_them() {
        assert!(run(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(run(&["--port", "0"]).unwrap_err().contains("--port"));
        assert!(run(&["--port", "70000"]).unwrap_err().contains("70000"));
        assert!(run(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(run(&["--gw-port", "x"]).is_err());
        assert!(run(&["--discovery-timeout", "-1"]).is_err());
        assert!(run(&["--discovery-timeout", "NaN"]).is_err());
        assert!(run(&["--debug=yes"])
            .unwrap_err()
            .contains("takes no value"));
        assert!(run(&["--discovery-service", ""]).is_err());
        assert!(run(&["--max-captures", "0"])
            .unwrap_err()
            .contains("--max-captures"));
        assert!(run(&["--max-headers", "1000"]).is_err());
    }

    #[test]
    fn security_flags_parse_and_pair() {
        let c = run(&[]).unwrap();
        assert!(c.listen.is_none() && c.token_file.is_none() && c.tls_cert.is_none());
        let c = run(&[
            "--listen",
            "[::1]",
            "--allow-origin",
            "https://a",
            "--allow-origin=https://b",
            "--allow-host",
            "ui.example",
            "--token-file",
            "/t",
            "--tls-cert",
            "/c",
            "--tls-key",
            "/k",
        ])
        .unwrap();
        assert_eq!(c.listen, Some("::1".parse().unwrap()));
        assert_eq!(c.allow_origins, ["https://a", "https://b"]);
        assert_eq!(c.allow_hosts, ["ui.example"]);
        assert_eq!(c.token_file, Some(PathBuf::from("/t")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/k")));
        assert_eq!(
            run(&["--listen", "127.0.0.1"]).unwrap().listen,
            Some("127.0.0.1".parse().unwrap())
        );
        assert!(run(&["--listen", "localhost"])
            .unwrap_err()
            .contains("--listen"));
        assert!(run(&["--tls-cert", "/c"]).unwrap_err().contains("together"));
    }

    #[test]
    fn limits_have_defaults_and_flags() {
        let c = run(&[]).unwrap();
        assert_eq!((c.max_connections, c.max_captures), (4096, 1024));
        assert_eq!((c.max_head_bytes, c.max_headers), (1 << 20, 64));
        assert_eq!(c.max_target_json, 256 * 1024);
        let c = run(&[
            "--max-captures",
            "3",
            "--max-connections=10",
            "--max-filter",
            "8",
        ])
        .unwrap();
        assert_eq!(
            (c.max_captures, c.max_connections, c.max_filter),
            (3, 10, 8)
        );
    }
}
