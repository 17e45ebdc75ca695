//! The discovery proxy's upstream connection: a non-blocking socket to the
//! discovery service with its bounded output queue. It only moves bytes:
//! what to send and what a response means is the exchange's business
//! (`crate::proto::exchange`, run by the session machine).

use std::io::{self, Read as _};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::proto::session::{Broken, Out, Read};
use crate::service::conn::OutQueue;

/// One connection to the discovery service, for one proxied exchange.
pub struct Upstream {
    pub sock: TcpStream,
    queue: OutQueue,
    connected: bool,
}

impl Upstream {
    /// Starts connecting (non-blocking); bytes sent meanwhile wait.
    pub fn connect(addr: SocketAddr) -> io::Result<Upstream> {
        Ok(Upstream {
            sock: TcpStream::connect(addr)?,
            queue: OutQueue::default(),
            connected: false,
        })
    }

    /// The socket is ready: finishes connecting, then writes what waits as
    /// far as the socket takes it. `Ok(false)`: still connecting.
    pub fn on_ready(&mut self) -> io::Result<bool> {
        if !self.connected {
            if let Ok(Some(e)) | Err(e) = self.sock.take_error() {
                return Err(e);
            }
            match self.sock.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.queue.flush(&mut self.sock)?;
        Ok(true)
    }

    /// One read of the response (nothing before the connection is up).
    pub fn read(&mut self, buf: &mut [u8]) -> Read {
        if !self.connected {
            return Read::WouldBlock;
        }
        loop {
            return match self.sock.read(buf) {
                Ok(0) => Read::End,
                Ok(n) => Read::Data(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    Read::WouldBlock
                }
                Err(e) => Read::Failed(e),
            };
        }
    }
}

impl Out for Upstream {
    fn pending(&self) -> usize {
        self.queue.len()
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.queue.push(bytes);
        if self.connected {
            self.queue.flush(&mut self.sock).map_err(Broken)?;
        }
        Ok(())
    }

    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        for p in parts {
            self.queue.push(p);
        }
        if self.connected {
            self.queue.flush(&mut self.sock).map_err(Broken)?;
        }
        Ok(())
    }
}
