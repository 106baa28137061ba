//! Accepts the scheme-prefixed HTTP/2 `:authority` that etcdctl 3.4 sends
//! (`http://127.0.0.1:2379`) where the HTTP/2 stack under tonic would reset the stream.
//!
//! Go's gRPC server takes any authority; h2 rejects one that is not `host:port` with
//! PROTOCOL_ERROR, which breaks `etcdctl endpoint status --cluster`. This adapter sits between
//! the TCP stream and the HTTP/2 server on client connections: it passes every frame through
//! unchanged except header blocks, which it decodes (mirroring the client's HPACK table),
//! fixes (`:authority` loses its `scheme://`), and re-encodes (mirroring the server's table).
//! Plain HTTP/1.1 connections (`/health`, `/metrics`) pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may use, so always safe to send.
const MAX_FRAME: usize = 16_384;
/// The HPACK table size h2 advertises (and the client must respect).
const TABLE_SIZE: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting to see whether this is HTTP/2 (the client preface).
    Preface,
    /// Rewriting HTTP/2 header blocks.
    Frames,
    /// Not HTTP/2, or the header stream could not be decoded: bytes pass through.
    Passthrough,
}

/// A client connection with `:authority` normalization on the way in.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    input: Vec<u8>,
    output: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// A header block being collected: (stream ID, END_STREAM, fragments).
    block: Option<(u32, bool, Vec<u8>)>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl<S> std::fmt::Debug for AuthorityFix<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("mode", &self.mode)
            .finish()
    }
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            inner,
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            eof: false,
            block: None,
            decoder,
            encoder: loona_hpack::Encoder::new(),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn passthrough_rest(&mut self) {
        self.mode = Mode::Passthrough;
        if let Some((_, _, partial)) = self.block.take() {
            // Unreachable in practice: a block is only pending between frames we already
            // consumed; give up on rewriting and let the server see the damage.
            self.output.extend_from_slice(&partial);
        }
        self.output.append(&mut self.input);
    }

    /// Moves every complete unit of `input` to `output`, rewriting header blocks.
    fn process(&mut self) {
        if self.mode == Mode::Preface {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.passthrough_rest();
                return;
            }
            if self.input.len() < PREFACE.len() {
                return;
            }
            self.output.extend_from_slice(PREFACE);
            self.input.drain(..PREFACE.len());
            self.mode = Mode::Frames;
        }
        if self.mode == Mode::Passthrough {
            self.output.append(&mut self.input);
            return;
        }
        let mut pos = 0;
        while self.input.len() - pos >= 9 {
            let h = &self.input[pos..pos + 9];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if self.input.len() - pos < 9 + len {
                break;
            }
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = self.input[pos + 9..pos + 9 + len].to_vec();
            let frame_end = pos + 9 + len;
            match ty {
                FRAME_HEADERS => match strip(flags, &payload) {
                    Some(fragment) => {
                        self.block =
                            Some((stream, flags & FLAG_END_STREAM != 0, fragment.to_vec()));
                    }
                    None => {
                        self.input.drain(..pos);
                        self.passthrough_rest();
                        return;
                    }
                },
                FRAME_CONTINUATION => match self.block.as_mut() {
                    Some((_, _, buf)) => buf.extend_from_slice(&payload),
                    None => self.output.extend_from_slice(&self.input[pos..frame_end]),
                },
                _ => self.output.extend_from_slice(&self.input[pos..frame_end]),
            }
            if matches!(ty, FRAME_HEADERS | FRAME_CONTINUATION) && flags & FLAG_END_HEADERS != 0 {
                if let Some((stream, end_stream, block)) = self.block.take() {
                    if !self.reencode(stream, end_stream, &block) {
                        self.input.drain(..frame_end);
                        self.passthrough_rest();
                        return;
                    }
                }
            }
            pos = frame_end;
        }
        self.input.drain(..pos);
    }

    fn reencode(&mut self, stream: u32, end_stream: bool, block: &[u8]) -> bool {
        let Ok(mut headers) = self.decoder.decode(block) else {
            return false;
        };
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" {
                if let Some(i) = value.windows(3).position(|w| w == b"://") {
                    value.drain(..i + 3);
                }
                while value.last() == Some(&b'/') {
                    value.pop();
                }
            }
        }
        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut first = true;
        if encoded.is_empty() {
            let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
            frame(&mut self.output, FRAME_HEADERS, flags, stream, &[]);
            return true;
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let mut flags = if last { FLAG_END_HEADERS } else { 0 };
            let ty = if first {
                FRAME_HEADERS
            } else {
                FRAME_CONTINUATION
            };
            if first && end_stream {
                flags |= FLAG_END_STREAM;
            }
            frame(&mut self.output, ty, flags, stream, chunk);
            first = false;
        }
        true
    }
}

/// The header block fragment of a HEADERS payload, without padding and priority.
fn strip(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end)
}

fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.out_pos);
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                        // Whatever is left is an incomplete frame: hand it over as it is.
                        this.output.append(&mut this.input);
                    } else {
                        this.input.extend_from_slice(rb.filled());
                        this.process();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(
        enc: &mut loona_hpack::Encoder<'static>,
        authority: &[u8],
        stream: u32,
    ) -> Vec<u8> {
        let block = enc.encode([
            (b":method".as_slice(), b"POST".as_slice()),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ]);
        let mut out = Vec::new();
        frame(&mut out, FRAME_HEADERS, FLAG_END_HEADERS, stream, &block);
        out
    }

    /// Feeds `bytes` through the adapter in awkward pieces and returns what the server sees.
    fn run(bytes: &[u8]) -> Vec<u8> {
        let mut fix = AuthorityFix::new(());
        let mut seen = Vec::new();
        for piece in bytes.chunks(7) {
            fix.input.extend_from_slice(piece);
            fix.process();
            seen.extend_from_slice(&fix.output);
            fix.output.clear();
        }
        seen
    }

    fn authorities(server_view: &[u8]) -> Vec<Vec<u8>> {
        let mut dec = loona_hpack::Decoder::new();
        let mut out = Vec::new();
        let mut pos = PREFACE.len();
        while pos + 9 <= server_view.len() {
            let h = &server_view[pos..pos + 9];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if h[3] == FRAME_HEADERS {
                let headers = dec
                    .decode(&server_view[pos + 9..pos + 9 + len])
                    .expect("valid block");
                out.extend(
                    headers
                        .into_iter()
                        .filter(|(n, _)| n == b":authority")
                        .map(|(_, v)| v),
                );
            }
            pos += 9 + len;
        }
        out
    }

    #[test]
    fn rewrites_scheme_prefixed_authority_across_requests() {
        let mut enc = loona_hpack::Encoder::new();
        let mut client = PREFACE.to_vec();
        frame(&mut client, 0x4, 0, 0, &[]); // SETTINGS
        client.extend(headers_frame(&mut enc, b"http://127.0.0.1:2379", 1));
        frame(&mut client, 0x0, 0x1, 1, b"\0\0\0\0\0"); // DATA
        // The second request refers to the client's dynamic table entry.
        client.extend(headers_frame(&mut enc, b"http://127.0.0.1:2379", 3));
        client.extend(headers_frame(&mut enc, b"127.0.0.1:2379", 5));
        let seen = run(&client);
        assert_eq!(authorities(&seen), vec![b"127.0.0.1:2379".to_vec(); 3]);
    }

    #[test]
    fn http1_passes_through_untouched() {
        let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(req), req.to_vec());
    }
}
