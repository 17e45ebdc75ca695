//! The discovery client's sans-IO half: the HTTP response parser (the shared
//! `http1` framer as a decoding user) fed a GhostWire answer in reads of
//! fuzzer-chosen sizes, and `find_target` on `/mobyshark` bodies.
//!
//! Input layout: one mode byte. Bit 0 clear: a response. The next byte sets
//! the body limit (`byte * 16` bytes), then the read sizes (see
//! `fuzz_support::Chunker`), then the bytes the service sent; a complete
//! 200 response's body then goes to `find_target` for the name "web". Bit 0
//! set: `[name_len, name..., prefix_len, prefix..., body...]` for
//! `find_target` directly.
//!
//! Invariants: no panic; a response comes out the same in any chunking (or
//! fails in any chunking); bodies stay within the limit; a finished parser
//! refuses more input; where the discovery proxy also accepts the bytes, it
//! ends the response at the same byte (`fuzz_support::proxy_and_client_agree`,
//! as the `proxy` target checks from its side); `find_target` only returns a
//! target with the name and prefix asked for, and agrees with a plain reading
//! of the body as a `serde_json::Value`.

#![no_main]

use fuzz_support::split_input;
use libfuzzer_sys::fuzz_target;
use packetflix::proto::discovery::{
    find_target, DiscoveryError, ParsedListing, Response, ResponseParser,
};
use packetflix::proto::target::Target;
use serde_json::Value;

fn parse(limit: usize, reads: &[&[u8]]) -> Result<Response, DiscoveryError> {
    let mut p = ResponseParser::new(limit);
    let mut result = None;
    for r in reads {
        match p.feed(r) {
            Ok(None) => {}
            done => {
                result = Some(done.map(|r| r.expect("matched Some above")));
                break;
            }
        }
    }
    let result = result.unwrap_or_else(|| p.eof());
    // Finished: nothing more is taken.
    assert!(p.feed(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    assert!(p.eof().is_err());
    result
}

fn response(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let limit = usize::from(limit) * 16;
    let (mut chunker, stream) = split_input(rest, 1);
    let chunked = parse(limit, &chunker.split(stream));
    let whole = parse(limit, &[stream]);
    fuzz_support::proxy_and_client_agree(stream);
    match (&chunked, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "response depends on the reads"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunked {chunked:?} but whole {whole:?}"),
    }
    if let Ok(r) = &chunked {
        // Three digits; "002" is syntax the session answers as a bad status.
        assert!(r.status < 1000, "status {}", r.status);
        assert!(r.body.len() <= limit, "body of {} bytes", r.body.len());
        if r.status == 200 {
            lookup(&r.body, "web", "");
        }
    }
}

/// What a plain reading of the body says `find_target` must answer, when it
/// can say it: `None` where the plain reading differs by design (duplicate
/// keys, which `serde_json::Value` resolves silently).
fn oracle(body: &[u8], name: &str, prefix: &str) -> Option<Result<Target, ()>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let containers = value.as_object()?.get("containers")?;
    if String::from_utf8_lossy(body).matches("containers").count() != 1 {
        return None;
    }
    let text = |e: &Value, k: &str| match e.get(k) {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => None,
    };
    let entry = containers.as_array()?.iter().find(|e| {
        e.is_object()
            && text(e, "name").as_deref() == Some(name)
            && text(e, "prefix").as_deref() == Some(prefix)
    });
    Some(match entry {
        None => Err(()),
        Some(e) => serde_json::from_value::<Target>(e.clone()).map_err(|_| ()),
    })
}

fn lookup(body: &[u8], name: &str, prefix: &str) {
    let found = find_target(body, name, prefix);
    // The listing parsed once for many lookups picks the same target, and
    // fails where it fails.
    match ParsedListing::parse(body.to_vec()) {
        Ok(l) => match (&found, l.find(name, prefix)) {
            (Ok(a), Ok(b)) => assert_eq!(*a, b),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("find_target {a:?} but the parsed listing {b:?}"),
        },
        // JSON is UTF-8 (RFC 8259 8.1); `find_target` does not check the
        // parts it skips, the parsed listing checks all of it.
        Err(_) => assert!(
            found.is_err() || std::str::from_utf8(body).is_err(),
            "parsed listing refused what find_target took"
        ),
    }
    match &found {
        Ok(t) => assert_eq!((t.name.as_str(), t.prefix.as_str()), (name, prefix)),
        Err(e) => {
            let _ = e.describe("ghostwire:5000");
        }
    }
    if let Some(expected) = oracle(body, name, prefix) {
        match (&found, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(())) => {}
            _ => panic!("find_target {found:?} but a plain reading gives {expected:?}"),
        }
    }
}

fn take<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&n, rest)) = data.split_first() else {
        return &[];
    };
    let (s, rest) = rest.split_at(usize::from(n).min(rest.len()));
    *data = rest;
    s
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        return response(rest);
    }
    let name = String::from_utf8_lossy(take(&mut rest)).into_owned();
    let prefix = String::from_utf8_lossy(take(&mut rest)).into_owned();
    lookup(rest, &name, &prefix);
});
