//! Packetflix: streams live packet captures from inside a container's network
//! namespace to websocket clients.
//!
//! The service is one thread around one `mio` poll loop ([`reactor`]). Every
//! protocol decision lives in modules that do no I/O at all ([`http`],
//! [`params`], [`target`], [`pcapng`], [`ws`], [`http1`], the response
//! framing the discovery client and the discovery proxy share, and the
//! parsers in [`discovery`]), so unit tests and fuzz targets drive them with
//! plain bytes.

pub mod auth;
pub mod background;
pub mod capture;
pub mod client;
pub mod config;
pub mod conn;
pub mod discovery;
pub mod driver;
pub mod front;
pub mod http;
pub mod http1;
pub mod links;
pub mod logging;
pub mod lookup;
pub mod merge;
pub mod metrics;
pub mod multi;
pub mod netns;
pub mod nscache;
pub mod params;
pub mod pcapng;
pub mod privileges;
pub mod proxy;
pub mod reactor;
pub mod security;
pub mod selfexcl;
pub mod session;
pub mod target;
pub mod tls;
pub mod ws;
