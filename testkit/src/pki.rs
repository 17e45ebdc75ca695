//! Test certificates made with the `openssl` command: a CA and a server
//! certificate it signed, for 127.0.0.1, ::1 and localhost; and a rustls
//! client config that trusts only that CA. Errors are returned, not
//! panicked on: the wss bench reports them (tests wrap it in `tls::Pki`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Days the certificates are valid; they live for one test or bench run.
const CERT_DAYS: &str = "2";

/// Files made by [`make`], all in one directory.
pub struct PkiFiles {
    pub ca: PathBuf,
    /// The served chain: leaf, then the CA.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl (apt-get install openssl): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Makes a CA and a server certificate chain in `dir` (which must exist),
/// with ECDSA P-256 keys.
pub fn make(dir: &Path) -> Result<PkiFiles, String> {
    make_with(
        dir,
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ],
    )
}

/// The same with an RSA-2048 server key (the expensive handshake).
pub fn make_rsa(dir: &Path) -> Result<PkiFiles, String> {
    make_with(dir, &["-newkey", "rsa:2048", "-nodes"])
}

fn make_with(dir: &Path, ec: &[&str]) -> Result<PkiFiles, String> {
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        CERT_DAYS,
        "-subj",
        "/CN=packetflix test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req"];
    csr.extend_from_slice(ec);
    csr.extend_from_slice(&[
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n\
         basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            CERT_DAYS,
            "-extfile",
            "ext.cnf",
        ],
    )?;
    let read = |n: &str| std::fs::read(dir.join(n)).map_err(|e| format!("{n}: {e}"));
    let chain = [read("leaf.pem")?, read("ca.pem")?].concat();
    std::fs::write(dir.join("cert.pem"), chain).map_err(|e| e.to_string())?;
    Ok(PkiFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    })
}

/// A client config (ring provider) trusting only `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
