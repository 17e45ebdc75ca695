#!/usr/bin/env python3
"""Writes the checked-in seed corpora: fuzz/corpus/<target>/seed-*.

Each seed is a realistic input in the layout its fuzz target documents at the
top of fuzz_targets/<target>.rs. Seeds are named `seed-*` so that .gitignore
(which drops libFuzzer's hex-named finds) keeps them. Run from anywhere:
`python3 fuzz/seeds.py`; it rewrites the seeds and leaves other files alone.
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def chunks(sizes=()):
    """The read-size prefix of fuzz_support::Chunker."""
    return bytes([len(sizes)]) + bytes(sizes)


def frame(first, payload):
    """A masked client frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack(">Q", n)
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def close(code, reason=b""):
    return frame(0x88, struct.pack(">H", code) + reason)


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
CONTAINER = {
    "name": "web",
    "type": "docker",
    "netns": 4026532601,
    "pid": 1234,
    "starttime": 5678,
    "prefix": "",
    "network-interfaces": ["eth0", "lo"],
    "node-name": "node1",
    "cluster": {"uid": "c0ffee"},
}


def upgrade(target, headers=()):
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: localhost:5001",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


NS_A = 4026532601  # the session target's world: a namespace with eth0 and lo
NS_B = 4026532602  # found only after a namespace scan


def op(kind, arg=0):
    """One event of the session target's script (low nibble: the event)."""
    return (arg << 4) | kind


DELIVER, OUTPUT, END, STDERR, EXIT, ADVANCE, TAKE, HALF, CLOSE, BREAK, LISTING, RESCAN, \
    SHUTDOWN, ADDRESS, RESOLVED, UP = range(16)


def out(t, kind):
    """Target t writes: 0 section header, 1 three packets, 2 60 KiB, 3 garbage."""
    return op(OUTPUT, (kind << 1) | t)


def err(t, kind):
    """Target t's stderr: 0 a line, 1 dumpcap's stop reason, 2 half a line, 3 closes."""
    return op(STDERR, (kind << 1) | t)


def exits(t, kind):
    """Target t exits: 0 status 0, 1 status 2, 2 SIGTERM, 3 SIGKILL."""
    return op(EXIT, (kind << 1) | t)


def sess(flags, script, sizes, stream):
    """The session target's layout: flags, script, read sizes, client bytes."""
    return bytes([flags, len(script)]) + bytes(script) + chunks(sizes) + stream


def padded(req, to=64):
    """A request head padded to a multiple of `to` bytes, so that a read
    size of that many bytes ends exactly after it."""
    pad = (-(len(req) + len("X-Pad: \r\n"))) % to
    return req[:-2] + b"X-Pad: " + b"a" * pad + b"\r\n\r\n"


