//! What a parsed request head asks for: a response right away, a capture, or
//! (with `--proxy-discovery`) a trip to the discovery service. No I/O here;
//! the session performs what [`route`] decides.

use crate::proto::http::{self, BodyKind, Request, Upgrade};

/// The decision for one request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answer with these bytes. `keep_alive`: the connection may carry the
    /// next request; otherwise it closes once the bytes are out.
    Respond {
        status: u16,
        bytes: Vec<u8>,
        keep_alive: bool,
    },
    /// A websocket capture request; answer the handshake with `accept`.
    Capture { accept: String },
    /// Forward to the discovery service, with this path and query.
    Proxy { target: String },
}

/// The media type of Prometheus' text format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Routes a request head. `proxy`: whether `--proxy-discovery` is on;
/// `engine`: the capture engine `/version` names;
/// `metrics`: the service's counters as text, asked for only by `/metrics`.
pub fn route(req: &Request, proxy: bool, engine: &str, metrics: impl FnOnce() -> String) -> Route {
    let mut route = match req.path.as_str() {
        "/capture" => capture(req),
        "/version" => version(req, engine),
        "/metrics" => scrape(req, metrics),
        _ if proxy => Route::Proxy {
            target: proxied_target(req),
        },
        _ => plain(req, 404, &[], b"not found\n"),
    };
    if let (Route::Respond { bytes, .. }, "HEAD") = (&mut route, req.method.as_str()) {
        strip_body(bytes);
    }
    route
}

/// A response to HEAD has the headers of the GET response but never a body
/// (RFC 9110 9.3.2): on a kept-alive connection the client would read the
/// body as the start of the next response.
fn strip_body(bytes: &mut Vec<u8>) {
    if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        bytes.truncate(end + 4);
    }
}

fn capture(req: &Request) -> Route {
    let text = |status: u16, extra: &[(&str, &str)], body: &str| Route::Respond {
        status,
        bytes: http::response(
            status,
            extra,
            "text/plain; charset=utf-8",
            format!("{body}\n").as_bytes(),
            true,
        ),
        keep_alive: false,
    };
    match http::websocket_upgrade(req) {
        Upgrade::WebSocket { accept } => Route::Capture { accept },
        Upgrade::None => text(
            426,
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            "this is a packet capture websocket: connect with the websocket protocol",
        ),
        Upgrade::Refused(426, why) => text(426, &[("Sec-WebSocket-Version", "13")], why),
        Upgrade::Refused(status, why) => text(status, &[], why),
    }
}

fn version(req: &Request, engine: &str) -> Route {
    match req.method.as_str() {
        // HEAD loses the body in `route`.
        "GET" | "HEAD" => json(req, &http::version_body(engine)),
        _ => plain(req, 405, &[("Allow", "GET, HEAD")], b"use GET\n"),
    }
}

/// Prometheus' scrape of the service's counters; open like `/version`.
fn scrape(req: &Request, metrics: impl FnOnce() -> String) -> Route {
    match req.method.as_str() {
        "GET" | "HEAD" => {
            let keep_alive = reusable(req);
            let body = metrics();
            Route::Respond {
                status: 200,
                bytes: http::response(200, &[], METRICS_CONTENT_TYPE, body.as_bytes(), !keep_alive),
                keep_alive,
            }
        }
        _ => plain(req, 405, &[("Allow", "GET, HEAD")], b"use GET\n"),
    }
}

/// Whether the connection can carry another request after this one. A
/// request with a body ends it: no local endpoint reads bodies, and skipping
/// one is not worth the smuggling risk.
fn reusable(req: &Request) -> bool {
    req.keep_alive() && matches!(req.body_kind(), Ok(BodyKind::None))
}

fn json(req: &Request, body: &[u8]) -> Route {
    let keep_alive = reusable(req);
    Route::Respond {
        status: 200,
        bytes: http::response(200, &[], "application/json", body, !keep_alive),
        keep_alive,
    }
}

fn plain(req: &Request, status: u16, extra: &[(&str, &str)], body: &[u8]) -> Route {
    let keep_alive = reusable(req);
    Route::Respond {
        status,
        bytes: http::response(
            status,
            extra,
            "text/plain; charset=utf-8",
            body,
            !keep_alive,
        ),
        keep_alive,
    }
}

