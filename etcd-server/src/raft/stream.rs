//! A Raft stream's socket, plain TCP or TLS (an `https://` peer URL). The TLS handshake and
//! the hello happen on the Tokio side; the Raft thread then drives the rustls connection
//! itself on its non-blocking socket, so TLS costs no extra thread hop or copy.

use std::io::{self, ErrorKind, Read, Write};

/// A Raft stream ready for frames, handed from the Tokio side to the Raft thread.
pub struct RaftStream {
    sock: std::net::TcpStream,
    tls: Option<Box<rustls::Connection>>,
}

impl std::fmt::Debug for RaftStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStream")
            .field("sock", &self.sock)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl RaftStream {
    /// A plain TCP stream.
    pub fn plain(sock: std::net::TcpStream) -> Self {
        Self { sock, tls: None }
    }

    /// A TLS stream whose handshake is done (the connection may hold buffered bytes).
    pub fn tls(sock: std::net::TcpStream, conn: impl Into<rustls::Connection>) -> Self {
        Self {
            sock,
            tls: Some(Box::new(conn.into())),
        }
    }

    /// A TLS stream taken off tokio-rustls after the hello.
    pub fn from_tokio<C: Into<rustls::Connection>>(
        sock: tokio::net::TcpStream,
        conn: C,
    ) -> io::Result<Self> {
        Ok(Self::tls(sock.into_std()?, conn))
    }
}

/// The Raft thread's side of a stream: non-blocking reads and writes of frame bytes.
pub(super) struct Stream {
    pub(super) sock: mio::net::TcpStream,
    tls: Option<Box<rustls::Connection>>,
}

impl Stream {
    pub(super) fn new(s: RaftStream) -> Self {
        Self {
            sock: mio::net::TcpStream::from_std(s.sock),
            tls: s.tls,
        }
    }

    /// Reads frame bytes: `Ok(0)` at the end of the stream, `WouldBlock` when the socket has
    /// nothing more.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(conn) = self.tls.as_mut() else {
            return self.sock.read(buf);
        };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (an alert), then give up on the stream.
                let _ = conn.write_tls(&mut self.sock);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            // A post-handshake message may want an answer (a key update).
            match drain(conn, &mut self.sock) {
                Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    /// Writes some of `buf`: how much was taken, or `WouldBlock` when the socket is full.
    /// With TLS, taken bytes may wait in the connection for [`Stream::flush_tls`].
    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(conn) = self.tls.as_mut() else {
            return self.sock.write(buf);
        };
        drain(conn, &mut self.sock)?;
        let n = conn.writer().write(buf)?;
        // Once the connection took bytes, report them taken whatever the socket says: a
        // retry must not encrypt them twice. A broken socket shows up on the next call.
        let _ = drain(conn, &mut self.sock);
        Ok(n)
    }

    /// Whether encrypted bytes wait in the connection for the socket.
    pub(super) fn has_pending_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes the TLS records waiting in the connection; `WouldBlock` if some still wait.
    pub(super) fn flush_tls(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(conn) => drain(conn, &mut self.sock),
            None => Ok(()),
        }
    }

    /// Whether the stream may hold bytes already read off the socket (TLS buffers): those
    /// raise no readiness event, so a new stream is read once right away.
    pub(super) fn may_hold_input(&self) -> bool {
        self.tls.is_some()
    }
}

/// Writes a connection's pending TLS records to the socket (`WouldBlock` when it is full).
fn drain(conn: &mut rustls::Connection, sock: &mut mio::net::TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
