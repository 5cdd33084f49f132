//! What happened to one key of a batch.

/// What happened to one key of a batch.
///
/// For batch_get, what each outcome says about the caller's segments of that key:
/// - [`Outcome::Ok`]: they hold exactly the stored payload.
/// - [`Outcome::Miss`], [`Outcome::SizeMismatch`], [`Outcome::Foreign`],
///   [`Outcome::FormatMismatch`], [`Outcome::TooLarge`]: not one byte was written into them.
/// - every other outcome: their contents are undefined (payload bytes may have been written
///   before the failure was seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// batch_set: stored. batch_get: hit, the stored bytes are in the caller's segments.
    Ok,
    /// The key does not exist.
    Miss,
    /// The stored payload's length differs from the caller's segments (they were not written).
    SizeMismatch,
    /// The stored value was not written by this library (no or unknown header).
    Foreign,
    /// The stored value was written with another value-format fingerprint.
    FormatMismatch,
    /// The payload does not match its checksum (the segments hold unusable bytes).
    ChecksumMismatch,
    /// The request timed out.
    Timeout,
    /// The connection failed.
    IoError,
    /// The server answered with an error.
    ServerError,
    /// The server is out of memory (maxmemory reached under `noeviction`).
    OutOfMemory,
    /// The key or value is larger than the server accepts (`proto-max-bulk-len`); not sent.
    TooLarge,
}

impl Outcome {
    /// Whether this is a failure of the system rather than a hit or some kind of miss.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Timeout | Outcome::IoError | Outcome::ServerError | Outcome::OutOfMemory | Outcome::TooLarge)
    }

    /// Whether batch_get guarantees that the key's segments were left untouched.
    pub fn segments_untouched(self) -> bool {
        matches!(self, Outcome::Miss | Outcome::SizeMismatch | Outcome::Foreign | Outcome::FormatMismatch | Outcome::TooLarge)
    }
}
