//! Raft messages from peers, decoded with prost: raft-rs links the `protobuf` 2 crate, whose
//! parser predates the fix for RUSTSEC-2024-0437 (unbounded recursion on crafted input), so
//! nothing a peer sends goes through it. `proto/raftwire.proto` mirrors raft-rs's `eraftpb`
//! field for field (the bytes on the wire are the same); this turns its messages into
//! raft-rs's types without copying payloads.

use prost::Message as _;
use protobuf::ProtobufEnum;
use raft::eraftpb;

use crate::proto::raftwire as w;

/// A peer's bytes that are not a Raft message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf for the message.
    #[error(transparent)]
    Protobuf(#[from] prost::DecodeError),
    /// A forwarded proposal without entries (raft-rs aborts on one).
    #[error("failed to accept a proposal from a peer: it holds no entries")]
    EmptyProposal,
    /// A proposed conf change of the second kind (joint consensus), which members never send.
    #[error("failed to accept a proposal from a peer: v2 conf changes are not accepted")]
    ConfChangeV2,
    /// A conf change that could not be encoded again.
    #[error("failed to encode a conf change again")]
    Reencode(#[source] protobuf::ProtobufError),
    /// An enum value raft-rs does not know.
    #[error("failed to decode a raft message: unknown {what} {value}")]
    UnknownEnum {
        /// Which enum.
        what: &'static str,
        /// The value sent.
        value: i32,
    },
}

/// Decodes one Raft message. A proposal a follower forwards is made canonical: raft-rs
/// parses the conf changes in proposals itself (with the `protobuf` crate), so each one is
/// decoded here and encoded again from its known fields; conf changes of the second kind,
/// which members never propose, are refused.
pub fn message(bytes: &[u8]) -> Result<eraftpb::Message, DecodeError> {
    let mut m = from_wire(w::Message::decode(bytes)?)?;
    if m.get_msg_type() == eraftpb::MessageType::MsgPropose {
        // raft-rs aborts the process on a proposal without entries.
        if m.get_entries().is_empty() {
            return Err(DecodeError::EmptyProposal);
        }
        for e in m.mut_entries().iter_mut() {
            match e.get_entry_type() {
                eraftpb::EntryType::EntryNormal => {}
                eraftpb::EntryType::EntryConfChange => {
                    let cc = conf_change(&e.data)?;
                    e.data = protobuf::Message::write_to_bytes(&cc)
                        .map_err(DecodeError::Reencode)?
                        .into();
                }
                eraftpb::EntryType::EntryConfChangeV2 => {
                    return Err(DecodeError::ConfChangeV2);
                }
            }
        }
    }
    Ok(m)
}

/// Decodes the conf change an `EntryConfChange` entry holds.
pub fn conf_change(bytes: &[u8]) -> Result<eraftpb::ConfChange, DecodeError> {
    let c = w::ConfChange::decode(bytes)?;
    let mut out = eraftpb::ConfChange::default();
    out.id = c.id;
    out.set_change_type(known("conf change type", c.change_type)?);
    out.node_id = c.node_id;
    out.context = c.context;
    Ok(out)
}

/// The raft-rs enum value `value` stands for, if raft-rs knows it.
fn known<E: ProtobufEnum>(what: &'static str, value: i32) -> Result<E, DecodeError> {
    E::from_i32(value).ok_or(DecodeError::UnknownEnum { what, value })
}

fn from_wire(m: w::Message) -> Result<eraftpb::Message, DecodeError> {
    let mut out = eraftpb::Message::default();
    out.set_msg_type(known("message type", m.msg_type)?);
    out.to = m.to;
    out.from = m.from;
    out.term = m.term;
    out.log_term = m.log_term;
    out.index = m.index;
    out.set_entries(
        m.entries
            .into_iter()
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?
            .into(),
    );
    out.commit = m.commit;
    out.commit_term = m.commit_term;
    if let Some(s) = m.snapshot {
        out.set_snapshot(snapshot(s));
    }
    out.request_snapshot = m.request_snapshot;
    out.reject = m.reject;
    out.reject_hint = m.reject_hint;
    out.context = m.context;
    out.deprecated_priority = m.deprecated_priority;
    out.priority = m.priority;
    Ok(out)
}

fn entry(e: w::Entry) -> Result<eraftpb::Entry, DecodeError> {
    let mut out = eraftpb::Entry::default();
    out.set_entry_type(known("entry type", e.entry_type)?);
    out.term = e.term;
    out.index = e.index;
    out.data = e.data;
    out.context = e.context;
    out.sync_log = e.sync_log;
    Ok(out)
}

fn snapshot(s: w::Snapshot) -> eraftpb::Snapshot {
    let mut out = eraftpb::Snapshot::default();
    out.data = s.data;
    if let Some(meta) = s.metadata {
        let mut md = eraftpb::SnapshotMetadata::default();
        md.index = meta.index;
        md.term = meta.term;
        if let Some(cs) = meta.conf_state {
            let mut c = eraftpb::ConfState::default();
            c.voters = cs.voters;
            c.learners = cs.learners;
            c.voters_outgoing = cs.voters_outgoing;
            c.learners_next = cs.learners_next;
            c.auto_leave = cs.auto_leave;
            md.set_conf_state(c);
        }
        out.set_metadata(md);
    }
    out
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;
    use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

    use super::*;

    /// Every field set, as raft-rs encodes it.
    fn full(msg_type: MessageType) -> Message {
        let mut m = Message::default();
        m.set_msg_type(msg_type);
        (m.to, m.from, m.term, m.log_term, m.index) = (2, 1, 7, 6, 100);
        (m.commit, m.commit_term, m.request_snapshot) = (99, 6, 5);
        (m.reject, m.reject_hint, m.deprecated_priority, m.priority) = (true, 42, 3, -9);
        m.context = b"ctx".to_vec().into();
        let entries = [
            (EntryType::EntryNormal, &b"put"[..]),
            (EntryType::EntryConfChange, b"cc"),
            (EntryType::EntryConfChangeV2, b""),
        ];
        for (i, (ty, data)) in entries.into_iter().enumerate() {
            let mut e = Entry::default();
            e.set_entry_type(ty);
            (e.term, e.index, e.sync_log) = (6, 101 + i as u64, i == 1);
            e.data = data.to_vec().into();
            e.context = format!("c{i}").into_bytes().into();
            m.mut_entries().push(e);
        }
        let mut s = Snapshot::default();
        s.data = vec![0xab; 300].into();
        let md = s.mut_metadata();
        (md.index, md.term) = (90, 5);
        md.set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: vec![1, 2],
            learners_next: vec![5],
            auto_leave: true,
            ..Default::default()
        });
        m.set_snapshot(s);
        m
    }

    #[test]
    fn decodes_what_raft_rs_encodes() {
        let types = [
            MessageType::MsgAppend,
            MessageType::MsgAppendResponse,
            MessageType::MsgSnapshot,
            MessageType::MsgHeartbeat,
            MessageType::MsgRequestPreVote,
            MessageType::MsgReadIndexResp,
            MessageType::MsgHup,
        ];
        for t in types {
            let m = full(t);
            let bytes = m.write_to_bytes().expect("encode");
            assert_eq!(message(&bytes).expect("decode"), m, "{t:?}");
            // The empty message (every field at its default) too.
            let mut empty = Message::default();
            empty.set_msg_type(t);
            let bytes = empty.write_to_bytes().expect("encode");
            assert_eq!(message(&bytes).expect("decode"), empty, "{t:?}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        // Field 1 (msg_type) = 99; field 7 (entries) holding an entry of type 7.
        let unknown = vec![0x08, 99];
        let bad_entry = vec![0x3a, 0x02, 0x08, 0x07];
        // Groups of an unknown field (100) nested fifty thousand deep: the kind of input
        // the advisory is about.
        let deep: Vec<u8> = std::iter::repeat_n([0xa3u8, 0x06], 50_000)
            .flatten()
            .collect();
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("unknown message type", unknown, "unknown message type 99"),
            ("unknown entry type", bad_entry, "unknown entry type 7"),
            ("truncated", vec![0x3a, 0x10, 0x08], "buffer underflow"),
            (
                "wrong wire type",
                vec![0x0d, 0, 0, 0, 0],
                "invalid wire type",
            ),
            ("nested groups", deep, "recursion limit"),
        ];
        for (what, bytes, wanted) in cases {
            let err = message(&bytes).expect_err(what).to_string();
            assert!(err.contains(wanted), "{what}: {err}");
        }
    }

    #[test]
    fn forwarded_proposals_carry_only_canonical_conf_changes() {
        use raft::eraftpb::{ConfChange, ConfChangeType};
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddLearnerNode);
        (cc.id, cc.node_id) = (3, 9);
        cc.context = b"peer urls".to_vec().into();
        let canonical = cc.write_to_bytes().expect("encode");
        // The same conf change with an unknown field 11 (a start and end group) after it.
        let mut padded = canonical.clone();
        padded.extend_from_slice(&[0x5b, 0x5c]);
        let propose = |ty: EntryType, data: Vec<u8>| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgPropose);
            let mut e = Entry::default();
            e.set_entry_type(ty);
            e.data = data.into();
            m.mut_entries().push(e);
            m.write_to_bytes().expect("encode")
        };
        let got = message(&propose(EntryType::EntryConfChange, padded.clone())).expect("decode");
        assert_eq!(got.get_entries()[0].data.as_ref(), &canonical[..]);
        assert_eq!(conf_change(&padded).expect("decode"), cc);
        // In an append (the leader's log), entries stay as they were sent.
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.data = padded.clone().into();
        append.mut_entries().push(e);
        let got = message(&append.write_to_bytes().expect("encode")).expect("decode");
        assert_eq!(got.get_entries()[0].data.as_ref(), &padded[..]);
        // Refused: a v2 conf change, and a conf change that is not one.
        let v2 = message(&propose(EntryType::EntryConfChangeV2, vec![]));
        assert!(matches!(v2, Err(DecodeError::ConfChangeV2)), "{v2:?}");
        let mut no_entries = Message::default();
        no_entries.set_msg_type(MessageType::MsgPropose);
        let no_entries = message(&no_entries.write_to_bytes().expect("encode"));
        assert!(
            matches!(no_entries, Err(DecodeError::EmptyProposal)),
            "{no_entries:?}"
        );
        let junk = message(&propose(EntryType::EntryConfChange, vec![0x10, 0x07]));
        assert!(
            junk.as_ref()
                .is_err_and(|e| e.to_string().contains("unknown conf change type 7")),
            "{junk:?}"
        );
    }
}
