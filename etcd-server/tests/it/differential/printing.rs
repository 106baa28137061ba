//! Printing: `Debug` with byte vectors shown as byte strings.

use super::*;

pub(super) fn esc(bytes: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// `{:?}` of `x`, with every non-empty list of small integers (a `Vec<u8>`) as a byte string.
pub(super) fn show(x: &impl Debug) -> String {
    let d = format!("{x:?}");
    let mut out = String::with_capacity(d.len());
    let mut rest = d.as_str();
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let bytes = after.find(']').and_then(|j| {
            let inner = &after[..j];
            if inner.is_empty() {
                return None;
            }
            let v: Option<Vec<u8>> = inner.split(", ").map(|n| n.parse::<u8>().ok()).collect();
            v.map(|v| (v, j))
        });
        match bytes {
            Some((v, j)) => {
                out.push_str(&esc(&v));
                rest = &after[j + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
