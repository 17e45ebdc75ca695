//! Service and discovery URLs, and the capture request built from them.
//!
//! Users name the service as `http://host:5001`, `ws://host:5001`, a bare
//! `host[:port]`, or a `packetflix:ws://host:port[/base]/capture?container=…&nif=eth0/lo`
//! (or `packetflix://…`) URL that GhostWire's capture buttons produce (its
//! query names the target; `nif` may carry raw slashes). This
//! module turns those into the websocket URL, query and `Clustershark-*`
//! headers the service expects, and the discovery URL to list targets. No I/O
//! here. `https`, `wss` and `packetflix:wss` keep TLS all the way: the
//! capture URL is `wss://`, the discovery proxy `https://`, never downgraded.

/// The service's default port (`packetflix --port`), used when a bare host is
/// given without a scheme.
pub const DEFAULT_SERVICE_PORT: u16 = 5001;
/// GhostWire's default port (`packetflix --gw-port`), for a bare discovery host.
pub const DEFAULT_DISCOVERY_PORT: u16 = 5000;
/// The port an `http`/`ws` URL without one means (RFC 9110, RFC 6455).
const HTTP_PORT: u16 = 80;
/// The port an `https`/`wss` URL without one means.
const HTTPS_PORT: u16 = 443;

/// A URL split into the parts this client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    /// Host as written, without IPv6 brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Path without a trailing slash; empty for the root.
    pub path: String,
    /// Decoded query parameters in order; a bare key has an empty value.
    pub query: Vec<(String, String)>,
    /// CA, verification and token settings for connecting to it.
    pub access: super::tls::Access,
}

impl Url {
    /// Parses `scheme://host[:port][/path][?query][#fragment]`; without a
    /// scheme, `default_scheme` is assumed.
    pub fn parse(text: &str, default_scheme: &str) -> Result<Url, String> {
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((s, r))
                if !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.:".contains(c)) =>
            {
                (s.to_ascii_lowercase(), r)
            }
            _ => (default_scheme.to_string(), text),
        };
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("{text}: credentials in URLs are not supported"));
        }
        let (host, port) = split_host_port(authority).map_err(|why| format!("{text}: {why}"))?;
        if host.is_empty() {
            return Err(format!("{text}: no host"));
        }
        Ok(Url {
            scheme,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
            query: crate::proto::params::parse_query(raw_query)
                .map_err(|e| format!("{text}: {e}"))?,
            access: Default::default(),
        })
    }

    /// Whether connecting means TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme.as_str(), "https" | "wss")
    }

    /// `host:port` for connecting and for the `Host` header (IPv6 bracketed).
    pub fn authority(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }

    fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unterminated IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after IPv6 address")?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!("bad port {p:?}"))?,
        ),
    };
    Ok((host.to_string(), port))
}

/// RFC 3986's unreserved characters are the only ones left as they are.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes everything but RFC 3986's unreserved characters, so any filter
/// expression or JSON survives the query intact.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// What to capture from: exactly one of the service's two ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A bare network namespace inode.
    Netns(u64),
    /// A target description as GhostWire lists it, as compact JSON.
    Container(String),
}

/// The capture parameters, as query and as headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureParams {
    pub target: Option<Target>,
    /// Interfaces separated by `/`.
    pub nif: Option<String>,
    pub filter: Option<String>,
    pub chaste: bool,
}

impl CaptureParams {
    /// The query string (without `?`), in the order the service documents.
    pub fn query(&self) -> String {
        let mut pairs = Vec::new();
        match &self.target {
            Some(Target::Container(json)) => {
                pairs.push(format!("container={}", percent_encode(json)))
            }
            Some(Target::Netns(inode)) => pairs.push(format!("netns={inode}")),
            None => {}
        }
        if let Some(nif) = &self.nif {
            pairs.push(format!("nif={}", percent_encode(nif)));
        }
        if let Some(filter) = &self.filter {
            pairs.push(format!("filter={}", percent_encode(filter)));
        }
        if self.chaste {
            pairs.push("chaste".to_string());
        }
        pairs.join("&")
    }

    /// The `Clustershark-*` headers, sent because some proxies (the
    /// Kubernetes API server's pod proxy) drop the query of websocket
    /// upgrades. `netns` has no header; the chaste header carries an empty
    /// value, as the original csharg client sends it.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(Target::Container(json)) = &self.target {
            headers.push(("Clustershark-Container", json.clone()));
        }
        if let Some(nif) = &self.nif {
            headers.push(("Clustershark-Nif", nif.clone()));
        }
        if let Some(filter) = &self.filter {
            headers.push(("Clustershark-Filter", filter.clone()));
        }
        if self.chaste {
            headers.push(("Clustershark-Chaste", String::new()));
        }
        headers
    }
}

