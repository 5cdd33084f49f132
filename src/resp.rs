//! RESP2, the pure part: encoding commands and parsing replies, no sockets.
//!
//! The data path encodes by hand so a value's bytes can go straight from the caller's segments
//! into a vectored write, and parses only reply *lines* itself so payloads can be read straight
//! into the caller's memory (see `conn`). Control replies (INFO, SCAN, CLUSTER SLOTS) are small
//! and are read whole into a [`Value`].

/// A reply that fits on one line, or the header of a bulk string or an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` (the reply to every SET: kept apart so it costs no allocation).
    Ok,
    /// Other simple strings (`+PONG`).
    Simple(String),
    /// `:n`
    Int(i64),
    /// `$len`; `None` for the null bulk string (`$-1`). The payload has not been read yet.
    Bulk(Option<u64>),
    /// `*len`; `None` for the null array. The elements have not been read yet.
    Array(Option<u64>),
    /// `-ERR ...`
    Error(String),
}

/// A whole reply (control commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Ok,
    Simple(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
    Error(String),
}

impl Value {
    /// The value as text (simple and bulk strings).
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Ok => Some("OK".into()),
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The value as an integer (integers, and strings holding one).
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            other => other.text()?.parse().ok(),
        }
    }
}

/// Parses one reply line (without its CRLF); `None` if it is not a reply we understand.
pub fn parse_reply_line(line: &[u8]) -> Option<Reply> {
    let (kind, rest) = line.split_first()?;
    let text = || std::str::from_utf8(rest).ok();
    // A length: a non-negative decimal, or -1 for null.
    let len = || match text()? {
        "-1" => Some(None),
        n if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => n.parse().ok().map(Some),
        _ => None,
    };
    Some(match kind {
        b'+' if rest == b"OK" => Reply::Ok,
        b'+' => Reply::Simple(text()?.to_string()),
        b'-' => Reply::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Reply::Int(text()?.parse().ok()?),
        b'$' => Reply::Bulk(len()?),
        b'*' => Reply::Array(len()?),
        _ => return None,
    })
}

/// Appends the RESP array header `*argc`.
pub fn push_array_header(out: &mut Vec<u8>, argc: usize) {
    out.push(b'*');
    push_decimal(out, argc as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the header `$len` of a bulk string whose bytes follow separately.
pub fn push_bulk_header(out: &mut Vec<u8>, len: u64) {
    out.push(b'$');
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n");
}

/// Appends a whole bulk string made of `parts`.
pub fn push_bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    push_bulk_header(out, parts.iter().map(|p| p.len() as u64).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a command of bulk-string arguments.
pub fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_array_header(out, args.len());
    for a in args {
        push_bulk(out, &[a]);
    }
}

/// `ASKING`, sent before a command that follows an `-ASK` redirection.
pub const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Length of `$len\r\n`.
pub fn bulk_header_len(len: u64) -> usize {
    let mut digits = 1;
    let mut n = len;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits + 3
}

/// A redirection in a Valkey Cluster error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED slot host:port`: the slot lives elsewhere for good; the slot map is stale.
    Moved,
    /// `ASK slot host:port`: this one key is being migrated to `host:port`.
    Ask(String),
}

/// The redirection an error reply carries, if any.
pub fn redirect(reply: &str) -> Option<Redirect> {
    let mut words = reply.split_whitespace();
    match words.next()? {
        "MOVED" => Some(Redirect::Moved),
        "ASK" => words.nth(1).map(|to| Redirect::Ask(to.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value as RValue;

    /// Our framing must be what the `redis` crate itself would send.
    #[test]
    fn framing_matches_the_redis_crate() {
        let key = b"hicache:m:0:1:\x00\xffkey";
        let mut ours = Vec::new();
        push_command(&mut ours, &[b"SET", key, b"value bytes"]);
        let theirs = redis::cmd("SET").arg(&key[..]).arg(&b"value bytes"[..]).get_packed_command();
        assert_eq!(ours, theirs);
        let mut split = Vec::new();
        push_array_header(&mut split, 3);
        push_bulk(&mut split, &[b"SET"]);
        push_bulk(&mut split, &[key]);
        push_bulk(&mut split, &[b"value", b" ", b"bytes"]);
        assert_eq!(split, theirs);
        assert_eq!(ASKING, redis::cmd("ASKING").get_packed_command());
    }

    #[test]
    fn decimal_and_header_lengths() {
        for n in [0u64, 9, 10, 99, 100, 123456789, u64::MAX] {
            let mut out = Vec::new();
            push_bulk_header(&mut out, n);
            assert_eq!(out, format!("${n}\r\n").into_bytes());
            assert_eq!(bulk_header_len(n), out.len());
        }
    }

    /// The reply parser agrees with the redis crate's on what it reads.
    #[test]
    fn reply_lines_parse_like_the_redis_crate() {
        for (wire, ours) in [(&b"+OK\r\n"[..], Reply::Ok), (b":42\r\n", Reply::Int(42)), (b"$-1\r\n", Reply::Bulk(None))] {
            let v: RValue = redis::parse_redis_value(wire).unwrap();
            match (&v, &ours) {
                (RValue::Okay, Reply::Ok) => {}
                (RValue::Int(a), Reply::Int(b)) => assert_eq!(a, b),
                (RValue::Nil, Reply::Bulk(None)) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(parse_reply_line(&wire[..wire.len() - 2]), Some(ours));
        }
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for line in [&b""[..], b"?x", b"$-5", b"$abc", b"*-2", b":x1", b"$+3", b"$"] {
            assert_eq!(parse_reply_line(line), None, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(parse_reply_line(b"*3"), Some(Reply::Array(Some(3))));
    }

    #[test]
    fn redirections() {
        assert_eq!(redirect("MOVED 3999 127.0.0.1:6381"), Some(Redirect::Moved));
        assert_eq!(redirect("ASK 3999 127.0.0.1:6381"), Some(Redirect::Ask("127.0.0.1:6381".into())));
        assert_eq!(redirect("ERR nope"), None);
    }
}
