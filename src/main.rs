//! The `packetflix` service binary: command line -> config -> reactor.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use packetflix::config::{parse_args, Command, Config, USAGE};
use packetflix::{logging, reactor};

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => *cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("packetflix {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("packetflix: {e}\nTry 'packetflix --help' for more information.");
            return ExitCode::from(2);
        }
    };
    logging::init(cfg.debug);
    raise_fd_limit();
    let discovery = resolve_discovery(&cfg);
    // Refuse to start, saying why, before anything listens.
    let security = match packetflix::security::Security::load(&cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match reactor::bind_on(cfg.listen, cfg.port) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot listen on port {}: {e}", cfg.port);
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "packetflix {} listening on {}port {} ({}), capture program {}, discovery service {}",
        env!("CARGO_PKG_VERSION"),
        cfg.listen.map(|a| format!("{a} ")).unwrap_or_default(),
        cfg.port,
        security.describe(),
        cfg.capture_program.display(),
        match &discovery {
            Ok(a) => a.to_string(),
            Err(e) => e.clone(),
        }
    );
    let mut reactor = match reactor::Reactor::new(cfg, listener, discovery) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot set up the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Each capture holds three descriptors (socket, stdout, stderr): lift the
/// soft descriptor limit to the hard one so dense nodes are not capped at
/// the usual 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            log::warn!("cannot raise the open file limit from {soft} to {hard}");
        }
    }
}

/// The discovery service's address. An IP literal (the default) needs no
/// lookup; a host name is resolved here, once, at start-up, because the loop
/// must never wait on DNS.
fn resolve_discovery(cfg: &Config) -> Result<SocketAddr, String> {
    let host = cfg
        .discovery_service
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, cfg.gw_port));
    }
    match (host, cfg.gw_port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            format!("discovery service host {host:?} has no address (resolved at start-up)")
        }),
        Err(e) => Err(format!(
            "discovery service host {host:?} could not be resolved at start-up: {e}"
        )),
    }
}