/// Where the Packetflix service is, and what its URL already says about the
/// capture (a `packetflix://` URL carries the target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUrl {
    pub url: Url,
    pub params: CaptureParams,
}

impl ServiceUrl {
    pub fn parse(text: &str) -> Result<ServiceUrl, String> {
        // GhostWire's UI writes `packetflix:ws://host:port/…` (or
        // `packetflix:wss://…` over HTTPS); `packetflix://…` is the short
        // form. Both mean a websocket URL.
        let inner = text.trim().strip_prefix("packetflix:");
        let mut url = match inner {
            Some(rest) if rest.starts_with("//") => Url::parse(&format!("ws:{rest}"), "ws")?,
            Some(rest) => Url::parse(rest, "ws")?,
            None => Url::parse(text, "bare")?,
        };
        match url.scheme.as_str() {
            "http" | "ws" => url.port = url.port.or(Some(HTTP_PORT)),
            "bare" => url.port = url.port.or(Some(DEFAULT_SERVICE_PORT)),
            "https" | "wss" => url.port = url.port.or(Some(HTTPS_PORT)),
            other => {
                return Err(format!(
                    "{text}: unsupported scheme {other:?} (use http, https, ws, wss or packetflix)"
                ))
            }
        }
        if let Some(base) = url.path.strip_suffix("/capture") {
            url.path = base.to_string();
        }
        let params = params_from_query(&url)?;
        url.query.clear();
        Ok(ServiceUrl { url, params })
    }

    /// The websocket URL of a capture with `params`.
    pub fn capture_url(&self, params: &CaptureParams) -> String {
        let query = params.query();
        let sep = if query.is_empty() { "" } else { "?" };
        format!(
            "{}://{}{}/capture{sep}{query}",
            if self.url.is_tls() { "wss" } else { "ws" },
            self.authority(),
            self.url.path
        )
    }

    /// The service's discovery proxy (`--proxy-discovery`) for GhostWire's
    /// target list.
    pub fn discovery_url(&self) -> Url {
        Url {
            scheme: if self.url.is_tls() { "https" } else { "http" }.into(),
            host: self.url.host.clone(),
            port: self.url.port,
            path: format!("{}/discover/mobyshark", self.url.path),
            query: Vec::new(),
            access: self.url.access.clone(),
        }
    }

    pub fn authority(&self) -> String {
        self.url.authority(DEFAULT_SERVICE_PORT)
    }
}

fn params_from_query(url: &Url) -> Result<CaptureParams, String> {
    let container = url.query_value("container");
    let netns = url.query_value("netns");
    let target = match (container, netns) {
        (Some(_), Some(_)) => return Err("the URL names both a container and a netns".into()),
        (Some(json), None) => Some(Target::Container(compact_json(json)?)),
        (None, Some(n)) => Some(Target::Netns(parse_netns(n)?)),
        (None, None) => None,
    };
    Ok(CaptureParams {
        target,
        nif: url.query_value("nif").map(str::to_string),
        filter: url.query_value("filter").map(str::to_string),
        chaste: url.query_value("chaste").is_some(),
    })
}

/// Parses a discovery service URL: `http://host[:port][/path]`, or a bare
/// `host[:port]` (GhostWire's default port). `/mobyshark` is appended unless
/// the path already ends with it.
pub fn discovery_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text, "bare")?;
    match url.scheme.as_str() {
        "http" => url.port = url.port.or(Some(HTTP_PORT)),
        "bare" => {
            url.scheme = "http".into();
            url.port = url.port.or(Some(DEFAULT_DISCOVERY_PORT));
        }
        other => {
            return Err(format!(
                "{text}: the discovery service is reached over plain http, not {other}"
            ))
        }
    }
    if !url.path.ends_with("/mobyshark") {
        url.path.push_str("/mobyshark");
    }
    Ok(url)
}

/// Checks that `json` is a JSON object and returns it without whitespace
/// between tokens, so it fits in one header line. The text is otherwise kept
/// as given (key order, number spelling): it is the user's, or GhostWire's.
pub fn compact_json(json: &str) -> Result<String, String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => {}
        // Several targets in one capture.
        Ok(serde_json::Value::Array(items))
            if !items.is_empty() && items.iter().all(serde_json::Value::is_object) => {}
        Ok(_) => {
            return Err(
                "the container description must be a JSON object, or an array of them".into(),
            )
        }
        Err(e) => return Err(format!("the container description is not valid JSON: {e}")),
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    Ok(out)
}

