//! Accepts the scheme-prefixed HTTP/2 `:authority` that etcdctl 3.4 sends
//! (`http://127.0.0.1:2379`) where the h2 crate would reset the stream.
//!
//! Go's gRPC server takes any authority; h2 rejects one that is not `host:port` with
//! PROTOCOL_ERROR, which breaks `etcdctl endpoint status --cluster`. This adapter sits between
//! the TCP stream and the HTTP/2 server on client connections and passes every frame through
//! unchanged except header blocks that carry such an authority.
//!
//! To tell, it mirrors the client's HPACK dynamic table and reads each header block just far
//! enough to find `:authority` (values of other headers are skipped, not decoded). As long as no
//! block needed a fix, blocks go through byte for byte, so the server's table stays identical
//! to the client's. The first block that needs a fix switches the connection to rewriting: from
//! then on every block is decoded, fixed (`:authority` loses its `scheme://`) and re-encoded
//! against the server's table, which the first rewritten block resets. Plain HTTP/1.1
//! connections (`/health`, `/metrics`) pass through untouched.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
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
/// Bytes read from the connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The HPACK static table (RFC 7541, Appendix A); index `i` is at `i - 1`.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

const AUTHORITY: &[u8] = b":authority";

/// Whether `fix_authority` would change `value`.
fn authority_needs_fix(value: &[u8]) -> bool {
    value.windows(3).any(|w| w == b"://") || value.last() == Some(&b'/')
}

/// Drops a `scheme://` prefix and trailing slashes.
fn fix_authority(value: &mut Vec<u8>) {
    if let Some(i) = value.windows(3).position(|w| w == b"://") {
        value.drain(..i + 3);
    }
    while value.last() == Some(&b'/') {
        value.pop();
    }
}

type Entry = (Vec<u8>, Vec<u8>);

/// What one header block did to the dynamic table, so it can be taken back.
#[derive(Debug, Default)]
struct Undo {
    /// Entries the block added that are still in the table (at its front).
    added: usize,
    /// Entries that were in the table before the block and got evicted, oldest first.
    evicted: Vec<Entry>,
    /// The maximum size before the block's first size update.
    old_max: Option<usize>,
}

/// A mirror of the client's HPACK dynamic table (newest entry first).
#[derive(Debug)]
struct Table {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
}

fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

