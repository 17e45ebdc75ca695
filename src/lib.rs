//! Packetflix: streams live packet captures from inside a container's network
//! namespace to websocket clients.
//!
//! Three wings:
//! - [`proto`]: every protocol decision, with no I/O at all: HTTP heads and
//!   bodies, websocket frames, capture parameters and targets, pcapng
//!   editing and merging, and the session machine that ties them together
//!   for one client connection. Unit tests and fuzz targets drive it with
//!   plain bytes; a test keeps it free of sockets, processes and files.
//! - [`service`]: the operating system side: one thread around one `mio`
//!   poll loop ([`service::reactor`]), the driver that owns each session's
//!   descriptors and performs what the session asks ([`service::driver`]),
//!   spawning in a namespace, namespace lookups, privileges, TLS, logging.
//! - [`client`]: the project's own capture client and Wireshark extcap.
//!
//! [`config`] (what the user configured) and [`metrics`] (counters) are
//! shared by the wings.

pub mod client;
pub mod config;
pub mod metrics;
pub mod proto;
pub mod service;
