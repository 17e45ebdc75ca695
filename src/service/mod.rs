//! The service wing: the operating system side of the service. One thread
//! around one `mio` poll loop ([`reactor`]); the [`driver`] owns every
//! descriptor of a session and performs what its machine
//! (`crate::proto::session`) asks; spawning inside a namespace ([`spawn`]),
//! finding and holding namespaces ([`netns`], [`nscache`]), privileges,
//! TLS, the discovery lookups and proxy pump, and the logger.

pub mod background;
pub mod conn;
pub mod discovery_call;
pub mod driver;
pub mod engine;
pub mod handshake;
pub mod logging;
pub mod lookup;
pub mod native;
pub mod netns;
pub mod nscache;
pub mod privileges;
pub mod reactor;
pub mod reload;
pub mod security;
pub mod spawn;
pub mod tls;
pub mod upstream;
