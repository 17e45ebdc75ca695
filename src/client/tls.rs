//! TLS and the bearer token for the client: what `--ca`, `--insecure`,
//! `--token` and `--token-file` ask for, and the blocking stream (plain TCP
//! or rustls over it) that HTTP requests and the websocket run on.
//!
//! Blocking I/O is right here: the client is its own short-lived process,
//! never the service's loop. Without `--ca` the system's CA bundle is
//! trusted; `--insecure` skips verification and says so on stderr, every
//! time it is used. The token is never printed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// Debian's (and most distributions') bundle of trusted CAs, from the
/// `ca-certificates` package.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How the client proves itself and checks the service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// `--ca FILE`: trust this CA (PEM) instead of the system's.
    pub ca: Option<PathBuf>,
    /// `--insecure`: do not verify the service's certificate.
    pub insecure: bool,
    /// `--token TOKEN`.
    pub token: Option<String>,
    /// `--token-file FILE`: the first token line of the file.
    pub token_file: Option<PathBuf>,
}

impl Access {
    /// The token to send, if any: `--token`, else the first line of
    /// `--token-file` that is neither blank nor a `#` comment (the service's
    /// token file format, so one file can serve both).
    pub fn bearer(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Some(t.to_string()))
            .ok_or_else(|| format!("token file {}: no token in it", path.display()))
    }

    /// `Authorization: Bearer ...` if a token is configured.
    pub fn authorization(&self) -> Result<Option<String>, String> {
        Ok(self.bearer()?.map(|t| format!("Bearer {t}")))
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let config = if self.insecure {
            eprintln!(
                "packetflix-capture: warning: --insecure: the service's certificate is not verified"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let path = self
                .ca
                .clone()
                .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("CA file {}: no usable certificate", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

/// A connection to the service or discovery, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// TLS over `tcp` to `host`, verified as `access` says. The handshake
    /// happens with the first read or write.
    pub fn tls(tcp: TcpStream, host: &str, access: &Access) -> Result<Stream, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} cannot be checked against a certificate: {e}"))?;
        let conn = ClientConnection::new(access.client_config()?, name)
            .map_err(|e| format!("TLS setup: {e}"))?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// `--insecure`: accepts any certificate, but still checks that the
/// handshake signatures are sound, so the connection is at least encrypted
/// to whoever holds the key it shows.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_flag_wins_and_token_file_gives_its_first_token() {
        let path = std::env::temp_dir().join(format!("pfx-client-tok-{}", std::process::id()));
        std::fs::write(&path, "# mine\n\n  t-file  \nsecond\n").unwrap();
        let from_file = Access {
            token_file: Some(path.clone()),
            ..Access::default()
        };
        let both = Access {
            token: Some("t-flag".into()),
            ..from_file.clone()
        };
        let got = (from_file.bearer(), both.authorization());
        std::fs::write(&path, "# none\n").unwrap();
        let empty = from_file.bearer();
        let _ = std::fs::remove_file(&path);
        assert_eq!(got.0.unwrap().as_deref(), Some("t-file"));
        assert_eq!(got.1.unwrap().as_deref(), Some("Bearer t-flag"));
        assert!(empty.unwrap_err().contains("no token"));
        assert_eq!(Access::default().bearer().unwrap(), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error_naming_it() {
        let a = Access {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Access::default()
        };
        let e = a.client_config().err().unwrap();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
