//! One capture: websocket to the service, whole pcapng blocks to a sink.
//!
//! Blocking I/O with a short read timeout ([`super::http::TICK`]), so the loop regularly
//! looks at the stop flag, the duration and the sink's reader. Every way out
//! is bounded: the handshake, and the wait for the service's close answer
//! after we close. Stops we asked for (signal, duration, count, reader gone)
//! end with a close handshake and success; the service refusing or ending the
//! capture with an error, and a stream that breaks, are failures with the
//! service's own reason. This module is only for the client process; the
//! service's reactor never blocks like this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message, WebSocket};

use super::blocks::BlockCutter;
use super::http::open;
use super::output::{BlockSink, Written};
use super::progress::Tally;
use super::tls::Stream;
use super::url::{CaptureParams, ServiceUrl};

/// The service may finish a target lookup through the discovery service
/// (deadline 20 s by default) before it answers the upgrade; wait a little
/// longer than that.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// After our close frame the service stops the capture program (SIGTERM,
/// reap) before it answers; that takes milliseconds, but a wedged service
/// must not keep the user waiting.
const CLOSE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why we ended a capture that was going fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    Signal,
    Duration,
    Count,
    ReaderGone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// We stopped it.
    Stopped(StopCause),
    /// The capture program ended by itself; the service closed normally.
    ServiceEnded { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub packets: u64,
    pub bytes: u64,
    /// Packets the stream reported dropped (0 if it said nothing).
    pub drops: u64,
    pub ending: Ending,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// Captures until a limit, a stop, or the service ends it. `observe` hears
/// what was written so far: once when the service has accepted the capture,
/// then after every message and every idle tick (a live progress line
/// throttles itself).
pub fn capture(
    service: &ServiceUrl,
    params: &CaptureParams,
    limits: Limits,
    sink: &mut dyn BlockSink,
    stop: &AtomicBool,
    observe: &mut dyn FnMut(Tally),
) -> Result<Summary, String> {
    let authority = service.authority();
    let stream = open(&service.url, 80)
        .map_err(|e| format!("cannot reach the Packetflix service at {authority}: {e}"))?;
    let Some(mut ws) = handshake(service, params, stream, stop)? else {
        return Ok(Summary {
            packets: 0,
            bytes: 0,
            drops: 0,
            ending: Ending::Stopped(StopCause::Signal),
        });
    };
    observe(Tally::default());
    let deadline = limits.duration.map(|d| Instant::now() + d);
    let mut cutter = BlockCutter::new(limits.count);
    let mut bytes = 0u64;
    let mut got_data = false;
    // How the capture ends, once that is decided, and since when we wait for
    // the close handshake to finish.
    let mut ending: Option<(Ending, Instant)> = None;

    loop {
        if ending.is_none() {
            observe(Tally {
                packets: cutter.packets(),
                bytes,
                drops: cutter.drops(),
            });
            let cause = if stop.load(Ordering::SeqCst) {
                Some(StopCause::Signal)
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Some(StopCause::Duration)
            } else {
                None
            };
            if let Some(cause) = cause {
                ending = Some(start_close(&mut ws, cause));
            }
        }
        if let Some((end, since)) = &ending {
            if since.elapsed() >= CLOSE_ANSWER_TIMEOUT {
                // The close handshake did not finish in time; the capture is
                // complete all the same.
                return Ok(Summary {
                    packets: cutter.packets(),
                    bytes,
                    drops: cutter.drops(),
                    ending: end.clone(),
                });
            }
        }
        match ws.read() {
            Ok(Message::Binary(data)) => {
                got_data = true;
                if ending.is_some() {
                    continue;
                }
                if let Err(e) = cutter.feed(&data) {
                    let _ = ws.close(Some(close_frame(CloseCode::Invalid, "not a pcapng stream")));
                    let _ = ws.flush();
                    return Err(format!("the capture stream is unusable: {e}"));
                }
                let ready = cutter.ready().len() as u64;
                let written = sink.write_blocks(cutter.ready(), stop)?;
                cutter.consume_ready();
                let cause = match written {
                    Written::All => {
                        bytes += ready;
                        cutter.limit_reached().then_some(StopCause::Count)
                    }
                    Written::ReaderGone => Some(StopCause::ReaderGone),
                    Written::Stopped => Some(StopCause::Signal),
                };
                if let Some(cause) = cause {
                    ending = Some(start_close(&mut ws, cause));
                }
            }
            Ok(Message::Close(frame)) if ending.is_none() => {
                // A close without a status code names no error.
                let frame = frame.unwrap_or_else(|| close_frame(CloseCode::Normal, ""));
                if !got_data {
                    // Packetflix words its refusals "capture refused: …"
                    // already; say it once.
                    let why = describe(&frame);
                    let why = why.strip_prefix("capture refused: ").unwrap_or(&why);
                    return Err(format!("capture refused by the service: {why}"));
                }
                if frame.code != CloseCode::Normal {
                    return Err(format!(
                        "the service ended the capture: {}",
                        describe(&frame)
                    ));
                }
                // Keep reading: tungstenite sends our answer, and the service
                // then closes the connection.
                let reason = frame.reason.to_string();
                ending = Some((Ending::ServiceEnded { reason }, Instant::now()));
            }
            Ok(_) => {}
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if ending.is_none() && sink.reader_gone() {
                    ending = Some(start_close(&mut ws, StopCause::ReaderGone));
                }
            }
            Err(e) => {
                return match ending {
                    Some((end, _)) => Ok(Summary {
                        packets: cutter.packets(),
                        bytes,
                        drops: cutter.drops(),
                        ending: end,
                    }),
                    None => Err(broken(e, got_data)),
                }
            }
        }
    }
}

