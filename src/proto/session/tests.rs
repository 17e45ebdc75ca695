//! The session machine's transitions, one behaviour per test, driven
//! through [`super::sim::Sim`] (no sockets, no processes).

use std::sync::Arc;

use super::head::Head;
use super::sim::{Call, Sim};
use super::*;
use crate::proto::discovery::{DiscoveryError, ParsedListing};
use crate::proto::pcapng::TARGET_MARKER;
use crate::proto::ws;

/// A query value, percent-encoded as a client sends it.
fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const NS_A: u64 = 4026532001;
const NS_B: u64 = 4026532002;

fn sim() -> Sim {
    let mut s = Sim::new(Config::default(), Policy::new(&[], None).unwrap());
    s.namespaces
        .insert(NS_A, vec!["lo".to_string(), "eth0".to_string()]);
    s.namespaces.insert(NS_B, vec!["lo".to_string()]);
    s
}

/// A websocket upgrade to `/capture?<query>`.
fn upgrade(query: &str) -> Vec<u8> {
    format!(
        "GET /capture?{query} HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

fn received(s: &Sim) -> String {
    String::from_utf8_lossy(&s.client.received).into_owned()
}

/// The close frame at the end of what the client got: code and reason.
fn last_close(s: &Sim) -> Option<(u16, String)> {
    let r = &s.client.received;
    // Server frames are unmasked; a close is 0x88, then a 7-bit length.
    let at = (0..r.len())
        .rev()
        .find(|&i| r[i] == 0x88 && i + 1 < r.len() && i + 2 + r[i + 1] as usize == r.len())?;
    let payload = &r[at + 2..];
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()))
}

/// A masked client close frame with code 1000.
fn client_close() -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let payload = 1000u16.to_be_bytes();
    let mut f = vec![0x88, 0x80 | 2];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn client_ping(data: &[u8]) -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let mut f = vec![0x89, 0x80 | data.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A little-endian SHB with no options, then an IDB.
fn pcapng_start() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x0A0D0D0Au32.to_le_bytes());
    b.extend_from_slice(&28u32.to_le_bytes());
    b.extend_from_slice(&0x1A2B3C4Du32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(-1i64).to_le_bytes());
    b.extend_from_slice(&28u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&20u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&20u32.to_le_bytes());
    b
}

fn running_capture() -> Sim {
    let mut s = sim();
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo")));
    assert_eq!(s.programs.len(), 1, "{:?}", s.calls);
    s
}

fn listing(json: &str) -> Result<Arc<ParsedListing>, DiscoveryError> {
    ParsedListing::parse(json.as_bytes().to_vec()).map(Arc::new)
}

// ---- request heads -------------------------------------------------------