/// A network namespace inode: decimal and above zero, as the service requires.
pub fn parse_netns(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a network namespace inode (a decimal number above 0)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packetflix_testkit::encode_uri_component;

    #[test]
    fn http_url_without_port_means_port_80() {
        let s = ServiceUrl::parse("http://example.net").unwrap();
        assert_eq!(s.authority(), "example.net:80");
        assert_eq!(
            s.capture_url(&CaptureParams::default()),
            "ws://example.net:80/capture"
        );
    }

    #[test]
    fn bare_host_means_the_service_default_port() {
        let s = ServiceUrl::parse("edge-node-1").unwrap();
        assert_eq!(s.authority(), "edge-node-1:5001");
        let s = ServiceUrl::parse("127.0.0.1:6001").unwrap();
        assert_eq!(s.authority(), "127.0.0.1:6001");
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_in_the_authority() {
        let s = ServiceUrl::parse("ws://[::1]:5001/").unwrap();
        assert_eq!(s.url.host, "::1");
        assert_eq!(s.authority(), "[::1]:5001");
    }

    #[test]
    fn base_path_is_kept_and_capture_suffix_dropped() {
        let s = ServiceUrl::parse("http://proxy:8080/k8s/node1/capture").unwrap();
        assert_eq!(
            s.capture_url(&CaptureParams::default()),
            "ws://proxy:8080/k8s/node1/capture"
        );
        assert_eq!(s.discovery_url().path, "/k8s/node1/discover/mobyshark");
    }

    #[test]
    fn packetflix_url_from_ghostwire_carries_its_target() {
        let json = r#"{"name":"mosquitto","type":"docker","netns":4026532777,"prefix":""}"#;
        let text = format!(
            "packetflix://edge:5001/capture?container={}&nif=eth0%2Flo",
            percent_encode(json)
        );
        let s = ServiceUrl::parse(&text).unwrap();
        assert_eq!(s.authority(), "edge:5001");
        assert_eq!(
            s.params.target,
            Some(Target::Container(compact_json(json).unwrap()))
        );
        assert_eq!(s.params.nif.as_deref(), Some("eth0/lo"));
        assert!(!s.params.chaste);
    }

    #[test]
    fn ghostwire_ui_link_with_raw_slashes_in_nif_is_read() {
        let json = r#"{"netns":4026532777,"network-interfaces":["eth0","lo"],"name":"web (1)","type":"docker","prefix":""}"#;
        let text = format!(
            "packetflix:ws://edge:5001/gw/base/capture?container={}&nif=eth0/lo",
            encode_uri_component(json)
        );
        let s = ServiceUrl::parse(&text).unwrap();
        assert_eq!(s.authority(), "edge:5001");
        assert_eq!(s.url.path, "/gw/base");
        assert_eq!(s.params.nif.as_deref(), Some("eth0/lo"));
        assert_eq!(s.params.target, Some(Target::Container(json.to_string())));
        assert_eq!(
            s.capture_url(&s.params),
            format!(
                "ws://edge:5001/gw/base/capture?container={}&nif=eth0%2Flo",
                percent_encode(json)
            )
        );
        // The same link as packetflix://, and with a raw slash also in
        // the JSON (a bind-mount path as the name).
        let json = r#"{"netns":1,"name":"/run/netns/x"}"#;
        let s = ServiceUrl::parse(&format!(
            "packetflix://edge:5001/capture?nif=eth0/lo&container={}",
            json.replace('"', "%22")
        ))
        .unwrap();
        assert_eq!(s.url.path, "");
        assert_eq!(s.params.nif.as_deref(), Some("eth0/lo"));
        assert_eq!(s.params.target, Some(Target::Container(json.to_string())));
    }

    #[test]
    fn packetflix_url_with_explicit_ws_scheme_is_accepted() {
        let s = ServiceUrl::parse("packetflix:ws://h:7/capture?netns=42&chaste").unwrap();
        assert_eq!(s.authority(), "h:7");
        assert_eq!(s.params.target, Some(Target::Netns(42)));
        assert!(s.params.chaste);
    }

    #[test]
    fn tls_urls_stay_tls_with_port_443_by_default() {
        let s = ServiceUrl::parse("https://h").unwrap();
        assert_eq!(
            s.capture_url(&CaptureParams::default()),
            "wss://h:443/capture"
        );
        assert_eq!(s.discovery_url().scheme, "https");
        let s = ServiceUrl::parse("wss://h:1/base").unwrap();
        assert_eq!(
            s.capture_url(&CaptureParams::default()),
            "wss://h:1/base/capture"
        );
        let s = ServiceUrl::parse("packetflix:wss://h:7/capture?netns=42").unwrap();
        assert!(s.url.is_tls());
        assert_eq!(s.params.target, Some(Target::Netns(42)));
        assert!(!ServiceUrl::parse("packetflix:ws://h:7")
            .unwrap()
            .url
            .is_tls());
    }

    #[test]
    fn url_with_both_container_and_netns_is_refused() {
        assert!(ServiceUrl::parse("ws://h:1/capture?netns=1&container=%7B%7D").is_err());
    }

    #[test]
    fn bad_ports_and_unknown_schemes_are_refused() {
        assert!(ServiceUrl::parse("http://h:99999").is_err());
        assert!(ServiceUrl::parse("http://h:0").is_err());
        assert!(ServiceUrl::parse("ftp://h").is_err());
        assert!(ServiceUrl::parse("http://user:pw@h").is_err());
        assert!(ServiceUrl::parse("http://[::1").is_err());
    }

    #[test]
    fn query_escapes_filter_and_json_so_they_survive() {
        let p = CaptureParams {
            target: Some(Target::Container(r#"{"name":"a b&c"}"#.into())),
            nif: Some("eth0/lo".into()),
            filter: Some("tcp port 80 and not host 10.0.0.1".into()),
            chaste: true,
        };
        let q = p.query();
        assert_eq!(
            q,
            "container=%7B%22name%22%3A%22a%20b%26c%22%7D&nif=eth0%2Flo\
             &filter=tcp%20port%2080%20and%20not%20host%2010.0.0.1&chaste"
        );
        let back = Url::parse(&format!("ws://h/capture?{q}"), "ws").unwrap();
        assert_eq!(back.query_value("filter"), p.filter.as_deref());
        assert_eq!(back.query_value("container"), Some(r#"{"name":"a b&c"}"#));
    }

    #[test]
    fn headers_repeat_the_query_except_netns() {
        let p = CaptureParams {
            target: Some(Target::Netns(7)),
            nif: Some("any".into()),
            filter: None,
            chaste: true,
        };
        assert_eq!(
            p.headers(),
            vec![
                ("Clustershark-Nif", "any".to_string()),
                ("Clustershark-Chaste", String::new())
            ]
        );
        let p = CaptureParams {
            target: Some(Target::Container("{}".into())),
            ..Default::default()
        };
        assert_eq!(
            p.headers(),
            vec![("Clustershark-Container", "{}".to_string())]
        );
    }

    #[test]
    fn malformed_query_escapes_are_refused() {
        assert!(ServiceUrl::parse("packetflix://h:1/capture?container=%7").is_err());
        let s = ServiceUrl::parse("ws://h:1/capture?filter=udp+port+53&nif=a%2Fb").unwrap();
        assert_eq!(s.params.filter.as_deref(), Some("udp port 53"));
        assert_eq!(s.params.nif.as_deref(), Some("a/b"));
    }

    #[test]
    fn discovery_url_appends_mobyshark_once() {
        let u = discovery_url("gw.local").unwrap();
        assert_eq!(
            (u.authority(0), u.path.as_str()),
            ("gw.local:5000".into(), "/mobyshark")
        );
        let u = discovery_url("http://gw:6000/mobyshark").unwrap();
        assert_eq!(u.path, "/mobyshark");
        assert!(discovery_url("ws://gw").is_err());
    }

    #[test]
    fn container_json_must_be_an_object_and_is_compacted() {
        assert_eq!(
            compact_json("{ \"name\" : \"x\" }\n").unwrap(),
            r#"{"name":"x"}"#
        );
        assert_eq!(
            compact_json(r#"{"type": "docker", "name": "a \" b\\", "n" : [1, 2]}"#).unwrap(),
            r#"{"type":"docker","name":"a \" b\\","n":[1,2]}"#,
            "key order and blanks inside strings are kept"
        );
        assert!(compact_json("[1]").is_err());
        assert!(compact_json("{name").is_err());
    }

    #[test]
    fn netns_must_be_a_positive_decimal() {
        assert_eq!(parse_netns("4026531840"), Ok(4026531840));
        assert!(parse_netns("0").is_err());
        assert!(parse_netns("-1").is_err());
        assert!(parse_netns("net:[4026531840]").is_err());
    }
}
