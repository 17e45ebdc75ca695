//! Packetflix: streams live packet captures from inside a container's network
//! namespace to websocket clients.
//!
//! The service is one thread around one `mio` poll loop ([`reactor`]). Every
//! protocol decision lives in modules that do no I/O at all ([`http`],
//! [`params`], [`target`], [`pcapng`], [`ws`], the parsers in [`discovery`]),
//! so unit tests and fuzz targets drive them with plain bytes.

pub mod client;
pub mod config;
pub mod discovery;
pub mod pcapng;
pub mod target;
