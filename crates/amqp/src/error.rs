//! The codec's error type. Knows nothing of how the connection reacts to it (close codes live in the server).

/// The `Malformed` reason for a shortstr argument that is not UTF-8.
pub const SHORTSTR_NOT_UTF8: &str = "shortstr is not valid UTF-8";

/// Why bytes could not be turned into a frame, method, table or string.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a failure: at least `need` more bytes must be read before decoding can go on.
    #[error("incomplete input: need at least {need} more bytes")]
    Incomplete { need: usize },
    /// The frame header announces a payload of `size` bytes; with the 8 bytes of overhead that
    /// is more than the negotiated `max` (total frame size).
    #[error("frame payload of {size} bytes exceeds frame_max {max}")]
    FrameTooLarge { size: u32, max: u32 },
    #[error("frame end octet 0xCE missing")]
    FrameEndMissing,
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    /// `class_id`/`method_id` name the method whose arguments were bad; both are 0 when the
    /// bytes were not method arguments (content header, properties, bare field table).
    #[error("malformed {class_id}.{method_id}: {reason}")]
    Malformed {
        class_id: u16,
        method_id: u16,
        reason: &'static str,
    },
    #[error("string too long for a shortstr (max 255 bytes)")]
    StringTooLong,
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
}

impl DecodeError {
    pub(crate) fn malformed(reason: &'static str) -> Self {
        DecodeError::Malformed {
            class_id: 0,
            method_id: 0,
            reason,
        }
    }
}
