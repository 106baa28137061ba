//! Unit tests of the `:authority` rewriting.

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

/// Every header list the server sees, in order.
fn header_lists(server_view: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut dec = loona_hpack::Decoder::new();
    let mut out = Vec::new();
    let mut pos = PREFACE.len();
    while pos + 9 <= server_view.len() {
        let h = &server_view[pos..pos + 9];
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        if h[3] == FRAME_HEADERS {
            let payload = &server_view[pos + 9..pos + 9 + len];
            let block = strip(h[4], payload).expect("valid frame");
            out.push(dec.decode(block).expect("valid block"));
        }
        pos += 9 + len;
    }
    out
}

fn request(path: &str, authority: &str, extra: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-extra", extra),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn client_stream(
    enc: &mut loona_hpack::Encoder<'static>,
    reqs: &[Vec<(Vec<u8>, Vec<u8>)>],
) -> Vec<u8> {
    let mut client = PREFACE.to_vec();
    frame(&mut client, 0x4, 0, 0, &[]); // SETTINGS
    for (i, r) in reqs.iter().enumerate() {
        let block = enc.encode(r.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let stream = 2 * i as u32 + 1;
        frame(&mut client, FRAME_HEADERS, FLAG_END_HEADERS, stream, &block);
        frame(&mut client, 0x0, 0x1, stream, b"\0\0\0\0\0"); // DATA
    }
    client
}

#[test]
fn static_table_matches_hpack() {
    for (i, entry) in STATIC.iter().enumerate() {
        let mut dec = loona_hpack::Decoder::new();
        let got = dec.decode(&[0x80 | (i as u8 + 1)]).expect("static index");
        assert_eq!(
            got,
            vec![(entry.0.to_vec(), entry.1.to_vec())],
            "index {}",
            i + 1
        );
    }
}

#[test]
fn clean_connections_pass_through_byte_for_byte() {
    let mut enc = loona_hpack::Encoder::new();
    let reqs: Vec<_> = (0..50)
        .map(|i| {
            request(
                &format!("/svc/M{}", i % 3),
                "127.0.0.1:2379",
                &"v".repeat(i * 7),
            )
        })
        .collect();
    let client = client_stream(&mut enc, &reqs);
    assert_eq!(run(&client), client);
}

#[test]
fn switch_to_rewriting_keeps_the_server_table_in_step() {
    // Clean requests fill (and overflow) the client's dynamic table, then the client
    // starts sending a scheme-prefixed authority; indexes into entries from before the
    // switch must still decode to the right headers.
    let mut enc = loona_hpack::Encoder::new();
    let mut reqs: Vec<_> = (0..40)
        .map(|i| {
            request(
                "/etcdserverpb.KV/Put",
                "127.0.0.1:2379",
                &format!("{i}{}", "x".repeat(i * 13)),
            )
        })
        .collect();
    reqs.push(request(
        "/etcdserverpb.KV/Put",
        "http://127.0.0.1:2379/",
        &"y".repeat(300),
    ));
    for i in 0..40 {
        let authority = if i % 2 == 0 {
            "127.0.0.1:2379"
        } else {
            "http://127.0.0.1:2379"
        };
        reqs.push(request(
            "/etcdserverpb.KV/Range",
            authority,
            &"z".repeat(i * 31),
        ));
    }
    let client = client_stream(&mut enc, &reqs);
    let seen = run(&client);
    let want: Vec<_> = reqs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for (n, v) in &mut r {
                if n.as_slice() == AUTHORITY {
                    fix_authority(v);
                }
            }
            r
        })
        .collect();
    assert_eq!(header_lists(&seen), want);
    // Up to the first block with a fix, the bytes are the client's.
    let mut pos = PREFACE.len();
    let mut headers = 0;
    while headers < 40 || client[pos + 3] != FRAME_HEADERS {
        headers += usize::from(client[pos + 3] == FRAME_HEADERS);
        pos += 9 + ((usize::from(client[pos + 1]) << 8) | usize::from(client[pos + 2]));
    }
    assert_eq!(seen[..pos], client[..pos]);
    assert_ne!(seen[pos..], client[pos..]);
}

#[test]
fn undo_restores_the_table() {
    let mut t = Table::new();
    let mut undo = Undo::default();
    for i in 0..20u8 {
        t.insert(vec![b'n', i], vec![b'v'; 100], &mut undo);
    }
    let before: Vec<_> = t.entries.iter().cloned().collect();
    let (size, max) = (t.size, t.max);
    let mut undo = Undo::default();
    t.insert(b"a".to_vec(), vec![b'a'; 1000], &mut undo);
    t.resize(2000, &mut undo);
    t.insert(b"b".to_vec(), vec![b'b'; 1500], &mut undo);
    t.insert(b"c".to_vec(), vec![b'c'; 100], &mut undo);
    t.revert(undo);
    assert_eq!(t.entries.iter().cloned().collect::<Vec<_>>(), before);
    assert_eq!((t.size, t.max), (size, max));
}

#[test]
fn http1_passes_through_untouched() {
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(run(req), req.to_vec());
}
