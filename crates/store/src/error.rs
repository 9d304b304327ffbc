//! `StoreError`: what can go wrong below the broker. Knows nothing of AMQP reply codes: the
//! broker decides whether a failure nacks a publish, closes a queue or closes a connection.

use std::io;
use std::path::PathBuf;

/// Every error the store returns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system failed (or, for `MemStorage`, a simulated crash happened). A log that
    /// saw a failed write or fsync refuses further appends with this error: reopen it (which
    /// runs recovery) to go on.
    #[error("storage i/o error: {0}")]
    Io(#[from] io::Error),
    /// Data on disk cannot be interpreted and must not be touched (for instance a file written
    /// by a newer format version), or a damaged record was asked for by position.
    #[error("corrupted data in {} at offset {offset}", file.display())]
    Corrupted { file: PathBuf, offset: u64 },
    /// A record read back by position does not match its CRC: the disk changed it after it
    /// was written.
    #[error("checksum mismatch in {} at offset {offset}", file.display())]
    ChecksumMismatch { file: PathBuf, offset: u64 },
}

/// The error every operation of a poisoned log (or a stopped syncer) returns.
pub(crate) fn poisoned() -> StoreError {
    StoreError::Io(io::Error::other(
        "queue log stopped after an earlier write or fsync failure; reopen it to recover",
    ))
}
