//! `packetflix-capture`: a client for the Packetflix service, for people and
//! for Wireshark.
//!
//! It captures from the command line into a pcapng file or stdout, lists the
//! targets the discovery service knows, runs a self-contained demo, and acts
//! as a Wireshark extcap plugin writing into Wireshark's fifo. The protocol
//! pieces ([`cli`], [`url`], [`blocks`], [`targets`], [`extcap`], [`decode`],
//! [`desktop`], [`progress`]) do no I/O; [`session`], [`http`], [`output`],
//! [`demo`] and [`install`] do blocking I/O
//! with short timeouts, which is right for a one-shot client process. None of
//! this may ever be called from the service's reactor.

pub mod blocks;
pub mod cli;
pub mod decode;
pub mod demo;
pub mod desktop;
pub mod extcap;
pub mod http;
pub mod install;
pub mod output;
pub mod progress;
pub mod session;
pub mod signals;
pub mod targets;
pub mod tls;
pub mod url;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use cli::{CaptureArgs, Command, Extcap, Output, Wanted};
use output::Sink;
use session::{Ending, Limits, StopCause, Summary};
use targets::Listed;
use url::{ServiceUrl, Target, Url};

/// The discovery exchange may take as long as the service's own default
/// (`--discovery-timeout` 20 s): the proxy may be waiting on GhostWire.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// How the program fails.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bad command line: exit status 2.
    Usage(String),
    /// Anything at run time: exit status 1.
    Runtime(String),
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure::Runtime(msg)
    }
}

/// Runs the program on its arguments (without the program name) and returns
/// its exit status, having printed what it has to say.
pub fn main_with_args<I>(args: I) -> i32
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let command = match cli::parse(args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("packetflix-capture: {msg}\nTry 'packetflix-capture --help'.");
            return 2;
        }
    };
    match run(command) {
        Ok(()) => 0,
        Err(Failure::Usage(msg)) => {
            eprintln!("packetflix-capture: {msg}\nTry 'packetflix-capture --help'.");
            2
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("packetflix-capture: {msg}");
            1
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Help => println!("{}", cli::USAGE),
        Command::Version => println!("packetflix-capture {}", env!("CARGO_PKG_VERSION")),
        Command::Extcap(Extcap::Interfaces) => print!("{}", extcap::interfaces()),
        Command::Extcap(Extcap::Dlts) => print!("{}", extcap::dlts()),
        Command::Extcap(Extcap::Config) => print!("{}", extcap::config()),
        Command::Extcap(Extcap::Reload {
            option,
            service,
            discovery,
            chosen,
        }) => {
            // The target and interface selectors are filled from the
            // discovery service; any other option has no values to reload.
            if option == extcap::TARGETS_OPTION || option == extcap::NIF_OPTION {
                install_signals(true)?;
                if let Some(list) = fetch_targets(&service, discovery.as_deref(), &signals::STOP)? {
                    if option == extcap::TARGETS_OPTION {
                        print!("{}", extcap::target_values(&list));
                    } else {
                        print!("{}", extcap::nif_values(&list, &chosen));
                    }
                }
            }
        }
        Command::Extcap(Extcap::Capture(args)) => extcap_capture(*args)?,
        Command::Capture(args) => cli_capture(args)?,
        Command::Targets(args) => {
            install_signals(true)?;
            let Some(list) = fetch_targets(&args.service, args.discovery.as_ref(), &signals::STOP)?
            else {
                return Ok(());
            };
            if args.json {
                print!("{}", targets::render_json(&list));
            } else {
                print!("{}", targets::render_table(&list));
            }
        }
        Command::Demo(args) => {
            install_signals(false)?;
            demo::run(&args, &signals::STOP)?;
        }
        Command::Install(scope) => install::install(scope)?,
        Command::Uninstall(scope) => install::uninstall(scope)?,
        Command::Open(link) => install::open(&link)?,
    }
    Ok(())
}

fn install_signals(hard_exit_on_second: bool) -> Result<(), Failure> {
    signals::install(hard_exit_on_second)
        .map_err(|e| Failure::Runtime(format!("cannot install signal handlers: {e}")))
}

