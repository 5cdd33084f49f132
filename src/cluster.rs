//! Valkey Cluster: which hash slot a key belongs to, and the slot map read from `CLUSTER SLOTS`.

use crate::error::{Error, Result};
use crate::resp::Value;

/// Number of hash slots of a Valkey Cluster.
pub const SLOTS: usize = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the bytes between the
/// first `{` and the next `}`, when not empty), modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|b| *b == b'}').filter(|len| *len > 0).map(|len| &rest[..len])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS as u16
}

/// A range of slots and the primary that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub host: String,
    pub port: u16,
}

/// Parses a `CLUSTER SLOTS` reply. A primary announced with an empty host (or `?`) is on
/// `asked_host`, the host the question went to.
pub fn parse_slots(reply: &Value, asked_host: &str) -> Result<Vec<SlotRange>> {
    let bad = || Error::protocol(format!("unexpected CLUSTER SLOTS reply: {reply:?}"));
    let Value::Array(ranges) = reply else { return Err(bad()) };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::Bulk(_) | Value::Simple(_) => v.text(),
        _ => None,
    };
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let Value::Array(items) = r else { return Err(bad()) };
        let (Some(start), Some(end), Some(Value::Array(primary))) = (items.first().and_then(int), items.get(1).and_then(int), items.get(2)) else {
            return Err(bad());
        };
        let host = primary.first().and_then(text).ok_or_else(bad)?;
        let port = primary.get(1).and_then(int).ok_or_else(bad)?;
        let host = if host.is_empty() || host == "?" { asked_host.to_string() } else { host };
        let in_range = |v: i64| (0..SLOTS as i64).contains(&v);
        if !in_range(start) || !in_range(end) || start > end || !(1..=65535).contains(&port) {
            return Err(bad());
        }
        out.push(SlotRange { start: start as u16, end: end as u16, host, port: port as u16 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // Reference values from the Redis/Valkey cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16::State::<crc16::XMODEM>::calculate(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"), "an empty tag means no tag");
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn parses_cluster_slots() {
        let node = |h: &str, p: i64| Value::Array(vec![Value::Bulk(h.into()), Value::Int(p), Value::Bulk(b"id".to_vec())]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let r = parse_slots(&reply, "::1").unwrap();
        assert_eq!(r[0], SlotRange { start: 0, end: 5460, host: "127.0.0.1".into(), port: 7000 });
        assert_eq!(r[1], SlotRange { start: 5461, end: 16383, host: "::1".into(), port: 7001 });
        assert!(parse_slots(&Value::Int(3), "h").is_err());
        let out_of_range = Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(20000), node("h", 1)])]);
        assert!(parse_slots(&out_of_range, "h").is_err());
    }
}
