//! The `packetflix` service binary: command line -> config -> reactor.

use std::process::ExitCode;

use packetflix::config::{parse_args, Command, USAGE};
use packetflix::service::{logging, reactor};

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
    // Refuse to start, saying why, before anything listens.
    let security = match packetflix::service::security::Security::load(&cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            log::logger().flush();
            return ExitCode::FAILURE;
        }
    };
    let listener = match reactor::bind_on(cfg.listen, cfg.port) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot listen on port {}: {e}", cfg.port);
            log::logger().flush();
            return ExitCode::FAILURE;
        }
    };
    let port = cfg.port;
    let listen = cfg.listen.map(|a| format!("{a} ")).unwrap_or_default();
    let engine = match cfg.capture_engine {
        packetflix::config::CaptureEngine::Dumpcap => {
            format!("capture program {}", cfg.capture_program.display())
        }
        packetflix::config::CaptureEngine::Native => "native capture engine".to_string(),
    };
    let mut reactor = match reactor::Reactor::new(cfg, listener) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot set up the event loop: {e}");
            log::logger().flush();
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "packetflix {} listening on {listen}port {port} ({}), {engine}, discovery service {}",
        env!("CARGO_PKG_VERSION"),
        security.describe(),
        reactor.discovery_service()
    );
    let code = match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    };
    // The last lines (shutdown complete) are still with the log writer.
    log::logger().flush();
    code
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
