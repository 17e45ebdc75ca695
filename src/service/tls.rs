//! The client connection's transport: the plain TCP socket, or TLS over it
//! with rustls' sans-IO server connection (the shape of rustls' own mio
//! server example).
//!
//! Reading pulls TLS records from the socket into rustls and hands out the
//! plaintext; writing gives our bytes to rustls, which encrypts them (the one
//! copy TLS forces), and pushes the ciphertext to the socket as far as it
//! takes it. What the socket does not take stays in rustls, bounded by
//! [`TLS_BUFFER`], and is counted by [`Transport::buffered`] so the session's
//! watermarks hold for ciphertext too. Nothing here ever blocks: every socket
//! call is non-blocking and `WouldBlock` goes back to the caller.

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Most application bytes rustls holds (encrypted, unsent) per connection;
/// beyond it the session's own queue takes over. A frame of a full pipe
/// read (64 KiB and its header) fits, so it is encrypted and written with
/// one `writev`; at 64 KiB its last bytes would need a second.
pub const TLS_BUFFER: usize = 128 * 1024;
/// Cipher suites offered first (TLS 1.3, then TLS 1.2), see [`server_config`].
const PREFERRED_SUITES: [rustls::CipherSuite; 3] = [
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];
/// First byte of every TLS handshake record (RFC 8446 5.1, content type 22).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Loads a PEM certificate chain and private key into a server config for
/// TLS 1.2 and 1.3 with the ring provider. Errors name the file and what is
/// wrong with it. Each file must be a regular file of at most
/// [`crate::service::security::MAX_PEM_FILE`] bytes (see `security`).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    use crate::service::security::{read_regular, MAX_PEM_FILE};
    let cert_pem = read_regular(cert, MAX_PEM_FILE, "certificate")?;
    let key_pem = read_regular(key, MAX_PEM_FILE, "private key")?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {}: no CERTIFICATE in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("private key {}: {e}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first, and the server's order wins: with AES-NI it costs
    // both ends markedly less per byte than AES-256-GCM (rustls' default
    // first choice) at a security margin every TLS profile accepts, and the
    // relay's CPU per byte is what bounds a capture's throughput.
    provider
        .cipher_suites
        .sort_by_key(|s| !PREFERRED_SUITES.contains(&s.suite()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate {} with its key: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// One TLS connection over a non-blocking socket.
pub struct TlsStream {
    sock: TcpStream,
    tls: ServerConnection,
    /// Ciphertext rustls holds that the socket has not taken yet.
    pending: usize,
    /// Whether the first byte has been looked at (plaintext detection).
    sniffed: bool,
    /// The client's address while the loop's handshake gate counts this
    /// connection (`crate::service::handshake`).
    counted: Option<std::net::IpAddr>,
}

/// The socket a session talks through.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    /// TLS over `sock`, with the config in force when it was accepted.
    pub fn tls(sock: TcpStream, config: Arc<ServerConfig>) -> Result<Transport, String> {
        let mut tls = ServerConnection::new(config).map_err(|e| e.to_string())?;
        tls.set_buffer_limit(Some(TLS_BUFFER));
        Ok(Transport::Tls(Box::new(TlsStream {
            sock,
            tls,
            pending: 0,
            sniffed: false,
            counted: None,
        })))
    }

    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    /// The socket's own address (what the capture of our own namespace must
    /// leave out).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Transport::Plain(s) => s.local_addr(),
            Transport::Tls(t) => t.sock.local_addr(),
        }
    }

    /// The client's address while the handshake gate counts this
    /// connection.
    pub fn counted(&self) -> Option<std::net::IpAddr> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.counted,
        }
    }

    /// Counted (`Some`) by the handshake gate, or no longer.
    pub fn set_counted(&mut self, peer: Option<std::net::IpAddr>) {
        if let Transport::Tls(t) = self {
            t.counted = peer;
        }
    }

    /// Whether a TLS handshake is still under way.
    pub fn handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.tls.is_handshaking(),
        }
    }

    /// Output accepted but not yet in the kernel (TLS ciphertext).
    pub fn buffered(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
            Transport::Tls(t) => t.pending,
        }
    }

    /// Pushes buffered ciphertext to the socket. `Ok(true)`: none is left.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => {
                t.write_pending()?;
                Ok(t.pending == 0)
            }
        }
    }

    /// Ends our direction: TLS says close_notify first (best effort: a
    /// peer that does not read loses it, which is what TCP FIN alone says).
    pub fn shutdown_write(&mut self) {
        if let Transport::Tls(t) = self {
            t.tls.send_close_notify();
            let _ = t.write_pending();
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Write);
    }
}

impl TlsStream {
    /// Writes ciphertext until the socket would block or none is left.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending = if self.tls.wants_write() {
            // Asking for the state processes nothing new here (all received
            // records were processed when read); it reports the count.
            match self.tls.process_new_packets() {
                Ok(state) => state.tls_bytes_to_write(),
                Err(_) => TLS_BUFFER,
            }
        } else {
            0
        };
        Ok(())
    }

    /// A client that speaks plain HTTP to the TLS port gets a plain 400 that
    /// says why, instead of a TLS alert it cannot read.
    fn refuse_plaintext(&mut self) -> io::Result<()> {
        if self.sniffed {
            return Ok(());
        }
        let mut first = [0u8; 1];
        match self.sock.peek(&mut first) {
            Ok(1) if first[0] != TLS_HANDSHAKE_RECORD => {
                let resp = crate::proto::http::text_response(
                    400,
                    "this port speaks TLS: use https:// or wss://",
                    true,
                );
                let _ = self.sock.write(&resp);
                crate::metrics::tls_handshake_failed();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "plaintext request on the TLS port",
                ))
            }
            Ok(1) => {
                self.sniffed = true;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Transport::Plain(s) => return s.read(buf),
            Transport::Tls(t) => t,
        };
        loop {
            // Plaintext already decrypted goes first: with edge-triggered
            // readiness nothing would tell us about it later.
            match t.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            t.refuse_plaintext()?;
            match t.tls.read_tls(&mut t.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    let processed = t.tls.process_new_packets();
                    // Handshake messages, or the alert of a failure, go out
                    // now; the socket's verdict on them can wait.
                    let sent = t.write_pending();
                    if let Err(e) = processed {
                        if t.tls.is_handshaking() {
                            crate::metrics::tls_handshake_failed();
                        }
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    sent?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let t = match self {
            Transport::Plain(s) => return s.write_vectored(bufs),
            Transport::Tls(t) => t,
        };
        t.write_pending()?;
        let n = t.tls.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // rustls is full, so the socket is: its writable edge resumes us.
            // (Before the handshake ends rustls holds plaintext instead,
            // uncounted; the service writes only after it has read a
            // request, which comes after the handshake.)
            return Err(io::ErrorKind::WouldBlock.into());
        }
        t.write_pending()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending().map(|_| ())
    }
}
