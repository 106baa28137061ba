//! A minimal JSON reader (etcdctl's `-w json` output), keeping numbers as text so that 64-bit IDs survive.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

pub(super) static NULL: J = J::Null;

impl J {
    pub(super) fn parse(s: &str) -> Result<J, String> {
        let mut p = JParser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }
    /// Field `k` of an object; `Null` when absent (as Go's `omitempty` drops zero values).
    pub(super) fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(m) => m.iter().find(|(n, _)| n == k).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }
    pub(super) fn idx(&self, i: usize) -> &J {
        self.arr().get(i).unwrap_or(&NULL)
    }
    pub(super) fn arr(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => &[],
        }
    }
    pub(super) fn u64(&self) -> Option<u64> {
        match self {
            J::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
    pub(super) fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    pub(super) fn bool(&self) -> Option<bool> {
        match self {
            J::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub(super) fn is_null(&self) -> bool {
        *self == J::Null
    }
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
            f.write_char('"')?;
            for c in s.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('"')
        }
        match self {
            J::Null => f.write_str("null"),
            J::Bool(b) => write!(f, "{b}"),
            J::Num(n) => f.write_str(n),
            J::Str(s) => string(f, s),
            J::Arr(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            J::Obj(m) => {
                f.write_char('{')?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

pub(super) struct JParser<'a> {
    pub(super) b: &'a [u8],
    pub(super) i: usize,
}

impl JParser<'_> {
    pub(super) fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }
    pub(super) fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", char::from(c), self.i))
        }
    }
    pub(super) fn literal(&mut self, word: &str, v: J) -> Result<J, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }
    pub(super) fn value(&mut self) -> Result<J, String> {
        self.ws();
        match self.b.get(self.i).copied() {
            Some(b'{') => {
                self.i += 1;
                let mut m = vec![];
                if self.eat(b'}') {
                    return Ok(J::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.expect(b':')?;
                    m.push((k, self.value()?));
                    if !self.eat(b',') {
                        self.expect(b'}')?;
                        return Ok(J::Obj(m));
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = vec![];
                if self.eat(b']') {
                    return Ok(J::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    if !self.eat(b',') {
                        self.expect(b']')?;
                        return Ok(J::Arr(a));
                    }
                }
            }
            Some(b'"') => Ok(J::Str(self.string()?)),
            Some(b't') => self.literal("true", J::Bool(true)),
            Some(b'f') => self.literal("false", J::Bool(false)),
            Some(b'n') => self.literal("null", J::Null),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.i += 1;
                }
                Ok(J::Num(
                    String::from_utf8_lossy(&self.b[start..self.i]).into_owned(),
                ))
            }
            _ => Err(format!("unexpected input at byte {}", self.i)),
        }
    }
    pub(super) fn hex4(&mut self) -> Result<u32, String> {
        let h = self.b.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        self.i += 4;
        u32::from_str_radix(&String::from_utf8_lossy(h), 16).map_err(|e| e.to_string())
    }
    pub(super) fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let mut out: Vec<u8> = vec![];
        loop {
            let c = *self.b.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.b[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            char::from_u32(cp).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at byte {}", self.i)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => out.push(c),
            }
        }
    }
}

/// `endpoint status --cluster` dials each member's client URL with its scheme, and etcdctl
/// 3.4 then sends `:authority: http://127.0.0.1:PORT`, which Go's gRPC server accepts (the
/// server's `authority` adapter makes ours accept it too).
#[test]
fn endpoint_status_cluster_matches_reference() {
    check_against_reference(&[
        run(&["put", "e/a", "1"]).out("OK\n"),
        run(&["endpoint", "status", "-w", "json"]).check(|ctx, o| status_json(ctx, o, &ctx.endpoint, 2)),
        // --cluster takes the endpoints from the member list: "http://127.0.0.1:PORT".
        run(&["endpoint", "status", "--cluster", "-w", "json"])
            .check(|ctx, o| status_json(ctx, o, &format!("http://{}", ctx.endpoint), 2)),
        run(&["endpoint", "status", "--cluster"])
            .norm("http://<EP>, <MEMBER>, <VERSION>, <DBSIZE>, true, false, <TERM>, <IDX0+0>, <IDX0+0>, \n"),
    ]);
}

#[test]
fn json_reader_and_base64_work() {
    let j =
        J::parse(r#"{"a":[1,{"b":"x\"\u00e9\n"}],"id":18446744073709551615,"t":true,"n":null}"#)
            .unwrap();
    assert_eq!(j.get("a").idx(0).u64(), Some(1));
    assert_eq!(j.get("a").idx(1).get("b").str(), Some("x\"é\n"));
    assert_eq!(j.get("id").u64(), Some(u64::MAX));
    assert_eq!(j.get("t").bool(), Some(true));
    assert!(j.get("n").is_null() && j.get("missing").is_null());
    assert_eq!(J::parse(&j.to_string()).unwrap(), j);
    assert!(J::parse("{\"a\":1,}").is_err());
    assert_eq!(
        [b64("foo"), b64("k/a"), b64("v1"), b64("bar2")],
        ["Zm9v", "ay9h", "djE=", "YmFyMg=="]
    );
}
