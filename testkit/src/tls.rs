//! TLS for the end-to-end tests: a private CA and a server certificate made
//! by the `openssl` command for each test, a blocking rustls client that
//! trusts that CA, and the Python `websockets` client (a third-party wss
//! client) from the venv `scripts/deps.sh` makes under `target/`. Every
//! file lives in a scratch directory removed on drop; every wait is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::ScratchDir;

/// A CA and a server certificate chain (leaf, then CA) for 127.0.0.1, ::1
/// and localhost signed by it, in a scratch directory.
pub struct Pki {
    pub dir: ScratchDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    // Not a `Default`: making one creates real resources (a namespace,
    // files), which a default value should not.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Pki {
        let dir = ScratchDir::new("pki");
        let files = super::pki::make(&dir.0).unwrap_or_else(|e| panic!("{e}"));
        Pki {
            ca: files.ca,
            cert: files.cert,
            key: files.key,
            dir,
        }
    }

    /// The same with an RSA-2048 server key.
    pub fn rsa() -> Pki {
        let dir = ScratchDir::new("pki-rsa");
        let files = super::pki::make_rsa(&dir.0).unwrap_or_else(|e| panic!("{e}"));
        Pki {
            ca: files.ca,
            cert: files.cert,
            key: files.key,
            dir,
        }
    }

    pub fn ca_str(&self) -> &str {
        self.ca.to_str().expect("UTF-8 path")
    }

    /// `--tls-cert C --tls-key K` for the service.
    pub fn service_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

/// A client config trusting only `ca`.
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    super::pki::client_config(ca).unwrap_or_else(|e| panic!("client config: {e}"))
}

/// A TLS connection to 127.0.0.1:`port` (handshake done), trusting `ca`.
pub fn tls_connect(
    port: u16,
    ca: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(client_config(ca), name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(s)
}

/// Sends one raw request over TLS and reads until the server closes (at
/// most `timeout`): (status, whole response text).
pub fn https_raw(
    port: u16,
    ca: &Path,
    raw: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut s = tls_connect(port, ca)?;
    s.write_all(raw.as_bytes()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            // A peer that closes without close_notify still said its piece.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((status, text))
}

/// The Python of the venv `scripts/deps.sh` makes (with `websockets`).
pub fn venv_python() -> PathBuf {
    let p = super::bins::repo().join("target/tls-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/deps.sh (it makes the venv with Python websockets)",
        p.display()
    );
    p
}

/// Captures `url` (wss://...) for `secs` seconds with Python `websockets`,
/// trusting `ca`, with `headers`; returns the binary messages' bytes, or the
/// client's error text. The client closes with 1000 at the end.
pub fn python_wss_capture(
    url: &str,
    ca: &Path,
    headers: &[(&str, &str)],
    secs: f64,
) -> Result<Vec<u8>, String> {
    let out = super::scratch_path("wss.pcapng");
    let hdrs = headers
        .iter()
        .map(|(k, v)| format!("({k:?},{v:?})"))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        r#"
import asyncio, ssl, sys, time
from websockets.asyncio.client import connect
async def main():
    ctx = ssl.create_default_context(cafile={ca:?})
    data = bytearray()
    async with connect({url:?}, ssl=ctx, additional_headers=[{hdrs}], max_size=None, open_timeout=15) as ws:
        end = time.monotonic() + {secs}
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                m = await asyncio.wait_for(ws.recv(), timeout=left)
            except asyncio.TimeoutError:
                break
            if isinstance(m, bytes):
                data += m
        await ws.close(1000, "done")
    open({out:?}, "wb").write(data)
asyncio.run(main())
"#,
        ca = ca.display().to_string(),
        out = out.display().to_string(),
    );
    let mut child = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 30.0);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&out);
            return Err("python websockets client did not finish in time".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let bytes = std::fs::read(&out);
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(format!("python websockets client failed ({status}): {err}"));
    }
    bytes.map_err(|e| e.to_string())
}
