//! The stored value format: a fixed 32-byte header, then the payload.
//!
//! ```text
//! offset size field
//!      0    4 magic "HCVK"
//!      4    2 format version (1), little-endian
//!      6    2 flags: bit 0 = checksum present
//!      8    8 payload length in bytes, little-endian
//!     16    8 value-format fingerprint given by the writer at open
//!     24    8 xxh3-64 of the payload (0 when the checksum flag is clear)
//! ```
//!
//! A reader accepts a value only if magic, version, length and fingerprint are what it expects;
//! otherwise the value is a miss of its own kind. The fingerprint keeps two engines that share a
//! Valkey and a model name, but lay pages out differently, from loading each other's bytes.

use std::io::IoSlice;

/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"HCVK";
const VERSION: u16 = 1;
const FLAG_CHECKSUM: u16 = 1;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub payload_len: u64,
    /// Writer's value-format fingerprint.
    pub value_format: u64,
    /// The payload's xxh3-64, when the writer stored one.
    pub checksum: Option<u64>,
}

/// Why a stored value is not the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not written by this library (no magic, unknown version, or inconsistent length).
    Foreign,
    /// Written with another value-format fingerprint.
    OtherFormat,
    /// The payload has another length than the caller's segments.
    SizeMismatch,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(MAGIC);
        h[4..6].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.checksum.is_some() { FLAG_CHECKSUM } else { 0 };
        h[6..8].copy_from_slice(&flags.to_le_bytes());
        h[8..16].copy_from_slice(&self.payload_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.value_format.to_le_bytes());
        h[24..32].copy_from_slice(&self.checksum.unwrap_or(0).to_le_bytes());
        h
    }

    /// Decodes a header; `None` if it is not one of ours.
    pub fn decode(h: &[u8; HEADER_LEN]) -> Option<Header> {
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        if &h[0..4] != MAGIC || u16::from_le_bytes([h[4], h[5]]) != VERSION {
            return None;
        }
        let flags = u16::from_le_bytes([h[6], h[7]]);
        Some(Header {
            payload_len: u64_at(8),
            value_format: u64_at(16),
            checksum: (flags & FLAG_CHECKSUM != 0).then(|| u64_at(24)),
        })
    }

    /// Checks a stored value of `stored_len` bytes (header included) whose header is `h`
    /// against what the reader expects.
    pub fn check(h: &[u8; HEADER_LEN], stored_len: u64, value_format: u64, expected_payload: u64) -> Result<Header, Rejection> {
        let header = Header::decode(h).ok_or(Rejection::Foreign)?;
        if header.payload_len != stored_len - HEADER_LEN as u64 {
            return Err(Rejection::Foreign);
        }
        if header.value_format != value_format {
            return Err(Rejection::OtherFormat);
        }
        if header.payload_len != expected_payload {
            return Err(Rejection::SizeMismatch);
        }
        Ok(header)
    }
}

/// xxh3-64 over the concatenation of `segments`, without concatenating them.
pub fn checksum<'a>(segments: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in segments {
        h.update(s);
    }
    h.digest()
}

/// [`checksum`] over write segments.
pub fn checksum_slices(segments: &[IoSlice<'_>]) -> u64 {
    checksum(segments.iter().map(|s| &**s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(len in 0u64..1 << 40, fmt: u64, sum: Option<u64>) {
            let h = Header { payload_len: len, value_format: fmt, checksum: sum };
            prop_assert_eq!(Header::decode(&h.encode()), Some(h));
            prop_assert_eq!(Header::check(&h.encode(), len + 32, fmt, len), Ok(h));
        }

        #[test]
        fn arbitrary_bytes_without_magic_are_foreign(bytes: [u8; 32]) {
            prop_assume!(&bytes[0..4] != MAGIC);
            prop_assert_eq!(Header::check(&bytes, 64, 0, 32), Err(Rejection::Foreign));
        }
    }

    #[test]
    fn rejections() {
        let h = Header { payload_len: 100, value_format: 7, checksum: None }.encode();
        assert_eq!(Header::check(&h, 132, 8, 100), Err(Rejection::OtherFormat));
        assert_eq!(Header::check(&h, 132, 7, 99), Err(Rejection::SizeMismatch));
        assert_eq!(Header::check(&h, 133, 7, 100), Err(Rejection::Foreign));
        let mut v2 = h;
        v2[4] = 2;
        assert_eq!(Header::check(&v2, 132, 7, 100), Err(Rejection::Foreign));
    }

    #[test]
    fn checksum_ignores_segmentation() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let whole = checksum([data.as_slice()]);
        assert_eq!(checksum([&data[..1], &data[1..500], &data[500..]]), whole);
        assert_ne!(checksum([&data[1..]]), whole);
    }
}
