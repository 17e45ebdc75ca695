//! Command line -> [`Config`]. No I/O beyond what the caller hands in; the
//! binary prints what [`parse_args`] returns.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the service needs to know from its command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub port: u16,
    pub discovery_service: String,
    pub gw_port: u16,
    pub discovery_timeout: Duration,
    pub proxy_discovery: bool,
    pub debug: bool,
    pub log_requests: bool,
    pub log_headers: bool,
    pub capture_program: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 5001,
            discovery_service: "127.0.0.1".into(),
            gw_port: 5000,
            discovery_timeout: Duration::from_secs(20),
            proxy_discovery: false,
            debug: false,
            log_requests: false,
            log_headers: false,
            capture_program: PathBuf::from("/usr/bin/dumpcap"),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Config),
    Help,
    Version,
}

pub fn parse_args<I: IntoIterator<Item = String>>(_args: I) -> Result<Command, String> {
    Ok(Command::Run(Config::default()))
}
