//! The Raft message stream's wire format: a plain TCP connection on the peer port that opens
//! with a hello and then carries length-prefixed Raft messages one way, dialer to acceptor.
//!
//! - Dialer → acceptor: [`MAGIC`], then the cluster ID, the sender's and the receiver's member
//!   IDs (u64, big-endian each).
//! - Acceptor → dialer: one [`Verdict`] byte. Anything but `Accepted` ends the connection.
//! - Then dialer → acceptor, frames: a u32 big-endian length and that many bytes of an encoded
//!   `raftpb.Message`. A zero length is a keep-alive.
//! - The acceptor sends nothing more, except [`Verdict::Removed`] right before it closes a
//!   stream whose sender was removed from the cluster meanwhile.
//!
//! Every member dials every other member for its own outgoing stream, as etcd's stream
//! writers do; the peer listener tells these connections from gRPC ones by [`MAGIC`].

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;

/// The first bytes of a Raft stream ("RFT" and the format version). HTTP/2 prefaces start
/// with "PRI", HTTP/1 with a method and TLS with 0x16, so none of them is mistaken for it.
pub const MAGIC: [u8; 4] = *b"RFT1";
/// Length of the hello, magic included.
pub const HELLO_LEN: usize = 4 + 3 * 8;
/// The largest frame accepted (a Raft message; raft-rs limits appends to 1 MiB of entries,
/// but one entry may be larger).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// An outgoing stream idle this long sends a keep-alive frame.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// An incoming stream silent this long (five keep-alives missed) is closed as dead: etcd's
/// `ConnReadTimeout`. Long enough that a sender's Raft thread held up by a slow disk on a
/// busy machine does not lose its streams (and with them its peers' "connected since").
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Data unacknowledged this long kills an outgoing stream (`TCP_USER_TIMEOUT`, as etcd's
/// `ConnWriteTimeout`): a partition that drops packets closes nothing, and the kernel would
/// retry for minutes.
pub const USER_TIMEOUT: Duration = Duration::from_secs(5);

/// What opens a Raft stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's cluster.
    pub cluster_id: u64,
    /// The dialer's member ID.
    pub from: u64,
    /// The member the dialer means to reach.
    pub to: u64,
}

impl Hello {
    /// The hello's bytes, magic first.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[12..20].copy_from_slice(&self.from.to_be_bytes());
        b[20..28].copy_from_slice(&self.to.to_be_bytes());
        b
    }

    /// Reads a hello; `None` unless it starts with [`MAGIC`].
    pub fn decode(b: &[u8; HELLO_LEN]) -> Option<Self> {
        if b[..4] != MAGIC {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        Some(Self {
            cluster_id: word(4),
            from: word(12),
            to: word(20),
        })
    }
}

/// The acceptor's answer to a hello. No verdict byte is 0x00, 'H' or 0x15/0x16, the first
/// byte an HTTP/2 server (its SETTINGS frame), an HTTP/1 server or a TLS server sends: a
/// dialer that reached something else fails cleanly instead of taking it for an acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    /// Frames may follow.
    Accepted = 0xa1,
    /// The dialer belongs to another cluster.
    ClusterMismatch = 0xa2,
    /// The dialer was removed from the cluster.
    Removed = 0xa3,
    /// The acceptor is not the member the dialer meant.
    WrongMember = 0xa4,
}

impl Verdict {
    /// The verdict a byte stands for.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0xa1 => Self::Accepted,
            0xa2 => Self::ClusterMismatch,
            0xa3 => Self::Removed,
            0xa4 => Self::WrongMember,
            _ => return None,
        })
    }
}

/// A stream that breaks the format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A frame longer than [`MAX_FRAME`].
    #[error("failed to read a raft frame: {0} bytes is over the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    /// A frame that is not a Raft message.
    #[error("failed to decode a raft message: {0}")]
    Decode(String),
}

/// Appends `m` to `buf` as one frame.
pub fn put_frame(buf: &mut Vec<u8>, m: &Message) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail; an unencodable message would leave an empty frame,
    // which the receiver takes for a keep-alive.
    let _ = m.write_to_vec(buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a keep-alive frame to `buf`.
pub fn put_keepalive(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0; 4]);
}

/// Takes the complete frames off the front of `buf` into `out`, leaving a partial one.
pub fn take_frames(buf: &mut Vec<u8>, out: &mut Vec<Message>) -> Result<(), FrameError> {
    let mut at = 0;
    let result = loop {
        let Some(head) = buf.get(at..at + 4) else {
            break Ok(());
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_FRAME {
            break Err(FrameError::TooLarge(len));
        }
        let Some(body) = buf.get(at + 4..at + 4 + len) else {
            break Ok(());
        };
        if len > 0 {
            match super::decode::message(body) {
                Ok(m) => out.push(m),
                Err(e) => break Err(FrameError::Decode(e.to_string())),
            }
        }
        at += 4 + len;
    };
    buf.drain(..at);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn append(index: u64, data: &[u8]) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.index = index;
        m.mut_entries().push(Entry {
            index: index + 1,
            data: data.to_vec().into(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn hello_round_trips_and_other_protocols_are_not_hellos() {
        let h = Hello {
            cluster_id: 0xdead_beef,
            from: 7,
            to: u64::MAX,
        };
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        let mut http2 = [0u8; HELLO_LEN];
        http2
            .copy_from_slice(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\0\0\0\0\0\0\0"[..HELLO_LEN]);
        assert_eq!(Hello::decode(&http2), None);
        for b in 0..=255u8 {
            let v = Verdict::from_byte(b);
            let known = (0xa1..=0xa4).contains(&b);
            assert_eq!(v.map(|v| v as u8), known.then_some(b));
        }
        // What other servers send first is never a verdict.
        for first in [0x00, b'H', 0x15, 0x16] {
            assert_eq!(Verdict::from_byte(first), None);
        }
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let msgs = vec![append(1, b"a"), append(2, &[7; 3000]), append(3, b"")];
        let mut wire = Vec::new();
        for m in &msgs {
            put_frame(&mut wire, m);
            put_keepalive(&mut wire);
        }
        // Fed in every chunk size from 1 byte to all at once.
        for chunk in [1, 2, 3, 5, 64, 4096, wire.len()] {
            let (mut buf, mut out) = (Vec::new(), Vec::new());
            for part in wire.chunks(chunk) {
                buf.extend_from_slice(part);
                take_frames(&mut buf, &mut out).expect("valid frames");
            }
            assert!(
                buf.is_empty(),
                "chunk {chunk}: {} bytes left over",
                buf.len()
            );
            assert_eq!(out, msgs, "chunk {chunk}");
        }
    }

    #[test]
    fn oversized_and_undecodable_frames_are_errors() {
        let mut buf = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert_eq!(
            take_frames(&mut buf, &mut Vec::new()),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        let mut buf = vec![0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            take_frames(&mut buf, &mut Vec::new()),
            Err(FrameError::Decode(_))
        ));
    }
}