fn cli_capture(mut args: CaptureArgs) -> Result<(), Failure> {
    install_signals(true)?;
    let stop = &signals::STOP;
    if args.output == Output::Unset && std::io::stdout().is_terminal() {
        return Err(Failure::Usage(
            "refusing to write pcapng to a terminal: give -w FILE, or -w - into a pipe".into(),
        ));
    }
    // Resolve first: a failed lookup should not even touch the output file.
    let Some(target) = resolve(&args, stop)? else {
        return Ok(());
    };
    args.params.target = Some(target);
    // Only a file this run makes may be removed again when it stays empty:
    // `-w /dev/null` (or any path that was there) is never removed.
    let made_here =
        matches!(&args.output, Output::File(p) if std::fs::symlink_metadata(p).is_err());
    let mut sink = match &args.output {
        Output::File(path) => Sink::create(path)?,
        Output::Fifo(path) => match Sink::open_fifo(path, stop)? {
            Some(sink) => sink,
            None => return Ok(()),
        },
        Output::Stdout | Output::Unset => Sink::stdout()?,
    };
    let limits = Limits {
        count: args.count,
        duration: args.duration,
    };
    // A live line for a person watching a capture into a file; nothing
    // extra when stderr goes to a file or a pipe.
    let mut progress = match &args.output {
        Output::File(_) if std::io::stderr().is_terminal() => {
            Some(progress::Progress::new(sink.name()))
        }
        _ => None,
    };
    let mut observe = |tally| {
        if let Some(text) = progress
            .as_mut()
            .and_then(|p| p.update(tally, std::time::Instant::now()))
        {
            eprint!("{text}");
        }
    };
    let summary = session::capture(
        &args.service,
        &args.params,
        limits,
        &mut sink,
        stop,
        &mut observe,
    );
    if let (Err(_), Output::File(path), true) = (&summary, &args.output, made_here) {
        // A refused or failed capture leaves no empty file of its own behind.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = std::fs::remove_file(path);
        }
    }
    let summary = match summary {
        Ok(summary) => summary,
        Err(e) => {
            // The error takes the live line's place, not its tail.
            if let Some(p) = progress.as_mut() {
                eprint!("{}", p.clear());
            }
            return Err(e.into());
        }
    };
    let text = format!(
        "packetflix-capture: {}",
        describe_summary(&summary, sink.name())
    );
    match progress.as_mut() {
        Some(p) => eprint!("{}", p.finish(&text)),
        None => eprintln!("{text}"),
    }
    Ok(())
}

/// Wireshark shows whatever an extcap prints on stderr as an error, so this
/// path prints nothing unless it fails.
fn extcap_capture(mut args: CaptureArgs) -> Result<(), Failure> {
    install_signals(true)?;
    let stop = &signals::STOP;
    // Open the fifo first, as Wireshark waits on it; any error below then
    // reaches the user through our exit status and stderr.
    let Output::Fifo(path) = &args.output else {
        return Err(Failure::Usage("--capture needs --fifo".into()));
    };
    let Some(mut sink) = Sink::open_fifo(path, stop)? else {
        return Ok(());
    };
    let Some(target) = resolve(&args, stop)? else {
        return Ok(());
    };
    args.params.target = Some(target);
    let limits = Limits {
        count: args.count,
        duration: args.duration,
    };
    session::capture(
        &args.service,
        &args.params,
        limits,
        &mut sink,
        stop,
        &mut |_| {},
    )?;
    Ok(())
}

/// The target to send; `None` if a stop came during a lookup.
fn resolve(args: &CaptureArgs, stop: &AtomicBool) -> Result<Option<Target>, Failure> {
    match &args.wanted {
        Wanted::Given(target) => Ok(Some(target.clone())),
        Wanted::ByName { name, prefix } => {
            let Some(list) = fetch_targets(&args.service, args.discovery.as_ref(), stop)? else {
                return Ok(None);
            };
            match targets::find(&list, name, prefix) {
                Some(found) => Ok(Some(Target::Container(found.raw.to_string()))),
                None => Err(Failure::Runtime(targets::not_found_message(
                    &list, name, prefix,
                ))),
            }
        }
    }
}

/// Asks the discovery service, directly or through the service's proxy;
/// `None` if a stop came first.
pub fn fetch_targets(
    service: &ServiceUrl,
    discovery: Option<&Url>,
    stop: &AtomicBool,
) -> Result<Option<Vec<Listed>>, Failure> {
    let via_proxy = discovery.is_none();
    let url = discovery
        .cloned()
        .unwrap_or_else(|| service.discovery_url());
    let where_ = format!("{}://{}{}", url.scheme, url.authority(80), url.path);
    let response = match http::get(&url, DISCOVERY_TIMEOUT, stop) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err(Failure::Runtime(format!(
                "cannot list targets from {where_}: {e}"
            )))
        }
    };
    match response.status {
        200 => targets::parse_listing(&response.body)
            .map(Some)
            .map_err(|e| Failure::Runtime(format!("{where_}: {e}"))),
        404 if via_proxy => Err(Failure::Runtime(format!(
            "the service at {} offers no discovery proxy ({where_}: 404); start it with --proxy-discovery, \
             or give --discovery URL of the discovery service",
            service.authority()
        ))),
        status => {
            let snippet = http::first_line(&response.body);
            Err(Failure::Runtime(format!(
                "cannot list targets: {where_} answered HTTP {status}{}{snippet}",
                if snippet.is_empty() { "" } else { ": " },
            )))
        }
    }
}

fn describe_summary(summary: &Summary, sink: &str) -> String {
    let why = match &summary.ending {
        Ending::Stopped(StopCause::Signal) => "interrupted".to_string(),
        Ending::Stopped(StopCause::Duration) => "duration reached".to_string(),
        Ending::Stopped(StopCause::Count) => "packet count reached".to_string(),
        Ending::Stopped(StopCause::ReaderGone) => "the reader went away".to_string(),
        Ending::ServiceEnded { reason } if reason.is_empty() => {
            "the service ended the capture".to_string()
        }
        Ending::ServiceEnded { reason } => format!("the service ended the capture: {reason}"),
    };
    let drops = match summary.drops {
        0 => String::new(),
        n => format!(", {n} dropped"),
    };
    format!(
        "{} packet{} ({} bytes) written to {sink}{drops}; {why}",
        summary.packets,
        if summary.packets == 1 { "" } else { "s" },
        summary.bytes
    )
}
