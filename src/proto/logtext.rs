//! What a log line may say: client text escaped so that one message is one
//! line, credentials redacted, and the clocks the logs use. No I/O; the
//! logger itself is `crate::service::logging`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `s` with every control character (C0 including CR, LF and TAB, DEL, C1)
/// and the Unicode line and paragraph separators written as visible escapes
/// (`\r`, `\n`, `\t`, `\u{1b}`), so one message is one line.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Headers whose values are credentials: logged as `<redacted>`.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// `Name: value` for the header log, credentials redacted, the value
/// escaped (it is bytes from the client, not necessarily UTF-8).
pub fn header_line(name: &str, value: &[u8]) -> String {
    if SECRET_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return format!("{}: <redacted>", escape_controls(name));
    }
    format!(
        "{}: {}",
        escape_controls(name),
        escape_controls(&String::from_utf8_lossy(value))
    )
}

/// Query parameters whose values are credentials: logged as `<redacted>`.
/// Browser websocket clients cannot set `Authorization`, so some pass a
/// token in the URL instead; whatever this service does with it, the
/// request log must not keep it.
const SECRET_PARAMS: [&str; 4] = ["token", "access_token", "auth", "authorization"];

/// The request line for the request log (`METHOD path?query HTTP/1.x`),
/// with the value of every credential parameter of the query redacted. Not
/// yet escaped: the caller escapes the whole line.
pub fn request_line(r: &crate::proto::http::Request) -> String {
    let query = r.query.as_deref().map(redact_query);
    format!(
        "{} {}{}{} HTTP/1.{}",
        r.method,
        r.path,
        if query.is_some() { "?" } else { "" },
        query.as_deref().unwrap_or(""),
        r.minor_version
    )
}

/// `query` with the values of [`SECRET_PARAMS`] replaced (names compared
/// case-insensitively and after percent-decoding, so `%74oken=` is caught
/// too).
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (name, value) = match pair.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (pair, None),
            };
            let decoded = percent_decoded(name);
            let secret = SECRET_PARAMS
                .iter()
                .any(|s| decoded.eq_ignore_ascii_case(s));
            match value {
                Some(_) if secret => format!("{name}=<redacted>"),
                _ => pair.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A query parameter name with `%XX` and `+` decoded (invalid escapes
/// kept), for comparing only.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_millis(),
    )
}

/// `2026-11-26T07:01:02.345Z`
pub fn iso8601(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// `26/Nov/2026:07:01:02 +0000`, the common log format's clock.
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    let m = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    format!("{d:02}/{m}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_characters_cannot_start_a_new_line() {
        assert!(matches!(
            escape_controls("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
        let e = escape_controls("a\r\nINFO forged\u{1b}[31m\u{7f}\u{85}\u{2028}\tz");
        assert_eq!(
            e,
            "a\\r\\nINFO forged\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}\\tz"
        );
        assert!(!e.chars().any(|c| c.is_control()));
    }

    #[test]
    fn credential_headers_are_redacted_others_escaped() {
        assert_eq!(
            header_line("Authorization", b"Bearer s3"),
            "Authorization: <redacted>"
        );
        assert_eq!(
            header_line("proxy-authorization", b"x"),
            "proxy-authorization: <redacted>"
        );
        assert_eq!(header_line("COOKIE", b"sid=1"), "COOKIE: <redacted>");
        assert_eq!(header_line("X-A", b"v\r\nFake: 1"), "X-A: v\\r\\nFake: 1");
    }

    #[test]
    fn token_query_values_are_redacted_in_the_request_line() {
        let r = crate::proto::http::parse_request(
            b"GET /capture?netns=5&token=s3cret&x=1&%54oken=two&Access_Token=3&tokens=keep HTTP/1.1\r\nHost: h\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let line = request_line(&r);
        assert_eq!(
            line,
            "GET /capture?netns=5&token=<redacted>&x=1&%54oken=<redacted>&Access_Token=<redacted>&tokens=keep HTTP/1.1"
        );
        assert!(!line.contains("s3cret") && !line.contains("two"));
        let plain = crate::proto::http::parse_request(b"GET /version HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request_line(&plain), "GET /version HTTP/1.0");
        assert_eq!(redact_query("token"), "token");
        assert_eq!(redact_query("a=%&token=x%"), "a=%&token=<redacted>");
    }

    #[test]
    fn clocks_format_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_676_462_345);
        assert_eq!(iso8601(t), "2026-11-26T07:01:02.345Z");
        assert_eq!(clf_time(t), "26/Nov/2026:07:01:02 +0000");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
