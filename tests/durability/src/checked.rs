//! Self-checking message bodies for the crash harness: each carries its unique id, its length
//! and a CRC-32 of both, and a payload derived from the id, so any body read back can be
//! verified on its own. Knows nothing of queues or brokers.
//!
//! Layout: `WCHK` | id (u64 LE) | payload length (u32 LE) | CRC-32 of the id, length and
//! payload bytes (u32 LE) | payload.

use std::fmt;

const MAGIC: &[u8; 4] = b"WCHK";
const HEADER: usize = 4 + 8 + 4 + 4;

/// Why a body read back is not one this module wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    TooShort(usize),
    BadMagic,
    LengthMismatch {
        id: u64,
        declared: u32,
        actual: usize,
    },
    CrcMismatch {
        id: u64,
    },
    PayloadMismatch {
        id: u64,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooShort(n) => write!(f, "body of {n} bytes is shorter than the header"),
            BodyError::BadMagic => write!(f, "body does not start with the magic"),
            BodyError::LengthMismatch {
                id,
                declared,
                actual,
            } => write!(f, "id {id}: payload says {declared} bytes, has {actual}"),
            BodyError::CrcMismatch { id } => write!(f, "id {id}: CRC mismatch"),
            BodyError::PayloadMismatch { id } => {
                write!(f, "id {id}: CRC matches but the payload is not the id's")
            }
        }
    }
}

/// The body for message `id` with a payload of `payload_len` bytes.
pub fn encode(id: u64, payload_len: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEADER + payload_len as usize);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&payload_len.to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    fill_payload(id, payload_len as usize, &mut body);
    let crc = crc(&body);
    body[16..20].copy_from_slice(&crc.to_le_bytes());
    body
}

/// The id of a body this module wrote, after checking every byte of it.
pub fn verify(body: &[u8]) -> Result<u64, BodyError> {
    if body.len() < HEADER {
        return Err(BodyError::TooShort(body.len()));
    }
    if &body[..4] != MAGIC {
        return Err(BodyError::BadMagic);
    }
    let id = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
    let declared = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes"));
    let stored_crc = u32::from_le_bytes(body[16..20].try_into().expect("4 bytes"));
    let actual = body.len() - HEADER;
    if declared as usize != actual {
        return Err(BodyError::LengthMismatch {
            id,
            declared,
            actual,
        });
    }
    if crc(body) != stored_crc {
        return Err(BodyError::CrcMismatch { id });
    }
    let mut expected = Vec::with_capacity(actual);
    fill_payload(id, actual, &mut expected);
    if body[HEADER..] != expected[..] {
        return Err(BodyError::PayloadMismatch { id });
    }
    Ok(id)
}

/// CRC-32 of everything but the CRC field itself.
fn crc(body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&body[4..16]);
    h.update(&body[HEADER..]);
    h.finalize()
}

/// Payload bytes that depend on the id and the position, so a body swapped with another's,
/// shifted, or partly zeroed is caught even where a CRC collision would not be.
fn fill_payload(id: u64, len: usize, out: &mut Vec<u8>) {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = len;
    while left > 0 {
        // xorshift64: cheap, and never stuck at zero from a non-zero state.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = left.min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
        left -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        for len in [0u32, 1, 7, 8, 9, 1000, 70_000] {
            let body = encode(42 + u64::from(len), len);
            assert_eq!(body.len(), HEADER + len as usize);
            assert_eq!(verify(&body), Ok(42 + u64::from(len)));
            for at in [0, 5, 13, 17, body.len() - 1] {
                let mut bad = body.clone();
                bad[at] ^= 0x10;
                assert!(verify(&bad).is_err(), "len {len}, flipped byte {at}");
            }
            assert!(verify(&body[..body.len() - 1]).is_err());
        }
        assert_ne!(encode(1, 64), encode(2, 64));
    }
}