impl Table {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: TABLE_SIZE,
        }
    }

    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        match index {
            0 => None,
            i if i <= STATIC.len() => Some(STATIC[i - 1]),
            i => self
                .entries
                .get(i - STATIC.len() - 1)
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        }
    }

    fn evict_to(&mut self, limit: usize, undo: &mut Undo) {
        while self.size > limit {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= entry_size(&e.0, &e.1);
            if self.entries.len() < undo.added {
                // One the block added itself.
                undo.added -= 1;
            } else {
                undo.evicted.push(e);
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>, undo: &mut Undo) {
        let size = entry_size(&name, &value);
        self.evict_to(self.max.saturating_sub(size), undo);
        if size <= self.max {
            self.entries.push_front((name, value));
            self.size += size;
            undo.added += 1;
        }
    }

    fn resize(&mut self, max: usize, undo: &mut Undo) {
        undo.old_max.get_or_insert(self.max);
        self.max = max;
        self.evict_to(max, undo);
    }

    /// Puts the table back as it was before the block that produced `undo`.
    fn revert(&mut self, undo: Undo) {
        for _ in 0..undo.added {
            self.entries.pop_front();
        }
        self.entries.extend(undo.evicted.into_iter().rev());
        if let Some(max) = undo.old_max {
            self.max = max;
        }
        self.size = self.entries.iter().map(|(n, v)| entry_size(n, v)).sum();
    }
}

/// HPACK integer with an `n`-bit prefix (RFC 7541, 5.1).
fn read_int(buf: &[u8], pos: &mut usize, n: u8) -> Option<usize> {
    let mask = (1usize << n) - 1;
    let mut value = usize::from(*buf.get(*pos)?) & mask;
    *pos += 1;
    if value < mask {
        return Some(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift > 28 {
            return None;
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// An HPACK string literal as sent: (Huffman-coded, bytes).
fn read_raw_string<'b>(buf: &'b [u8], pos: &mut usize) -> Option<(bool, &'b [u8])> {
    let huffman = *buf.get(*pos)? & 0x80 != 0;
    let len = read_int(buf, pos, 7)?;
    let s = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some((huffman, s))
}

/// The Huffman decoder, built on first use (most connections never need it once the client's
/// table is warm).
#[derive(Default)]
struct Huffman(Option<loona_hpack::huffman::HuffmanDecoder>);

impl Huffman {
    fn read_string<'b>(&mut self, buf: &'b [u8], pos: &mut usize) -> Option<Cow<'b, [u8]>> {
        let (huffman, s) = read_raw_string(buf, pos)?;
        if !huffman {
            return Some(Cow::Borrowed(s));
        }
        let decoder = self
            .0
            .get_or_insert_with(loona_hpack::huffman::HuffmanDecoder::new);
        decoder.decode(s).ok().map(Cow::Owned)
    }
}

/// Reads one header block against `table`, updating it as the client's encoder did. Returns
/// whether an `:authority` in it needs a fix, or `None` if the block is malformed. With
/// `out`, collects every header; without, decodes only what the table and the check need.
fn read_block(
    table: &mut Table,
    huffman: &mut Huffman,
    block: &[u8],
    undo: &mut Undo,
    mut out: Option<&mut Vec<Entry>>,
) -> Option<bool> {
    let mut pos = 0;
    let mut needs_fix = false;
    let mut last_was_size_update = false;
    while pos < block.len() {
        let b = block[pos];
        last_was_size_update = false;
        if b & 0x80 != 0 {
            let index = read_int(block, &mut pos, 7)?;
            let (name, value) = table.get(index)?;
            needs_fix |= name == AUTHORITY && authority_needs_fix(value);
            if let Some(out) = out.as_deref_mut() {
                out.push((name.to_vec(), value.to_vec()));
            }
        } else if b & 0xe0 == 0x20 {
            let max = read_int(block, &mut pos, 5)?;
            if max > TABLE_SIZE {
                return None;
            }
            table.resize(max, undo);
            last_was_size_update = true;
        } else {
            // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
            let indexing = b & 0xc0 == 0x40;
            let name_index = read_int(block, &mut pos, if indexing { 6 } else { 4 })?;
            let name: Cow<'_, [u8]> = if name_index == 0 {
                huffman.read_string(block, &mut pos)?
            } else {
                Cow::Owned(table.get(name_index)?.0.to_vec())
            };
            let is_authority = name.as_ref() == AUTHORITY;
            if indexing || is_authority || out.is_some() {
                let value = huffman.read_string(block, &mut pos)?;
                needs_fix |= is_authority && authority_needs_fix(&value);
                if let Some(out) = out.as_deref_mut() {
                    out.push((name.to_vec(), value.to_vec()));
                }
                if indexing {
                    table.insert(name.into_owned(), value.into_owned(), undo);
                }
            } else {
                read_raw_string(block, &mut pos)?;
            }
        }
    }
    if last_was_size_update {
        // A size update must precede the headers it applies to.
        return None;
    }
    Some(needs_fix)
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting to see whether this is HTTP/2 (the client preface).
    Preface,
    /// Checking, and if needed rewriting, HTTP/2 header blocks.
    Frames,
    /// Not HTTP/2, or the header stream could not be decoded: bytes pass through.
    Passthrough,
}

/// A header block spread over HEADERS and CONTINUATION frames, being collected.
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    /// The header block fragments, concatenated.
    fragment: Vec<u8>,
    /// The frames as received.
    raw: Vec<u8>,
}

/// A client connection with `:authority` normalization on the way in.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    input: Vec<u8>,
    output: Vec<u8>,
    out_pos: usize,
    eof: bool,
    block: Option<PendingBlock>,
    /// The client's dynamic table, as its encoder sees it.
    table: Table,
    huffman: Huffman,
    /// Set once a block was rewritten: every later block is re-encoded with `encoder`.
    rewriting: bool,
    encoder: loona_hpack::Encoder<'static>,
}

