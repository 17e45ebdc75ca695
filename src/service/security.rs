//! Loads what decides who may capture (the token file, the certificate and
//! key) from the files the command line names, at start-up and on SIGHUP.
//!
//! The only file reads the service does after start-up happen here, on
//! SIGHUP: a few small local files, read whole. A load either yields a
//! complete new [`Security`] or an error saying which file is wrong and why;
//! it never hands out half of one, so a failed reload keeps the old state.
//! Error texts never contain a token.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::Config;
use crate::proto::auth::{Policy, TokenSet};

/// Largest token file read; far beyond [`crate::proto::auth::MAX_TOKENS`] tokens of
/// sensible length, it keeps a wrong path (a log, a device) from being
/// slurped.
const MAX_TOKEN_FILE: u64 = 4 << 20;

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
        let policy = Policy::new(&cfg.allow_origins, tokens)?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(crate::service::tls::server_config(cert, key)?),
            _ => None,
        };
        Ok(Security { policy, tls })
    }

    /// SIGHUP: new tokens and certificate for new connections; running
    /// sessions keep what they started with. A failed load changes nothing.
    pub fn reload(&mut self, cfg: &Config) {
        match Security::load(cfg) {
            Ok(s) => {
                log::info!("SIGHUP: reloaded: {}", s.describe());
                *self = s;
            }
            Err(e) => log::warn!(
                "SIGHUP: reload failed, keeping the previous tokens and certificate: {e}"
            ),
        }
    }

    /// One line for the log: what is in force (counts, never tokens).
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, {} extra origin(s) allowed",
            match &self.policy.tokens {
                Some(t) => format!("{} bearer token(s) required", t.len()),
                None => "no token required".into(),
            },
            if self.tls.is_some() { "TLS" } else { "no TLS" },
            self.policy.allow_origins.len()
        )
    }
}

fn read_tokens(path: &std::path::Path) -> Result<TokenSet, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("token file {shown}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("token file {shown}: {e}"))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!(
            "token file {shown}: larger than {MAX_TOKEN_FILE} bytes"
        ));
    }
    TokenSet::parse(&text).map_err(|e| format!("token file {shown}: {e}"))
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
