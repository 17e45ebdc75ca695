//! Loads what decides who may capture (the token file, the certificate and
//! key, the machine's host name) from the files the command line names, at
//! start-up and on SIGHUP.
//!
//! The only file reads the service does after start-up happen here, on
//! SIGHUP, on a helper thread (`reload`), never on the loop: a few small
//! local files, read whole. Each must be a regular file, checked on the open
//! descriptor (opened non-blocking, so a FIFO or a device put in a file's
//! place is refused at once instead of waiting for a writer or streaming
//! forever), and no larger than a stated bound, so a wrong path can neither
//! stall a load nor grow memory. A load either yields a complete new
//! [`Security`] or an error saying which file is wrong and why; it never
//! hands out half of one, so a failed reload keeps the old state. Error
//! texts never contain a token.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::Config;
use crate::proto::auth::{Policy, TokenSet};

/// Largest token file read; far beyond [`crate::proto::auth::MAX_TOKENS`] tokens of
/// sensible length, it keeps a wrong path (a log, a device) from being
/// slurped.
const MAX_TOKEN_FILE: u64 = 4 << 20;

/// Largest certificate chain or private key file read. A PEM certificate is
/// 1-3 KiB and a chain a handful of them; an RSA-16384 key is about 12 KiB.
/// A file beyond this is not a certificate or key (a log, an archive).
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// The access policy and TLS config in force.
#[derive(Clone)]
pub struct Security {
    pub policy: Policy,
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Security {
    pub fn load(cfg: &Config) -> Result<Security, String> {
        let tokens = match &cfg.token_file {
            Some(path) => Some(read_tokens(path)?),
            None => None,
        };
        let own = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok());
        let policy = Policy::new(&cfg.allow_origins, tokens)?
            .with_hosts(&cfg.allow_hosts, own.as_deref())?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(crate::service::tls::server_config(cert, key)?),
            _ => None,
        };
        Ok(Security { policy, tls })
    }

    /// One line for the log: what is in force (counts, never tokens).
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, {} extra origin(s) allowed, browser pages under {}",
            match &self.policy.tokens {
                Some(t) => format!("{} bearer token(s) required", t.len()),
                None => "no token required".into(),
            },
            if self.tls.is_some() { "TLS" } else { "no TLS" },
            self.policy.allow_origins.len(),
            crate::proto::logtext::escape_controls(
                &["IP addresses", "localhost"]
                    .into_iter()
                    .chain(self.policy.known_hosts.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        )
    }
}

fn read_tokens(path: &Path) -> Result<TokenSet, String> {
    let shown = path.display();
    let bytes = read_regular(path, MAX_TOKEN_FILE, "token file")?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("token file {shown}: not UTF-8 text"))?;
    TokenSet::parse(&text).map_err(|e| format!("token file {shown}: {e}"))
}

/// The whole of `path` if it is a regular file of at most `max` bytes; the
/// error names `what`, the path and the reason. The open does not block
/// (`O_NONBLOCK`: a FIFO opens at once instead of waiting for a writer) and
/// the type is checked on the open descriptor, so what is read is what was
/// checked; the read stops one byte past `max` whatever the size said.
pub fn read_regular(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{what} {shown}: not a regular file (a {})",
            kind_of(&meta.file_type())
        ));
    }
    if meta.len() > max {
        return Err(format!("{what} {shown}: larger than {max} bytes"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{what} {shown}: larger than {max} bytes"));
    }
    Ok(bytes)
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with_tokens(text: &str, name: &str) -> (Config, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("pfx-sec-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let cfg = Config {
            token_file: Some(path.clone()),
            ..Config::default()
        };
        (cfg, path)
    }

    #[test]
    fn missing_or_empty_token_file_is_refused_with_the_path_not_the_tokens() {
        let cfg = Config {
            token_file: Some("/nonexistent/pfx-tokens".into()),
            ..Config::default()
        };
        let e = Security::load(&cfg).err().unwrap();
        assert!(e.contains("/nonexistent/pfx-tokens"), "{e}");
        let (cfg, path) = cfg_with_tokens("# nothing\n", "empty");
        let e = Security::load(&cfg).err().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(e.contains("no token"), "{e}");
        let (cfg, path) = cfg_with_tokens("abc\nhunter 2\n", "bad");
        let e = Security::load(&cfg).err().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(e.contains("line 2") && !e.contains("hunter"), "{e}");
    }

    #[test]
    fn a_good_token_file_loads_and_describes_itself_without_tokens() {
        let (cfg, path) = cfg_with_tokens("tok-a\ntok-b\n", "good");
        let s = Security::load(&cfg);
        let _ = std::fs::remove_file(&path);
        let s = s.unwrap();
        assert!(s.policy.token_ok(Some(b"Bearer tok-b")));
        let d = s.describe();
        assert!(
            d.contains("2 bearer token(s)") && !d.contains("tok-"),
            "{d}"
        );
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once_and_a_large_file_by_its_size() {
        let fifo = std::env::temp_dir().join(format!("pfx-sec-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would wait here for ever.
        let e = read_regular(&fifo, 100, "token file").unwrap_err();
        let _ = std::fs::remove_file(&fifo);
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 100, "certificate").unwrap_err();
        assert!(
            e.contains("character device") && e.contains("/dev/zero"),
            "{e}"
        );
        let e = read_regular(Path::new("/"), 100, "private key").unwrap_err();
        assert!(e.contains("directory"), "{e}");
        let (_, big) = cfg_with_tokens(&"x".repeat(101), "big");
        let e = read_regular(&big, 100, "certificate").unwrap_err();
        assert!(read_regular(&big, 101, "certificate").is_ok());
        let _ = std::fs::remove_file(&big);
        assert!(e.contains("larger than 100 bytes"), "{e}");
    }

    #[test]
    fn allow_host_names_and_the_own_host_name_are_known() {
        let cfg = Config {
            allow_hosts: vec!["UI.example".into()],
            ..Config::default()
        };
        let s = Security::load(&cfg).unwrap();
        assert!(s.policy.known_hosts.contains(&"ui.example".to_string()));
        let own = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert!(
            s.policy.known_hosts.contains(&own.to_ascii_lowercase()),
            "{:?}",
            s.policy.known_hosts
        );
        let bad = Config {
            allow_hosts: vec!["a b".into()],
            ..Config::default()
        };
        assert!(Security::load(&bad).err().unwrap().contains("--allow-host"));
    }

    #[test]
    fn missing_certificate_is_an_error_naming_it() {
        let cfg = Config {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..Config::default()
        };
        let e = Security::load(&cfg).err().unwrap();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