fn handshake(
    service: &ServiceUrl,
    params: &CaptureParams,
    stream: Stream,
    stop: &AtomicBool,
) -> Result<Option<WebSocket<Stream>>, String> {
    let url = service.capture_url(params);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
    for (name, value) in params.headers() {
        // from_bytes, not from_str: container names in the JSON may be UTF-8.
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| format!("{name} cannot be sent as a header (it holds a line break?)"))?;
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
        request.headers_mut().insert(name, value);
    }
    if let Some(auth) = service.url.access.authorization()? {
        let value = HeaderValue::from_str(&auth)
            .map_err(|_| "the token cannot be sent as a header".to_string())?;
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut attempt = tungstenite::client::client(request, stream);
    loop {
        match attempt {
            Ok((ws, _response)) => return Ok(Some(ws)),
            Err(HandshakeError::Interrupted(mid)) => {
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the service at {} did not answer the websocket upgrade within {}s",
                        service.authority(),
                        HANDSHAKE_TIMEOUT.as_secs()
                    ));
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(_)) if stop.load(Ordering::SeqCst) => return Ok(None),
            Err(HandshakeError::Failure(WsError::Http(response))) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let first = body
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("");
                let status = response.status();
                let hint = if status.as_u16() == 404 {
                    " (is this a Packetflix service?)"
                } else {
                    ""
                };
                return Err(format!(
                    "the service refused the capture request: HTTP {status}{}{first}{hint}",
                    if first.is_empty() { "" } else { ": " }
                ));
            }
            Err(HandshakeError::Failure(e)) => {
                return Err(format!(
                    "websocket handshake with {} failed: {e}",
                    service.authority()
                ))
            }
        }
    }
}

fn start_close(ws: &mut WebSocket<Stream>, cause: StopCause) -> (Ending, Instant) {
    // A close that cannot be written now stays queued in tungstenite and goes
    // out with the next read; one that fails outright shows up as the read
    // error that ends the wait.
    let _ = ws.close(Some(close_frame(
        CloseCode::Normal,
        "capture stopped by the client",
    )));
    (Ending::Stopped(cause), Instant::now())
}

fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.to_string().into(),
    }
}

fn describe(frame: &CloseFrame) -> String {
    let code = u16::from(frame.code);
    if frame.reason.is_empty() {
        format!("no reason given (close code {code})")
    } else {
        format!("{} (close code {code})", frame.reason)
    }
}

fn broken(e: WsError, got_data: bool) -> String {
    let what = match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "the connection closed".to_string(),
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            "the connection ended without a websocket close".to_string()
        }
        other => other.to_string(),
    };
    if got_data {
        format!("the capture stream broke: {what}")
    } else {
        format!("the capture stream broke before any data: {what}")
    }
}