def read_of(req):
    """The chunker size byte for one read of `req` (a multiple of 64)."""
    assert len(req) % 64 == 0 and len(req) // 64 < 128
    return 0x80 | (len(req) // 64)


def quoted(obj):
    return json.dumps(obj).replace('"', "%22").replace(" ", "+")


def session():
    t = "session"
    d = os.path.join(HERE, "corpus", t)
    if os.path.isdir(d):
        for name in os.listdir(d):
            if name.startswith("seed-") and not name.startswith("seed-found-"):
                os.remove(os.path.join(d, name))
    ping_close = frame(0x89, b"hi") + frame(0x82, b"x" * 300) + close(1000, b"bye")
    write(t, "version-pipelined", sess(0, [], [],
          b"GET /version HTTP/1.1\r\nHost: a\r\n\r\nHEAD /version HTTP/1.1\r\nHost: a\r\n\r\n"
          b"GET /nope HTTP/1.0\r\n\r\n"))
    write(t, "version-trickled", sess(0, [op(ADVANCE, 1)] * 3, [1, 2, 3, 5, 8],
          b"GET /version HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"))
    up = padded(upgrade(f"/capture?netns={NS_A}&nif=eth0/lo&filter=tcp+port+80&chaste"))
    write(t, "capture-relay", sess(0x80, [DELIVER, out(0, 0), out(0, 1)] + [out(0, 2)] * 6 +
          [HALF, TAKE, err(0, 0), DELIVER, DELIVER, exits(0, 2), TAKE], [read_of(up), 7],
          up + ping_close))
    up = upgrade(f"/capture?netns={NS_A}&nif=lo")
    write(t, "capture-ends-itself", sess(0, [DELIVER, out(0, 0), out(0, 1), err(0, 1), err(0, 3),
          END, exits(0, 0), TAKE, op(ADVANCE, 2)], [], up))
    write(t, "capture-stubborn", sess(0x40, [DELIVER, out(0, 0), op(ADVANCE, 1), op(ADVANCE, 1),
          op(ADVANCE, 3), exits(0, 3)], [], up + close(1000)))
    write(t, "capture-broken", sess(0, [DELIVER, out(0, 0), BREAK, exits(0, 2)], [], up))
    write(t, "capture-shutdown", sess(0, [DELIVER, out(0, 0), SHUTDOWN, err(0, 3), exits(0, 2),
          TAKE], [], up))
    write(t, "capture-container-headers", sess(0, [DELIVER, out(0, 0), out(0, 1)], [], upgrade(
        "/capture", [("Clustershark-Container", json.dumps(CONTAINER)),
                     ("Clustershark-Nif", "any"), ("Clustershark-Filter", "udp"),
                     ("Clustershark-Chaste", "")]) + frame(0x02, b"part") +
          frame(0x8A, b"") + frame(0x80, b"end") + close(1001)))
    write(t, "capture-discover-later", sess(0x10, [DELIVER, op(ADVANCE, 0), LISTING, out(0, 0),
          CLOSE], [], upgrade("/capture?container=" + quoted({"name": "web", "prefix": ""}))))
    write(t, "capture-discover-timeout", sess(0x10, [DELIVER, op(ADVANCE, 4), op(ADVANCE, 5)], [],
          upgrade("/capture?container=" + quoted({"name": "web"}))))
    write(t, "capture-not-listed", sess(0, [DELIVER, TAKE], [],
          upgrade("/capture?container=" + quoted({"name": "bare"})) + close(1000)))
    several = quoted([{"name": "web", "netns": NS_A}, {"name": "db", "netns": NS_B}])
    up = padded(upgrade("/capture?container=" + several))
    write(t, "several-targets", sess(0x80, [DELIVER, RESCAN, out(0, 0), out(1, 0), out(0, 1),
          out(1, 1), out(0, 2), out(1, 2), HALF, TAKE, out(1, 3), END, exits(0, 0), TAKE,
          DELIVER, exits(1, 2), TAKE], [read_of(up)], up + close(1000)))
    both = quoted([{"name": "web", "netns": NS_A}, {"name": "w2", "netns": NS_A}])
    up = padded(upgrade("/capture?container=" + both))
    write(t, "several-end-by-themselves", sess(0, [DELIVER, out(0, 0), out(1, 0), out(0, 1),
          out(1, 1), err(1, 1), op(END, 0), op(END, 1), exits(0, 0), exits(1, 1), TAKE,
          DELIVER], [read_of(up)], up + close(1000)))
    write(t, "several-shutdown", sess(0, [DELIVER, out(0, 0), SHUTDOWN, exits(0, 2),
          exits(1, 2), TAKE], [], up))
    write(t, "several-client-leaves", sess(0, [DELIVER, out(0, 0), out(1, 1), CLOSE,
          exits(0, 2), op(ADVANCE, 3), exits(1, 3)], [], up))
    same = quoted([{"netns": NS_A}, {"netns": NS_A, "network-interfaces": ["lo"]}])
    write(t, "several-one-fails", sess(0x20, [DELIVER, exits(0, 2)], [],
          upgrade("/capture?container=" + same)))
    up = padded(upgrade(f"/capture?netns={NS_A}&nif=lo"))
    write(t, "capture-close-without-code", sess(0, [DELIVER, out(0, 0), DELIVER, exits(0, 2), TAKE],
          [read_of(up)], up + frame(0x88, b"")))
    write(t, "capture-fails-with-a-line", sess(0, [DELIVER, out(0, 0), err(0, 0), err(0, 3), END,
          exits(0, 1), TAKE], [], up))
    write(t, "capture-own-namespace", sess(0, [DELIVER, RESCAN, out(0, 0), CLOSE, exits(0, 2)], [],
          upgrade(f"/capture?netns={NS_B}&nif=lo")))
    write(t, "capture-unusable-interface-list", sess(0, [DELIVER, TAKE], [], upgrade(
        "/capture?container=" + quoted({"name": "web", "netns": NS_A,
                                        "network-interfaces": ["bad name", "a/b"]}))))
    stale = quoted([dict(CONTAINER, netns=NS_A), {"name": "db", "prefix": "k8s", "netns": NS_A,
                                                  "cluster": {"uid": "c1"}, "node-name": "n1"}])
    write(t, "several-stale-and-clustered", sess(0, [DELIVER, out(0, 0), out(1, 0), CLOSE,
          exits(0, 2), exits(1, 2)], [], upgrade("/capture?container=" + stale)))
    write(t, "capture-refused", sess(0, [], [3],
          upgrade("/capture?netns=0&nif=-i") + close(1000, b"ok")))
    write(t, "capture-unknown-interface", sess(0, [DELIVER, op(ADVANCE, 2)], [],
          upgrade(f"/capture?netns={NS_A}&nif=eth9")))
    write(t, "capture-violation", sess(0, [DELIVER, exits(0, 2)], [],
          upgrade(f"/capture?netns={NS_A}") + b"\x82\x01\x00"))
    write(t, "capture-no-upgrade", sess(0, [], [],
          b"GET /capture?netns=1 HTTP/1.1\r\nHost: a\r\n\r\n"))
    write(t, "bad-handshake", sess(0, [], [],
          upgrade("/capture?netns=1").replace(b"Version: 13", b"Version: 8")))
    get = b"GET /discover/mobyshark HTTP/1.1\r\nHost: a\r\n\r\n"
    nxt = b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n"
    # The discovery service's end: 0 connected, 1 a whole answer (8: the 404
    # with Connection: close), 2 an interim 100, 3 a chunked head and chunk,
    # 4 the last chunk, 5 its end, 6 a failure, 7 garbage.
    write(t, "proxy-exchange", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 0), op(UP, 1), TAKE,
          DELIVER, TAKE], [len(get)], get + nxt))
    write(t, "proxy-close", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 0), op(UP, 3), op(UP, 5),
          TAKE], [], get))
    write(t, "proxy-fail", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 0), op(UP, 7), TAKE], [], get))
    write(t, "proxy-upstream-fails", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 6), TAKE], [], get))
    write(t, "proxy-unreachable", sess(1, [DELIVER, op(RESOLVED, 0), TAKE], [], get))
    write(t, "proxy-slow-answer", sess(1, [DELIVER, op(RESOLVED, 1), op(ADVANCE, 4),
          op(UP, 0), op(ADVANCE, 4), op(ADVANCE, 4)], [], get))
    write(t, "proxy-answered-then-slow", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 0),
          op(UP, 3), op(ADVANCE, 4), op(ADVANCE, 5)], [], get))
    write(t, "proxy-interim-then-close", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 0),
          op(UP, 2), op(UP, 9), TAKE, DELIVER], [len(get)], get + nxt))
    write(t, "proxy-chunked-then-next", sess(1, [DELIVER, op(RESOLVED, 1), op(UP, 0),
          op(UP, 3), op(UP, 4), TAKE, DELIVER, TAKE], [len(get)], get + nxt))
    post = b"POST /discover/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
    write(t, "proxy-body-trickled", sess(1, [DELIVER, op(RESOLVED, 1), DELIVER, op(UP, 0),
          DELIVER, op(UP, 1), TAKE, DELIVER], [len(post), 2, 3], post + b"hello" + nxt))
    write(t, "displaced", sess(0, [DELIVER, op(SHUTDOWN, 1)], [], b"GET /version HTTP/1.1\r\n"))
    write(t, "proxy-unresolved", sess(1, [DELIVER, ADDRESS], [],
          b"GET /discover/mobyshark?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"))
    write(t, "proxy-timeout", sess(1, [DELIVER, op(ADVANCE, 4)], [],
          b"GET /discover/mobyshark HTTP/1.1\r\nHost: a\r\n\r\n"))
    write(t, "absolute-form", sess(0, [], [],
          b"GET http://host:5001/version HTTP/1.1\r\nHost: host\r\n\r\nPOST /version HTTP/1.1\r\n"
          b"Host: host\r\nContent-Length: 3\r\n\r\nabc"))
    write(t, "garbage", sess(0, [], [], b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
    # Flag bit 1: the smallest --max-head-bytes (256) and --max-headers (4).
    write(t, "small-limits-upgrade", sess(2, [], [40], upgrade("/capture?netns=1")))
    write(t, "small-limits-ok", sess(2, [], [], b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n"
          b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n"))
    # The head rules: two Content-Length, no Host, two websocket keys.
    write(t, "head-rules", sess(0, [], [], b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n"
          b"GET /version HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"))
    write(t, "no-host", sess(0, [], [], b"GET /version HTTP/1.1\r\n\r\n"))
    write(t, "two-keys", sess(0, [], [],
          upgrade("/capture?netns=1", [("Sec-WebSocket-Key", KEY)])))
    # Flag bit 3: the token check, with the token and the admitted origin.
    write(t, "token", sess(8, [DELIVER, out(0, 0), CLOSE], [], upgrade(
        f"/capture?netns={NS_A}", [("Authorization", "Bearer fuzz-token"),
                                   ("Origin", "https://ui.example")])))
    write(t, "token-missing", sess(8, [], [], upgrade(f"/capture?netns={NS_A}") +
          b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n"))
    # Flag bit 2: pings worth twice the output bound follow, never read.
    write(t, "ping-flood", sess(4, [], [0x40], upgrade(f"/capture?netns={NS_A}") +
          frame(0x89, b"p")))
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (16 * 1024 + 100) + b"\r\n\r\n"
    write(t, "oversized-head", sess(0, [], [0xFF], big))


def http_head():
    t = "http_head"
    limits = b"\xff\x40"
    write(t, "upgrade", limits + upgrade("/capture?netns=1&nif=eth0"))
    write(t, "version", limits + b"GET /version HTTP/1.1\r\nHost: a\r\n\r\nrest")
    write(t, "head-10", limits + b"HEAD /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    write(t, "absolute", limits + b"GET https://h/discover/x?y=1#frag HTTP/1.1\r\n\r\n")
    write(t, "star", limits + b"OPTIONS * HTTP/1.1\r\n\r\n")
    write(t, "bodies", limits + b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n"
          b"Content-Length: 5\r\n\r\n")
    write(t, "lf-only", limits + b"GET / HTTP/1.1\nHost: a\n\n")
    write(t, "partial", limits + b"GET /capture?netns=1 HTTP/1.1\r\nHost")
    write(t, "small-limits", b"\x01\x02" + b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")


def capture_params():
    t = "capture_params"
    sep = b"\xff"
    c = json.dumps(CONTAINER).encode()
    write(t, "netns-query", b"\0" + b"netns=4026532601&nif=eth0/lo&filter=icmp+or+tcp%20port%2080&chaste")
    write(t, "container-query", b"\0" + b"container=" +
          c.replace(b'"', b"%22").replace(b" ", b"+") + b";nif=any")
    write(t, "headers", bytes([0x0F]) + b"nif=ignored" + sep + c + sep + b"eth0/we,ird" + sep +
          b"udp port 53" + sep)
    write(t, "both-targets", bytes([0x01]) + b"netns=1" + sep + c)
    write(t, "bad-nif", b"\0" + b"netns=1&nif=eth0//-x/..")
    write(t, "bad-utf8-header", bytes([0x02]) + b"netns=1" + sep + sep + b"\xc3\x28")
    write(t, "json-full", b"\x80" + c)
    write(t, "json-nulls", b"\x80" + b'{"name":null,"netns":null,"cluster":null,"network-interfaces":null}')
    write(t, "json-bad-field", b"\x80" + b'{"netns":-1,"pid":4294967296,"network-interfaces":["a/b"]}')
    write(t, "json-not-object", b"\x80" + b'[1,2,3]')
    write(t, "proc-stat", b"\x80" + b"1234 (my (odd) comm) S 1 1234 1234 0 -1 4194560 100 0 0 0 "
          b"0 0 0 0 20 0 1 0 5678 1000 100")


def shb(order, options, endofopt=True):
    """An SHB with `options` [(code, value)] in byte order `order` ('>' or '<')."""
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    for code, value in options:
        body += struct.pack(order + "HH", code, len(value)) + value
        body += b"\0" * (-len(body) % 4)
    if endofopt:
        body += b"\0\0\0\0"
    n = len(body) + 12
    return b"\x0a\x0d\x0d\x0a" + struct.pack(order + "I", n) + body + struct.pack(order + "I", n)


def block(order, btype, body):
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def pcapng_shb():
    t = "pcapng_shb"
    marker = b"---\n# capture target information\n"
    for order, tag in (("<", "le"), (">", "be")):
        idb = block(order, 1, struct.pack(order + "HHI", 1, 0, 262144))
        epb = block(order, 6, struct.pack(order + "IIIII", 0, 1, 2, 4, 4) + b"abcd")
        plain = shb(order, [(2, b"x86_64"), (3, b"Linux 6.1"), (4, b"Dumpcap (Wireshark) 4.0.17")])
        write(t, f"dumpcap-{tag}", b"\0" + chunks() + plain + idb + epb)
        write(t, f"dumpcap-split-{tag}", b"\0" + chunks([1, 7, 30, 0x81]) + plain + idb + epb)
        commented = shb(order, [(1, b"user note"), (1, b"second"), (4, b"dumpcap")])
        write(t, f"comment-{tag}", b"\0" + chunks([5]) + commented + idb)
        old = shb(order, [(1, b"note\n" + marker + b"container-name: \"old\"\n---\nnext: 1\n")])
        write(t, f"old-document-{tag}", b"\0" + chunks() + old + epb)
        write(t, f"no-endofopt-{tag}", b"\0" + chunks() + shb(order, [(2, b"hw")], False) + idb)
        write(t, f"truncated-{tag}", b"\0" + chunks([9]) + plain[:-6])
    write(t, "not-pcapng", b"\0" + chunks([3]) + b"\xd4\xc3\xb2\xa1" + b"\0" * 40)
    # Built mode: mode bits, sizes, doc_len, name, then options + tail.
    write(t, "built-le-options", bytes([0x7F]) + chunks([2, 0x90]) + b"\x05hello" +
          b"\x01\x09old note\n\x02\x03hw!\x00\x00" + b"tail")
    write(t, "built-be-marker", bytes([0x0B]) + chunks() + b"\x03a\"b" +
          b"\x01\x24" + marker + b"x\n" + b"\x00\x00")


def http_response(status, headers, body=b""):
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode() + body


def discovery():
    t = "discovery"
    listing = json.dumps({"containers": [
        {"name": "db", "netns": 1},
        CONTAINER,
        {"name": "web", "prefix": "k8s", "netns": 2},
    ], "other": [1, 2]}).encode()
    limit = b"\xff"
    write(t, "length", b"\0" + limit + chunks() +
          http_response(200, [("Content-Type", "application/json"),
                              ("Content-Length", str(len(listing)))], listing))
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (listing[:40], listing[40:])) \
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    write(t, "chunked-split", b"\0" + limit + chunks([3, 17, 0x82]) +
          http_response(200, [("Transfer-Encoding", "chunked")], chunked))
    write(t, "until-close", b"\0" + limit + chunks([50]) +
          b"HTTP/1.1 100 Continue\r\n\r\n" + http_response(200, [], listing))
    write(t, "not-found", b"\0" + limit + chunks() + http_response(404, [("Content-Length", "0")]))
    write(t, "too-large", b"\0" + b"\x01" + chunks() +
          http_response(200, [("Content-Length", "100")], b"x" * 100))
    write(t, "gzip", b"\0" + limit + chunks() + http_response(200, [("Content-Encoding", "gzip")]))
    write(t, "lf-head", b"\0" + limit + chunks() + b"HTTP/1.0 204 No Content\nServer: g\n\n")

    def lookup(name, prefix, body):
        n, p = name.encode(), prefix.encode()
        return b"\1" + bytes([len(n)]) + n + bytes([len(p)]) + p + body
    write(t, "find-web", lookup("web", "", listing))
    write(t, "find-prefixed", lookup("web", "k8s", listing))
    write(t, "find-missing", lookup("nope", "", listing))
    write(t, "find-invalid-entry", lookup("x", "", b'{"containers":[{"name":"x","netns":"1"}]}'))
    write(t, "find-duplicate", lookup("x", "", b'{"containers":[],"containers":[]}'))
    write(t, "find-no-list", lookup("x", "", b'{"pods":[]}'))
    write(t, "find-duplicate-keys",
          lookup("x", "", b'{"containers":[{"name":"x","prefix":"p","prefix":"","netns":3}]}'))
    write(t, "find-not-utf8", lookup("web", "", listing[:-1] + b',"x":"\xff"}'))


def ws_frames():
    t = "ws_frames"
    reason = "policy violation: ä".encode()
    head = struct.pack(">H", 1008) + bytes([len(reason)]) + reason
    write(t, "ping-data-close", head + chunks() + frame(0x89, b"ping") +
          frame(0x82, b"\0" * 300) + frame(0x81, b"text") + close(1000, b"bye"))
    write(t, "fragmented", head + chunks([1, 3, 7]) + frame(0x01, b"a") + frame(0x89, b"") +
          frame(0x00, b"b") + frame(0x80, b"c") + close(4000))
    # A 64-bit length (RFC 6455 5.2) whose payload never comes.
    write(t, "huge-length", head + chunks() + b"\x82\xff" + struct.pack(">Q", 1 << 40) + MASK + b"xy")
    write(t, "empty-close", head + chunks() + frame(0x88, b""))
    # A 64-bit length with its top bit set (RFC 6455 5.2): 1002.
    write(t, "top-bit-length", head + chunks() + b"\x82\xff" + struct.pack(">Q", 1 << 63) + MASK)
    write(t, "violations", b"\x03\xee\x00" + chunks() + frame(0x82, b"a") + frame(0xC2, b"x"))
    write(t, "unmasked", b"\x03\xe8\x00" + chunks() + b"\x82\x01\x00")
    write(t, "bad-close", b"\x03\xed\x00" + chunks() + close(1005))
    write(t, "bad-utf8-reason", b"\x03\xe8\x00" + chunks() + close(1000, b"\xff"))
    write(t, "long-reason", b"\x13\x88\xc8" + ("é" * 100).encode() + chunks([2]) + frame(0x89, b"p" * 125))


def proxy():
    t = "proxy"
    write(t, "response-length", b"\x08" + chunks([5]) + http_response(
        200, [("Content-Type", "application/json"), ("Content-Length", "2"),
              ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "5")], b"{}"))
    write(t, "response-chunked", b"\x00" + chunks() + http_response(
        200, [("Transfer-Encoding", "gzip, chunked"), ("Content-Length", "9"), ("Trailer", "X")]))
    write(t, "response-head-request", b"\x0c" + chunks() + http_response(404, [("Content-Length", "10")]))
    write(t, "response-101", b"\x08" + chunks() + http_response(
        101, [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "x")]))
    write(t, "request-get", b"\x02" + chunks() + b"GET /discover/mobyshark?x=1 HTTP/1.1\r\n"
          b"Host: me\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nTE: trailers\r\n"
          b"X-Forwarded-For: 10.0.0.9\r\nEnable-Monolith: false\r\nAccept: */*\r\n\r\n")
    write(t, "request-upgrade", b"\x06" + chunks() + upgrade("/discover/ws?token=1"))
    write(t, "body-chunked", b"\x23" + chunks([1, 4, 9]) +
          b"4;name=v\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT")
    write(t, "body-length", b"\x13" + chunks([2]) + b"\x05" + b"abcdefgh")
    # Mode bit 6: a whole exchange; the first byte n makes the request 4n bytes.
    def exchange(request, response, sizes=()):
        pad = (-len(request)) % 4
        request = request[:-2] + b"X-P: " + b"a" * ((pad + 3) % 4 if pad else 3) + b"\r\n\r\n"
        while len(request) % 4:
            request = request[:-4] + b"a\r\n\r\n"
        return b"\x40" + chunks(sizes) + bytes([len(request) // 4]) + request + response
    get = b"GET /discover/mobyshark HTTP/1.1\r\nHost: a\r\n\r\n"
    write(t, "exchange-get", exchange(get + b"GET /version HTTP/1.1\r\n\r\n", http_response(
        200, [("Content-Length", "2")], b"{}"), [30, 7, 9]))
    write(t, "exchange-chunked", exchange(get, http_response(
        200, [("Transfer-Encoding", "chunked")], b"2\r\nok\r\n0\r\n\r\n"), [3, 20, 1]))
    write(t, "exchange-interim", exchange(
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbody",
        b"HTTP/1.1 100 Continue\r\n\r\n" + http_response(204, []), [10, 10]))
    write(t, "exchange-upgrade", exchange(upgrade("/discover/ws") + b"early", http_response(
        101, [("Upgrade", "websocket"), ("Connection", "Upgrade")]) + b"tunnel", [5]))
    write(t, "exchange-garbage", exchange(get, b"\x00\x01 not http\r\n\r\n"))


def merge():
    t = "merge"
    # Built mode (bit 0), byte orders in bits 1-4; script then feeding,
    # split in halves: [inputs-1, (who, op[, iface])...], [(pick, len)...].
    def built(mode, script, feeding):
        pad = max(0, len(script) - len(feeding))
        return bytes([mode]) + bytes(script) + bytes(feeding) + bytes(pad)
    # Two inputs, both little-endian: IDBs, EPBs, an ISB, an SPB.
    write(t, "two-le", built(0x01, [1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 2, 1, 3],
                             [0, 3, 1, 1, 0, 0, 1, 200]))
    # Four inputs, mixed byte orders, unknown blocks, a second section.
    write(t, "four-mixed", built(0x0b, [3, 0, 0, 1, 0, 2, 0, 3, 0, 0, 1, 0, 1, 1, 0, 2, 4, 3, 4,
                                        1, 5, 1, 0, 1, 1, 0, 3, 2, 2, 3, 3],
                                 [0, 0, 1, 1, 2, 2, 3, 3, 0, 9, 1, 9]))
    # Big-endian only, byte-sized reads.
    write(t, "one-be", built(0x03, [0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 2, 0, 3], [0, 0] * 8))
    # Raw mode: a real little-endian stream cut into two inputs.
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 262144) + struct.pack("<I", 20)
    epb = struct.pack("<IIIIIII", 6, 36, 0, 0, 1, 4, 4) + b"abcd" + struct.pack("<I", 36)
    one = shb + idb + epb
    write(t, "raw-two", bytes([0x02]) + one + one + bytes([0, 10, 1, 10] * 10))
    write(t, "raw-garbage", bytes([0x00]) + b"not pcapng at all" + bytes(17))


def filter_():
    """Mode byte (link type bits 0-1, self-exclusion bit 2, loopback
    prologue bits 3-4), then the filter text."""
    ETH, RAW, SLL = 0, 1, 2
    SELF, LO, ANY = 4, 1 << 3, 2 << 3
    seeds = [
        ("eth-udp-port", ETH, "udp port 53"),
        ("eth-tcp-flags", ETH | SELF, "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0"),
        ("eth-vlan", ETH, "vlan 10 and ip"),
        ("eth-lo-host", ETH | LO, "host 127.0.0.1 and not port 22"),
        ("raw-icmp", RAW, "icmp or icmp6"),
        ("raw-net", RAW, "src net 10.0.0.0/8 and dst portrange 1000-2000"),
        ("sll-inbound", SLL | ANY, "inbound and udp"),
        ("sll-outbound-self", SLL | ANY | SELF, "outbound"),
        ("sll-len", SLL, "greater 100 or less 60"),
        ("sll-ip6", SLL | ANY, "ip6 and tcp port 443"),
        ("sll-arp", SLL, "arp or rarp"),
        ("sll-link-byte", SLL, "link[6] = 2"),
        ("sll-ip-offset", SLL, "ip[0] & 0xf > 5 and ip[6:2] & 0x1fff = 0"),
        ("sll-indirect", SLL, "udp[8:4] = 0x01020304"),
        ("bad-syntax", ETH, "nonsense(("),
        ("many-clauses", ETH, " or ".join("port %d" % i for i in range(70))),
    ]
    for name, mode, text in seeds:
        write("filter", name, bytes([mode]) + text.encode())


if __name__ == "__main__":
    session()
    http_head()
    capture_params()
    pcapng_shb()
    discovery()
    ws_frames()
    proxy()
    merge()
    filter_()