#[test]
fn version_is_answered_and_the_connection_waits_for_the_next_request() {
    let mut s = sim();
    s.send(b"GET /version HTTP/1.1\r\nHost: svc\r\n\r\n");
    assert!(received(&s).starts_with("HTTP/1.1 200"), "{}", received(&s));
    assert!(matches!(
        s.session.phase,
        Phase::Head(Head { first: false, .. })
    ));
    assert_eq!(s.session.poll_timeout(), Some(s.now + KEEPALIVE_TIMEOUT));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut s = sim();
    s.send(b"GET /version HTTP/1.1\r\nHost: a\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = received(&s);
    let first = r.find("HTTP/1.1 200").unwrap();
    let second = r.find("HTTP/1.1 404").unwrap();
    assert!(first < second, "{r}");
}

#[test]
fn a_head_split_anywhere_gets_the_same_answer() {
    let req = b"GET /version HTTP/1.1\r\nHost: svc\r\n\r\n";
    let mut whole = sim();
    whole.send(req);
    for cut in 1..req.len() {
        let mut s = sim();
        s.send(&req[..cut]);
        s.send(&req[cut..]);
        assert_eq!(s.client.received, whole.client.received, "cut at {cut}");
    }
}

#[test]
fn a_bad_head_gets_400_and_the_connection_closes_once_it_is_out() {
    let mut s = sim();
    s.client.window = 0;
    s.send(b"GET /version HTTP/1.1\r\n\r\n");
    assert!(received(&s).starts_with("HTTP/1.1 400"), "{}", received(&s));
    assert!(matches!(s.session.phase, Phase::Flush { .. }));
    s.take();
    assert!(s.session.finished());
    assert!(s.client.shut);
}

#[test]
fn a_partial_head_at_the_deadline_gets_408() {
    let mut s = sim();
    s.send(b"GET /version HTTP/1.1\r\n");
    s.advance(HEAD_TIMEOUT);
    assert!(received(&s).starts_with("HTTP/1.1 408"), "{}", received(&s));
    assert!(s.session.finished());
}

#[test]
fn an_idle_kept_alive_connection_ends_silently_at_its_deadline() {
    let mut s = sim();
    s.send(b"GET /version HTTP/1.1\r\nHost: svc\r\n\r\n");
    let before = s.client.received.len();
    s.advance(KEEPALIVE_TIMEOUT);
    assert!(s.session.finished());
    assert_eq!(s.client.received.len(), before);
}

#[test]
fn pipelining_without_reading_pauses_reading_until_the_client_takes_its_answers() {
    let mut s = sim();
    let req = b"GET /version HTTP/1.1\r\nHost: svc\r\n\r\n".repeat(8192);
    for chunk in req.chunks(64 * 1024) {
        s.send(chunk);
    }
    let queued = s.client.pending();
    assert!(queued >= HIGH_WATER, "{queued}");
    assert!(queued < HIGH_WATER + 64 * 1024, "{queued}");
    assert!(!s.inbox.is_empty(), "the service kept reading");
    s.take();
    assert!(s.client.received.len() > queued);
}

#[test]
fn a_foreign_origin_on_an_upgrade_gets_403() {
    let mut s = sim();
    let mut req = upgrade(&format!("netns={NS_A}"));
    let at = req.len() - 2;
    req.splice(at..at, b"Origin: https://evil.example\r\n".iter().copied());
    s.send(&req);
    assert!(received(&s).starts_with("HTTP/1.1 403"), "{}", received(&s));
    assert!(s.programs.is_empty());
}

#[test]
fn at_the_capture_limit_an_upgrade_gets_503() {
    let mut s = sim();
    s.captures = s.cfg.max_captures;
    s.send(&upgrade(&format!("netns={NS_A}")));
    assert!(received(&s).starts_with("HTTP/1.1 503"), "{}", received(&s));
    assert!(s.programs.is_empty());
}

#[test]
fn only_an_idle_connection_with_nothing_queued_may_be_displaced() {
    let mut s = sim();
    assert!(s.displace());
    assert!(s.session.finished());
    let mut c = running_capture();
    assert!(!c.displace());
}

// ---- starting a capture --------------------------------------------------

#[test]
fn a_known_netns_is_located_then_the_program_starts_with_its_interfaces() {
    let s = running_capture();
    assert!(matches!(
        s.calls[0],
        Call::Locate(
            0,
            Locate {
                netns: NS_A,
                links: true,
                ..
            }
        )
    ));
    assert_eq!(s.programs[0].args, ["-w", "-", "-n", "-q", "-i", "lo"]);
    assert!(received(&s).starts_with("HTTP/1.1 101"));
    assert_eq!(s.session.capture_weight(), 1);
}

#[test]
fn a_stale_reference_is_looked_up_with_the_discovery_service() {
    let mut s = sim();
    s.starttimes.insert(42, 8);
    let target = format!(r#"{{"name":"web","netns":{NS_B},"pid":42,"starttime":7}}"#);
    s.send(&upgrade(&format!("container={}", urlencode(&target))));
    assert!(s.waiting_listing);
    assert!(s.programs.is_empty());
    s.answer_listing(listing(&format!(
        r#"{{"containers":[{{"name":"web","type":"docker","netns":{NS_A}}}]}}"#
    )));
    assert_eq!(s.programs.len(), 1);
    assert!(s
        .calls
        .iter()
        .any(|a| matches!(a, Call::Locate(_, Locate { netns: NS_A, .. }))));
}

#[test]
fn discovery_that_does_not_answer_in_time_refuses_with_1011() {
    let mut s = sim();
    s.send(&upgrade(&format!(
        "container={}",
        urlencode(r#"{"name":"web"}"#)
    )));
    assert!(s.waiting_listing);
    assert_eq!(s.session.capture_weight(), 1);
    s.advance(s.cfg.discovery_timeout);
    let (code, reason) = last_close(&s).unwrap();
    assert_eq!(code, ws::INTERNAL_ERROR);
    assert!(reason.contains("timed out"), "{reason}");
}

#[test]
fn a_target_the_listing_does_not_hold_is_refused_with_1008() {
    let mut s = sim();
    s.listing = Some(listing(r#"{"containers":[]}"#));
    s.send(&upgrade(&format!(
        "container={}",
        urlencode(r#"{"name":"web"}"#)
    )));
    assert_eq!(last_close(&s).unwrap().0, ws::POLICY_VIOLATION);
    assert!(s.programs.is_empty());
}

#[test]
fn a_missing_namespace_refuses_before_anything_starts() {
    let mut s = sim();
    s.send(&upgrade("netns=4026539999"));
    let (code, reason) = last_close(&s).unwrap();
    assert_eq!(code, ws::POLICY_VIOLATION);
    assert!(reason.contains("4026539999"), "{reason}");
    assert!(s.programs.is_empty());
    assert!(matches!(s.session.phase, Phase::Closing { .. }));
}

#[test]
fn an_interface_the_namespace_lacks_refuses_before_anything_starts() {
    let mut s = sim();
    s.send(&upgrade(&format!("netns={NS_B}&nif=eth7")));
    let (code, reason) = last_close(&s).unwrap();
    assert_eq!(code, ws::POLICY_VIOLATION);
    assert!(reason.contains("eth7"), "{reason}");
    assert!(s.programs.is_empty());
    assert!(s.held.is_empty(), "namespace still held");
}

#[test]
fn a_namespace_seen_elsewhere_waits_for_the_next_scan() {
    let mut s = sim();
    s.moved.insert(NS_A);
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo")));
    assert!(s.programs.is_empty());
    assert_eq!(s.session.capture_weight(), 1);
    s.rescan();
    assert_eq!(s.programs.len(), 1);
}

#[test]
fn without_privileges_every_capture_is_refused() {
    let mut s = sim();
    s.no_capture = Some("missing CAP_NET_ADMIN".into());
    s.send(&upgrade(&format!("netns={NS_A}")));
    assert_eq!(
        last_close(&s).unwrap(),
        (ws::INTERNAL_ERROR, "missing CAP_NET_ADMIN".into())
    );
}

#[test]
fn a_program_that_cannot_start_is_reported_in_the_close() {
    let mut s = sim();
    s.spawn_fails = Some(0);
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo")));
    let (code, reason) = last_close(&s).unwrap();
    assert_eq!(code, ws::INTERNAL_ERROR);
    assert!(
        reason.starts_with("cannot start capture program"),
        "{reason}"
    );
}

#[test]
fn a_close_right_behind_the_handshake_ends_the_capture_at_once() {
    let mut s = sim();
    let mut bytes = upgrade(&format!("netns={NS_A}&nif=lo"));
    bytes.extend_from_slice(&client_close());
    s.send(&bytes);
    assert_eq!(s.programs[0].signals, [Sig::Term]);
}

#[test]
fn the_own_namespace_gets_the_own_connection_filtered_out() {
    let mut s = sim();
    s.own_netns = Some(NS_A);
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo")));
    let args = s.programs[0].args.join(" ");
    assert!(
        args.contains("-f not (") || args.contains("not ("),
        "{args}"
    );
    assert!(args.contains("192.0.2.7"), "{args}");
}

// ---- a running capture ---------------------------------------------------

#[test]
fn output_is_relayed_with_the_target_document_in_the_first_shb() {
    let mut s = running_capture();
    let start = s.client.received.len();
    s.output(0, &pcapng_start());
    let sent = &s.client.received[start..];
    assert_eq!(sent[0], 0x82, "a binary message");
    let text = String::from_utf8_lossy(sent);
    assert!(text.contains(TARGET_MARKER), "{text}");
}

#[test]
fn pings_are_answered_while_capturing() {
    let mut s = running_capture();
    let start = s.client.received.len();
    s.send(&client_ping(b"hi"));
    assert_eq!(&s.client.received[start..], &[0x8A, 2, b'h', b'i']);
}

#[test]
fn a_slow_client_pauses_the_pipe_and_the_pipe_resumes_below_the_low_watermark() {
    let mut s = running_capture();
    s.output(0, &pcapng_start());
    let packet = vec![0u8; 60 * 1024];
    for _ in 0..8 {
        s.output(0, &packet);
    }
    assert!(s.client.pending() >= HIGH_WATER);
    assert!(
        !s.programs[0].unread.is_empty(),
        "the pipe was read past the bound"
    );
    s.take();
    assert!(s.programs[0].unread.is_empty());
    assert!(s.calls.contains(&Call::Resume(Source::Output(0))));
}

#[test]
fn a_client_close_stops_the_program_and_is_answered_once_it_is_reaped() {
    let mut s = running_capture();
    s.send(&client_close());
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    assert!(
        last_close(&s).is_none(),
        "answered before the program was reaped"
    );
    s.exit(0, ExitStatus::Signaled(15, "SIGTERM"));
    assert_eq!(last_close(&s).unwrap().0, ws::NORMAL);
    s.take();
    assert!(s.session.finished());
}

#[test]
fn sigterm_is_repeated_every_second_then_sigkill_at_the_term_timeout() {
    let mut s = running_capture();
    s.send(&client_close());
    while s.programs[0].signals.last() != Some(&Sig::Kill) {
        assert!(s.until_deadline(), "no deadline left before SIGKILL");
        assert!(s.programs[0].signals.len() < 20);
    }
    let terms = s.programs[0]
        .signals
        .iter()
        .filter(|&&g| g == Sig::Term)
        .count();
    assert_eq!(terms as u64, s.cfg.term_timeout.as_secs());
    assert_eq!(
        s.session.poll_timeout(),
        None,
        "nothing is due after SIGKILL"
    );
    assert!(!s.session.finished(), "gone before its program was reaped");
    s.exit(0, ExitStatus::Signaled(9, "SIGKILL"));
    s.take();
    assert!(s.session.finished());
}

#[test]
fn a_program_that_ends_by_itself_closes_with_its_own_words() {
    let mut s = running_capture();
    s.stderr(
        0,
        Some(b"Capturing on 'lo'\ndumpcap: The network adapter \"lo\" is no longer attached.\n"),
    );
    s.output_end(0);
    assert_eq!(
        s.programs[0].signals,
        [Sig::Term],
        "stopped once its output ended"
    );
    s.exit(0, ExitStatus::Exited(0));
    assert_eq!(
        last_close(&s).unwrap(),
        (
            ws::NORMAL,
            "The network adapter \"lo\" is no longer attached.".into()
        )
    );
}

#[test]
fn a_failing_program_closes_with_1011_and_its_first_line() {
    let mut s = running_capture();
    s.stderr(0, Some(b"something broke\n"));
    s.exit(0, ExitStatus::Exited(2));
    assert_eq!(
        last_close(&s).unwrap(),
        (
            ws::INTERNAL_ERROR,
            "capture program failed (2): something broke".into()
        )
    );
}

#[test]
fn a_client_that_leaves_stops_the_program_and_gets_nothing_more() {
    let mut s = running_capture();
    s.close();
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    let before = s.client.received.len();
    s.exit(0, ExitStatus::Signaled(15, "SIGTERM"));
    assert!(s.session.finished());
    assert_eq!(s.client.received.len(), before);
}

#[test]
fn a_broken_connection_stops_the_program() {
    let mut s = running_capture();
    s.break_connection();
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    s.exit(0, ExitStatus::Exited(0));
    assert!(s.session.finished());
}

#[test]
fn shutdown_stops_the_program_and_closes_with_1001_once_it_is_reaped() {
    let mut s = running_capture();
    s.shutdown();
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    s.exit(0, ExitStatus::Signaled(15, "SIGTERM"));
    assert_eq!(last_close(&s).unwrap().0, ws::GOING_AWAY);
}

#[test]
fn our_close_waits_for_the_clients_then_the_connection_ends() {
    let mut s = running_capture();
    s.exit(0, ExitStatus::Exited(0));
    assert!(matches!(s.session.phase, Phase::Closing { .. }));
    s.send(&client_close());
    s.take();
    assert!(s.session.finished());
}

#[test]
fn a_client_that_never_answers_our_close_is_dropped_at_the_deadline() {
    let mut s = running_capture();
    s.exit(0, ExitStatus::Exited(0));
    s.advance(CLOSE_TIMEOUT);
    assert!(s.session.finished());
}

// ---- several targets -----------------------------------------------------

fn several() -> Sim {
    let mut s = sim();
    let targets = format!(r#"[{{"name":"a","netns":{NS_A}}},{{"name":"b","netns":{NS_B}}}]"#);
    s.send(&upgrade(&format!("container={}", urlencode(&targets))));
    s
}

#[test]
fn several_targets_start_one_program_each_and_send_the_merged_header_first() {
    let s = several();
    assert_eq!(s.programs.len(), 2);
    assert_eq!(s.session.capture_weight(), 2);
    let r = &s.client.received;
    let body = &r[r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body[0], 0x82, "the merged SHB goes out at once");
}

#[test]
fn one_target_ending_does_not_end_the_others_and_the_close_names_each() {
    let mut s = several();
    s.output_end(0);
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    assert!(s.programs[1].signals.is_empty());
    s.exit(0, ExitStatus::Exited(0));
    assert!(last_close(&s).is_none());
    s.send(&client_close());
    s.exit(1, ExitStatus::Signaled(15, "SIGTERM"));
    let (_, reason) = last_close(&s).unwrap();
    assert!(
        reason.contains("a: ended") && reason.contains("b: stopped"),
        "{reason}"
    );
}

#[test]
fn all_start_or_none_runs_and_the_close_comes_once_the_started_are_reaped() {
    let mut s = sim();
    s.spawn_fails = Some(1);
    let targets = format!(r#"[{{"name":"a","netns":{NS_A}}},{{"name":"b","netns":{NS_B}}}]"#);
    s.send(&upgrade(&format!("container={}", urlencode(&targets))));
    assert_eq!(s.programs.len(), 1);
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    assert!(last_close(&s).is_none());
    s.exit(0, ExitStatus::Signaled(15, "SIGTERM"));
    let (code, reason) = last_close(&s).unwrap();
    assert_eq!(code, ws::INTERNAL_ERROR);
    assert!(reason.starts_with("target b: cannot start"), "{reason}");
}

#[test]
fn several_targets_beyond_the_capture_limit_get_1013() {
    let mut s = sim();
    s.cfg.max_captures = 1;
    let targets = format!(r#"[{{"netns":{NS_A}}},{{"netns":{NS_B}}}]"#);
    s.send(&upgrade(&format!("container={}", urlencode(&targets))));
    assert_eq!(last_close(&s).unwrap().0, ws::TRY_AGAIN_LATER);
}

// ---- the discovery proxy -------------------------------------------------

fn proxying_sim() -> Sim {
    let mut s = sim();
    s.cfg.proxy_discovery = true;
    s
}

#[test]
fn a_proxied_request_waits_for_the_address_and_an_unresolved_name_gets_502() {
    let mut s = proxying_sim();
    s.send(b"GET /mobyshark HTTP/1.1\r\nHost: svc\r\n\r\n");
    assert!(s.waiting_address);
    s.answer_address(Err("gw does not resolve".into()));
    assert!(received(&s).starts_with("HTTP/1.1 502"), "{}", received(&s));
}

#[test]
fn an_unreachable_discovery_service_gets_502_naming_it() {
    let mut s = proxying_sim();
    s.address = Some(Ok("127.0.0.1:9".parse().unwrap()));
    s.send(b"GET /mobyshark HTTP/1.1\r\nHost: svc\r\n\r\n");
    let r = received(&s);
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(r.contains("unreachable"), "{r}");
}

#[test]
fn the_proxy_deadline_waits_while_the_request_is_still_being_sent() {
    let mut s = proxying_sim();
    s.send(b"GET /mobyshark HTTP/1.1\r\nHost: svc\r\n\r\n");
    s.advance(s.cfg.discovery_timeout);
    assert!(received(&s).starts_with("HTTP/1.1 504"), "{}", received(&s));
}

// ---- wrong tokens ----------------------------------------------------------

fn with_tokens() -> Sim {
    let tokens = crate::proto::auth::TokenSet::parse("right-token\n").unwrap();
    let mut s = Sim::new(Config::default(), Policy::new(&[], Some(tokens)).unwrap());
    s.namespaces.insert(NS_A, vec!["lo".to_string()]);
    s
}

#[test]
fn a_wrong_token_is_answered_at_once_while_the_host_says_no_delay() {
    let mut s = with_tokens();
    s.send(&upgrade(&format!("netns={NS_A}")));
    assert!(received(&s).starts_with("HTTP/1.1 401"), "{}", received(&s));
}

#[test]
fn a_guessing_address_gets_its_401_only_after_the_hosts_delay() {
    let mut s = with_tokens();
    s.token_delay = Duration::from_millis(800);
    let mut req = upgrade(&format!("netns={NS_A}"));
    let at = req.len() - 2;
    req.splice(at..at, b"Authorization: Bearer guess\r\n".iter().copied());
    s.send(&req);
    assert!(s.client.received.is_empty(), "answered before the delay");
    assert!(s.displace(), "a held refusal may give its slot up");
    let mut s = with_tokens();
    s.token_delay = Duration::from_millis(800);
    s.send(&req);
    s.advance(Duration::from_millis(799));
    assert!(s.client.received.is_empty(), "answered before the delay");
    s.advance(Duration::from_millis(1));
    assert!(received(&s).starts_with("HTTP/1.1 401"), "{}", received(&s));
    s.take();
    assert!(s.session.finished());
}

// ---- the native engine ---------------------------------------------------

fn native() -> Sim {
    let mut s = sim();
    s.cfg.capture_engine = crate::config::CaptureEngine::Native;
    s
}

#[test]
fn a_native_source_relays_its_stream_and_stops_when_the_client_closes() {
    let mut s = native();
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo&filter=udp&chaste")));
    assert_eq!(s.programs[0].args, ["native:lo", "filter:udp", "chaste"]);
    assert!(received(&s).starts_with("HTTP/1.1 101"));
    let start = s.client.received.len();
    s.output(0, &pcapng_start());
    let text = String::from_utf8_lossy(&s.client.received[start..]).into_owned();
    assert!(text.contains("capture-engine: \"native\""), "{text}");
    s.send(&client_close());
    assert_eq!(s.programs[0].signals, [Sig::Term]);
    // The engine stops at once: the end comes without a reaping.
    assert_eq!(last_close(&s).unwrap().0, ws::NORMAL);
    s.take();
    assert!(s.session.finished());
}

#[test]
fn a_native_source_the_engine_refuses_closes_with_1008_and_its_words() {
    let mut s = native();
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo&filter=((")));
    s.source_end(
        0,
        SourceEnd::Refused("Invalid capture filter \"((\"".into()),
    );
    assert_eq!(
        last_close(&s).unwrap(),
        (ws::POLICY_VIOLATION, "Invalid capture filter \"((\"".into())
    );
}

#[test]
fn a_native_source_whose_interface_goes_away_closes_with_1000_and_the_line() {
    let mut s = native();
    s.send(&upgrade(&format!("netns={NS_A}&nif=lo")));
    s.output(0, &pcapng_start());
    let line = "The network adapter \"lo\" is no longer attached; the capture has stopped.";
    s.source_end(0, SourceEnd::Ended(line.into()));
    assert_eq!(last_close(&s).unwrap(), (ws::NORMAL, line.into()));
    let failing = {
        let mut s = native();
        s.send(&upgrade(&format!("netns={NS_A}&nif=lo")));
        s.source_end(0, SourceEnd::Failed("cannot capture".into()));
        last_close(&s).unwrap().0
    };
    assert_eq!(failing, ws::INTERNAL_ERROR);
}

#[test]
fn a_native_target_given_up_for_bad_output_still_ends_and_the_others_go_on() {
    let mut s = native();
    let targets = format!(r#"[{{"name":"a","netns":{NS_A}}},{{"name":"b","netns":{NS_B}}}]"#);
    s.send(&upgrade(&format!("container={}", urlencode(&targets))));
    assert_eq!(s.programs.len(), 2);
    s.output(
        0,
        b"\x0a\x0d\x0d\x0a\xff\xff\xff\x7f garbage that is no pcapng",
    );
    assert_eq!(s.programs[0].signals, [Sig::Term], "stopped once given up");
    assert!(s.programs[0].reaped, "its end was told");
    assert!(s.programs[1].signals.is_empty());
    assert!(last_close(&s).is_none());
    s.send(&client_close());
    let (_, reason) = last_close(&s).unwrap();
    assert!(reason.contains("a: bad output"), "{reason}");
}