impl<S> std::fmt::Debug for AuthorityFix<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("mode", &self.mode)
            .field("rewriting", &self.rewriting)
            .finish()
    }
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            eof: false,
            block: None,
            table: Table::new(),
            huffman: Huffman::default(),
            rewriting: false,
            encoder: loona_hpack::Encoder::new(),
        }
    }

    fn passthrough_rest(&mut self, input: &[u8]) {
        self.mode = Mode::Passthrough;
        if let Some(pending) = self.block.take() {
            // Unreachable in practice: a block is only pending between frames we already
            // consumed; give up on rewriting and let the server see the damage.
            self.output.extend_from_slice(&pending.raw);
        }
        self.output.extend_from_slice(input);
    }

    /// Moves every complete unit of `input` to `output`, rewriting header blocks.
    fn process(&mut self) {
        if self.mode == Mode::Preface {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                let input = std::mem::take(&mut self.input);
                self.passthrough_rest(&input);
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
        let input = std::mem::take(&mut self.input);
        let mut pos = 0;
        // Start of a run of frames that go through as they are.
        let mut run = 0;
        while input.len() - pos >= 9 {
            let h = &input[pos..pos + 9];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if input.len() - pos < 9 + len {
                break;
            }
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let frame_end = pos + 9 + len;
            let is_block =
                ty == FRAME_HEADERS || (ty == FRAME_CONTINUATION && self.block.is_some());
            if !is_block {
                pos = frame_end;
                continue;
            }
            self.output.extend_from_slice(&input[run..pos]);
            run = frame_end;
            let raw = &input[pos..frame_end];
            let payload = &input[pos + 9..frame_end];
            let end_headers = flags & FLAG_END_HEADERS != 0;
            let ok = if ty == FRAME_HEADERS {
                let end_stream = flags & FLAG_END_STREAM != 0;
                self.block = None;
                match strip(flags, payload) {
                    None => {
                        self.output.extend_from_slice(raw);
                        false
                    }
                    // The usual case: the whole block in one frame.
                    Some(fragment) if end_headers => {
                        self.on_block(stream, end_stream, fragment, raw)
                    }
                    Some(fragment) => {
                        self.block = Some(PendingBlock {
                            stream,
                            end_stream,
                            fragment: fragment.to_vec(),
                            raw: raw.to_vec(),
                        });
                        true
                    }
                }
            } else {
                if let Some(b) = self.block.as_mut() {
                    b.fragment.extend_from_slice(payload);
                    b.raw.extend_from_slice(raw);
                }
                match self.block.take_if(|_| end_headers) {
                    Some(b) => self.on_block(b.stream, b.end_stream, &b.fragment, &b.raw),
                    None => true,
                }
            };
            pos = frame_end;
            if !ok {
                self.passthrough_rest(&input[pos..]);
                return;
            }
        }
        self.output.extend_from_slice(&input[run..pos]);
        self.input = input;
        self.input.drain(..pos);
    }

    /// Handles one complete header block: `fragment` is its HPACK data, `raw` its frames as
    /// received. Returns false (after passing `raw` on) if the block cannot be decoded.
    fn on_block(&mut self, stream: u32, end_stream: bool, fragment: &[u8], raw: &[u8]) -> bool {
        let mut reset_server_table = false;
        if !self.rewriting {
            let mut undo = Undo::default();
            match read_block(
                &mut self.table,
                &mut self.huffman,
                fragment,
                &mut undo,
                None,
            ) {
                Some(false) => {
                    // Nothing to fix: the server decodes exactly what the client encoded.
                    self.output.extend_from_slice(raw);
                    return true;
                }
                Some(true) => {
                    self.table.revert(undo);
                    self.rewriting = true;
                    reset_server_table = true;
                }
                None => {
                    self.output.extend_from_slice(raw);
                    return false;
                }
            }
        }
        let mut headers = Vec::new();
        if read_block(
            &mut self.table,
            &mut self.huffman,
            fragment,
            &mut Undo::default(),
            Some(&mut headers),
        )
        .is_none()
        {
            self.output.extend_from_slice(raw);
            return false;
        }
        for (name, value) in &mut headers {
            if name.as_slice() == AUTHORITY {
                fix_authority(value);
            }
        }
        let mut encoded = Vec::new();
        if reset_server_table {
            // The server's table holds the client's entries; empty it so that it matches
            // `encoder`'s, which starts out empty.
            encoded.push(0x20);
            encoded.extend(loona_hpack::encoder::encode_integer(TABLE_SIZE, 5));
            if let Some(b) = encoded.get_mut(1) {
                *b |= 0x20;
            }
        }
        encoded.extend(
            self.encoder
                .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))),
        );
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
            // Uninitialized, so no 16 KiB memset per read; ReadBuf tracks what was filled.
            let mut tmp = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        this.eof = true;
                        // Whatever is left is an incomplete frame: hand it over as it is.
                        this.output.append(&mut this.input);
                    } else {
                        this.input.extend_from_slice(filled);
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
mod tests;
