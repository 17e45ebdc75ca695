//! A client connection's socket and its bounded output queue.
//!
//! The relay writes each message straight from the read buffer into the
//! socket when nothing is queued; only what the socket does not take is
//! copied into the queue. So a client that keeps up costs no copies and no
//! allocations, and a slow one costs at most the queue's high watermark,
//! which the session enforces by pausing the capture pipe.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use mio::net::TcpStream;

use crate::service::tls::Transport;

pub use crate::proto::session::{HIGH_WATER, LOW_WATER};

/// Most slices handed to one `writev`; well below Linux's IOV_MAX (1024).
const MAX_IOV: usize = 64;

/// Bytes waiting for the socket, in order.
#[derive(Default, Debug)]
pub struct OutQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    len: usize,
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        // Small writes (headers, control frames) join the last chunk so the
        // queue does not become a list of tiny vectors.
        if let Some(last) = self.chunks.back_mut() {
            if bytes.len() <= 512 && last.capacity() - last.len() >= bytes.len() {
                last.extend_from_slice(bytes);
                return;
            }
        }
        self.chunks.push_back(bytes.to_vec());
    }

    /// Writes as much as the socket takes. `Ok(true)`: the queue is empty.
    pub fn flush(&mut self, sock: &mut impl Write) -> io::Result<bool> {
        while self.len > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, c) in self.chunks.iter().take(MAX_IOV).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &c[self.offset..] } else { c });
                n += 1;
            }
            match sock.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => self.consume(w),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Release the memory of a burst once it is sent.
        self.chunks = VecDeque::new();
        Ok(true)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.chunks.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }
}

/// The client socket (plain or TLS) with its queue.
pub struct Conn {
    pub sock: Transport,
    pub out: OutQueue,
}

impl Conn {
    pub fn new(sock: TcpStream) -> Self {
        Conn::over(Transport::Plain(sock))
    }

    pub fn over(sock: Transport) -> Self {
        Conn {
            sock,
            out: OutQueue::default(),
        }
    }

    /// Output not yet in the kernel: the queue plus what TLS holds
    /// encrypted. The watermarks compare against this.
    pub fn pending(&self) -> usize {
        self.out.len() + self.sock.buffered()
    }

    /// Writes what waits (TLS's ciphertext first, then the queue) as far as
    /// the socket takes it. `Ok(true)`: nothing is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        let tls_done = self.sock.flush_pending()?;
        let queue_done = self.out.flush(&mut self.sock)?;
        Ok(tls_done && queue_done && self.sock.buffered() == 0)
    }

    /// Queues `bytes` behind whatever waits, then writes what the socket takes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.push(bytes);
        self.out.flush(&mut self.sock).map(|_| ())
    }

    /// Sends `head` then `body` as one unit, writing directly from the
    /// caller's buffers when the queue is empty (the relay's hot path).
    pub fn send_parts(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        if !self.out.is_empty() {
            self.out.push(head);
            self.out.push(body);
            return Ok(());
        }
        let total = head.len() + body.len();
        let mut done = 0;
        while done < total {
            let res = if done < head.len() {
                self.sock
                    .write_vectored(&[IoSlice::new(&head[done..]), IoSlice::new(body)])
            } else {
                self.sock.write(&body[done - head.len()..])
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if done < head.len() {
            self.out.push(&head[done..]);
            self.out.push(body);
        } else if done < total {
            self.out.push(&body[done - head.len()..]);
        }
        Ok(())
    }

    /// Sends `parts` in order as one unit, writing directly from the
    /// caller's buffers (at most [`MAX_IOV`] slices per `writev`) when the
    /// queue is empty; what the socket does not take is queued.
    pub fn send_slices(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut first = 0;
        let mut offset = 0;
        if self.out.is_empty() {
            while first < parts.len() {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let mut n = 0;
                for (k, p) in parts[first..].iter().take(MAX_IOV).enumerate() {
                    slices[k] = IoSlice::new(if k == 0 { &p[offset..] } else { p });
                    n += 1;
                }
                match self.sock.write_vectored(&slices[..n]) {
                    Ok(0) if slices[..n].iter().all(|s| s.is_empty()) => {
                        first += n;
                        offset = 0;
                    }
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(mut w) => {
                        while w > 0 && first < parts.len() {
                            let left = parts[first].len() - offset;
                            if w >= left {
                                w -= left;
                                first += 1;
                                offset = 0;
                            } else {
                                offset += w;
                                w = 0;
                            }
                        }
                        // Skip empty slices so the loop ends.
                        while first < parts.len() && parts[first].len() == offset {
                            first += 1;
                            offset = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(p) = parts.get(first) {
            self.out.push(&p[offset..]);
            for p in &parts[first + 1..] {
                self.out.push(p);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call and then blocks after
    /// `budget` bytes in total.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.cap).min(self.budget);
            self.got.extend_from_slice(&b[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_keeps_order_across_partial_writes() {
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..50u8 {
            let chunk = vec![i; (i as usize * 37) % 700 + 1];
            expect.extend_from_slice(&chunk);
            q.push(&chunk);
        }
        assert_eq!(q.len(), expect.len());
        let mut w = Trickle {
            got: Vec::new(),
            cap: 13,
            budget: 1000,
        };
        assert!(!q.flush(&mut w).unwrap());
        assert_eq!(q.len(), expect.len() - 1000);
        w.budget = usize::MAX;
        assert!(q.flush(&mut w).unwrap());
        assert_eq!(w.got, expect);
        assert!(q.is_empty());
    }

    /// A connection to a local socket whose peer reads nothing: the kernel
    /// takes what fits, the rest must queue, in order.
    #[test]
    fn send_slices_writes_what_fits_and_queues_the_rest_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sock = std::net::TcpStream::connect(addr).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut conn = Conn::new(TcpStream::from_std(sock));
        let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        let parts: [&[u8]; 4] = [b"head", &[], &big[..5 << 20], &big[5 << 20..]];
        conn.send_slices(&parts).unwrap();
        assert!(conn.pending() > 0, "8 MiB do not fit an unread socket");
        conn.send_slices(&[b"tail"]).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut peer, &mut got).map(|_| got)
        });
        while !conn.flush().unwrap() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(conn);
        let got = reader.join().unwrap().unwrap();
        let mut expect = b"head".to_vec();
        expect.extend_from_slice(&big);
        expect.extend_from_slice(b"tail");
        assert!(got == expect, "bytes lost or reordered");
    }

    #[test]
    fn write_zero_is_an_error_not_a_spin() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = OutQueue::default();
        q.push(b"abc");
        assert!(q.flush(&mut Zero).is_err());
    }
}
