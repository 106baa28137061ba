//! Fuzz targets (property tests on stable Rust) for what a member reads from outside: the
//! peer wire format and Raft messages, WAL records, and snapshot files. Each input must give
//! a value or an error: never a panic, a hang or an unbounded allocation. `PROPTEST_CASES`
//! sets the number of inputs per target (256 by default; the README's long run uses more).

use proptest::prelude::*;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType};

use super::{decode, wal, wire};

/// A Raft message with arbitrary field values, as raft-rs would encode it.
fn any_message() -> impl Strategy<Value = Message> {
    (
        0..19i32,
        [edgy(), edgy(), edgy(), edgy(), edgy(), edgy()],
        prop::collection::vec(
            (
                0..3i32,
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..4,
        ),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(ty, nums, entries, context)| {
            let mut m = Message::default();
            m.set_msg_type(
                <MessageType as protobuf::ProtobufEnum>::from_i32(ty).unwrap_or_default(),
            );
            (m.to, m.from, m.term, m.log_term, m.index, m.commit) =
                (nums[0], nums[1], nums[2], nums[3], nums[4], nums[5]);
            m.context = context.into();
            for (ty, index, data) in entries {
                let mut e = Entry::default();
                e.set_entry_type(
                    <EntryType as protobuf::ProtobufEnum>::from_i32(ty).unwrap_or_default(),
                );
                e.index = index;
                e.data = data.into();
                m.mut_entries().push(e);
            }
            m
        })
}

/// A u64 that is often at an edge: 0, small, or near `u64::MAX`.
fn edgy() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..20u64,
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(i64::MAX as u64 + 1),
        any::<u64>(),
    ]
}

/// Edits applied to an encoding: (position, new byte) pairs, and where to cut it.
fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(any::<usize>()),
    )
}

fn edit(mut bytes: Vec<u8>, (changes, cut): &(Vec<(usize, u8)>, Option<usize>)) -> Vec<u8> {
    if !bytes.is_empty() {
        for (at, b) in changes {
            let n = bytes.len();
            bytes[at % n] = *b;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    /// Arbitrary bytes, and raft-rs's encodings edited, decode to a message or an error; what
    /// decodes encodes again to something that decodes to the same message.
    #[test]
    fn fuzz_peer_messages(m in any_message(), e in edits(), junk in prop::collection::vec(any::<u8>(), 0..200)) {
        let bytes = edit(m.write_to_bytes().expect("encode"), &e);
        for input in [bytes, junk] {
            if let Ok(got) = decode::message(&input) {
                let again = got.write_to_bytes().expect("encode");
                prop_assert_eq!(decode::message(&again).expect("decodes again"), got);
            }
        }
    }

    /// Conf changes, as an entry carries them: arbitrary and edited.
    #[test]
    fn fuzz_conf_changes(id in any::<u64>(), node in any::<u64>(), ty in 0..3i32, e in edits()) {
        let mut cc = ConfChange::default();
        (cc.id, cc.node_id) = (id, node);
        cc.set_change_type(
            <ConfChangeType as protobuf::ProtobufEnum>::from_i32(ty).unwrap_or_default(),
        );
        let bytes = edit(cc.write_to_bytes().expect("encode"), &e);
        let _ = decode::conf_change(&bytes);
    }

    /// The framed peer stream, cut into arbitrary chunks: frames come out whole, or the stream
    /// is refused; a length over the limit is refused before anything is allocated for it.
    #[test]
    fn fuzz_peer_frames(ms in prop::collection::vec(any_message(), 0..4), e in edits(), cuts in prop::collection::vec(1usize..64, 1..8)) {
        let mut stream = Vec::new();
        for m in &ms {
            wire::put_frame(&mut stream, m);
        }
        let stream = edit(stream, &e);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - at);
            buf.extend_from_slice(&stream[at..at + n]);
            at += n;
            i += 1;
            if wire::take_frames(&mut buf, &mut out).is_err() {
                break;
            }
            prop_assert!(buf.len() <= wire::MAX_FRAME + 4);
        }
        prop_assert!(out.len() <= ms.len().max(stream.len() / 4));
    }

    /// A WAL segment whose records (checksums right, so that they reach the decoder) hold
    /// arbitrary types and payloads, or whose bytes were edited: it opens, or says why not.
    #[test]
    fn fuzz_wal_records(
        records in prop::collection::vec((0u8..5, prop::collection::vec(any::<u8>(), 0..64)), 0..6),
        shaped in prop::collection::vec((1u8..4, edgy(), edgy()), 0..6),
        e in edits(),
        real in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        // Well-formed records with arbitrary indexes and terms (entries, hard states,
        // snapshots), then arbitrary ones.
        let mut all: Vec<(u8, Vec<u8>)> = shaped
            .into_iter()
            .map(|(ty, index, term)| {
                let bytes = match ty {
                    1 => {
                        let mut e = Entry::default();
                        (e.index, e.term) = (index, term);
                        e.write_to_bytes()
                    }
                    2 => {
                        let mut h = raft::eraftpb::HardState::default();
                        (h.commit, h.term) = (index, term);
                        h.write_to_bytes()
                    }
                    _ => {
                        let mut m = raft::eraftpb::SnapshotMetadata::default();
                        (m.index, m.term) = (index, term);
                        m.write_to_bytes()
                    }
                };
                (ty, bytes.expect("encode"))
            })
            .collect();
        all.extend(records);
        let bytes = wal::fuzz_segment(&all, real);
        std::fs::write(dir.path().join(wal::fuzz_segment_name()), edit(bytes, &e)).expect("write");
        let _ = wal::Wal::open(dir.path());
    }
}

/// Snapshot files: arbitrary content with a correct trailing SHA-256 reaches the backend
/// reader, which must refuse it cleanly.
#[test]
fn fuzz_snapshot_files() {
    use sha2::Digest as _;
    let mut runner = proptest::test_runner::TestRunner::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.db");
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..4096), |body| {
            let mut file = body.clone();
            file.extend_from_slice(&sha2::Sha256::digest(&body));
            std::fs::write(&path, &file).expect("write");
            let _ = crate::snapshot::status(&path);
            // And without a correct checksum: refused before anything is opened.
            std::fs::write(&path, &body).expect("write");
            prop_assert!(body.len() < 32 || crate::snapshot::status(&path).is_err());
            Ok(())
        })
        .expect("no snapshot file panics the reader");
}

/// Found by `fuzz_wal_records`: a snapshot record at the last index, then an entry, made the
/// replay overflow (a panic in debug builds, a wrong start index in release builds).
#[test]
fn a_snapshot_at_the_last_index_is_corruption_not_a_panic() {
    let mut snap = raft::eraftpb::SnapshotMetadata::default();
    snap.index = u64::MAX;
    let mut e = Entry::default();
    e.index = 3;
    let records = [
        (3u8, snap.write_to_bytes().expect("encode")),
        (1u8, e.write_to_bytes().expect("encode")),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(wal::fuzz_segment_name());
    std::fs::write(&path, wal::fuzz_segment(&records, false)).expect("write");
    let err = wal::Wal::open(dir.path()).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("a snapshot at index 18446744073709551615")),
        "{err:?}"
    );
}
