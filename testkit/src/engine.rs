//! The two capture engines a service under test can run, and the one way a
//! test runs the same body with each: [`engines!`](crate::engines).
//!
//! - `dumpcap`: a capture program per target, a child of the service
//!   (the default, `--capture-engine dumpcap`);
//! - `native`: packet rings the service opens and reads itself
//!   (`--capture-engine native`); no child process.
//!
//! A test about capturing is written once, as `fn name(engine: Engine)`,
//! and the macro makes `name::dumpcap` and `name::native` of it. Where the
//! two legitimately differ (the capture program's SHB options, the ISBs,
//! who holds the packet sockets), the body says so with a `match` on the
//! engine; an assertion is never weakened for both.

/// Which capture engine the service runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    #[default]
    Dumpcap,
    Native,
}

impl Engine {
    /// Both, in the order the macro runs them.
    pub const ALL: [Engine; 2] = [Engine::Dumpcap, Engine::Native];

    /// The name `--capture-engine`, `/version` and the target document use.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Dumpcap => "dumpcap",
            Engine::Native => "native",
        }
    }

    pub fn is_native(self) -> bool {
        self == Engine::Native
    }

    /// The service's arguments that choose it.
    pub fn args(self) -> [&'static str; 2] {
        ["--capture-engine", self.name()]
    }

    /// The power of ten the times of its interface statistics blocks are
    /// in: dumpcap 4.0 writes them in microseconds although its IDBs say
    /// nanoseconds (if_tsresol 9); the native engine in its IDBs'
    /// nanoseconds, as the pcapng specification has it (`None`: the
    /// interface's).
    pub fn isb_resolution(self) -> Option<u8> {
        match self {
            Engine::Dumpcap => Some(6),
            Engine::Native => None,
        }
    }
}

/// Turns each named test body `fn name(engine: Engine)` into two tests,
/// `name::dumpcap` and `name::native`, each running the body with its
/// engine (`cargo nextest run -E 'test(/::native$/)'` runs one engine's).
/// The body stays an ordinary function next to it, so rustfmt and clippy
/// see it as any other.
///
/// ```ignore
/// /// What the test shows.
/// fn captures_a_ping(engine: Engine) {
///     let svc = Service::start_engine(engine, &[]);
///     // ...
/// }
/// packetflix_testkit::engines!(captures_a_ping);
/// ```
#[macro_export]
macro_rules! engines {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn dumpcap() {
                    super::$name($crate::Engine::Dumpcap)
                }

                #[test]
                fn native() {
                    super::$name($crate::Engine::Native)
                }
            }
        )+
    };
}
