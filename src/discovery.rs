//! The GhostWire discovery client. (placeholder until the `target` branch's
//! discovery client lands: same interface, no function)

use std::net::SocketAddr;
use std::task::Poll;

use mio::net::TcpStream;

use crate::target::Target;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryError {
    Unreachable(String),
    TimedOut,
    BadStatus(u16),
    BadResponse(String),
    TooLarge,
    BadJson(String),
    NotListed { name: String, prefix: String },
}

impl DiscoveryError {
    pub fn describe(&self, service_addr: &str) -> String {
        format!("discovery service at {service_addr}: {self:?}")
    }
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct DiscoveryCall {
    stream: TcpStream,
}

impl DiscoveryCall {
    pub fn start(addr: SocketAddr, _host_header: &str, _port: u16) -> Result<Self, DiscoveryError> {
        TcpStream::connect(addr)
            .map(|stream| DiscoveryCall { stream })
            .map_err(|e| DiscoveryError::Unreachable(e.to_string()))
    }
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
    pub fn on_ready(&mut self) -> Poll<Result<Response, DiscoveryError>> {
        Poll::Ready(Err(DiscoveryError::BadResponse("not implemented".into())))
    }
}

pub fn find_target(_body: &[u8], name: &str, prefix: &str) -> Result<Target, DiscoveryError> {
    Err(DiscoveryError::NotListed {
        name: name.into(),
        prefix: prefix.into(),
    })
}