/// The path and query to ask the discovery service for: a leading
/// `/discover` segment removed (`/discover/mobyshark` -> `/mobyshark`,
/// `/discover` -> `/`), the rest kept.
pub fn proxied_target(req: &Request) -> String {
    let path = req.path.as_str();
    let rest = match path.strip_prefix("/discover") {
        Some("") => "/",
        Some(r) if r.starts_with('/') => r,
        _ => path,
    };
    match &req.query {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request;

    fn req(s: &str) -> Request {
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    fn status(r: &Route) -> u16 {
        match r {
            Route::Respond { status, .. } => *status,
            Route::Capture { .. } => 101,
            Route::Proxy { .. } => 0,
        }
    }

    #[test]
    fn version_answers_json_and_keeps_the_connection() {
        let r = route(
            &req("GET /version HTTP/1.1\r\n\r\n"),
            false,
            "dumpcap",
            String::new,
        );
        let Route::Respond {
            status,
            bytes,
            keep_alive,
        } = r
        else {
            panic!()
        };
        assert_eq!((status, keep_alive), (200, true));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(
            text.ends_with(r#"{"name":"packetflix","version":"0.1.0","capture-engine":"dumpcap"}"#)
        );
    }

    #[test]
    fn head_version_has_no_body_but_the_same_length() {
        let Route::Respond { bytes, .. } = route(
            &req("HEAD /version HTTP/1.1\r\n\r\n"),
            false,
            "dumpcap",
            String::new,
        ) else {
            panic!()
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\r\n\r\n"));
        assert!(text.contains(&format!(
            "Content-Length: {}",
            http::version_body("dumpcap").len()
        )));
    }

    #[test]
    fn head_requests_get_no_body_whatever_the_status() {
        // Found by the http_head fuzz target: a 404 to HEAD carried
        // "not found\n", which a kept-alive client reads as its next response.
        for (head, want) in [
            ("HEAD /nope HTTP/1.1\r\n\r\n", 404),
            ("HEAD /capture?netns=1 HTTP/1.1\r\n\r\n", 426),
            (
                "HEAD /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                200,
            ),
        ] {
            let Route::Respond { status, bytes, .. } =
                route(&req(head), false, "dumpcap", String::new)
            else {
                panic!("{head}")
            };
            assert_eq!(status, want);
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "{head}: {text:?}");
            assert!(!text.contains("Content-Length: 0\r\n"), "{head}: {text:?}");
        }
    }

    #[test]
    fn metrics_answers_the_prometheus_text_format() {
        let Route::Respond {
            status,
            bytes,
            keep_alive,
        } = route(
            &req("GET /metrics HTTP/1.1\r\n\r\n"),
            true,
            "dumpcap",
            crate::metrics::render,
        )
        else {
            panic!("/metrics must not be proxied")
        };
        assert_eq!((status, keep_alive), (200, true));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(text.contains("\r\n\r\n# HELP packetflix_"));
        assert_eq!(
            self::status(&route(
                &req("POST /metrics HTTP/1.1\r\n\r\n"),
                false,
                "dumpcap",
                String::new
            )),
            405
        );
    }

    #[test]
    fn other_methods_on_version_get_405() {
        assert_eq!(
            status(&route(
                &req("DELETE /version HTTP/1.1\r\n\r\n"),
                false,
                "dumpcap",
                String::new
            )),
            405
        );
    }

    #[test]
    fn plain_get_of_capture_gets_426_and_closes() {
        let r = route(
            &req("GET /capture?netns=1 HTTP/1.1\r\n\r\n"),
            false,
            "dumpcap",
            String::new,
        );
        let Route::Respond {
            status,
            bytes,
            keep_alive,
        } = r
        else {
            panic!()
        };
        assert_eq!((status, keep_alive), (426, false));
        assert!(String::from_utf8(bytes).unwrap().contains("websocket"));
    }

    #[test]
    fn websocket_capture_is_routed_with_its_accept_key() {
        let r = route(
            &req(
                "GET /capture?netns=1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ),
            false,
            "dumpcap",
            String::new,
        );
        assert_eq!(
            r,
            Route::Capture {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
    }

    #[test]
    fn unknown_paths_are_404_without_proxy_and_forwarded_with_it() {
        assert_eq!(
            status(&route(
                &req("GET /mobyshark HTTP/1.1\r\n\r\n"),
                false,
                "dumpcap",
                String::new
            )),
            404
        );
        assert_eq!(
            route(
                &req("GET /discover/mobyshark?x=1 HTTP/1.1\r\n\r\n"),
                true,
                "dumpcap",
                String::new
            ),
            Route::Proxy {
                target: "/mobyshark?x=1".into()
            }
        );
    }

    #[test]
    fn discover_prefix_is_removed_only_as_a_whole_segment() {
        let t = |s: &str| proxied_target(&req(&format!("GET {s} HTTP/1.1\r\n\r\n")));
        assert_eq!(t("/discover"), "/");
        assert_eq!(t("/discover/"), "/");
        assert_eq!(t("/discover/a/b?q"), "/a/b?q");
        assert_eq!(t("/discovery"), "/discovery");
        assert_eq!(t("/static/app.js"), "/static/app.js");
    }

    #[test]
    fn requests_with_bodies_or_close_end_the_connection() {
        let r = route(
            &req("POST /nope HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            false,
            "dumpcap",
            String::new,
        );
        let Route::Respond {
            keep_alive, bytes, ..
        } = r
        else {
            panic!()
        };
        assert!(!keep_alive);
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains("Connection: close"));
        let r = route(
            &req("GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n"),
            false,
            "dumpcap",
            String::new,
        );
        assert!(matches!(
            r,
            Route::Respond {
                keep_alive: false,
                ..
            }
        ));
    }
}
